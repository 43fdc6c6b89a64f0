"""Does medim.sample cost more than its forwards? Sampling time over (number of forwards x one batched forward).

    python bench/sample_speed.py                     # t2i and i2t, CFG off and on, d=512 8 layers, B=8, 16 steps
    python bench/sample_speed.py --cfg-scale 0 --batch 32  # one guidance scale, a bigger batch

MaskGIT sampling (medim.sample) runs one denoiser forward per step, on 2B rows when classifier-free guidance is on (the
conditional and unconditional rows in ONE batch, DiT forward_with_cfg). Everything else it does per step (SUBS log-probs
over the vocabulary, Gumbel noise, top-n selection) is overhead on top of those forwards. The baseline is
n_forwards x the median time of one forward of the same batch (2B rows with CFG), with n_forwards counted in the
untimed first call; the target is a ratio <= 1.1, i.e. under 10% hidden overhead.

The sequence layout is bench/train_speed.Layout (64 image slots, 48 text slots, 3 fixed tokens by default), the model
a fresh random MeDiM (speed does not depend on the weights): t2i masks every image slot, i2t every text slot, and the
sampler decodes text with the default decoder (blocks, threshold) in --steps steps like the image, drawing tokens at
temperature 1.
"""
import os
if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import math
import statistics
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for medim.py
import medim  # noqa: E402
from train_speed import Layout, full_head, load_average, set_threads, synchronize  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--n-layers", type=int, default=8)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--d-ff", type=int, default=0, help="SwiGLU width; 0 = 8d/3 rounded up to 64 (train.py)")
    p.add_argument("--vocab", type=int, default=2700)
    p.add_argument("--codebook", type=int, default=512)
    p.add_argument("--image-tokens", type=int, default=64)
    p.add_argument("--text-tokens", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--cfg-scale", default="0,2", help="comma-separated guidance scales to time (0 = off: B rows, else 2B)")
    p.add_argument("--tasks", default="t2i,i2t")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    p.add_argument("--repeats", type=int, default=3, help="timed sample() calls per setting (and 3x as many forwards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-head", action="store_true",
                   help="also time sample() with every masked slot's logits over all V ids (train_speed.full_head), "
                        "as it was before the per-segment head, interleaved with the timed calls")
    args = p.parse_args(argv)
    args.d_ff = args.d_ff or 64 * math.ceil(8 * args.d_model / 3 / 64)
    args.cfg_scale = [float(c) for c in args.cfg_scale.split(",")]
    args.tasks = args.tasks.split(",")
    if set(args.tasks) - {"t2i", "i2t"}:
        p.error(f"--tasks: choose from t2i, i2t (got {args.tasks})")
    return args


def prompts(layout, task, B, generator):
    """(B, T) inputs: a random clean pair with the generated modality set to [MASK]."""
    x = layout.random_batch(B, generator)
    x[:, layout.segment_ids == (medim.IMAGE if task == "t2i" else medim.TEXT)] = layout.mask_id
    return x


class CountingModel(torch.nn.Module):
    """The model, counting its forward calls (sample() only needs .cfg and __call__)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.calls = model, model.cfg, 0

    def forward(self, *a, **kw):
        self.calls += 1
        return self.inner(*a, **kw)


def time_setting(model, layout, task, cfg_scale, args, autocast):
    """(median sample() seconds, n_forwards, median forward seconds at the same batch, median sample() seconds with
    the full-vocabulary head or None) for one task and CFG scale."""
    x = prompts(layout, task, args.batch, torch.Generator().manual_seed(args.seed)).to(args.device)  # (B, T)
    seg, legal = layout.segment_ids.to(args.device), layout.legal.to(args.device)

    def run_sample(denoiser=None):
        with autocast:
            sampler = medim.SamplerConfig(sample_steps=args.steps, text_steps=args.steps, cfg_scale=cfg_scale,
                                          i2t_cfg_scale=cfg_scale, temperature=1.0, token_temperature=1.0)
            return medim.sample(denoiser or counting, x, seg, legal, sampler,
                                generator=torch.Generator(device=args.device).manual_seed(args.seed))

    rows = torch.cat([x, x]) if cfg_scale else x  # (B or 2B, T): what one guided forward sees
    t = torch.full((rows.shape[0],), 0.5, device=args.device)

    @torch.no_grad()
    def run_forward():
        with autocast:
            return model(rows, t)

    counting = CountingModel(model)
    run_sample()  # untimed: warms up and counts the forwards
    n_forwards = counting.calls
    whole_vocab = full_head(model)
    sample_times, forward_times, full_head_times = [], [], []
    for _ in range(args.repeats):  # interleaved: one sample, three single forwards, one full-head sample
        sample_times.append(timed(run_sample, args.device))
        forward_times += [timed(run_forward, args.device) for _ in range(3)]
        if args.full_head:
            full_head_times.append(timed(lambda: run_sample(whole_vocab), args.device))
    full = statistics.median(full_head_times) if args.full_head else None
    return statistics.median(sample_times), n_forwards, statistics.median(forward_times), full


def timed(fn, device):
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    layout = Layout(args.vocab, args.image_tokens, args.text_tokens, args.codebook)
    torch.manual_seed(args.seed)
    model = medim.MeDiM(medim.MeDiMConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                                          d_ff=args.d_ff, vocab_size=layout.V, seq_len=layout.T,
                                          mask_id=layout.mask_id)).to(args.device).eval()
    bf16 = args.dtype == "bf16"
    autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16) if bf16 else nullcontext()
    load_before = load_average()
    print(f"sample_speed: d={args.d_model} layers={args.n_layers} heads={args.n_heads} V={layout.V} T={layout.T} "
          f"(image {layout.N}, text {layout.L}) B={args.batch} steps={args.steps} | {args.dtype} on {args.device}, "
          f"{threads} threads | median of {args.repeats} sample() calls, forwards interleaved")
    print(f"{'task':<5} {'cfg':>4} {'rows':>5} {'forwards':>8} {'sample s':>9} {'1 fwd ms':>9} {'n x fwd s':>10} "
          f"{'ratio':>6} {'samples/s':>10}" + (f" {'full-head s':>11} {'speedup':>7}" if args.full_head else ""))
    results = {"threads": threads, "load": load_before, "settings": []}
    for task in args.tasks:
        for cfg_scale in args.cfg_scale:
            t_sample, n_fwd, t_fwd, t_full = time_setting(model, layout, task, cfg_scale, args, autocast)
            ratio = t_sample / (n_fwd * t_fwd)
            rows = args.batch * (2 if cfg_scale else 1)
            results["settings"].append(dict(task=task, cfg=cfg_scale, rows=rows, forwards=n_fwd, sample_s=t_sample,
                                            forward_ms=t_fwd * 1e3, ratio=ratio, samples_per_s=args.batch / t_sample,
                                            full_head_s=t_full))
            print(f"{task:<5} {cfg_scale:4g} {rows:5d} {n_fwd:8d} {t_sample:9.2f} {t_fwd * 1e3:9.1f} "
                  f"{n_fwd * t_fwd:10.2f} {ratio:6.3f} {args.batch / t_sample:10.2f}"
                  + (f" {t_full:11.2f} {t_full / t_sample:7.2f}" if t_full else ""))
    print(f"ratio = sample time / (forwards x one forward of the same rows); target <= 1.1. "
          + ("speedup = full-head sample time / sample time. " if args.full_head else "") +
          f"load average before / after: {load_before} / {load_average()}")
    return results


if __name__ == "__main__":
    main()
