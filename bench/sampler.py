"""Faster decoders side by side: quality, forwards and time of medim.SamplerConfig's options on trained runs.

    python bench/sampler.py --runs runs/default --out docs/results/sampler            # every setting, 200 test pairs
    python bench/sampler.py --runs runs/a runs/b --n 50 --settings today,threshold-0.9 --out /tmp/sampler

For each run (sample.load_run: EMA weights and the run's own sampler settings) and each setting in SETTINGS (the run's
sampler with a few fields changed), both directions are generated on the first --n test pairs per domain, loaded as
eval.py --run loads them (eval.evaluation_data), with eval.evaluate's seeds, and scored with eval.evaluate's headline
numbers: image -> report label macro-F1 and BLEU-4, report -> image oracle label macro-F1 and FD-oracle (synthetic data
only: the oracle needs ground-truth findings). Beside them: the denoiser forwards of each direction, counted by a
forward hook on the model (one guided forward is one call on 2B rows), as batched calls and as the mean per sample (a
finished row leaves the batch, so that is what a sample costs alone and what the time follows), and the wall time of
sample.generate (the VQ decode of the images included), as a speed-up over the run's own decoder ("today") measured in
the same process. Each (run, setting) is written to OUT/rows/ as soon as it is done and skipped when it is already
there, so an interrupted measurement resumes; the table (sampler.md, sampler.json) and the plot (sampler.png: label F1
against forwards per sample, one panel per direction) are rebuilt from all rows at the end.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from data.common import write_atomic  # noqa: E402
from eval import evaluation_data, label_metrics, loader_options, report_findings  # noqa: E402
from eval_image import ORACLE_STEPS, fd_oracle, train_oracle  # noqa: E402
from eval_text import report_metrics  # noqa: E402
from sample import condition_on_images, condition_on_reports, generate, load_run  # noqa: E402
from train_speed import load_average, set_threads, synchronize  # noqa: E402

# name -> the SamplerConfig fields changed from the run's own settings (docs/paper-notes.md "Sampling")
SETTINGS = {
    "today": {},
    "threshold-0.9": dict(threshold=0.9, image_threshold=0.9),  # Fast-dLLM's default threshold, both modalities
    "threshold-0.7": dict(threshold=0.7, image_threshold=0.7),
    "threshold-0.5": dict(threshold=0.5, image_threshold=0.5),
    "block-8": dict(text_block=8),                          # LLaDA blocks, by confidence inside
    "block-16": dict(text_block=16),
    "block-8-threshold-0.9": dict(text_block=8, threshold=0.9, image_threshold=0.9),
    "block-16-threshold-0.9": dict(text_block=16, threshold=0.9, image_threshold=0.9),
    "block-16-threshold-0.8": dict(text_block=16, threshold=0.8, image_threshold=0.8),
    "block-16-threshold-0.7": dict(text_block=16, threshold=0.7, image_threshold=0.7),
    "block-32-threshold-0.9": dict(text_block=32, threshold=0.9, image_threshold=0.9),
    "block-32-threshold-0.7": dict(text_block=32, threshold=0.7, image_threshold=0.7),
    "block-32-text-threshold-0.8": dict(text_block=32, threshold=0.8),  # the report only, images as today
    "text-threshold-0.8": dict(threshold=0.8),
    "remask-4x0.1": dict(remask_steps=4, remask_ratio=0.1),  # ReMDM-loop: 4 extra forwards
    "image-steps-12": dict(sample_steps=12),
    "image-steps-8": dict(sample_steps=8),
}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="trained run directories (each holds ckpt.pt)")
    p.add_argument("--names", default="", help="comma-separated names of the runs (default: their directory names)")
    p.add_argument("--n", type=int, default=200, help="test pairs per domain (default 200)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from: {', '.join(SETTINGS)}")
    p.add_argument("--out", default="sampler_bench", help="output folder (default sampler_bench)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    args = p.parse_args(argv)
    args.settings = args.settings.split(",")
    if unknown := [s for s in args.settings if s not in SETTINGS]:
        p.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    args.names = args.names.split(",") if args.names else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(args.names) != len(args.runs) or len(set(args.names)) != len(args.names):
        p.error(f"--names: need one distinct name per run, got {args.names} for {len(args.runs)} runs")
    if args.n < 2:
        p.error(f"--n must be >= 2 (FD-oracle compares two halves), got {args.n}")
    return args


class ForwardCounter:
    """Counts a model's forward calls and the rows they ran on, with a hook, so sample() keeps its signature."""

    def __init__(self, model):
        self.calls = self.rows = 0
        self.handle = model.register_forward_hook(self.count)

    def count(self, module, inputs, output):
        self.calls += 1
        self.rows += inputs[0].shape[0]


def timed_generate(model, tok, x, sampler, seed, device, guided):
    """One sample.generate call: (decoded rows, forwards, forwards per sample, seconds). Forwards per sample is the mean
    number of forwards a row took part in (what it would cost alone: done rows leave the batch), a guided row counting
    once for its two halves."""
    counter = ForwardCounter(model)
    synchronize(device)
    t0 = time.perf_counter()
    rows = generate(model, tok, x, sampler, seed=seed)
    synchronize(device)
    seconds = time.perf_counter() - t0
    counter.handle.remove()
    return rows, counter.calls, counter.rows / (len(x) * (2 if guided else 1)), seconds


def quality(pairs, train_pairs, reports, images, *, run_dir, seed, oracle_steps) -> dict:
    """eval.evaluate's headline numbers for these generated reports and images (one per pair), mean over domains."""
    per_domain = []
    for domain in sorted({p.domain for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p.domain == domain]
        refs, gens = [pairs[i].report for i in idx], [reports[i] for i in idx]
        synthetic = all(pairs[i].uid.startswith("synthetic") for i in idx)  # ground truth and an oracle exist
        pred, true, names = report_findings(gens, [pairs[i] for i in idx])
        m = {"i2t_f1": label_metrics(pred, true, names)["f1_macro"], "bleu4": report_metrics(gens, refs)["bleu4"]}
        if synthetic:
            oracle = train_oracle(train_pairs[domain], names, os.path.join(run_dir, f"oracle_{domain}"), seed=seed,
                                  steps=oracle_steps)
            gimgs, rimgs = [images[i] for i in idx], [pairs[i].image for i in idx]
            m["t2i_f1"] = label_metrics(np.asarray(oracle.predict(gimgs)), true, names)["f1_macro"]
            half = len(rimgs) // 2  # eval.evaluate's halves: real first half against images from the second's reports
            m["fd_oracle"] = fd_oracle(oracle, rimgs[:half], gimgs[half:2 * half])
        per_domain.append(m)
    return {k: float(np.mean([m[k] for m in per_domain])) for k in per_domain[0] if all(k in m for m in per_domain)}


def measure(model, tok, base_sampler, run, run_dir, pairs, train_pairs, setting, device) -> dict:
    """One (run, setting) row: the quality numbers, forwards and seconds of both directions."""
    sampler = replace(base_sampler, **SETTINGS[setting])
    images, reports, domains = [p.image for p in pairs], [p.report for p in pairs], [p.domain for p in pairs]
    seed = run["seed"]  # eval.evaluate's seeds: seed for image -> report, seed + 1 for report -> image
    i2t, i2t_fwd, i2t_per, i2t_s = timed_generate(model, tok, condition_on_images(tok, images, domains), sampler, seed,
                                                  device, guided=sampler.i2t_cfg_scale != 0)
    t2i, t2i_fwd, t2i_per, t2i_s = timed_generate(model, tok, condition_on_reports(tok, reports, domains), sampler,
                                                  seed + 1, device, guided=sampler.cfg_scale != 0)
    q = quality(pairs, train_pairs, [r for r, _, _ in i2t], [im for _, im, _ in t2i], run_dir=run_dir, seed=seed,
                oracle_steps=run.get("oracle_steps") or ORACLE_STEPS)
    return dict(setting=setting, sampler=asdict(sampler), n_pairs=len(pairs), **q, i2t_forwards=i2t_fwd,
                i2t_per_sample=i2t_per, i2t_s=i2t_s, t2i_forwards=t2i_fwd, t2i_per_sample=t2i_per, t2i_s=t2i_s,
                load=load_average())


#### Table and plot

def cell(value, fmt=".3f") -> str:
    return "-" if value is None else format(value, fmt)  # "-": report -> image on real data (no oracle)


def mean_table(rows_by_run: dict) -> list[str]:
    """With several runs: each setting's mean over the runs that measured it, and the change from today's decoder
    averaged over the same runs (forwards per sample as a share of today's)."""
    settings = list(dict.fromkeys(r["setting"] for rows in rows_by_run.values() for r in rows))
    by = {(name, r["setting"]): r for name, rows in rows_by_run.items() for r in rows}
    keys = ("i2t_f1", "bleu4", "i2t_per_sample", "t2i_f1", "fd_oracle", "t2i_per_sample")
    out = [f"**mean over {len(rows_by_run)} runs** (Δ: against today's decoder on the same runs)", "",
           "| setting | runs | i2t F1 (Δ) | BLEU-4 (Δ) | i2t forwards per sample (share of today's) | t2i F1 (Δ) | "
           "FD-oracle (Δ) | t2i forwards per sample (share) |", "|---" * 8 + "|"]
    for setting in settings:
        runs = [n for n in rows_by_run if (n, setting) in by and (n, "today") in by]
        if not runs:
            continue
        mean = lambda k, s=setting: float(np.mean([np.nan if by[(n, s)].get(k) is None else by[(n, s)][k] for n in runs]))
        cells = []
        for k in keys:
            v, base = mean(k), mean(k, "today")
            fmt = ".2f" if k == "fd_oracle" else ".1f" if k.endswith("per_sample") else ".3f"
            change = f"{v / base:.2f}x" if k.endswith("per_sample") else f"{v - base:+{fmt}}"
            cells.append("-" if np.isnan(v) else f"{v:{fmt}} ({change})")
        out.append(f"| {setting} | {len(runs)} | " + " | ".join(cells) + " |")
    return out + [""]


def markdown(rows_by_run: dict) -> str:
    """One table per run, and their mean when there are several. Forwards: batched calls (mean per sample); seconds:
    wall time (speed-up = today's / this)."""
    out = mean_table(rows_by_run) if len(rows_by_run) > 1 else []
    for name, rows in rows_by_run.items():
        today = next((r for r in rows if r["setting"] == "today"), None)
        speedup = lambda r, d: "" if today is None else f" ({today[d + '_s'] / r[d + '_s']:.2f}x)"
        out += [f"**{name}** ({rows[0]['n_pairs']} test pairs each way; load average {rows[0].get('load', '?')})", "",
                "| setting | i2t F1 | BLEU-4 | t2i F1 | FD-oracle | i2t forwards (per sample) | t2i forwards "
                "(per sample) | i2t s (speed-up) | t2i s (speed-up) |", "|---" * 9 + "|"]
        for r in rows:
            out.append(f"| {r['setting']} | {cell(r['i2t_f1'])} | {cell(r['bleu4'])} | {cell(r.get('t2i_f1'))} | "
                       f"{cell(r.get('fd_oracle'), '.2f')} | {r['i2t_forwards']} ({r['i2t_per_sample']:.1f}) | "
                       f"{r['t2i_forwards']} ({r['t2i_per_sample']:.1f}) | {r['i2t_s']:.1f}{speedup(r, 'i2t')} | "
                       f"{r['t2i_s']:.1f}{speedup(r, 't2i')} |")
        out.append("")
    return "\n".join(out)


PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def plot(rows_by_run: dict, path: str):
    """Two panels (image -> report, report -> image): label F1 (0 to 1) against forwards per sample (from 0), one point
    per run and setting, numbered by setting (key below), one colour per run. PIL only, as bench/learning_curve.py."""
    settings = list(dict.fromkeys(r["setting"] for rows in rows_by_run.values() for r in rows))
    key = [f"{i + 1} {s}" for i, s in enumerate(settings)]
    key_lines = [" | ".join(key[i:i + 6]) for i in range(0, len(key), 6)]
    W, H, left, gap = 460, 400, 50, 30
    img = Image.new("RGB", (2 * W + gap, H + 14 * (len(rows_by_run) + len(key_lines)) + 10), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()  # it has no arrow glyph: "->"
    for panel, direction in enumerate(("i2t", "t2i")):
        x0 = panel * (W + gap)
        x_max = 1.1 * max([r[direction + "_per_sample"] for rows in rows_by_run.values() for r in rows] + [1])
        px = lambda f: x0 + left + (W - left - 20) * f / x_max
        py = lambda v: 30 + (H - 70) * (1 - max(0.0, min(1.0, v)))
        d.line([(x0 + left, 30), (x0 + left, py(0)), (x0 + W - 20, py(0))], fill="black")
        title = "image->report" if direction == "i2t" else "report->image"
        d.text((x0 + left, 8), f"{title}: label F1 against forwards per sample", fill="black", font=font)
        for k in range(0, 11, 2):
            d.text((x0 + left - 28, py(k / 10) - 5), f"{k / 10:.1f}", fill="black", font=font)
        tick = next(m * 10 ** e for e in range(8) for m in (1, 2, 5) if m * 10 ** e >= x_max / 6)
        for f in range(0, int(x_max) + 1, tick):
            d.text((px(f) - 6, py(0) + 5), str(f), fill="black", font=font)
        d.text((x0 + W // 2 - 50, py(0) + 20), "forwards per sample", fill="black", font=font)
        for i, rows in enumerate(rows_by_run.values()):
            at = {}  # one label per spot: settings that land on the same point share it
            for r in rows:
                if r.get(direction + "_f1") is not None:
                    spot = (round(px(r[direction + "_per_sample"])), round(py(r[direction + "_f1"])))
                    at.setdefault(spot, []).append(str(settings.index(r["setting"]) + 1))
            for (x, y), labels in at.items():
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=PALETTE[i % len(PALETTE)])
                d.text((x + 5, y - 5), ",".join(labels), fill=(90, 90, 90), font=font)
    y = H
    for i, name in enumerate(rows_by_run):
        d.rectangle([left, y, left + 10, y + 10], fill=PALETTE[i % len(PALETTE)])
        d.text((left + 16, y), name, fill="black", font=font)
        y += 14
    for line in key_lines:
        d.text((left, y), line, fill="black", font=font)
        y += 14
    write_atomic(path, lambda f: img.save(f, format="PNG"))


def write_json(path, obj):
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    os.makedirs(os.path.join(args.out, "rows"), exist_ok=True)
    row_path = lambda name, setting: os.path.join(args.out, "rows", f"{name}__{setting}.json")
    rows_by_run = {}
    for name, run_dir in zip(args.names, args.runs):
        todo = [s for s in args.settings if not os.path.exists(row_path(name, s))]
        if todo:
            model, tok, sampler, run = load_run(run_dir, args.device)
            options = loader_options(run.get("shuffle_sentences", False), run.get("data_options", ""))
            pairs, train_pairs = evaluation_data(run["data"], data_dir=run["data_dir"], image_size=run["image_size"],
                                                 seed=run["seed"], options=options, n_eval=args.n)
            print(f"{name}: {len(pairs)} test pairs, settings to measure: {', '.join(todo)} | {threads} threads on "
                  f"{args.device}, load {load_average()}")
            warm = pairs[:2]  # untimed: the first forwards of a process are slower, whichever setting comes first
            generate(model, tok, condition_on_images(tok, [p.image for p in warm], [p.domain for p in warm]), sampler)
            for setting in todo:
                row = measure(model, tok, sampler, run, run_dir, pairs, train_pairs, setting, args.device)
                write_json(row_path(name, setting), row)
                print(f"  {setting}: i2t F1 {cell(row['i2t_f1'])}, {row['i2t_per_sample']:.1f} forwards per sample, "
                      f"{row['i2t_s']:.1f} s | t2i F1 {cell(row.get('t2i_f1'))}, {row['t2i_per_sample']:.1f} forwards "
                      f"per sample, {row['t2i_s']:.1f} s")
        rows_by_run[name] = [json.load(open(row_path(name, s))) for s in args.settings]
    table = markdown(rows_by_run)
    write_atomic(os.path.join(args.out, "sampler.md"), lambda f: f.write(table.encode()))
    write_json(os.path.join(args.out, "sampler.json"), rows_by_run)
    plot(rows_by_run, os.path.join(args.out, "sampler.png"))
    print(table)
    print(f"wrote {args.out}/sampler.md, sampler.json, sampler.png (rows in {args.out}/rows)")
    return rows_by_run


if __name__ == "__main__":
    main()
