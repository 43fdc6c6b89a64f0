"""Reproduce the paper's ablations (MeDiM Tab. 4, App. B) on the synthetic data: one command, several seeds, a table and a chart.

    python bench/ablations.py                       # 9 rows x 3 seeds at today's default recipe (see below for the time)
    python bench/ablations.py --seeds 0 --steps 300 # a quick look
    python bench/ablations.py --jobs 27 --train-args "--device cuda"   # a GPU: every run at once
    python bench/ablations.py --init-from smollm2 --pair-args "--preset smollm2" --steps 0   # pretrained vs random
    python bench/ablations.py --variant "a=--lr 1e-3" --variant "b=--lr 3e-3" --jobs 4   # any sweep of train.py flags
    python bench/ablations.py --seeds 0 1 2 --table-only   # the table so far, missing runs named

Variants (each one flag of train.py): full MeDiM (bidirectional, AdaLN), --causal ("w/ causal mask"), --time-cond add
("w/o AdaLN designs": the timestep embedding added to the tokens), --time-cond none ("w/o timestep embedding").
With the image first in the sequence a causal model draws the image without seeing the report, so two more rows put the
report first (--text-first), bidirectional and causal: they tell "the condition is invisible" apart from "causal
attention denoises worse". The three time-conditioning rows run again at half the steps (HALF_BUDGET), to see whether
their gap grows or shrinks with training. Every variant of one seed reuses that seed's tokenizers (train.py lays them
out for --text-first), so only the diffusion model and the order of its sequence differ.

The table gives mean ± sample std over seeds, and below it each row's per-seed paired difference against its baseline
(BASELINE: the full model at the same layout and budget; for --variant sweeps the first variant), with the 95%
t-interval of the mean and a sign count, so "no difference" and "worse" can be told apart. The paper's image columns
(mFID, mIS) need Inception weights and real images; here FD-oracle, the Fréchet distance in the synthetic data's
oracle classifier's features (FID's construction, the oracle in Inception's place), is the image-quality column.

--init-from NAME_OR_DIR asks Tab. 4's "w/o pretrained MLLM weight" question like for like instead: the LLM's first
blocks from its pretrained weights against the same architecture, tokenizer (the LLM's, trimmed), steps and seed from
train.py --random-init; the d=128 default (our BPE) stays beside them as a reference row (--no-reference drops it).
The table then adds the per-seed paired differences pretrained − random with their mean ± std.

Writes OUT/ablations.md (mean ± sample std over seeds) and OUT/ablations.png (bar chart). The sweep is resumable:
finished runs (those with a metrics.json) are read back, not rerun, and a run that was stopped continues from its last
checkpoint (train.py --resume: the same run, bit for bit, on a CPU), so the table can be built over several sittings.
--table-only rebuilds the table from what is there and names the runs still missing. --record DIR carries a sweep
from one machine to the next: each finished run's config.json, log.txt and metrics.json (a few kB) are copied to
DIR/RUN, and a run found there counts as finished, so committing DIR keeps the finished runs when OUT (checkpoints,
caches) is gone. A run trained elsewhere with the same seed and flags, such as `python train.py --seed 0`, joins the
table when its three files are copied to DIR under the row's name. Two sweeps may share OUT when --seeds or
--variants keep them on different runs (one seed's shared tokenizers are trained by whichever starts first; the
other waits for them). Runs are evaluated without the joint pairs (--no-eval-joint: the table does not read them,
and they triple the evaluation's sampling).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.stats
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from train import TrainConfig  # noqa: E402

DEFAULT_STEPS = TrainConfig.steps  # train.py's default run, today's recipe
VARIANTS = {
    "MeDiM (bidirectional + AdaLN)": [],
    "w/ causal mask": ["--causal"],
    "w/o AdaLN (additive time)": ["--time-cond", "add"],
    "w/o timestep embedding": ["--time-cond", "none"],
    "MeDiM (report first)": ["--text-first"],
    "w/ causal mask (report first)": ["--causal", "--text-first"],
    "MeDiM (half steps)": [],
    "w/o AdaLN (half steps)": ["--time-cond", "add"],
    "w/o timestep embedding (half steps)": ["--time-cond", "none"],
}
HALF_BUDGET = {"MeDiM (half steps)", "w/o AdaLN (half steps)", "w/o timestep embedding (half steps)"}  # steps // 2
FULL = "MeDiM (bidirectional + AdaLN)"
# each row's paired comparison: the full model at the same layout and budget (and each full model against the default)
BASELINE = {"w/ causal mask": FULL, "w/o AdaLN (additive time)": FULL, "w/o timestep embedding": FULL,
            "MeDiM (report first)": FULL, "w/ causal mask (report first)": "MeDiM (report first)",
            "MeDiM (half steps)": FULL, "w/o AdaLN (half steps)": "MeDiM (half steps)",
            "w/o timestep embedding (half steps)": "MeDiM (half steps)"}
PRETRAINED, RANDOM, REFERENCE = "pretrained LLM", "w/o pretrained MLLM weight", "d=128 default (reference)"
# (column title, metrics.json path, higher is better)
COLUMNS = [("i2t label F1", ("i2t", "label_f1_macro"), True), ("BLEU-1", ("i2t", "bleu1"), True),
           ("BLEU-2", ("i2t", "bleu2"), True), ("BLEU-3", ("i2t", "bleu3"), True), ("BLEU-4", ("i2t", "bleu4"), True),
           ("METEOR", ("i2t", "meteor"), True), ("ROUGE-L", ("i2t", "rouge_l"), True),
           ("t2i label acc", ("t2i", "label_acc"), True), ("t2i label F1", ("t2i", "label_f1_macro"), True),
           ("FD-oracle", ("t2i", "fd_oracle"), False)]


def run_train(args: list[str], log_path: str):
    with open(log_path, "a" if "--resume" in args else "w") as log:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"error: train.py {' '.join(args)} failed (exit {r.returncode}); see {log_path}")


def tokenizer_flags(flags: list[str]) -> list[str]:
    """The flags a variant's tokenizers depend on: none for our BPE, the LLM's (all but --random-init, so the pair
    shares one set, and --text-first, a layout train.py gives shared tokenizers itself) when it starts from an LLM or
    names a text tokenizer."""
    if "--init-from" in flags or "--text-tokenizer" in flags or any(f.startswith("--preset") for f in flags):
        return [f for f in flags if f not in ("--random-init", "--text-first")]
    return []


LOCK_POLL_S = 10.0  # how often a sweep waiting for another's tokenizers looks again


def make_tokenizers(tok_dir: str, seed: int, flags: list[str]):
    """A 1-step train.py run that leaves the tokenizers, the token cache and the oracle in tok_dir, once per seed.
    tok_dir.lock (created exclusively) is held while one sweep checks for them and trains them, so a second sweep on
    the same OUT and seed (other --variants) waits until they are whole (vqvae.pt alone appears before the oracle)."""
    lock, waited = tok_dir + ".lock", False
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            if not waited:
                print(f"seed {seed}: waiting for another sweep to finish {tok_dir} (delete {lock} if none is running)")
            waited = True
            time.sleep(LOCK_POLL_S)
    try:
        if not os.path.exists(os.path.join(tok_dir, "vqvae.pt")):
            print(f"seed {seed}: training the tokenizers once for all variants that share them")
            run_train(["--out", tok_dir, "--seed", str(seed), *flags, "--steps", "1", "--n-eval", "16",
                       "--sample-steps", "2", "--no-eval-joint"], tok_dir + ".log")
    finally:
        os.remove(lock)


def record_run(src: str, dst: str):
    """Copy a finished run's small files (config.json, log.txt, metrics.json) to dst, once."""
    if os.path.exists(os.path.join(dst, "metrics.json")):
        return
    os.makedirs(dst, exist_ok=True)
    for name in ("config.json", "log.txt", "metrics.json"):  # metrics.json last: it marks the copy complete
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def copy_tokenizers(src: str, dst: str):
    os.makedirs(dst, exist_ok=True)
    for name in ("vqvae.pt", "tokenizer.json", "vocab.json", "cache", "oracle_cxr", "oracle_path"):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(s) and not os.path.exists(d):
            shutil.copytree(s, d)
        elif os.path.isfile(s):
            shutil.copy(s, d)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=0, help="diffusion steps per run (before --scale); 0 = each run's "
                   f"own (its preset's, or train.py's default, {DEFAULT_STEPS}); the half-steps rows get half")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the training steps (use > 1 on GPUs)")
    p.add_argument("--init-from", default="", help="an HF LLM directory, a .gguf or smollm2: runs the pretrained vs "
                   "random-init pair (same architecture, tokenizer, steps, seeds) instead of the paper's variants")
    p.add_argument("--pair-args", default="", help="with --init-from: train.py flags for both runs of the pair, e.g. "
                   "'--preset smollm2' (its --init-from is replaced by this one)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="with --init-from: also run the d=128 default (our own BPE) as a reference row")
    p.add_argument("--reference-steps", type=int, default=-1,
                   help="steps of the reference row (-1 = as --steps, 0 = train.py's default); match the pair's wall time")
    p.add_argument("--variants", default="", help="comma-separated subset of the variant names (default: all)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run, e.g. '--n-eval 100'")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="replace the paper's variants by your own (repeat the flag), e.g. 'low lr=--lr 1e-3'")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (GPUs with spare memory; on a 2-core CPU keep 1)")
    p.add_argument("--record", default="", help="also keep each finished run's config.json, log.txt and "
                   "metrics.json in DIR/RUN, and count runs found there as finished (commit DIR to carry a sweep "
                   "across machines)")
    p.add_argument("--table-only", action="store_true", help="train nothing: the table of the runs already finished, "
                   "naming the missing ones")
    args = p.parse_args(argv)

    variants = dict(VARIANTS)
    if args.variant:
        if any("=" not in v for v in args.variant):
            p.error("--variant takes NAME=FLAGS, e.g. 'low lr=--lr 1e-3'")
        if args.init_from:
            p.error("--variant and --init-from ask different questions: give one of them")
        variants = {v.split("=", 1)[0]: v.split("=", 1)[1].split() for v in args.variant}
    scaled = lambda n: max(1, int(n * args.scale)) if n else 0  # 0: the run's own steps
    steps = {}
    if args.init_from:
        pair = [*args.pair_args.split(), "--init-from", args.init_from]
        variants = {PRETRAINED: pair, RANDOM: [*pair, "--random-init"]}
        if args.reference:
            variants[REFERENCE] = []
            steps[REFERENCE] = scaled(args.steps if args.reference_steps < 0 else args.reference_steps)
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            p.error(f"--variants: unknown {unknown}; choose from {list(variants)}")
        variants = {k: variants[k] for k in wanted}
    extra = args.train_args.split()
    if "--steps" in extra:
        p.error("--train-args: give the training steps with --steps (the half-steps rows are derived from it)")
    for name in HALF_BUDGET & set(variants):
        steps[name] = (scaled(args.steps) or DEFAULT_STEPS) // 2
    os.makedirs(args.out, exist_ok=True)
    run_dir = lambda name, seed: os.path.join(args.out, f"{slug(name)}_seed{seed}")

    kept_dir = lambda name, seed: os.path.join(args.record, os.path.basename(run_dir(name, seed)))

    def keep(name, seed):
        """With --record: copy the run's small files there if it finished in OUT."""
        if args.record and os.path.exists(os.path.join(run_dir(name, seed), "metrics.json")):
            record_run(run_dir(name, seed), kept_dir(name, seed))

    def finished(name, seed) -> str:
        """The metrics.json of a finished run, in OUT or in --record; '' if it has not finished."""
        places = [run_dir(name, seed)] + ([kept_dir(name, seed)] if args.record else [])
        found = [os.path.join(d, "metrics.json") for d in places if os.path.exists(os.path.join(d, "metrics.json"))]
        return found[0] if found else ""

    for seed in [] if args.table_only else args.seeds:
        tok_dirs = {}
        for flags in variants.values():
            key = tuple(tokenizer_flags(flags))
            if key not in tok_dirs:
                tok_dirs[key] = os.path.join(args.out, f"tokenizers{'_' + slug(' '.join(key)) if key else ''}_seed{seed}")
                make_tokenizers(tok_dirs[key], seed, [*extra, *key])

        def one(name, flags):
            out = run_dir(name, seed)
            if finished(name, seed):
                return
            if os.path.exists(os.path.join(out, "ckpt.pt")):  # stopped: continue from its last checkpoint
                print(f"seed {seed}: {name} (resumed) ...", flush=True)
                run_train(["--out", out, "--resume"], out + ".log")
            else:
                if os.path.exists(out):
                    shutil.rmtree(out)  # stopped before its first checkpoint: start it again
                copy_tokenizers(tok_dirs[tuple(tokenizer_flags(flags))], out)
                print(f"seed {seed}: {name} ...", flush=True)
                n = steps.get(name, scaled(args.steps))
                run_train(["--out", out, "--seed", str(seed), "--no-eval-joint", *(["--steps", str(n)] if n else []),
                           *extra, *flags], out + ".log")
            keep(name, seed)  # at once, so a sweep stopped later still has it

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda kv: one(*kv), variants.items()))
    results, missing = {name: {} for name in variants}, []  # {variant: {seed: metrics}}
    for name in variants:
        for seed in args.seeds:
            keep(name, seed)  # also runs that an earlier sweep without --record finished
            path = finished(name, seed)
            if path:
                results[name][seed] = json.load(open(path))
            else:
                missing.append(f"{name} seed {seed}")
    table = markdown_table(results)
    if PRETRAINED in results and RANDOM in results:
        table += f"\n\n{PRETRAINED} − {RANDOM}, paired by seed:\n\n" + paired_table(results, PRETRAINED, RANDOM)
    elif len(results) > 1:
        first = next(iter(results))
        pairs = [(name, BASELINE.get(name, first)) for name in results if name != first or name in BASELINE]
        table += ("\n\nEach row against its baseline, paired by seed (mean ± std of the per-seed differences [95% "
                  "t-interval] (seeds where the row is better)):\n\n" + paired_summaries(results, pairs))
    if missing:
        table += "\n\nMissing (not finished, not in the table): " + ", ".join(missing)
    cmd = "python bench/ablations.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(os.path.join(args.out, "ablations.md"), "w") as f:
        reference = f", the reference {steps[REFERENCE] or 'its default'}" if REFERENCE in steps else ""
        half = [steps[name] for name in variants if name in HALF_BUDGET]
        reference += f", the half-steps rows {half[0]}" if half else ""
        made = (f"the runs found in {args.out}, {len(args.seeds)} seeds (each run's steps are in its config.json)"
                if args.table_only else f"{len(args.seeds)} seeds, {scaled(args.steps) or 'each preset’s'} steps{reference}")
        f.write(f"`{cmd.strip()}` ({made})\n\n{table}\n")
    bar_chart(results, os.path.join(args.out, "ablations.png"))
    print(table)
    print(f"wrote {os.path.join(args.out, 'ablations.md')} and ablations.png")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def metric(m: dict, path: tuple) -> float:
    for k in path:
        m = m.get(k, {}) if isinstance(m, dict) else {}
    return float(m) if isinstance(m, (int, float)) else float("nan")


def markdown_table(results: dict) -> str:
    """results {variant: {seed: metrics}}: one row per variant, mean ± sample std over its seeds (n − 1 in the
    denominator, as the paired differences below; one seed shows its value alone), and n."""
    head = "| variant | n | " + " | ".join(c + (" ↑" if up else " ↓") for c, _, up in COLUMNS) + " |"
    rows = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    for name, runs in results.items():
        cells = []
        for _, path, _ in COLUMNS:
            v = np.array([metric(r, path) for r in runs.values()])
            v = v[~np.isnan(v)]
            if len(v) == 0:
                cells.append("-")
            elif len(v) == 1:
                cells.append(f"{v[0]:.3f}")
            else:
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}")
        rows.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def paired_summary(d: np.ndarray, higher_is_better: bool) -> str:
    """Per-seed differences d (n,) of one column: mean ± sample std, the 95% t-interval of the mean, and a sign count
    (seeds where a is better / n), so "no difference" and "worse" can be told apart."""
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return "-"
    better = int((d > 0).sum() if higher_is_better else (d < 0).sum())
    if len(d) < 2:
        return f"{d[0]:+.3f} ({better}/1 better)"
    half = scipy.stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} ± {d.std(ddof=1):.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] ({better}/{len(d)} better)"


def paired_differences(results: dict, a: str, b: str) -> tuple[list, np.ndarray]:
    """The seeds both a and b finished and the per-seed differences a − b of every column, (n_seeds, n_columns)."""
    seeds = sorted(set(results[a]) & set(results[b]))
    d = [[metric(results[a][s], path) - metric(results[b][s], path) for _, path, _ in COLUMNS] for s in seeds]
    return seeds, np.array(d, dtype=np.float64).reshape(len(seeds), len(COLUMNS))


def paired_summaries(results: dict, pairs: list) -> str:
    """One line per (row, baseline) in pairs: paired_summary of each column over the seeds both finished."""
    head = "| row − baseline | seeds | " + " | ".join(f"Δ {c}" for c, _, _ in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    for a, b in pairs:
        if b not in results:
            continue
        seeds, d = paired_differences(results, a, b)
        cells = [paired_summary(d[:, j], up) for j, (_, _, up) in enumerate(COLUMNS)]
        lines.append(f"| {a} − {b} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(results: dict, a: str, b: str) -> str:
    """Per-seed differences a − b of every column, over the seeds both finished (the runs of one seed share tokenizers
    and data order, so their difference cancels what the seed alone moves), then paired_summary per column."""
    seeds, d = paired_differences(results, a, b)
    head = "| seed | " + " | ".join(f"Δ {c}" for c, _, _ in COLUMNS) + " |"
    rows = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    rows += [f"| {seed} | " + " | ".join("-" if np.isnan(x) else f"{x:+.3f}" for x in row) + " |"
             for seed, row in zip(seeds, d)]
    summary = [paired_summary(d[:, j], up) for j, (_, _, up) in enumerate(COLUMNS)]
    return "\n".join(rows + ["| mean ± std [95% CI] (better) | " + " | ".join(summary) + " |"])


def bar_colour(name: str, i: int) -> tuple:
    """One colour per variant; a half-steps row is a light tint of its full-budget twin (same flags), so the two
    budgets of one variant read as a pair."""
    palette = [(31, 119, 180), (214, 39, 40), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    full_rows = [n for n in VARIANTS if n not in HALF_BUDGET]
    if name in HALF_BUDGET:
        twin = next(n for n in full_rows if VARIANTS[n] == VARIANTS[name])
        return tuple(c + (255 - c) // 2 for c in palette[full_rows.index(twin)])
    return palette[full_rows.index(name) if name in full_rows else i % len(palette)]


def bar_chart(results: dict, path: str, keys=("i2t label F1", "METEOR", "t2i label F1")):
    """Grouped bars (mean over seeds) with a dot per seed, for metrics in [0, 1], drawn with PIL (no plotting
    library). The dots, not a ± std whisker, because n is 3: the reader sees every seed."""
    cols = [c for c in COLUMNS if c[0] in keys]
    names = list(results)
    W, plot_h, left, top = 900, 280, 60, 30
    axis_y = top + plot_h  # y of the value 0
    H = axis_y + 40 + 14 * ((len(names) + 1) // 2)  # two legend columns, every name shown
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.line([(left, top), (left, axis_y), (W - 10, axis_y)], fill="black")
    for k in range(0, 11, 2):
        y = axis_y - plot_h * k / 10
        d.line([(left - 4, y), (left, y)], fill="black")
        d.text((left - 30, y - 5), f"{k / 10:.1f}", fill="black", font=font)
    group_w = (W - left - 20) / len(cols)
    bar_w = group_w * 0.8 / max(1, len(names))
    for g, (title, mpath, _) in enumerate(cols):
        x0 = left + 10 + g * group_w
        d.text((x0 + group_w * 0.35, axis_y + 8), title, fill="black", font=font)
        for i, name in enumerate(names):
            v = np.array([metric(r, mpath) for r in results[name].values()])
            v = np.clip(v[~np.isnan(v)], 0.0, 1.0)
            if len(v) == 0:  # no finished run (or no such metric) for this variant yet
                continue
            xa = x0 + i * bar_w
            d.rectangle([xa, axis_y - plot_h * float(v.mean()), xa + bar_w - 2, axis_y], fill=bar_colour(name, i))
            for x in v:  # one dot per seed
                cx, cy = xa + bar_w / 2 - 1, axis_y - plot_h * float(x)
                d.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill="black")
    for i, name in enumerate(names):  # legend, two columns
        x, y = left + (W // 2 - 20) * (i % 2), axis_y + 30 + 14 * (i // 2)
        d.rectangle([x, y, x + 10, y + 10], fill=bar_colour(name, i))
        d.text((x + 16, y), f"{name} (n = {len(results[name])})", fill="black", font=font)
    img.save(path)

if __name__ == "__main__":
    main()
