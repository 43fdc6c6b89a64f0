"""How should a pair be drawn when neither the image nor the report is given? Each way judged as eval.py judges pairs.

    python bench/joint_orders.py --run runs/default                 # 200 unconditional pairs per way, ~40 min at 1 thread
    python bench/joint_orders.py --run runs/default --n 50 --ways "one pass, sampled, random order"

Every way is a list of medim.sample passes over the same unconditioned rows (only the domain tag given), from one
generator seeded as eval.py seeds its joint pairs: one pass over both halves, or a first pass over one half (the
other still [MASK]) and a second over the rest, or a first pass over both and a second that draws the report again
from the finished image. sample.py's two joint orders are two of these ways and give the same numbers as eval.py.
Rows already measured (OUT/joint_orders.jsonl) are kept; writes OUT/joint_orders.md.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import json
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import medim  # noqa: E402
from data.common import write_atomic  # noqa: E402
from eval import (evaluation_data, joint_metrics, largest_prevalence_gap, loader_options,  # noqa: E402
                  real_pair_reference)
from eval_image import ORACLE_STEPS, train_oracle  # noqa: E402
from data.synthetic import CXR_FINDINGS  # noqa: E402
from sample import RANDOM_ORDER_PASS, best_of, condition_on_prompt, load_run  # noqa: E402
from train_speed import load_average, set_threads  # noqa: E402

# both halves, one slot of each per step, random order, sampled tokens (sample.alternating's first pass)
TOGETHER = dict(RANDOM_ORDER_PASS, token_temperature=1.0, sample_steps=64, text_steps=64)
REPORT_BLOCKS = dict(token_temperature=1.0, text_block=16, threshold=0.7)
# way -> passes (what to fill, sampler settings over the run's): None = every mask, "image" / "text" = that half
# only, "report again" / "image again" = mask the generated report (image) and fill it from the other half, "image half
# again" = mask a random half of the generated image codes, "image again, best of K" = draw the image K times from the
# report and keep the one beside which the model finds the report most likely (sample.best_of)
WAYS = {
    "one pass, argmax, most confident first (the other tasks' sampler)": [(None, {})],
    "one pass, sampled, most confident first": [(None, dict(TOGETHER, temperature=1.0))],
    "one pass, sampled, Gumbel confidence noise 3": [(None, dict(TOGETHER, temperature=3.0))],
    "one pass, sampled, random order": [(None, TOGETHER)],
    "image first (sampled, most confident first), then the report (argmax)": [("image", dict(token_temperature=1.0)),
                                                                              (None, {})],
    "report first, left to right, sampled (report_first)": [("text", dict(token_temperature=1.0)), (None, {})],
    "report first in random order, then the image": [("text", TOGETHER), (None, {})],
    "random order together, then the report from the image, argmax": [(None, TOGETHER), ("report again", {})],
    "random order together, then the report from the image, sampled":
        [(None, TOGETHER), ("report again", dict(token_temperature=1.0))],
    "the same, then the image again from the report (joint_order alternating)":
        [(None, TOGETHER), ("report again", dict(token_temperature=1.0)), ("image again", {})],
    # alternating's variants; REPORT_BLOCKS is today's default report decoder, for runs trained before it
    "alternating, the report pass in blocks of 16 with threshold 0.7":
        [(None, TOGETHER), ("report again", REPORT_BLOCKS), ("image again", {})],
    "alternating with 32 random-order steps, the report pass in blocks":
        [(None, dict(TOGETHER, sample_steps=32, text_steps=32)), ("report again", REPORT_BLOCKS), ("image again", {})],
    "alternating, the image pass guided at 4":
        [(None, TOGETHER), ("report again", dict(token_temperature=1.0)), ("image again", dict(cfg_scale=4.0))],
    "alternating, the image pass in 32 steps":
        [(None, TOGETHER), ("report again", dict(token_temperature=1.0)), ("image again", dict(sample_steps=32))],
    "alternating, the image pass remasked 4 x 10%":
        [(None, TOGETHER), ("report again", dict(token_temperature=1.0)), ("image again", dict(remask_steps=4))],
    "alternating, the image pass sampled (token temperature 1)":
        [(None, TOGETHER), ("report again", REPORT_BLOCKS), ("image again", dict(token_temperature=1.0))],
    "alternating, the image pass on a random half of the image":
        [(None, TOGETHER), ("report again", REPORT_BLOCKS), ("image half again", {})],
    "alternating, the image pass best of 2 by the report's likelihood":
        [(None, TOGETHER), ("report again", REPORT_BLOCKS), ("image again, best of 2", {})],
    "alternating, the image pass best of 4 by the report's likelihood":
        [(None, TOGETHER), ("report again", REPORT_BLOCKS), ("image again, best of 4", {})],
    # the first pass's reports are nearer the prior than its images: keep them and draw the image from them first
    "random order together, then the image from the report":
        [(None, TOGETHER), ("image again", {})],
    "random order together, then the image from the report, then the report from the image":
        [(None, TOGETHER), ("image again", {}), ("report again", REPORT_BLOCKS)],
    "two rounds of alternating": [(None, TOGETHER), ("report again", dict(token_temperature=1.0)), ("image again", {}),
                                  ("report again", dict(token_temperature=1.0)), ("image again", {})],
}


def draw(model, tok, passes, sampler, n, seed, device="cpu"):
    """n unconditional CXR pairs through the passes. Returns (images, reports)."""
    seg, legal = tok.vocab.segment_ids.to(device), tok.vocab.legal.to(device)
    x = condition_on_prompt(tok, n, "cxr").to(device)
    again = {"report again": (x == tok.vocab.mask_id) & (seg == medim.TEXT),
             "image again": (x == tok.vocab.mask_id) & (seg == medim.IMAGE)}
    gen = torch.Generator(device=device).manual_seed(seed)
    for fill, settings in passes:
        if fill and fill.startswith("image again, best of "):  # k images drawn, the one its report is likeliest beside
            x = best_of(model, x.masked_fill(again["image again"], tok.vocab.mask_id), seg, legal,
                        replace(sampler, **settings), gen, k=int(fill.rsplit(" ", 1)[1]))
            continue
        if fill == "image half again":  # half the codes stay as they were (SDEdit-like): the rest redrawn from the report
            half = torch.rand(x.shape, generator=gen, device=device) < 0.5
            x = x.masked_fill(again["image again"] & half, tok.vocab.mask_id)
        elif fill in again:
            x = x.masked_fill(again[fill], tok.vocab.mask_id)
        part = {"image": medim.IMAGE, "text": medim.TEXT}.get(fill)
        x = medim.sample(model, x, seg, legal, replace(sampler, **settings), generator=gen, fill=part)
    if (x == tok.vocab.mask_id).any():  # a one-half pass last: the rest as generate would fill it
        x = medim.sample(model, x, seg, legal, sampler, generator=gen)
    out = [tok.decode(row) for row in x.cpu().numpy()]
    return [im for _, im, _ in out], [r for r, _, _ in out]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained run on --data synthetic (CXR)")
    p.add_argument("--out", default="", help="default: RUN/joint_orders")
    p.add_argument("--n", type=int, default=200, help="pairs per way (default 200, as eval.py)")
    p.add_argument("--ways", default="", help="';'-separated subset of the way names (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    ways = [w.strip() for w in args.ways.split(";") if w.strip()] or list(WAYS)
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        raise SystemExit(f"error: --ways: unknown {unknown}; expected some of {list(WAYS)}")
    model, tok, sampler, cfg = load_run(args.run, device=args.device)
    if cfg.get("data", "synthetic") != "synthetic":
        raise SystemExit(f"error: --run {args.run} was trained on {cfg.get('data')!r}: pairs are judged by the synthetic "
                         f"CXR oracle and labeler, so it needs a run on --data synthetic")
    out = args.out or os.path.join(args.run, "joint_orders")
    os.makedirs(out, exist_ok=True)
    rows_path = os.path.join(out, "joint_orders.jsonl")
    done = {}
    if os.path.exists(rows_path):
        done = {r["way"]: r for r in map(json.loads, open(rows_path)) if r["n"] == args.n}
    pairs, train = evaluation_data("synthetic", data_dir="", image_size=cfg.get("image_size", 64), seed=cfg.get("seed", 0),
                                   options=loader_options(False, cfg.get("data_options", "")), n_eval=args.n)
    oracle = train_oracle(train["cxr"], CXR_FINDINGS, os.path.join(args.run, "oracle_cxr"), seed=cfg.get("seed", 0),
                          steps=cfg.get("oracle_steps", ORACLE_STEPS))
    reference = real_pair_reference(pairs, train["cxr"], oracle, CXR_FINDINGS, "cxr", cfg.get("seed", 0))
    for way in ways:
        if way in done:
            continue
        t0 = time.perf_counter()
        images, reports = draw(model, tok, WAYS[way], sampler, args.n, seed=cfg.get("seed", 0) + 2, device=args.device)
        m = joint_metrics(images, reports, reference)
        done[way] = {"way": way, "n": args.n, "seconds": round(time.perf_counter() - t0, 1),
                     "distinct": m["distinct_reports"], "gap": m["prevalence_max_gap"],
                     "kappa": m["coherence"]["kappa"], "f1": m["coherence"]["f1_macro"],
                     "prevalence": m["prevalence"], "examples": reports[:3]}
        with open(rows_path, "a") as f:
            f.write(json.dumps(done[way]) + "\n")
        print(f"{way}: distinct {m['distinct_reports']:.2f}, gap {m['prevalence_max_gap']:.3f}, "
              f"kappa {m['coherence']['kappa']:.3f} ({done[way]['seconds']:.0f} s, {args.device}, {threads} threads, "
              f"load {load_average()})", flush=True)
    lines = ["| how the pair is drawn | distinct reports | prevalence gap | kappa | F1 | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {w} | {done[w]['distinct']:.0%} | {done[w]['gap']:.3f} | {done[w]['kappa']:.3f} | {done[w]['f1']:.3f} | "
              f"{done[w]['seconds']:.0f} |" for w in WAYS if w in done]
    floor = largest_prevalence_gap(reference["image_labels_real"], reference["report_labels_real"], reference["prior"])
    table = (f"{args.run}, {args.n} unconditional pairs per way; the largest prevalence gap of {len(pairs)} real test "
             f"pairs, read the same way: {floor:.3f}\n\n" + "\n".join(lines) + "\n")
    write_atomic(os.path.join(out, "joint_orders.md"), lambda f: f.write(table.encode()))
    print(table + f"\nwrote {os.path.join(out, 'joint_orders.md')}")


if __name__ == "__main__":
    main()
