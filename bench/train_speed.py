"""How fast is one MeDiM training step, next to the obvious peer (HF transformers' LlamaForCausalLM) of the same shape?

    python bench/train_speed.py                      # d=512, 8 layers, 8 heads, T=320, B=16, fp32, all CPU cores
    python bench/train_speed.py --dtype bf16         # bf16 autocast (the peak is then a bf16 matmul)
    python bench/train_speed.py --profile            # + the top ops of one step of each model (torch.profiler)
    python bench/train_speed.py --shape smollm2      # SmolLM2-135M's blocks: d=576, GQA 9/3, d_ff 1536, tied, V=49671

One step = forward, backward, AdamW step, zero_grad, on the same token batch for every model. Three models are timed
side by side in ONE run, interleaved (round r runs every model once, in an order rotated by r) after warm-up, so a load
spike from another process hits all of them alike; each time is the median over the rounds:
  hf           LlamaForCausalLM, causal, plain next-token cross-entropy (the reference)
  ours-llama   MeDiM with causal=True, time_cond='none' and the same plain cross-entropy: like for like with hf
  ours-train   MeDiM as it trains: bidirectional, time_cond='adaln', medim.diffusion_loss (logits only at masked tokens,
               each over its own segment's ids)
  ours-fullhead  (only with --models) ours-train with every masked row's logits over the whole vocabulary, gathered to
               its segment's ids afterwards: what the per-segment head saves
The ratio is hf time / our time (>= 1.0: we are not slower). MFU is model FLOPs per second over the peak of a large
matmul timed in the same rounds (PaLM App. B / nanoGPT estimate_mfu): 6 N per token for the
per-token parameters N (blocks + lm_head; the embedding lookup is no matmul) + 12 L H Q T for attention, plus
6 N_sample per SAMPLE for AdaLN and the time MLP, which run once per row. For ours-train the lm_head counts only the
rows it is applied to. The 12 L H Q T term counts full T x T attention: exact for bidirectional, an over-count for causal
kernels that skip the masked half (so causal MFUs read a little high).

This file also holds what the other bench scripts share: the toy sequence layout, the interleaved timer, the peak.
References: karpathy/nanoGPT model.py estimate_mfu and bench.py; PaLM (Chowdhery et al. 2022, arXiv 2204.02311) App. B.
transformers is a test-only dependency of the project: only this bench (and tests) import it.
"""
import os
# Before torch loads OpenMP: the short spin train.py sets (why there), so we time what it runs.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import math
import statistics
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for medim.py
import medim  # noqa: E402

#### Shared by the bench scripts: layout, load, timer, matmul peak


class Layout:
    """A sequence layout shaped like tokenizer.Vocab's, built here so the benches need no trained tokenizer:
    ids [text 0..n_text-1 | <boi> <eoi> <eos> <pad> | <cxr> <path> | [MASK] | K image codes],
    sequence [<cxr>] [<boi>] img_1..img_N [<eoi>] txt_1..txt_L, so T = N + L + 3."""

    def __init__(self, vocab_size, image_tokens, text_tokens, codebook_size):
        n_text = vocab_size - 7 - codebook_size
        if n_text < 1 or image_tokens < 1 or text_tokens < 1:
            raise ValueError(f"Layout: vocab_size {vocab_size} must exceed codebook_size {codebook_size} + 7, and "
                             f"image_tokens ({image_tokens}) and text_tokens ({text_tokens}) must be >= 1")
        self.V, self.N, self.L, self.T = vocab_size, image_tokens, text_tokens, image_tokens + text_tokens + 3
        self.n_text = n_text
        self.boi, self.eoi, self.eos, self.pad, self.cxr = n_text, n_text + 1, n_text + 2, n_text + 3, n_text + 4
        self.mask_id, self.image_offset = n_text + 6, n_text + 7
        self.segment_ids = torch.zeros(self.T, dtype=torch.long)                       # (T,) 0 = never diffused
        self.segment_ids[2:2 + self.N] = medim.IMAGE
        self.segment_ids[3 + self.N:] = medim.TEXT
        self.legal = torch.zeros(3, self.V, dtype=torch.bool)                          # (3, V) legal ids per segment
        self.legal[0] = True
        self.legal[0, self.mask_id] = False
        self.legal[1, self.image_offset:] = True
        self.legal[2, :n_text] = True                                                  # text ids,
        self.legal[2, [self.eos, self.pad]] = True                                     # <eos> and <pad>

    def random_batch(self, B, generator):
        """(B, T) clean sequences: random image codes and random text ids (statistics do not matter for speed)."""
        x = torch.empty(B, self.T, dtype=torch.long)
        x[:, 0], x[:, 1], x[:, 2 + self.N] = self.cxr, self.boi, self.eoi
        codes = torch.randint(0, self.V - self.image_offset, (B, self.N), generator=generator)  # (B, N)
        x[:, 2:2 + self.N] = self.image_offset + codes
        x[:, 3 + self.N:] = torch.randint(0, self.n_text, (B, self.L), generator=generator)
        return x


def load_average():
    """The 1/5/15-minute load averages as a string (the machine is shared: say how busy it was next to every number)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_times(fns, warmup, repeats, device):
    """{name: [seconds per call]} for callables fns {name: fn}: `warmup` untimed calls each, then `repeats` rounds in
    which every fn runs once, in an order rotated by the round, so slow phases of a shared machine hit all alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def matmul_fn(n, dtype, device):
    """One (n, n) @ (n, n) matmul in dtype as a callable, and its FLOPs (2 n^3): the peak every MFU here is over."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    return (lambda: torch.mm(a, b)), 2 * n ** 3

#### FLOPs per step (PaLM App. B / nanoGPT estimate_mfu, adapted to AdaLN, which runs once per sample)


def flop_params(model):
    """(N_token, N_sample, N_head): the parameters of the matmuls run once per token in the blocks, once per sample
    (AdaLN + time MLP), and in the lm_head. The embedding lookup is no matmul and is not counted (nanoGPT counts a tied
    wte once, as the lm_head). Works for MeDiM and for HF Llama, whose module names match."""
    n_token = n_sample = 0
    for name, p in model.named_parameters():
        if 'adaLN_modulation' in name or 'time_embedder' in name:
            n_sample += p.numel()
        elif '.layers.' in name or name.endswith('model.norm.weight'):
            n_token += p.numel()
    head = model.lm_head.weight if getattr(model, 'lm_head', None) is not None else model.model.embed_tokens.weight
    return n_token, n_sample, head.numel()


def step_flops(model, cfg, B, T, logit_rows):
    """Model FLOPs of one forward + backward: 6 N per token + 12 L H Q T per token (full T x T attention), 6 N_sample
    per sample, and 6 (V d) per lm_head row (B T rows, or only the masked ones for the diffusion loss)."""
    n_token, n_sample, n_head = flop_params(model)
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T
    return (6 * n_token + attention) * B * T + 6 * n_sample * B + 6 * n_head * logit_rows

#### The three training steps


# Named shapes; their fields are defaults, so --n-layers etc. still override them. smollm2: SmolLM2-135M's block shape
# (what --init-from smollm2 trains) with 4 of its 30 layers and its whole vocabulary plus specials and 512 image codes
# (49152 + 7 + 512), at a batch that keeps the run to about a minute on 2 cores.
SHAPES = {"smollm2": dict(d_model=576, n_layers=4, n_heads=9, n_kv_heads=3, d_ff=1536, tie=True, vocab=49671, batch=4),
          "default": dict(d_model=128, n_layers=4, n_heads=4, vocab=2520, seq_len=131, image_tokens=64, batch=32)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), help="a named model shape (its fields become the defaults)")
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--n-layers", type=int, default=8)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--n-kv-heads", type=int, default=0, help="key/value heads (grouped-query attention); 0 = n-heads")
    p.add_argument("--tie", action="store_true", help="lm_head shares the embedding matrix (tied embeddings)")
    p.add_argument("--d-ff", type=int, default=0, help="SwiGLU width; 0 = 8d/3 rounded up to 64 (train.py, Llama)")
    p.add_argument("--vocab", type=int, default=2700)
    p.add_argument("--codebook", type=int, default=512, help="image codes inside the vocabulary")
    p.add_argument("--seq-len", type=int, default=320)
    p.add_argument("--image-tokens", type=int, default=256, help="image slots; text slots = seq-len - image-tokens - 3")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast, fp32 master weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--matmul", type=int, default=4096, help="size n of the (n,n)@(n,n) matmul that measures the peak")
    p.add_argument("--models", default="hf,ours-llama,ours-train", help="comma-separated subset to time")
    p.add_argument("--fused-adam", action="store_true", help="AdamW(fused=True) for every model (one kernel per step)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (the step stays eager)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops for one step of each model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(**SHAPES.get(p.parse_known_args(argv)[0].shape, {}))
    args = p.parse_args(argv)
    args.n_kv_heads = args.n_kv_heads or args.n_heads
    args.d_ff = args.d_ff or 64 * math.ceil(8 * args.d_model / 3 / 64)
    if args.d_model % args.n_heads:
        p.error(f"--d-model {args.d_model} is not a multiple of --n-heads {args.n_heads}")
    if args.n_heads % args.n_kv_heads:
        p.error(f"--n-heads {args.n_heads} is not a multiple of --n-kv-heads {args.n_kv_heads}")
    if not 1 <= args.image_tokens <= args.seq_len - 4:
        p.error(f"--image-tokens {args.image_tokens} must leave >= 1 text slot in --seq-len {args.seq_len} "
                f"(3 fixed tokens)")
    unknown = set(args.models.split(",")) - set(LABELS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)} (choose from {', '.join(LABELS)})")
    return args


def set_threads(threads):
    """All cores this process may use unless told otherwise; returns the number in use."""
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    return torch.get_num_threads()


def build_models(args, layout):
    """{name: model}, same shape and init seed; HF's config mirrors ours field for field (no biases; GQA and a tied
    head as asked)."""
    kv_heads, tie = getattr(args, "n_kv_heads", 0) or args.n_heads, getattr(args, "tie", False)  # data_speed: neither
    shape = dict(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, n_kv_heads=kv_heads,
                 d_ff=args.d_ff, tie_embeddings=tie, vocab_size=layout.V, seq_len=layout.T, mask_id=layout.mask_id)
    models = {}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        if name == "hf":
            from transformers import LlamaConfig, LlamaForCausalLM  # test-only dependency: the bench is its one user
            hf_cfg = LlamaConfig(vocab_size=layout.V, hidden_size=args.d_model, intermediate_size=args.d_ff,
                                 num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
                                 num_key_value_heads=kv_heads, max_position_embeddings=layout.T,
                                 rms_norm_eps=1e-6, tie_word_embeddings=tie, attention_bias=False, mlp_bias=False)
            hf_cfg._attn_implementation = "sdpa"
            models[name] = LlamaForCausalLM(hf_cfg)
        elif name == "ours-llama":
            models[name] = medim.MeDiM(medim.MeDiMConfig(**shape, causal=True, time_cond="none"))
        else:
            models[name] = medim.MeDiM(medim.MeDiMConfig(**shape, causal=False, time_cond="adaln"))
    return {name: m.to(args.device).train() for name, m in models.items()}


def next_token_ce(logits, x):
    """Plain causal LM loss, the same code for hf and ours-llama: predict x[:, 1:] from logits[:, :-1] (B, T, V)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())


def make_step(name, model, x0, layout, args):
    """A callable doing one full training step of `name`, and the number of lm_head rows it computes (for the FLOPs)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=args.fused_adam or None)
    forward = torch.compile(model) if args.compile else model
    autocast = torch.autocast(x0.device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    seg, legal = layout.segment_ids.to(x0.device), layout.legal.to(x0.device)
    noise = torch.Generator(device=x0.device)

    def loss_fn():
        if name == "hf":
            return next_token_ce(forward(input_ids=x0).logits, x0)
        if name == "ours-llama":
            return next_token_ce(forward(x0), x0)
        noise.manual_seed(args.seed)  # the same t and masks every step, so every step does the same work
        return medim.diffusion_loss(full_head(forward) if name == "ours-fullhead" else forward, x0, seg, legal,
                                    generator=noise)[0]

    def step():
        with autocast:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    rows = masked_rows(model, x0, seg, legal, args.seed, name == "ours-fullhead") \
        if name in ("ours-train", "ours-fullhead") else x0.numel()
    return step, rows


def full_head(model):
    """The model with the per-segment head undone: the (M, V) logits over every id, then each segment's columns cut
    from them (medim.at_columns), as the loss and the sampler did before MeDiM.forward took columns."""
    def forward(x, t, logits_at=None, columns=None, **kw):
        logits = model(x, t, logits_at=logits_at, **kw)                                    # (M, V)
        return logits if columns is None else medim.at_columns(logits, columns)

    forward.cfg = model.cfg
    return forward


def masked_rows(model, x0, seg, legal, seed, whole_vocab=False):
    """How many full-vocabulary lm_head rows diffusion_loss's head work equals for this batch and seed (a row over
    V_s of the V ids counts V_s / V; whole_vocab: the loss runs through full_head): count them by wrapping the
    forward."""
    seen = {}

    def spy(x, t, logits_at=None, columns=None, **kw):
        if columns is not None:
            seen["rows"] = sum(len(r) * len(ids) for r, ids in columns.values()) / model.cfg.vocab_size
        elif logits_at is None:
            seen["rows"] = x.numel()
        else:  # a bool (B, T) mask or long (M,) indices, both accepted by MeDiM.forward
            seen["rows"] = int(logits_at.sum()) if logits_at.dtype == torch.bool else logits_at.numel()
        return model(x, t, logits_at=logits_at, columns=columns, **kw)

    spy.cfg = model.cfg
    with torch.no_grad():
        medim.diffusion_loss(full_head(spy) if whole_vocab else spy, x0, seg, legal,
                             generator=torch.Generator(device=x0.device).manual_seed(seed))
    return seen["rows"]


LABELS = {"hf": "HF LlamaForCausalLM: causal, next-token CE",
          "ours-llama": "MeDiM like-for-like: causal, time_cond=none, CE",
          "ours-train": "MeDiM as trained: bidirectional, AdaLN, diffusion loss",
          "ours-fullhead": "the same, every masked row's logits over all V ids"}


def profile_steps(steps, device, top=12):
    """torch.profiler over one step of each model; prints the ops with the most self time (host time: on a GPU, time
    the host spends waiting in cudaStreamSynchronize / item() / nonzero shows up here)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    for name, step in steps.items():
        with profile(activities=activities) as prof:
            step()
            synchronize(device)
        print(f"\n-- profile: {name} ({LABELS[name]}), top {top} ops by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def report(times, flops, mm_flops, tokens, args):
    """Print the table (median and best round) and return {"peak_flops", "models": {name: numbers}}."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    peak, best_peak = mm_flops / med["matmul"], mm_flops / best["matmul"]
    print(f"peak: {args.dtype} {args.matmul}x{args.matmul} matmul {peak / 1e9:.1f} GFLOP/s median, "
          f"{best_peak / 1e9:.1f} best")
    print(f"{'model':<56} {'ms/step':>9} {'spread':>13} {'tok/s':>9} {'GFLOP':>8} {'MFU':>6} {'hf/ours':>8} "
          f"{'best MFU':>9} {'best hf/ours':>12}")
    results = {"peak_flops": peak, "models": {}}
    for name in flops:
        ts, vs_hf = times[name], "hf" in med and name != "hf"
        ratio = med["hf"] / med[name] if vs_hf else float("nan")
        best_ratio = best["hf"] / best[name] if vs_hf else float("nan")
        mfu, best_mfu = flops[name] / med[name] / peak, flops[name] / best[name] / best_peak
        results["models"][name] = dict(ms=med[name] * 1e3, tok_s=tokens / med[name], gflop=flops[name] / 1e9, mfu=mfu,
                                       ratio=ratio, best_mfu=best_mfu, best_ratio=best_ratio,
                                       times_ms=[t * 1e3 for t in ts])
        ratio_s, best_ratio_s = ("" if math.isnan(r) else f"{r:.3f}" for r in (ratio, best_ratio))
        print(f"{LABELS[name]:<56} {med[name] * 1e3:9.1f} {best[name] * 1e3:6.0f}-{max(ts) * 1e3:<6.0f} "
              f"{tokens / med[name]:9.0f} {flops[name] / 1e9:8.1f} {mfu:6.1%} {ratio_s:>8} {best_mfu:9.1%} "
              f"{best_ratio_s:>12}")
    print("hf/ours = HF ms/step over ours (>= 1.0: we are not slower); MFU = model FLOPs/s over the median peak.\n"
          "best = the same from each one's fastest round (and the fastest matmul): less sensitive to other jobs.")
    return results


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    layout = Layout(args.vocab, args.image_tokens, args.seq_len - args.image_tokens - 3, args.codebook)
    x0 = layout.random_batch(args.batch, torch.Generator().manual_seed(args.seed)).to(args.device)  # (B, T)
    models = build_models(args, layout)
    steps, flops = {}, {}
    for name, model in models.items():
        steps[name], rows = make_step(name, model, x0, layout, args)
        flops[name] = step_flops(model, _shape_cfg(name, model), args.batch, layout.T, rows)
    mm, mm_flops = matmul_fn(args.matmul, torch.float32 if args.dtype == "fp32" else torch.bfloat16, args.device)
    load_before = load_average()
    times = interleaved_times({**steps, "matmul": mm}, args.warmup, args.repeats, args.device)
    print(f"train_speed: d={args.d_model} layers={args.n_layers} heads={args.n_heads}/{args.n_kv_heads} kv "
          f"d_ff={args.d_ff}{' tied' if args.tie else ''} V={layout.V} "
          f"T={layout.T} B={args.batch} | {args.dtype} on {args.device}, {threads} threads | "
          f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up")
    print(f"load average before / after: {load_before} / {load_average()}")
    results = report(times, flops, mm_flops, args.batch * layout.T, args)
    results.update(threads=threads, load=load_before)
    if args.profile:
        profile_steps(steps, args.device)
    return results


def _shape_cfg(name, model):
    """The attention shape (n_layers, n_heads, head_dim) of either model, as a MeDiMConfig-like object."""
    if name == "hf":
        c = model.config
        return argparse.Namespace(n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                                  head_dim=c.hidden_size // c.num_attention_heads)
    return model.cfg


if __name__ == "__main__":
    main()
