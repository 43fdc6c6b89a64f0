"""Do generated pairs help a downstream report generator? MeDiM Fig. 5b/c at toy scale, on the synthetic data.

    python bench/augment.py --generator runs/default             # 4 arms x 3 seeds, R = 500 real, G = 1000 generated
    python bench/augment.py --generator runs/default --jobs 2 --train-args "--threads 1"   # both cores of a 2-core CPU
    python bench/augment.py --generator runs/default --seeds 0 --steps 300   # a quick look
    python bench/augment.py --generator runs/default --table-only             # the table of what is finished

The paper trains R2Gen on real PathGen pairs, then on real + MeDiM-generated pairs, and reports relative gains
(+6.43% BLEU-1, +18.57% BLEU-2, +31.58% BLEU-3, +4.80% METEOR). Here the downstream model is an image -> report MeDiM
of its own (train.py with every training row image -> report: --cond-frac 1 --cond-text-share 0, d=64, 2 layers),
trained from scratch for the same number of steps in every arm, on the generator run's tokenizers (so every arm reads
images and reports through the same VQ-VAE and BPE), and judged on the real test set exactly as eval.py judges image ->
report: label macro-F1 (the labeler's findings of the generated report against the ground truth), BLEU-1..4, METEOR.
The arms differ only in their training pairs:

  real                  R real training pairs
  real + MeDiM          the same R, plus G pairs the generator drew together (sample.py --task joint)
  real + shuffled MeDiM the same R, plus the same G images and G reports paired at random: a control with the same
                        images and words as the MeDiM arm and no agreement between them (the paper's control was pairs
                        from a weaker generator, UniDisc)
  real + real           the same R, plus G other real pairs: what G pairs could buy at best

Every arm's pairs are written once as a folder dataset (OUT/data/<arm>/pairs.jsonl + PNGs, train.py --data folder),
so the downstream runs read them as anyone's own data would be read. The sweep is resumable: generated pairs, data
folders and finished runs are kept; a stopped run continues from its checkpoint (train.py --resume).
Writes OUT/augment.md: per arm mean ± std over seeds, the gain over `real` computed as the paper gives it
(relative, of the seed means) and per-seed paired differences with a 95% t-interval and a sign count.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for ablations, train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from ablations import paired_summary, run_train, slug  # noqa: E402
from data import load_pairs  # noqa: E402
from data.common import write_atomic  # noqa: E402
from eval import evaluation_data, label_metrics, report_findings, write_json  # noqa: E402
from eval_text import report_metrics  # noqa: E402
from sample import condition_on_images, condition_on_prompt, generate, load_run  # noqa: E402
from train_speed import set_threads  # noqa: E402

ARMS = ("real", "real + MeDiM", "real + shuffled MeDiM", "real + real")
COLUMNS = (("label F1", "label_f1_macro"), ("BLEU-1", "bleu1"), ("BLEU-2", "bleu2"), ("BLEU-3", "bleu3"),
           ("BLEU-4", "bleu4"), ("METEOR", "meteor"))
# The downstream report generator: a small image -> report MeDiM. i2t guidance is off because this model never sees
# a row with its image masked (no unconditional branch to guide against).
# The folder loader cuts FINDINGS: / IMPRESSION: headings off; section=both keeps the text of both sections.
DOWNSTREAM = ["--cond-frac", "1", "--cond-text-share", "0", "--d-model", "64", "--n-layers", "2", "--n-heads", "2",
              "--i2t-cfg-scale", "0", "--skip-eval", "--no-compile", "--ckpt-every", "250", "--log-every", "100",
              "--data-options", "section=both"]
TOKENIZER_FILES = ("vqvae.pt", "tokenizer.json", "vocab.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", required=True, help="a trained run directory on the synthetic CXR data (train.py --out)")
    p.add_argument("--out", default="runs/augment")
    p.add_argument("--real", type=int, default=500, help="R: real training pairs in every arm (default 500)")
    p.add_argument("--generated", type=int, default=1000, help="G: pairs added in the other arms (default 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000, help="training steps of every downstream run (default 1000)")
    p.add_argument("--n-eval", type=int, default=200, help="real test pairs the downstream runs are judged on")
    p.add_argument("--train-args", default="", help="extra train.py flags for every downstream run")
    p.add_argument("--jobs", type=int, default=1, help="downstream runs trained at a time (2 on a 2-core CPU, each "
                   "with --train-args '--threads 1')")
    p.add_argument("--device", default="cpu", help="where pairs are drawn and judged (training: --train-args)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for drawing and judging; 0 = all cores")
    p.add_argument("--table-only", action="store_true", help="train nothing: the table of the finished runs")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.generator, "ckpt.pt")):
        raise SystemExit(f"error: --generator {args.generator} has no ckpt.pt (train one with python train.py)")
    if min(args.real, args.generated) < 1:
        raise SystemExit(f"error: --real and --generated must be >= 1, got {args.real} and {args.generated}")
    return args


#### The pairs of each arm, as folder datasets

def generated_pairs(generator: str, n: int, out_dir: str, seed: int = 0, device: str = "cpu") -> list[dict]:
    """n unconditional pairs drawn by the generator run with its joint-task settings, saved as PNGs once."""
    index = os.path.join(out_dir, "pairs.json")
    if os.path.exists(index):
        rows = json.load(open(index))
        if len(rows) >= n:
            return rows[:n]
    model, tok, sampler, train_config = load_run(generator, device=device)
    if train_config.get("data", "synthetic") != "synthetic":
        raise SystemExit(f"error: --generator {generator} was trained on {train_config.get('data')!r}; this study "
                         f"judges reports with the synthetic CXR labeler, so it needs a run on --data synthetic")
    print(f"drawing {n} pairs from {generator} (image and report together)")
    out = generate(model, tok, condition_on_prompt(tok, n, "cxr"), sampler, seed=seed)
    rows = [save_pair(out_dir, f"gen{i:05d}", image, report) for i, (report, image, _) in enumerate(out)]
    write_json(index, rows)
    return rows


def save_pair(out_dir: str, name: str, image: np.ndarray, report: str) -> dict:
    path = os.path.join(out_dir, name + ".png")
    if not os.path.exists(path):
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(path, lambda f: Image.fromarray(image).save(f, format="PNG"))
    return {"image": os.path.abspath(path), "report": report}


def arm_rows(arm: str, real: list[dict], extra_real: list[dict], gen: list[dict]) -> list[dict]:
    """The training pairs of one arm (see the module docstring)."""
    if arm == "real":
        return real
    if arm == "real + MeDiM":
        return real + gen
    if arm == "real + shuffled MeDiM":  # one fixed random permutation: the same reports, other images
        perm = np.random.default_rng(0).permutation(len(gen))
        return real + [{"image": g["image"], "report": gen[j]["report"]} for g, j in zip(gen, perm)]
    if arm == "real + real":
        return real + extra_real
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")


def write_folder(rows: list[dict], held_out: list[dict], folder: str):
    """A folder dataset (data/folder.py, jsonl layout): rows as its train split, the real test pairs as its test split
    (read back by judge, so references pass the loader's text cleaning as the training reports did) and their first
    few as val (a folder needs all three splits)."""
    index = os.path.join(folder, "pairs.jsonl")
    if os.path.exists(index):
        return
    os.makedirs(folder, exist_ok=True)
    lines = [dict(r, id=f"train{i:05d}", split="train") for i, r in enumerate(rows)]
    lines += [dict(r, id=f"val{i:03d}", split="val") for i, r in enumerate(held_out[:8])]
    lines += [dict(r, id=f"test{i:03d}", split="test") for i, r in enumerate(held_out)]
    write_atomic(index, lambda f: f.write("".join(json.dumps(x) + "\n" for x in lines).encode()))


#### Downstream runs: train, then judge on the real test set

def finished_steps(run_dir: str) -> int:
    path = os.path.join(run_dir, "ckpt.pt")
    return torch.load(path, map_location="cpu", weights_only=True)["step"] if os.path.exists(path) else -1


def train_downstream(generator: str, folder: str, run_dir: str, seed: int, steps: int, extra: list[str]):
    """train.py on one arm's folder, on the generator's tokenizers; resumed if it was stopped, skipped if done."""
    done = finished_steps(run_dir)
    if done >= steps:
        return
    os.makedirs(run_dir, exist_ok=True)
    for name in TOKENIZER_FILES:  # the same VQ-VAE and BPE in every arm
        if not os.path.exists(os.path.join(run_dir, name)):
            write_atomic(os.path.join(run_dir, name), lambda f, n=name: f.write(open(os.path.join(generator, n), "rb").read()))
    print(f"{run_dir}: {'resuming at step ' + str(done) if done >= 0 else 'training'} ({steps} steps)")
    run_train(["--data", "folder", "--data-dir", folder, "--out", run_dir, "--seed", str(seed), "--steps", str(steps),
               *DOWNSTREAM, *extra, *(["--resume"] if done >= 0 else [])], os.path.join(run_dir, "train.out"))


def judge(run_dir: str, test_pairs: list, folder: str, device: str = "cpu") -> dict:
    """Image -> report on the real test pairs, scored as eval.py scores it, against the reference text as the folder
    loader cleaned it (headings cut, like the training reports); cached in run_dir/downstream.json."""
    path = os.path.join(run_dir, "downstream.json")
    if os.path.exists(path):
        return json.load(open(path))
    cleaned = load_pairs("folder", "test", data_dir=folder, image_size=test_pairs[0].image.shape[0], section="both")
    by_id = {cleaned[i].uid: cleaned[i].report for i in range(len(cleaned))}
    pairs = [replace(p, report=by_id[f"test{i:03d}"]) for i, p in enumerate(test_pairs)]  # labels: the ground truth
    model, tok, sampler, _ = load_run(run_dir, device=device)
    x = condition_on_images(tok, [p.image for p in pairs], [p.domain for p in pairs])
    gens = [r for r, _, _ in generate(model, tok, x, sampler, seed=0)]
    pred, true, names = report_findings(gens, pairs)
    m = {k: v for k, v in report_metrics(gens, [p.report for p in pairs]).items() if k != "meteor_stages"}
    m.update(label_f1_macro=label_metrics(pred, true, names)["f1_macro"], examples=gens[:5])
    write_json(path, m)
    return m


#### The table

def markdown(results: dict, seeds: list[int]) -> str:
    """results {arm: {seed: metrics}}: mean ± std per arm; the gain over `real` as the paper gives it (relative, of
    the seed means); then per-seed paired differences (arm − real) with their 95% t-interval."""
    head = "| arm | n | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    mean = lambda arm, k: float(np.mean([r[k] for r in results[arm].values()]))  # noqa: E731
    for arm, runs in results.items():
        if not runs:
            lines.append(f"| {arm} | 0 (missing: seeds {seeds}) |" + " - |" * len(COLUMNS))
            continue
        cells = [f"{np.mean([r[k] for r in runs.values()]):.3f} ± {np.std([r[k] for r in runs.values()]):.3f}"
                 for _, k in COLUMNS]
        missing = [s for s in seeds if s not in runs]
        lines.append(f"| {arm} | {len(runs)}{f' (missing: {missing})' if missing else ''} | " + " | ".join(cells) + " |")
    lines += ["", "Gain over `real`, relative (the paper's form: (arm − real) / real of the seed means):", "",
              "| arm | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for arm in ARMS[1:]:
        if results.get(arm) and results["real"]:
            lines.append(f"| {arm} | " + " | ".join(f"{100 * (mean(arm, k) / mean('real', k) - 1):+.1f}%"
                                                    for _, k in COLUMNS) + " |")
    lines += ["", "Paired differences arm − real over the seeds both finished: mean ± std [95% CI] (seeds better):", "",
              "| arm | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for arm in ARMS[1:]:
        common = sorted(set(results.get(arm, {})) & set(results["real"]))
        if common:
            d = np.array([[results[arm][s][k] - results["real"][s][k] for _, k in COLUMNS] for s in common])
            lines.append(f"| {arm} | " + " | ".join(paired_summary(d[:, j], True) for j in range(len(COLUMNS))) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    extra = args.train_args.split()
    os.makedirs(args.out, exist_ok=True)
    test_pairs, _ = evaluation_data("synthetic", data_dir="", image_size=64, seed=0, options={}, n_eval=args.n_eval)
    results = {arm: {} for arm in ARMS}
    if not args.table_only:
        train = load_pairs("synthetic", "train", limit=args.real + args.generated)
        real_dir = os.path.join(args.out, "real_pairs")
        real_rows = [save_pair(real_dir, f"real{i:05d}", train[i].image, train[i].report) for i in range(len(train))]
        real, extra_real = real_rows[:args.real], real_rows[args.real:]
        held_out = [save_pair(real_dir, f"test{i:03d}", p.image, p.report) for i, p in enumerate(test_pairs)]
        gen = generated_pairs(args.generator, args.generated, os.path.join(args.out, "generated"), device=args.device)
        for arm in ARMS:
            write_folder(arm_rows(arm, real, extra_real, gen), held_out, os.path.join(args.out, "data", slug(arm)))
    runs = [(arm, seed, os.path.join(args.out, "runs", f"{slug(arm)}_s{seed}"), os.path.join(args.out, "data", slug(arm)))
            for seed in args.seeds for arm in ARMS]
    if not args.table_only:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda r: train_downstream(args.generator, r[3], r[2], r[1], args.steps, extra), runs))
    for arm, seed, run_dir, folder in runs:
        if finished_steps(run_dir) >= args.steps:
            results[arm][seed] = judge(run_dir, test_pairs, folder, args.device)
    table = markdown(results, args.seeds)
    setting = (f"R = {args.real} real pairs, G = {args.generated} added pairs, {args.steps} steps per run, "
               f"generator {args.generator}, judged on {len(test_pairs)} real test pairs")
    write_atomic(os.path.join(args.out, "augment.md"), lambda f: f.write(f"{setting}\n\n{table}\n".encode()))
    print(setting + "\n\n" + table + f"\n\nwrote {os.path.join(args.out, 'augment.md')}")


if __name__ == "__main__":
    main()
