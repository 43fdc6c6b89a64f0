"""How much of a training step waits for data? Batch fetch time over (fetch + step) time, for the token cache.

    python bench/data_speed.py                       # train.py's default model and batch, 20000 cached pairs of T=115
    python bench/data_speed.py --d-model 512 --n-layers 8 --n-heads 8 --batch 16

tokenizer.token_cache stores the tokenised training set once as an (N, T) uint16/uint32 .npy. Three ways to get a batch
of B random rows from it are timed (median over --fetches batches), each ending in an int64 (B, T) tensor on --device:
  train.py      what train.py does: the whole cache converted ONCE to an int64 tensor in memory, then per step
                tokens[torch.randint(N, (B,))] (one gather of B x T x 8 bytes)
  uint16-ram    the uint16 array held in memory, rows gathered with numpy and widened to int64 per step
  memmap        the .npy memory-mapped from disk (np.load(mmap_mode='r')), rows gathered and widened per step
The step is one training step (forward, backward, AdamW) of MeDiM as it trains (bidirectional, AdaLN, diffusion loss),
timed with bench/train_speed.make_step. Share = fetch / (fetch + step); the target is < 5%. Nothing here overlaps
loading with compute (train.py does not either), so the share is exactly the time the step waits.
"""
import os
if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import math
import statistics
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for medim.py
from train_speed import Layout, build_models, interleaved_times, load_average, make_step, set_threads  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="pairs in the cache (synthetic train split: 20000)")
    p.add_argument("--image-tokens", type=int, default=64, help="64 px images, f=8")
    p.add_argument("--text-tokens", type=int, default=48)
    p.add_argument("--vocab", type=int, default=2700)
    p.add_argument("--codebook", type=int, default=512)
    p.add_argument("--d-model", type=int, default=128, help="train.py's default model (d=128, 4 layers, 4 heads, B=32)")
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    p.add_argument("--fetches", type=int, default=200, help="batches fetched per loader (median)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (median), after one warm-up")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.d_ff = 64 * math.ceil(8 * args.d_model / 3 / 64)
    args.models, args.compile, args.fused_adam = "ours-train", False, False  # what make_step / build_models read
    return args


def token_cache(layout, n, generator):
    """(N, T) uint16 ids like tokenizer.token_cache's (ids < 65536 fit uint16)."""
    return np.stack([row.numpy() for row in layout.random_batch(n, generator)]).astype(np.uint16)


def loaders(cache, path, device, B, seed):
    """{name: fn() -> (B, T) int64 tensor on device}, each drawing its own random rows like train.py's batch_gen."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.from_numpy(np.asarray(cache, dtype=np.int64))  # train.py: the whole cache, int64, once
    mapped = np.load(path, mmap_mode="r")
    N = len(cache)

    def from_tensor():
        return tokens[torch.randint(N, (B,), generator=gen)].to(device, non_blocking=True)

    def from_array(array):
        def fetch():
            idx = np.sort(torch.randint(N, (B,), generator=gen).numpy())  # sorted: sequential-ish reads from disk
            return torch.from_numpy(array[idx].astype(np.int64)).to(device, non_blocking=True)
        return fetch

    return {"train.py": from_tensor, "uint16-ram": from_array(cache), "memmap": from_array(mapped)}


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    layout = Layout(args.vocab, args.image_tokens, args.text_tokens, args.codebook)
    args.seq_len = layout.T
    cache = token_cache(layout, args.n, torch.Generator().manual_seed(args.seed))
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train_tokens.npy")
        np.save(path, cache)
        # one warm-up call each (page cache, allocator), then the timed fetches, rounds interleaved across loaders
        times = interleaved_times(loaders(cache, path, args.device, args.batch, args.seed), 1, args.fetches, args.device)
        fetch_s = {name: statistics.median(t) for name, t in times.items()}
    model = build_models(args, layout)["ours-train"]
    x0 = layout.random_batch(args.batch, torch.Generator().manual_seed(args.seed)).to(args.device)
    step, _ = make_step("ours-train", model, x0, layout, args)
    step_s = statistics.median(interleaved_times({"step": step}, 1, args.steps, args.device)["step"])
    print(f"data_speed: cache {args.n} x {layout.T} uint16 ({cache.nbytes / 2 ** 20:.1f} MiB), B={args.batch} | "
          f"step: d={args.d_model} layers={args.n_layers} heads={args.n_heads}, {args.dtype} on {args.device}, "
          f"{threads} threads: {step_s * 1e3:.1f} ms (median of {args.steps})")
    print(f"{'loader':<12} {'fetch us':>9} {'share of step':>14}")
    results = {"step_ms": step_s * 1e3, "threads": threads, "load": load_before, "loaders": {}}
    for name, s in fetch_s.items():
        share = s / (s + step_s)
        results["loaders"][name] = dict(fetch_us=s * 1e6, share=share)
        print(f"{name:<12} {s * 1e6:9.1f} {share:14.3%}")
    print(f"share = fetch / (fetch + step); target < 5%. load average before / after: {load_before} / {load_average()}")
    return results


if __name__ == "__main__":
    main()
