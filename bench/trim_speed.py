"""What trimming an LLM's vocabulary saves per training step: the model train.py --init-from builds (the LLM's first
blocks, AdaLN, the diffusion loss, AdamW and the EMA), once with the LLM's whole vocabulary, once with only the ids the
training reports use plus the byte pieces (tokenizer.trim_text_rows), timed side by side.

    python bench/trim_speed.py                          # smollm2, 4 blocks, B=16, the synthetic CXR reports, all cores
    python bench/trim_speed.py --threads 1 --compile    # one thread (a busy machine), compiled as train.py trains

Why it matters: with the whole vocabulary every sequence position computes ~50k logits (the tied head is an
(M, d) @ (d, V) matmul, M = the masked positions), and every step the optimizer and the EMA update ~50k embedding rows
that template reports never use. Both models have the same blocks and the same masks (one seed); only V differs. They
run interleaved (train_speed.interleaved_times), so load from other processes hits both alike; the table gives the
median time of each and the ratio full / trimmed.
"""
import os
# Before torch loads OpenMP: the short spin train.py sets (why there), so we time what it runs.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
import data  # noqa: E402
import medim  # noqa: E402
import pretrained  # noqa: E402
import tokenizer as tk  # noqa: E402
import train  # noqa: E402
from train_speed import Layout, interleaved_times, load_average, set_threads  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init-from", default="smollm2", help="as train.py --init-from: an HF directory, a .gguf, smollm2")
    p.add_argument("--n-layers", type=int, default=4, help="the LLM's first N blocks")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", default="synthetic", help="whose training reports decide the kept ids")
    p.add_argument("--n-reports", type=int, default=10000, help="training reports read (train_tokenizers' max_pairs)")
    p.add_argument("--image-tokens", type=int, default=64, help="64 = 64 px images at f=8, train.py's default")
    p.add_argument("--codebook", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (train.py's default)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def kept_rows(text, reports):
    """(the trimmed rows, text slots L) for these reports, as train_tokenizers computes them."""
    ids = [e.ids for e in text.encode_batch(reports, add_special_tokens=False)]
    return tk.trim_text_rows(text, ids, "the LLM's tokenizer"), tk.text_len_for([len(i) for i in ids])


def training_step(model, layout, x0, cfg, compile_it):
    """One step of train.py's loop (diffusion loss, backward, clipping, fused AdamW, EMA) as a callable, on the same
    masks every call."""
    opt = train.configure_optimizer(model, cfg)
    ema = [p.detach().clone() for p in model.parameters()]
    forward = torch.compile(model) if compile_it else model
    forward.cfg = model.cfg
    seg, legal, noise = layout.segment_ids, layout.legal, torch.Generator()

    def step():
        noise.manual_seed(cfg.seed)
        loss, _ = medim.diffusion_loss(forward, x0, seg, legal, generator=noise, cond_frac=cfg.cond_frac,
                                       cond_text_share=cfg.cond_text_share, i2t_power=cfg.i2t_power,
                                       t2i_power=cfg.t2i_power, loss_weight=cfg.loss_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - cfg.ema)
        return loss

    return step


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    llm_dir = pretrained.resolve_pretrained(args.init_from)
    text = tk.load_text_tokenizer(llm_dir)
    reports = [p.report for p in data.load_pairs(args.data, "train", limit=args.n_reports)]
    rows, L = kept_rows(text, reports)
    cfg = train.TrainConfig(seed=args.seed)
    steps, shapes = {}, {}
    for name, n_text in (("full", text.get_vocab_size()), ("trimmed", len(rows))):
        layout = Layout(n_text + 7 + args.codebook, args.image_tokens, L, args.codebook)  # 7: 4 specials, 2 tags, [MASK]
        torch.manual_seed(args.seed)
        model = medim.from_pretrained(llm_dir, n_layers=args.n_layers, new_vocab_size=layout.V, seq_len=layout.T,
                                      mask_id=layout.mask_id, seed=args.seed, abs_pos=cfg.abs_pos,
                                      text_rows=rows if name == "trimmed" else None, random_init=True).train()
        x0 = layout.random_batch(args.batch, torch.Generator().manual_seed(args.seed))          # (B, T)
        steps[name] = training_step(model, layout, x0, cfg, args.compile)
        shapes[name] = (layout.V, sum(p.numel() for p in model.parameters()))
    load_before = load_average()
    times = interleaved_times(steps, args.warmup, args.repeats, "cpu")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"trim_speed: {args.init_from} ({llm_dir}), first {args.n_layers} blocks, B={args.batch}, T={layout.T} "
          f"({args.image_tokens} image + {L} text slots), {len(reports)} {args.data} reports | "
          f"{'compiled' if args.compile else 'eager'}, {threads} threads | median of {args.repeats} interleaved rounds "
          f"after {args.warmup} warm-up | load average before / after: {load_before} / {load_average()}")
    print("| vocabulary | V | parameters | ms / step | full / this |\n|---|---|---|---|---|")
    for name in steps:
        print(f"| {name} | {shapes[name][0]} | {shapes[name][1] / 1e6:.1f}M | {med[name] * 1000:.0f} | "
              f"{med['full'] / med[name]:.2f}x |")
    return {"ms": {k: v * 1000 for k, v in med.items()}, "vocab": {k: v[0] for k, v in shapes.items()},
            "speedup": med["full"] / med["trimmed"], "threads": threads, "load": load_before}


if __name__ == "__main__":
    main()
