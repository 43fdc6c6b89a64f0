"""Learning curves: label macro-F1 of image→report and report→image against wall-clock minutes, from train.py's curve.jsonl.

    python train.py --out runs/a --eval-every 250          # appends one row per evaluation to runs/a/curve.jsonl
    python bench/learning_curve.py runs/a runs/b --out docs/learning_curve.png
    python bench/learning_curve.py runs/a runs/b --x step       # runs timed on different machines: compare by step
    python bench/learning_curve.py runs/a runs/b --loss --x step --out loss.png   # training loss, from log.txt

Each row of curve.jsonl holds the step, the minutes since the run started (tokenizers included) and the metrics of a
quick evaluation on the first n_eval test pairs (EMA weights). Writes the PNG and prints a markdown table per run.
--loss plots the training loss of the text and image tokens instead, as log.txt records it every --log-every steps
(one batch each: noisy, but the same batches and masks for runs of one seed).
"""
import argparse
import json
import math
import os
import re

from PIL import Image, ImageDraw, ImageFont

SERIES = [("i2t_f1", "image->report F1", "solid"), ("t2i_f1", "report->image F1", "dashed")]  # no arrow glyph in PIL's font
LOSS_SERIES = [("text", "text loss", "solid"), ("image", "image loss", "dashed")]
LOG_LINE = re.compile(r"step (\d+) \| loss [\d.]+ \| text ([\d.]+) \| image ([\d.]+)")  # train.py's log lines
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def read_curve(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "curve.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} not found (train with --eval-every N to record a learning curve)")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    final = os.path.join(run_dir, "metrics.json")
    if os.path.exists(final):  # the end-of-run evaluation is the last point of the curve
        m = json.load(open(final))
        total = m.get("train", {}).get("total_seconds")
        if total and "i2t" in m:
            rows.append({"step": m["train"]["steps"], "minutes": round(total / 60, 2), "i2t_f1": m["i2t"]["label_f1_macro"],
                         "bleu4": m["i2t"].get("bleu4", float("nan")), **({"t2i_f1": m["t2i"]["label_f1_macro"],
                                                                           "t2i_acc": m["t2i"]["label_acc"]} if "t2i" in m else {})})
    return rows


def read_loss(run_dir: str) -> list[dict]:
    """{step, text, image} per logged step of run_dir/log.txt (the last run of the file, if it was resumed)."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} not found (train.py writes it in every run directory)")
    rows = {}
    for line in open(path):
        if m := LOG_LINE.match(line):
            rows[int(m.group(1))] = {"step": int(m.group(1)), "text": float(m.group(2)), "image": float(m.group(3))}
    if not rows:
        raise SystemExit(f"error: {path} holds no 'step N | loss ... | text ... | image ...' line")
    return [rows[k] for k in sorted(rows)]


def markdown(name: str, rows: list[dict]) -> str:
    out = [f"**{name}**", "", "| step | minutes | i2t label F1 | t2i label F1 | t2i label acc | BLEU-4 |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['step']} | {r['minutes']:.1f} | {r.get('i2t_f1', float('nan')):.3f} | {r.get('t2i_f1', float('nan')):.3f} | "
                   f"{r.get('t2i_acc', float('nan')):.3f} | {r.get('bleu4', float('nan')):.3f} |")
    return "\n".join(out)


def plot(curves: dict, path: str, target: float | None = 0.9, x: str = "minutes", series=SERIES, y_max: float = 1.0):
    """x: "minutes" (wall clock since the run started) or "step" (to compare runs timed on different machines);
    series: (key, label, solid | dashed) per line of each run; the y axis runs from 0 to y_max."""
    W, left, right, top = 820, 60, 20, 30
    bottom = 52 + 14 * len(curves)  # axis labels, then one legend line per run
    H = 370 + bottom
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x_max = max((r[x] for rows in curves.values() for r in rows), default=1.0) or 1.0
    px = lambda m: left + (W - left - right) * m / x_max
    py = lambda v: H - bottom - (H - top - bottom) * max(0.0, min(1.0, v / y_max))
    d.line([(left, top), (left, H - bottom), (W - right, H - bottom)], fill="black")
    for k in range(0, 11, 2):
        d.text((left - 28, py(k * y_max / 10) - 5), f"{k * y_max / 10:.1f}", fill="black", font=font)
        d.line([(left - 3, py(k * y_max / 10)), (left, py(k * y_max / 10))], fill="black")
    tick = next(m * 10 ** e for e in range(8) for m in (1, 2, 5) if m * 10 ** e >= x_max / 8)  # a round tick spacing
    for k in range(0, int(x_max) + 1, tick):
        d.text((px(k) - 4, H - bottom + 5), str(k), fill="black", font=font)
    x_title = "minutes since start (whole pipeline)" if x == "minutes" else "training step"
    d.text((W // 2 - 60, H - bottom + 20), x_title, fill="black", font=font)
    if target is not None:
        d.line([(left, py(target)), (W - right, py(target))], fill=(180, 180, 180))
        d.text((W - right - 60, py(target) - 12), f"target {target}", fill=(120, 120, 120), font=font)
    legend_y = H - bottom + 38
    for i, (name, rows) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        for key, _, style in series:
            pts = [(px(r[x]), py(r[key])) for r in rows if key in r]
            for a, b in zip(pts, pts[1:]):
                if style == "solid":
                    d.line([a, b], fill=color, width=2)
                else:  # dashed: draw every other tenth of the segment
                    for s in range(0, 10, 2):
                        f0, f1 = s / 10, (s + 1) / 10
                        d.line([(a[0] + (b[0] - a[0]) * f0, a[1] + (b[1] - a[1]) * f0),
                                (a[0] + (b[0] - a[0]) * f1, a[1] + (b[1] - a[1]) * f1)], fill=color, width=2)
            for p in pts:
                d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
        d.rectangle([left, legend_y + 14 * i, left + 10, legend_y + 14 * i + 10], fill=color)
        styles = ", ".join(f"{style}: {label}" for _, label, style in series)
        d.text((left + 16, legend_y + 14 * i), f"{name}  ({styles})", fill="black", font=font)
    img.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories holding curve.jsonl")
    p.add_argument("--out", default="learning_curve.png")
    p.add_argument("--names", default="", help="comma-separated legend names (default: the directory names)")
    p.add_argument("--x", choices=["minutes", "step"], default="minutes", help="horizontal axis")
    p.add_argument("--loss", action="store_true", help="the training loss of text and image tokens from log.txt")
    args = p.parse_args(argv)
    names = args.names.split(",") if args.names else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names gives {len(names)} names for {len(args.runs)} runs")
    if args.loss:
        if args.x != "step":
            p.error("--loss plots against the training step: add --x step")
        curves = {n: read_loss(r) for n, r in zip(names, args.runs)}
        y_max = max(3.0, min(10.0, max(r[k] for rows in curves.values() for r in rows[1:] for k in ("text", "image"))))
        plot(curves, args.out, target=None, x="step", series=LOSS_SERIES, y_max=float(math.ceil(y_max)))
        print(f"wrote {args.out} (the first step's losses are above the axis when they exceed {y_max:.0f})")
        return
    curves = {n: read_curve(r) for n, r in zip(names, args.runs)}
    plot(curves, args.out, x=args.x)
    for n, rows in curves.items():
        print(markdown(n, rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
