"""Train MeDiM end to end: tokenizers → token cache → masked-diffusion training → evaluation → metrics.json + samples.png.

    python train.py                                   # embedded synthetic chest X-rays, CPU, ~15 minutes
    python train.py --preset smoke                    # a 2-minute first look
    python train.py --preset paper                    # the paper's recipe where ours differs (PAPER below)
    python train.py --preset smollm2                  # SmolLM2-135M's first 4 blocks, pretrained, ~18 minutes
    python train.py --data mimic --data-dir DIR       # MIMIC-CXR-JPG tree, R2Gen annotation.json or MeDiM flat dirs
    python train.py --data mimic,pathgen --data-dir A,B --init-from HF_LLM_DIR --n-layers 10
    torchrun --nproc_per_node 8 train.py --data mimic --data-dir DIR --preset full

A flat script in the nanoGPT mould (github.com/karpathy/nanoGPT train.py): two dataclasses of settings, TrainConfig and
medim.SamplerConfig (every field is a flag), then data, model, optimizer, one training loop with checkpoints, then
evaluation. The maths lives in medim.py, the metrics in eval.py.
"""
import os

# Must happen before torch loads OpenMP. Idle OpenMP threads spin before they sleep: the default spin made a 2-thread step
# 6-20x slower whenever another process held one of the two cores (2.2 s vs 0.39 s here); never spinning (PASSIVE) made
# every step 1.26x slower on an idle machine (many small parallel regions). A short spin (10k rounds) keeps the speed and
# degrades gracefully: measured side by side, 0.19 s vs 0.24 s per step idle, 0.51 s vs 0.39 s with a busy core
# (bench/README.md). An OMP_WAIT_POLICY or GOMP_SPINCOUNT you set wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import argparse
import json
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data
import eval as ev
import medim
import pretrained
import tokenizer as tk
from data.common import write_atomic
from eval_image import ORACLE_STEPS
from medim import MeDiM, MeDiMConfig, SamplerConfig


#### Settings: TrainConfig and medim.SamplerConfig, every field a command-line flag

@dataclass
class TrainConfig:
    # data
    data: str = "synthetic"        # synthetic | synthetic-path | mimic | pathgen | folder; comma-separated to mix domains
    data_dir: str = ""             # comma-separated, aligned with --data (synthetic entries need none)
    image_size: int = 64
    n_train: int = 0               # 0 = the whole train split
    shuffle_sentences: bool = False  # synthetic reports: canonical sentence order unless set (4x the i2t F1 in a prototype)
    data_options: str = ""         # loader options, e.g. "section=both,views=all" for MIMIC (see data/mimic.py, data/pathgen.py)
    # run
    out: str = "runs/default"
    preset: str = "default"        # smoke | default | full | paper (fills in the fields below that you do not set)
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    dtype: str = "auto"            # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    threads: int = 0               # CPU threads; 0 = all cores this process may use
    resume: bool = False
    compile: bool = True           # torch.compile the model for training (train.compiled: 1.3x per CPU step)
    # tokenizers (trained once per run directory)
    codebook_size: int = 512
    vq_f: int = 8                  # VQ-VAE downsampling factor: (image_size / vq_f)² image tokens
    vq_steps: int = 1500
    text_vocab: int = 2000
    text_len: int = 0              # 0 = sized from the training reports
    text_tokenizer: str = "auto"   # auto (--init-from's tokenizer.json, else bpe) | bpe (ours) | llm | a tokenizer.json
    trim_vocab: bool = True        # a pretrained tokenizer keeps only the ids the reports use + its 256 byte pieces
    # model
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    init_from: str = ""            # an HF LLM directory (Llama / Qwen2 / Gemma / Liquid), a .gguf, or smollm2
    random_init: bool = False      # with --init-from: its architecture, tokenizer and trimmed vocabulary, random weights
    causal: bool = False           # the paper's "w/ causal mask" ablation
    text_first: bool = False       # the report before the image in the sequence (tokenizer.Vocab), so a causal model
                                   # reads the report while it draws the image
    time_cond: str = "adaln"       # adaln | add | none  (the paper's "w/o AdaLN" and "w/o timestep embedding" ablations)
    abs_pos: bool = True           # learned absolute positions on top of RoPE (medim.MeDiMConfig.abs_pos)
    codebook_embed: bool = True    # image-code embeddings start as a random projection of the VQ-VAE codebook
    next_token_readout: bool = False  # token i read at position i-1, where a pretrained LLM's head predicts it
    # optimisation
    steps: int = 4400              # the default run: ~15 minutes whole pipeline on an idle 2-core CPU (docs/experiments.md)
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999             # 0 = off; evaluation and sampling use the EMA weights when on
    # diffusion recipe (medim.diffusion_loss; PAPER below gives the paper's values beside these measured ones)
    cond_frac: float = 0.7         # share of rows with one modality clean (the condition) and the other masked
    cond_text_share: float = 0.35  # of those, share where the report is the condition (report → image); rest image → report
    i2t_power: float = 0.5         # in image-given rows the report is masked at rate t**power (0 = fully masked)
    t2i_power: float = 1.0         # in report-given rows the image is masked at rate t**power
    loss_weight: str = "uniform"   # uniform (mean CE over masked tokens, MaskGIT) | elbo (1/t weight, MDLM's bound)
    # evaluation (the sampler's settings are medim.SamplerConfig's flags)
    eval_every: int = 0            # 0 = only at the end
    n_eval: int = 200              # test pairs per domain
    oracle_steps: int = ORACLE_STEPS  # training steps of the synthetic-data oracle classifier (eval_image.train_oracle)
    ckpt_every: int = 250
    log_every: int = 100
    skip_eval: bool = False
    eval_joint: bool = True        # also judge image-report pairs generated together (synthetic data: eval.joint_metrics)


# The paper's recipe (MeDiM §2.1, §3.2 and the official code's config; docs/paper-notes.md "Training loss", "Sampling"),
# for every setting where this repository's default differs, with what we measured instead (label F1 image → report /
# report → image; docs/experiments.md). `--preset paper` trains it at our scale; the paper's scale (a 10-layer Liquid,
# lr 1e-5, 1M steps on 8 A100s) is not reproduced.
PAPER = dict(
    cond_frac=0.15,           # ours 0.7: 70% of rows vs none raised image → report F1 0.29 → 0.46 (prototype)
    cond_text_share=0.5,      # ours 0.35: 0.78 / 0.86 vs 0.70 / 0.81 with 0.5 (3 seeds, 2000 steps)
    i2t_power=0.0,            # ours 0.5: a report masked at t**0.5 gave 0.53 vs 0.46 at t (prototype); fully: not run
    t2i_power=0.0,            # ours 1.0: the image at t**0.5 gave 0.85 / 0.92 vs 0.89 / 0.92 (3 seeds, 3200 steps)
    loss_weight="elbo",       # ours uniform: +0.04 / +0.14 over the 1/t weight (1 seed, 1000 steps)
    abs_pos=False,            # ours on (not in the paper): +0.18 / +0.20 (3 seeds, 2000 steps)
    codebook_embed=False,     # ours on (not in the paper): +0.10 / +0.07 on top of absolute positions (3 seeds)
    ema=0.0,                  # ours 0.999: raw 0.81 / 0.86 vs EMA 0.79 / 0.85 (3 seeds), within noise
    sample_steps=128,         # ours 16: 32 or 64 image steps gave report → image 0.55 / 0.58 vs 0.60 (1 seed)
    cfg_scale=5.0,            # ours 2: 4 gave 0.57 vs 0.60, and 0 gave 0.49 (report → image, 1 seed)
    i2t_cfg_scale=5.0,        # ours 2: 2 vs none gave 0.50 vs 0.43 (3 seeds); 5 not run
    temperature=10.0,         # ours 1: the official r_temp; not measured
    token_temperature=1.0,    # ours 0 (argmax): BLEU-4 0.18 vs 0.11 with sampled tokens (1 seed)
    text_left_to_right=False,  # ours on: +0.10 to 0.14 image → report F1 over confidence order (prototype)
    text_block=0,             # ours 16 with threshold 0.7: the same label F1 in a quarter of the forwards (2 seeds)
    threshold=0.0,
)

PRESETS = {
    # a first look in ~2 minutes on 2 CPU cores: a tiny model whose reports and images both beat the trivial baselines
    "smoke": dict(n_train=2000, vq_steps=300, steps=900, d_model=64, n_layers=2, n_heads=2, batch_size=32, n_eval=64,
                  ckpt_every=300, warmup=30, oracle_steps=300, compile=False),  # compiling: 4-20 s of a 2-minute run
    # the README's `python train.py`: 13.5-14.2 minutes measured on an idle 2-core CPU, whole pipeline (3 seeds)
    "default": dict(),
    # the default model for longer: the GPU learning curve passed 0.9 both ways by 4000 steps (docs/experiments.md)
    "full": dict(steps=8000, vq_steps=2000),
    "paper": PAPER,
    # real X-rays at 256 px: 256 image tokens; f=16 / K=1024 reconstructed as well as K=4096 at equal VQ budget
    # (bench/tokenizer_256.py); vq_steps is a guess: the VQ-VAE was far from converged at 200 steps (use a GPU)
    "real256": dict(image_size=256, vq_f=16, codebook_size=1024, vq_steps=5000),
    # SmolLM2-135M's first 4 of 30 blocks (23M parameters with AdaLN, vocabulary trimmed to 426 text ids) on 2 CPU
    # cores: 0.80 s per step at batch 8 (compiled), and the evaluation samples a 4-block d=576 model, 8 minutes at 100
    # pairs per direction with 4 text slots per step (22 steps for 88 slots; one per slot took 4x longer). lr 1e-3:
    # after 150 steps its text / image losses were below those at 3e-4 (1 seed); the first step's text CE is 34 (the
    # LLM's sharp rows) against 6 for random weights. Whole pipeline about 18 minutes (tokenizers 3, training 7,
    # evaluation 8). --random-init gives the same run with random weights.
    "smollm2": dict(init_from="smollm2", n_layers=4, batch_size=8, lr=1e-3, warmup=50, steps=500, n_eval=100,
                    text_steps=22, log_every=50),
}


def parse_args(argv=None) -> tuple[TrainConfig, SamplerConfig]:
    """Every field of TrainConfig and SamplerConfig is a flag (--cond-frac, --cfg-scale, ...); the preset fills in the
    fields not given, explicit flags win."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sections = {TrainConfig: p.add_argument_group("training"),
                SamplerConfig: p.add_argument_group("sampling (medim.SamplerConfig, saved in ckpt.pt: eval.py and sample.py "
                                                    "sample with them too)")}
    for cls, group in sections.items():
        defaults = cls()
        for f in fields(cls):
            flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
            if f.type is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                   help=HELP.get(f.name, f"default {default}"))
            else:
                group.add_argument(flag, type=f.type, default=None, help=HELP.get(f.name, f"default {default!r}"))
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    saved = saved_settings(os.path.join(given.get("out", TrainConfig.out), "ckpt.pt")) if given.get("resume") else {}
    preset = given.get("preset", saved.get("preset", TrainConfig.preset))
    if preset not in PRESETS:
        p.error(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    chosen = {**PRESETS[preset], **saved, **given}  # explicit flags win over the run's own settings and the preset
    of = lambda cls: {f.name: chosen[f.name] for f in fields(cls) if f.name in chosen}
    try:
        sampler = SamplerConfig(**of(SamplerConfig))
    except ValueError as e:
        p.error(str(e))
    cfg = TrainConfig(**of(TrainConfig))
    if cfg.loss_weight not in ("elbo", "uniform"):
        p.error(f"--loss-weight must be elbo or uniform, got {cfg.loss_weight!r}")
    if cfg.time_cond not in ("adaln", "add", "none"):
        p.error(f"--time-cond must be adaln, add or none, got {cfg.time_cond!r}")
    if cfg.dtype not in ("auto", "fp32", "bf16"):
        p.error(f"--dtype must be auto, fp32 or bf16, got {cfg.dtype!r}")
    for name in ("steps", "batch_size", "image_size", "vq_f", "d_model", "n_layers", "n_heads"):
        if getattr(cfg, name) <= 0 and not (name == "n_layers" and cfg.init_from and cfg.n_layers == 0):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if not cfg.init_from and (cfg.random_init or cfg.text_tokenizer == "llm"):
        p.error(f"--{'random-init' if cfg.random_init else 'text-tokenizer llm'} needs --init-from (the LLM it refers to)")
    if cfg.d_model % cfg.n_heads:
        p.error(f"--d-model ({cfg.d_model}) must be divisible by --n-heads ({cfg.n_heads})")
    if cfg.image_size % cfg.vq_f:
        p.error(f"--image-size ({cfg.image_size}) must be divisible by --vq-f ({cfg.vq_f})")
    return cfg, sampler


HELP = {  # flags whose meaning depends on another flag
    "n_layers": "default 4; with --init-from: keep the LLM's first N blocks (default its first 4, 0 = all of them)",
    "init_from": "default none (a fresh model of --d-model / --n-layers / --n-heads): an HF Llama / Qwen2 / Gemma "
                 "directory, a .gguf file, or smollm2 (converted into ~/.cache/medim on first use, pretrained.py)",
    "text_tokenizer": "default auto: with --init-from the LLM's own tokenizer.json (its ids index its embedding rows), "
                      "else bpe, a byte-level BPE trained on the reports; or the path of another tokenizer.json",
    "trim_vocab": "default True: with a pretrained tokenizer keep only the ids the training reports use and the 256 "
                  "byte pieces (others are written in byte pieces), so a text slot pays for hundreds of logits, not ~50k",
    "random_init": "default False: with --init-from, the same architecture, tokenizer and trimmed vocabulary with "
                   "MeDiM's fresh random weights (MeDiM Tab. 4 'w/o pretrained MLLM weight')",
}


def saved_settings(ckpt_path: str) -> dict:
    """The settings a run was trained with (its checkpoint's train_config and sampler), so `--resume` continues it
    without repeating its flags; {} if there is no checkpoint (main then says so)."""
    if not os.path.exists(ckpt_path):
        return {}
    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)  # mmap: the weights stay unread
    except Exception as e:
        raise SystemExit(f"error: {ckpt_path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})")
    saved = {**ck.get("train_config", {}), **(ck.get("sampler") or {})}
    return {k: v for k, v in saved.items() if k not in ("out", "resume")}


#### Small pieces the loop needs

def get_lr(step: int, cfg: TrainConfig) -> float:
    """1) linear warmup, 2) cosine decay to min_lr_ratio·lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay only on matrices (embeddings, linear weights), never on norms and biases (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused=True on the CPU too: bench/ measured the optimizer step of the default model at 23 -> 2 ms
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)


def pick_device(cfg: TrainConfig, local_rank: int) -> str:
    if cfg.device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {cfg.device} but CUDA is not available here (use --device cpu)")
    return cfg.device


class Log:
    """Prints (through tqdm, so bars stay intact) and appends to run_dir/log.txt; silent on ranks other than 0."""

    def __init__(self, path: str | None):
        self.path = path

    def __call__(self, msg: str):
        if self.path is None:
            return
        tqdm.write(msg)
        with open(self.path, "a") as f:
            f.write(msg + "\n")


def data_options(cfg: TrainConfig) -> dict:
    """This run's loader options (--shuffle-sentences, --data-options "key=value,...") for data.load_pairs."""
    try:
        return ev.loader_options(cfg.shuffle_sentences, cfg.data_options)
    except ValueError as e:
        raise SystemExit(f"error: --data-options: {e}")


def load_split(cfg: TrainConfig, split: str) -> list:
    try:
        pairs = data.load_pairs(cfg.data, split, data_dir=cfg.data_dir or None, image_size=cfg.image_size, seed=cfg.seed,
                                limit=(cfg.n_train or None) if split == "train" else None, **data_options(cfg))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: could not load --data {cfg.data} (--data-dir {cfg.data_dir or '-'}): {e}")
    if len(pairs) == 0:
        raise SystemExit(f"error: --data {cfg.data} --data-dir {cfg.data_dir or '-'} gave no {split} pairs")
    return pairs


def load_evaluation_data(cfg: TrainConfig) -> tuple:
    """(test pairs, {domain: training pairs}) for eval.evaluate, loaded once per run."""
    return ev.evaluation_data(cfg.data, data_dir=cfg.data_dir, image_size=cfg.image_size, seed=cfg.seed,
                              options=data_options(cfg), n_eval=cfg.n_eval)


def check_compatible(ck: dict, model: MeDiM, path: str):
    """A checkpoint from another config must say so, not fail deep inside load_state_dict."""
    saved = ck.get("model_config", {})
    ours = asdict(model.cfg)
    diff = {k: (saved.get(k), v) for k, v in ours.items() if k in saved and saved[k] != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"error: {path} was written with a different model config ({lines}); use the same flags or another --out")


def swap_in_ema(model: MeDiM, ema: list):
    with torch.no_grad():
        for p, e in zip(model.parameters(), ema):
            p.copy_(e)


def periodic_eval(cfg: TrainConfig, sampler: SamplerConfig, model, ema, tok, eval_data, step, elapsed, log):
    """A quick evaluation (no FD-oracle, no joint pairs) on the EMA weights (restored afterwards), appended to
    run_dir/curve.jsonl for learning curves."""
    backup = [p.detach().clone() for p in model.parameters()]
    if ema is not None:
        swap_in_ema(model, ema)
    model.eval()
    m = ev.evaluate(model, tok, *eval_data, sampler, seed=cfg.seed, oracle_steps=cfg.oracle_steps, run_dir=cfg.out,
                    with_fd_oracle=False, with_joint=False)
    model.train()
    swap_in_ema(model, backup)
    row = {"step": step, "minutes": round(elapsed / 60, 2), **ev.curve_row(m)}
    with open(os.path.join(cfg.out, "curve.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    log(f"eval @ step {step}: " + " | ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))


#### The model

def build_model(cfg: TrainConfig, vocab, log, codebook=None, llm_dir=None, text_rows=None, weights=True) -> MeDiM:
    """The diffusion model: fresh, or the LLM in llm_dir (--init-from, resolved) cut to its first --n-layers blocks,
    text id i on its embedding row text_rows[i]; its weights unless --random-init, or weights=False (--resume: the
    checkpoint brings them). With --codebook-embed (and the VQ codebook given) the image-code embeddings start from the
    codebook (init_image_embeddings)."""
    if cfg.init_from:
        llm_dir = llm_dir or resolve_llm(cfg)
        try:
            model = medim.from_pretrained(llm_dir, n_layers=cfg.n_layers or None, new_vocab_size=vocab.size,
                                          time_cond=cfg.time_cond, causal=cfg.causal, seq_len=vocab.seq_len,
                                          mask_id=vocab.mask_id, seed=cfg.seed, abs_pos=cfg.abs_pos,
                                          text_rows=text_rows, random_init=cfg.random_init or not weights,
                                          next_token_readout=cfg.next_token_readout)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: --init-from {cfg.init_from} ({llm_dir}): {e}")
        what = "initialised from" if weights and not cfg.random_init else "the architecture of"
        log(f"{what} {cfg.init_from} ({llm_dir}): its first {model.cfg.n_layers} blocks, d={model.cfg.d_model}")
    else:
        model = MeDiM(MeDiMConfig(vocab_size=vocab.size, seq_len=vocab.seq_len, mask_id=vocab.mask_id,
                                  d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads,
                                  d_ff=_ffn_width(cfg.d_model), causal=cfg.causal, time_cond=cfg.time_cond,
                                  abs_pos=cfg.abs_pos, next_token_readout=cfg.next_token_readout))
    if cfg.codebook_embed and codebook is not None:
        init_image_embeddings(model, codebook, vocab.image_offset, cfg.seed)
    return model


@torch.no_grad()
def init_image_embeddings(model: MeDiM, codebook: torch.Tensor, image_offset: int, seed: int):
    """Image-code embeddings = codebook (K, c) @ a random (c, D) projection, at the scale the rows had (N(0, init_std)
    from scratch, grow_vocab's rows for a pretrained LLM): codes that look alike start with embeddings that point alike,
    instead of K unrelated random vectors whose meaning the model must find out from the loss alone."""
    rows = model.model.embed_tokens.weight[image_offset:image_offset + len(codebook)]   # (K, D), a view
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(codebook.shape[1], rows.shape[1], generator=g)                     # (c, D)
    codes = codebook.detach().float().cpu()
    e = (codes - codes.mean(0)) @ proj                                                    # (K, D)
    rows.copy_((e * (rows.float().std().cpu() / e.std())).to(rows))


def resolve_llm(cfg: TrainConfig) -> str | None:
    """--init-from as an HF model directory (pretrained.resolve_pretrained: a directory as it is, a .gguf file or
    'smollm2' converted into the cache on first use); None without --init-from."""
    if not cfg.init_from:
        return None
    try:
        return os.path.abspath(pretrained.resolve_pretrained(cfg.init_from))
    except (OSError, ValueError) as e:
        again = f" ({cfg.out} was trained from it: give --init-from a copy of that model to resume)" if cfg.resume else ""
        raise SystemExit(f"error: --init-from {cfg.init_from}: {e}{again}")


def text_tokenizer_path(cfg: TrainConfig, llm_dir: str | None) -> str | None:
    """The tokenizer.json the report slots use (--text-tokenizer), or None for a BPE of our own trained on the reports."""
    choice = cfg.text_tokenizer
    if choice == "bpe" or (choice == "auto" and not llm_dir):
        return None
    if choice in ("auto", "llm"):
        path = os.path.join(llm_dir, "tokenizer.json")
        if not os.path.isfile(path):
            raise SystemExit(f"error: --init-from {cfg.init_from}: {llm_dir} has no tokenizer.json, the tokenizer whose "
                             f"ids index its embedding rows; give it with --text-tokenizer FILE, or train our own with "
                             f"--text-tokenizer bpe (the LLM's text rows then start unrelated to the ids)")
        return path
    path = os.path.join(choice, "tokenizer.json") if os.path.isdir(choice) else choice
    if not os.path.isfile(path):
        raise SystemExit(f"error: --text-tokenizer {choice}: no such file (auto, bpe, llm, or a tokenizer.json)")
    return os.path.abspath(path)


def check_run_tokenizer(tok, text_path: str | None, run_dir: str):
    """Tokenizers already in the run directory (a resumed run, or copied in by bench/ablations.py) must be the ones
    this run asks for: a run whose report ids index another tokenizer's rows would train, silently wrong."""
    if text_path:
        wrong = tok.text.to_str() != tk.load_text_tokenizer(text_path).to_str()
    else:  # our own BPE: never a trimmed LLM vocabulary
        wrong = tok.vocab.text_rows is not None
    if wrong:
        raise SystemExit(f"error: the text tokenizer in {run_dir} is not {text_path or 'a BPE of its own'}, which this "
                         f"run asks for (--init-from / --text-tokenizer): its tokenizers come from another run; "
                         f"choose another --out")


def check_run_layout(tok, cfg: TrainConfig, log):
    """The sequence layout (--text-first) is the run's, not its tokenizers', which do not depend on it: tokenizers of
    the other layout (copied in, as bench/ablations.py shares one set per seed) are laid out anew for a fresh run, in
    vocab.json, and the token cache follows (its hash covers the layout). A resumed run keeps the layout it was
    trained on."""
    if tok.vocab.text_first == cfg.text_first:
        return
    path, layout = os.path.join(cfg.out, "vocab.json"), lambda first: "report first" if first else "image first"
    if cfg.resume:
        raise SystemExit(f"error: {path} lays the sequence out {layout(tok.vocab.text_first)}, as "
                         f"{os.path.join(cfg.out, 'ckpt.pt')} was trained, but this run asks for "
                         f"{layout(cfg.text_first)} (--{'' if cfg.text_first else 'no-'}text-first); resume without "
                         f"it or choose another --out")
    tok.vocab = tk.Vocab(**dict(tok.vocab.to_dict(), text_first=cfg.text_first))  # to_dict: Vocab's own arguments
    tok.save(cfg.out)
    log(f"the tokenizers in {cfg.out} now lay the sequence out {layout(cfg.text_first)} (--text-first)")


def pretrained_record(cfg: TrainConfig, llm_dir: str, text_path: str | None, tok, model: MeDiM) -> dict:
    """What --init-from made of this run, for config.json and ckpt.pt: the name given, the directory it resolved to,
    the blocks kept, the text tokenizer and its trimmed rows, random or pretrained weights."""
    with open(os.path.join(llm_dir, "config.json")) as f:
        llm_layers = json.load(f).get("num_hidden_layers")
    return {"init_from": cfg.init_from, "dir": llm_dir, "random_init": cfg.random_init,
            "layers_kept": model.cfg.n_layers, "layers_in_llm": llm_layers,
            "text_tokenizer": text_path or "bpe (trained for this run)",
            "text_ids": tok.vocab.n_text, "text_ids_in_tokenizer": tok.text.get_vocab_size(),
            "trimmed": tok.vocab.text_rows is not None}


def _ffn_width(d: int) -> int:
    """SwiGLU hidden width: 8/3·d rounded up to a multiple of 64 (Llama)."""
    return 64 * math.ceil(8 * d / 3 / 64)


def compiled(model, device, log):
    """torch.compile fuses the many small ops of a small transformer into few kernels: 1.3x per training step on the 2-core
    CPU (0.15 s vs 0.19 s, docs/experiments.md). It needs a C++ compiler (CPU) or Triton (CUDA); a one-line probe checks, and without
    one the run trains eagerly, with a note, rather than failing at step 0."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
    except Exception as e:  # whatever the backend raises: no toolchain, no Triton, an unsupported platform
        log(f"note: torch.compile does not work here ({type(e).__name__}: {str(e).strip().splitlines()[0][:160]}); "
            f"training eagerly (--no-compile skips this check)")
        return model
    if torch.device(device).type == "cpu":  # otherwise compiled CPU kernels may accumulate gradients in a thread-dependent
        # order: two runs of one seed then differed by ~4e-7 after 60 steps (measured); with these they are bitwise equal,
        # at the same speed (140-160 ms per step either way)
        torch.use_deterministic_algorithms(True)
        torch._inductor.config.deterministic = True
    return torch.compile(model)


#### The run

def stop_on_sigterm(signum, frame):
    """A scheduler's kill (SIGTERM) stops training as Ctrl-C does: the loop saves a checkpoint, --resume continues."""
    raise KeyboardInterrupt


def main(argv=None):
    cfg, sampler = parse_args(argv)
    # -- distributed (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK) -------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world, local_rank = 0, 1, 0
    if ddp:
        rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(cfg, local_rank)
    if ddp:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif ddp and device == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device_type == "cuda")
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    os.makedirs(cfg.out, exist_ok=True)
    log = Log(os.path.join(cfg.out, "log.txt") if master else None)
    ckpt_path = os.path.join(cfg.out, "ckpt.pt")
    if os.path.exists(ckpt_path) and not cfg.resume:
        raise SystemExit(f"error: {ckpt_path} exists; pass --resume to continue that run or choose another --out")
    if cfg.resume and not os.path.exists(ckpt_path):
        raise SystemExit(f"error: --resume given but there is no checkpoint at {ckpt_path}")
    log(f"medim train | device {device}{' x' + str(world) if ddp else ''} | {'bf16' if use_bf16 else 'fp32'} | "
        f"threads {torch.get_num_threads()} | out {cfg.out}")
    t_start = time.time()

    # -- data → tokenizers → token cache -----------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    train_pairs = load_split(cfg, "train")
    if ddp and not master:
        dist.barrier()  # rank 0 trains the tokenizers and fills the token cache; the others then just read them
    llm_dir = resolve_llm(cfg)  # rank 0 first: it may convert smollm2 into the cache
    text_path = text_tokenizer_path(cfg, llm_dir)
    if not tk.MedTokenizer.exists(cfg.out):
        log(f"training the tokenizers (VQ-VAE + {text_path or 'BPE'}) for this run")
        try:
            tk.train_tokenizers(train_pairs, cfg.out, cfg.image_size, K=cfg.codebook_size, f=cfg.vq_f,
                                vq_steps=cfg.vq_steps, text_vocab=cfg.text_vocab, text_len=cfg.text_len or None,
                                seed=cfg.seed, device=device, pretrained_text=text_path, trim_vocab=cfg.trim_vocab,
                                text_first=cfg.text_first)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {e}")
    tok = tk.MedTokenizer.load(cfg.out)
    check_run_tokenizer(tok, text_path, cfg.out)
    check_run_layout(tok, cfg, log)
    vocab = tok.vocab
    train_tokens = tk.token_cache(tok, train_pairs, cfg.out, "train")
    if ddp and master:
        dist.barrier()
    if vocab.n_truncated:
        log(f"note: {vocab.n_truncated} reports were longer than the {vocab.text_len} text slots and were truncated")
    tokens = torch.from_numpy(np.asarray(train_tokens, dtype=np.int64))  # (N, T): small enough to hold in memory
    log(f"train: {len(tokens)} pairs × {vocab.seq_len} tokens ({'report' if vocab.text_first else 'image'} first) | "
        f"vocab {vocab.size} | {time.time() - t_start:.0f}s so far")

    # -- model, optimizer, EMA ---------------------------------------------------------------------------------------------
    # text id i stands for LLM id text_rows[i]: the trimmed rows, or all of an untrimmed pretrained tokenizer's ids
    text_rows = vocab.text_rows if vocab.text_rows is not None or not text_path else list(range(vocab.n_text))
    model = build_model(cfg, vocab, log, codebook=tok.vqvae.quantizer.codebook, llm_dir=llm_dir, text_rows=text_rows,
                        weights=not cfg.resume).to(device)  # --resume: the checkpoint brings the weights
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, {model.cfg.n_layers} layers, d={model.cfg.d_model}, "
        f"{'causal' if model.cfg.causal else 'bidirectional'}, time_cond={model.cfg.time_cond}")
    llm = pretrained_record(cfg, llm_dir, text_path, tok, model) if llm_dir else None
    if llm:
        log(f"text: {llm['text_ids']} ids ({'trimmed from' if llm['trimmed'] else 'all'} "
            f"{llm['text_ids_in_tokenizer']} of {llm['text_tokenizer']}); blocks {llm['layers_kept']} of "
            f"{llm['layers_in_llm']}, {'random' if cfg.random_init else 'pretrained'} weights")
    if master:
        ev.write_json(os.path.join(cfg.out, "config.json"), {"train": asdict(cfg), "sampler": asdict(sampler),
                                                             "model": asdict(model.cfg), "pretrained": llm})
    optimizer = configure_optimizer(model, cfg)
    ema = [p.detach().clone() for p in model.parameters()] if cfg.ema > 0 else None
    segment_ids, legal = vocab.segment_ids.to(device), vocab.legal.to(device)
    batch_gen = torch.Generator().manual_seed(cfg.seed)                         # which pairs go in each batch
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank + 1)  # t and masks; per rank
    start_step, stats = 0, {"skipped_steps": 0, "train_seconds": 0.0}
    if cfg.resume:
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        check_compatible(ck, model, ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if ema is not None and ck.get("ema") is not None:
            for e, v in zip(ema, ck["ema"]):
                e.copy_(v)
        batch_gen.set_state(ck["batch_gen"])
        noise_gen.set_state(ck["noise_gen"][rank])
        torch.set_rng_state(ck["torch_rng"])
        start_step, stats = ck["step"], ck["stats"]
        log(f"resumed from {ckpt_path} at step {start_step}")
    train_model = compiled(model, device, log) if cfg.compile else model
    if ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=[local_rank] if device_type == "cuda" else None)
    train_model.cfg = model.cfg  # medim.diffusion_loss reads model.cfg through the DDP / compile wrappers

    def checkpoint(step):
        gens = [noise_gen.get_state()]
        if ddp:  # every rank's noise generator, so a resumed DDP run is the same run
            gens = [None] * world
            dist.all_gather_object(gens, noise_gen.get_state())
        if master:
            ck = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema,
                  "model_config": asdict(model.cfg), "train_config": asdict(cfg), "sampler": asdict(sampler),
                  "step": step, "stats": stats, "batch_gen": batch_gen.get_state(), "noise_gen": gens,
                  "torch_rng": torch.get_rng_state(), "tokenizer_dir": os.path.abspath(cfg.out), "pretrained": llm}
            write_atomic(ckpt_path, lambda f: torch.save(ck, f))  # a crash mid-write never leaves half a checkpoint

    # -- the training loop -------------------------------------------------------------------------------------------------
    B = cfg.batch_size  # per process; the global batch is B × world
    tokens_per_step = B * world * vocab.seq_len
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="diffusion", disable=not master,
               dynamic_ncols=True)
    bad_in_row, step, eval_data = 0, start_step, None
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        for step in bar:
            t0 = time.time()
            idx = torch.randint(len(tokens), (B * world,), generator=batch_gen)[rank * B:(rank + 1) * B]
            x0 = tokens[idx].to(device, non_blocking=True)                      # (B, T)
            for g in optimizer.param_groups:
                g["lr"] = get_lr(step, cfg)
            with autocast:
                loss, parts = medim.diffusion_loss(train_model, x0, segment_ids, legal, generator=noise_gen,
                                                   cond_frac=cfg.cond_frac, cond_text_share=cfg.cond_text_share,
                                                   i2t_power=cfg.i2t_power, t2i_power=cfg.t2i_power,
                                                   loss_weight=cfg.loss_weight)
            if not torch.isfinite(loss):
                stats["skipped_steps"] += 1
                bad_in_row += 1
                optimizer.zero_grad(set_to_none=True)
                if bad_in_row >= 10:
                    checkpoint(step)
                    raise SystemExit(f"error: the loss was not finite for {bad_in_row} steps in a row at step {step}; "
                                     f"try a lower --lr (now {cfg.lr}) or --dtype fp32. Last good state: {ckpt_path}")
                continue
            bad_in_row = 0
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:  # decay warmed up as (1 + step) / (10 + step): a 0.999 EMA of a short run would
                # otherwise still hold ~37% of the random init after 1000 steps (measured: word salad from the EMA weights)
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - decay)
            dt = time.time() - t0
            stats["train_seconds"] += dt
            if master and (step % 10 == 0 or step == cfg.steps - 1):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{get_lr(step, cfg):.1e}", gnorm=f"{grad_norm.item():.2f}",
                                tok_s=f"{tokens_per_step / max(dt, 1e-9):.0f}")
            if step % cfg.log_every == 0:
                logged = loss.detach()
                if ddp:  # the global mean, so a DDP log reads like a single-process one
                    dist.all_reduce(logged)
                    logged = logged / world
                log(f"step {step} | loss {logged.item():.4f} | text {parts.get('loss_text', float('nan')):.3f} | "
                    f"image {parts.get('loss_image', float('nan')):.3f} | lr {get_lr(step, cfg):.2e} | "
                    f"grad norm {grad_norm.item():.2f} | {dt * 1000:.0f} ms | {tokens_per_step / max(dt, 1e-9):.0f} tok/s")
            if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps and master:
                eval_data = eval_data or load_evaluation_data(cfg)
                periodic_eval(cfg, sampler, model, ema, tok, eval_data, step + 1, time.time() - t_start, log)
    except KeyboardInterrupt:
        checkpoint(step)
        log(f"interrupted: checkpoint saved at step {step} in {ckpt_path}; continue with --resume")
        raise SystemExit(130)
    checkpoint(cfg.steps)
    bar.close()
    stats["steps"] = cfg.steps
    stats["tokens_per_s"] = tokens_per_step * (cfg.steps - stats["skipped_steps"]) / max(1e-9, stats["train_seconds"])
    log(f"training done: {cfg.steps} steps, {stats['train_seconds'] / 60:.1f} min in steps, "
        f"{stats['skipped_steps']} skipped, {time.time() - t_start:.0f}s since start")

    # -- evaluation (rank 0) -----------------------------------------------------------------------------------------------
    if master and not cfg.skip_eval:
        if ema is not None:
            swap_in_ema(model, ema)
        metrics = ev.evaluate(model, tok, *(eval_data or load_evaluation_data(cfg)), sampler, seed=cfg.seed,
                              oracle_steps=cfg.oracle_steps, run_dir=cfg.out, grid_path=os.path.join(cfg.out, "samples.png"),
                              with_joint=cfg.eval_joint)
        metrics["sampler"] = asdict(sampler)
        metrics["train"] = {"steps": cfg.steps, "seconds": round(stats["train_seconds"], 1),
                            "tokens_per_s": round(stats["tokens_per_s"]), "skipped_steps": stats["skipped_steps"],
                            "total_seconds": round(time.time() - t_start, 1)}
        ev.write_json(os.path.join(cfg.out, "metrics.json"), metrics)
        log(ev.format_table(metrics))
        log(f"wrote {os.path.join(cfg.out, 'metrics.json')} and samples.png | whole run {(time.time() - t_start) / 60:.1f} min")
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
