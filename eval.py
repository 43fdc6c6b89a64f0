"""Evaluating MeDiM: one trained run on every task and metric (`evaluate`), label metrics beside their trivial
baselines, the table, and the command line.

    python eval.py --run runs/default                    # all tasks, all metrics -> metrics.json + a markdown table
    python eval.py --run runs/default --i2t-cfg-scale 0 --out runs/default/metrics_unguided.json
    python eval.py --fid DIR_A DIR_B --inception-weights pt_inception-2015-12-05-6726825d.pth
    python eval.py --is DIR --inception-weights pt_inception-2015-12-05-6726825d.pth   # Inception Score, 10 splits
    python eval.py --reports GEN_DIR REF_DIR             # text_{i}.txt pairs, as MeDiM's report_metric.py

The metrics themselves live in eval_text.py (BLEU, METEOR, ROUGE-L, CIDEr-D) and eval_image.py (FID, the oracle
classifier, FD-oracle, the Inception Score); the protocol is in docs/paper-notes.md
"Evaluation protocol" and docs/metrics.md.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import argparse
import json
import re
from dataclasses import asdict, fields, replace

import numpy as np

import data
from data.common import write_atomic
from data.labeler import chexpert_labels, report_labels
from data.synthetic import CXR_FINDINGS, PATH_FINDINGS
from eval_image import (IS_SPLITS, ORACLE_STEPS, fd_oracle, fd_oracle_floor, fid_folders, inception_score_folder,
                        train_oracle)
from eval_text import report_metrics
from medim import SamplerConfig
from sample import (add_sampler_flags, condition_on_images, condition_on_prompt, condition_on_reports, generate,
                    load_run, sampler_from_flags, save_grid)

#### Label metrics, always printed beside trivial baselines

def scores_from_counts(tp, fp, fn, tn, names):
    """Per-finding counts (F,) (may be expected, fractional counts) -> acc, macro-F1 and per-finding P/R/F1/acc/support.
    A 0/0 precision, recall or F1 is 0, as sklearn with zero_division=0 (so a finding never predicted and never present
    scores F1 0, not 1)."""
    def div(a, b):
        return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn, tn))
    precision, recall, f1 = div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)
    acc = div(tp + tn, tp + fp + fn + tn)
    per = {n: {"f1": float(f1[j]), "precision": float(precision[j]), "recall": float(recall[j]), "acc": float(acc[j]),
               "support": float(tp[j] + fn[j])} for j, n in enumerate(names)}
    return {"acc": float(acc.mean()), "f1_macro": float(f1.mean()), "per_finding": per}


def check_label_matrix(m, what, n_names=None):
    m = np.asarray(m)
    if m.ndim != 2 or not np.isin(m, (0, 1)).all() or (n_names is not None and m.shape[1] != n_names):
        raise ValueError(f"{what}: expected an (N, {n_names or 'F'}) matrix of 0/1, got shape {m.shape}")
    return m.astype(bool)


def label_metrics(pred, true, names):
    """pred, true (N, F) 0/1 -> {'acc': mean per-finding accuracy, 'f1_macro', 'exact_match': all findings right,
    'per_finding': {name: {'f1', 'precision', 'recall', 'acc', 'support'}}}."""
    pred, true = check_label_matrix(pred, "pred", len(names)), check_label_matrix(true, "true", len(names))
    if pred.shape != true.shape:
        raise ValueError(f"label_metrics: pred {pred.shape} and true {true.shape} differ")
    out = scores_from_counts((pred & true).sum(0), (pred & ~true).sum(0), (~pred & true).sum(0), (~pred & ~true).sum(0),
                             names)
    out["exact_match"] = float((pred == true).all(axis=1).mean())
    return out


def trivial_baselines(true, train_prior=None, names=None):
    """What label_metrics gives without looking at the input, so every number can be printed beside its floor:
    all_negative (predict 0), majority (each finding's majority class under the prior) and prior_sampling (predict 1 with
    the prior's probability, independently; its expected counts, so no sampling noise). train_prior (F,) = positive rate in
    the training data; None uses the rate in `true` itself (slightly optimistic)."""
    true = check_label_matrix(true, "true")
    names = list(names) if names is not None else [str(j) for j in range(true.shape[1])]
    p = true.mean(axis=0) if train_prior is None else np.asarray(train_prior, dtype=np.float64)  # (F,)
    pos, neg = true.sum(0), (~true).sum(0)
    expected = scores_from_counts(p * pos, p * neg, (1 - p) * pos, (1 - p) * neg, names)
    expected["exact_match"] = float(np.where(true, p, 1 - p).prod(axis=1).mean())  # E[all F findings right]
    return {"all_negative": label_metrics(np.zeros_like(true), true, names),
            "majority": label_metrics(np.broadcast_to(p >= 0.5, true.shape), true, names),
            "prior_sampling": expected}


#### Joint pairs: do the generated image and the generated report agree?

def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two 0/1 raters over the same N items: (p_o - p_e) / (1 - p_e), p_o the observed agreement and
    p_e the agreement expected from each rater's own positive rate. 0 = chance, 1 = perfect. When both raters give
    one class to every item (p_e = 1) it is 1 if they agree and 0 if not (nothing beyond chance to measure)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    p_o = float((a == b).mean())
    p_e = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return (1.0 if p_o == 1 else 0.0) if p_e == 1 else (p_o - p_e) / (1 - p_e)


def pair_coherence(image_labels, report_labels, names) -> dict:
    """How well the findings read off each image (the oracle) agree with those read off its report (the labeler), (N, F)
    0/1 each: per-finding agreement and kappa, their means, and macro-F1 of the image findings against the report's."""
    img, rep = check_label_matrix(image_labels, "image_labels", len(names)), check_label_matrix(report_labels,
                                                                                                  "report_labels", len(names))
    kappa = {n: cohen_kappa(img[:, j], rep[:, j]) for j, n in enumerate(names)}
    agree = {n: float((img[:, j] == rep[:, j]).mean()) for j, n in enumerate(names)}
    return {"kappa": float(np.mean(list(kappa.values()))), "agreement": float(np.mean(list(agree.values()))),
            "f1_macro": label_metrics(img, rep, names)["f1_macro"], "kappa_per_finding": kappa,
            "agreement_per_finding": agree}


def nearest_image_distance(images, reference) -> float:
    """Mean over `images` of the RMS pixel distance (0..1 scale) to the nearest `reference` image: generated images
    much closer to the training set than real test images are would be copies (memorisation)."""
    flat = lambda ims: np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255 for im in ims])  # (N, P)
    a, r = flat(images), flat(reference)
    d2 = (a ** 2).sum(1)[:, None] + (r ** 2).sum(1)[None] - 2 * a @ r.T                           # (N, R) squared L2
    return float(np.sqrt(np.clip(d2.min(1), 0, None) / a.shape[1]).mean())


# The first words of a report that name one finding: prompted joint pairs should show it in both the image and the report.
JOINT_PROMPTS = {"cxr": ("FINDINGS: There is marked enlargement of the cardiac silhouette.", "cardiomegaly"),
                 "path": ("The nuclei vary greatly in size and shape.", "pleomorphism")}
# One prompted pair per PROMPTED_SHARE unconditional ones: they answer fewer questions (is the prompt's finding in both
# halves, do the halves agree), and as many as the unconditional ones made the joint pairs two thirds of the
# evaluation's sampling time.
PROMPTED_SHARE = 4


def real_pair_reference(real_pairs, train_pairs, oracle, names, domain, seed) -> dict:
    """What generated pairs of one domain are judged against, computed once: the coherence of real test pairs (the
    ceiling) and of real pairs shuffled against each other (the floor), each finding's training prior and the
    findings read off the real pairs (their own prevalence gap), and the training images for the memorisation check
    with the real test images' own distance to them."""
    img_real = np.asarray(oracle.predict([p.image for p in real_pairs]))
    rep_real = np.array([binary_labels(report_labels(p.report, domain), names) for p in real_pairs])
    shuffled = np.random.default_rng(seed).permutation(len(real_pairs))
    train_images = [p.image for p in train_pairs[:2000]]
    return {"names": names, "domain": domain, "oracle": oracle, "train_images": train_images,
            "prior": np.array([binary_labels(p.labels, names) for p in train_pairs]).mean(0),
            "image_labels_real": img_real, "report_labels_real": rep_real,
            "coherence_real": pair_coherence(img_real, rep_real, names),
            "coherence_shuffled": pair_coherence(img_real, rep_real[shuffled], names),
            "nearest_train_distance_real": nearest_image_distance([p.image for p in real_pairs], train_images)}


def largest_prevalence_gap(image_labels, report_labels, prior) -> float:
    """The largest gap, over findings and over the two readers, between the share of pairs with a finding, (N, F) 0/1
    each, and its training prior (F,)."""
    return float(max(np.abs(image_labels.mean(0) - prior).max(), np.abs(report_labels.mean(0) - prior).max()))


def joint_metrics(gen_images, gen_reports, reference: dict) -> dict:
    """Generated pairs (a list of images, a list of reports) judged as pairs against real_pair_reference: coherence
    beside real and shuffled pairs; each finding's prevalence in the generated images and reports against the
    training prior, the largest gap beside that of as many real test pairs (a finite sample is never at the prior:
    200 pairs drawn from the synthetic chest X-rays' own priors have a largest gap above 0.05 four times in ten);
    diversity (share of distinct reports) and memorisation (nearest-training-image distance, beside that of real
    test images)."""
    names, domain, prior = reference["names"], reference["domain"], reference["prior"]
    img_gen = np.asarray(reference["oracle"].predict(gen_images))
    rep_gen = np.array([binary_labels(report_labels(r, domain), names) for r in gen_reports])
    prevalence = {n: {"train": float(prior[j]), "image": float(img_gen[:, j].mean()), "report": float(rep_gen[:, j].mean())}
                  for j, n in enumerate(names)}
    return {"n": len(gen_reports),
            "coherence": pair_coherence(img_gen, rep_gen, names),
            "coherence_real": reference["coherence_real"],
            "coherence_shuffled": reference["coherence_shuffled"],
            "prevalence": prevalence,
            "prevalence_max_gap": largest_prevalence_gap(img_gen, rep_gen, prior),
            "prevalence_max_gap_real": largest_prevalence_gap(reference["image_labels_real"][:len(gen_reports)],
                                                              reference["report_labels_real"][:len(gen_reports)], prior),
            "distinct_reports": len(set(gen_reports)) / max(1, len(gen_reports)),
            "nearest_train_distance": nearest_image_distance(gen_images, reference["train_images"]),
            "nearest_train_distance_real": reference["nearest_train_distance_real"]}


#### Evaluating a trained run

def loader_options(shuffle_sentences: bool, text: str) -> dict:
    """A run's loader options for data.load_pairs: train.py's --shuffle-sentences and --data-options "key=value,..."."""
    return {**({"shuffle_sentences": True} if shuffle_sentences else {}), **data.parse_options(text)}


def evaluation_pairs(test, n_eval: int) -> list:
    """The first n_eval test pairs of each domain: a mix of sources (data.ConcatPairs) is one list after the other, and
    its first n_eval pairs would all be the first domain's."""
    parts = getattr(test, "parts", [test])
    return [part[i] for part in parts for i in range(min(n_eval, len(part)))]


def evaluation_data(source: str, *, data_dir: str, image_size: int, seed: int, options: dict, n_eval: int):
    """What evaluate reads, loaded as train.py loaded the run's data: (the first n_eval test pairs of each domain,
    {domain: training pairs}). The training pairs serve the oracle, the label prior and the random-report baseline:
    the first 4500 of synthetic data (the oracle trains on 4000, 500 held out), a seeded 2000 of real data."""
    load = lambda split, **kw: data.load_pairs(source, split, data_dir=data_dir or None, image_size=image_size,
                                               seed=seed, **kw, **options)
    pairs = evaluation_pairs(load("test"), n_eval)
    train = {}
    for domain in sorted({p.domain for p in pairs}):
        synthetic = all(p.uid.startswith("synthetic") for p in pairs if p.domain == domain)
        loaded = load("train", limit=4500 if synthetic else 2000)
        train[domain] = [p for p in (loaded[j] for j in range(len(loaded))) if p.domain == domain]
    return pairs, train


def binary_labels(labels: dict, names) -> list[int]:
    """Positive = 1; negated, uncertain and unmentioned = 0 (the usual binarisation for report-generation label F1)."""
    return [1 if labels.get(n) == 1 else 0 for n in names]


def report_findings(gen_reports: list[str], pairs: list) -> tuple[np.ndarray, np.ndarray, list]:
    """(pred, true, names), 0/1 (N, F): the findings the labeler reads off generated reports, one per pair of one
    domain, against the pairs' ground-truth labels on synthetic data, or on real data (no ground truth) against the
    CheXpert-style labels of the reference reports."""
    domain = pairs[0].domain
    if all(p.uid.startswith("synthetic") for p in pairs):
        names = CXR_FINDINGS if domain == "cxr" else PATH_FINDINGS
        true = np.array([binary_labels(p.labels, names) for p in pairs])
        pred = np.array([binary_labels(report_labels(g, domain), names) for g in gen_reports])
    else:
        names = list(chexpert_labels(pairs[0].report).keys())
        true = np.array([binary_labels(chexpert_labels(p.report), names) for p in pairs])
        pred = np.array([binary_labels(chexpert_labels(g), names) for g in gen_reports])
    return pred, true, names


def evaluate(model, tok, pairs: list, train_pairs: dict, sampler: SamplerConfig, *, seed: int, oracle_steps: int,
             run_dir: str, grid_path: str | None = None, with_fd_oracle: bool = True, with_joint: bool = True) -> dict:
    """All tasks, all metrics, on `pairs` (evaluation_data: the first n_eval test pairs of each domain), each number
    beside its trivial baseline.

    image → report: the model fills the text slots given the image codes; the report labeler reads the findings off the
    generated text (label F1 against the ground truth), plus BLEU / METEOR / ROUGE-L / CIDEr against the real report.
    report → image: the model fills the image slots given the report; on synthetic data the oracle classifier reads the
    findings off the generated image (against the labels of the conditioning report) and FD-oracle compares feature
    statistics with real test images.
      train_pairs    {domain: training pairs}: the oracle's data, the label prior, the random-report baseline
      sampler        the SamplerConfig both directions sample with; seed for image → report, seed + 1 for report → image
      seed           also seeds each oracle and the baseline's random reports
      oracle_steps   training steps of each domain's oracle, cached in run_dir/oracle_<domain>
      grid_path      where a grid of real / generated pairs goes (None: no grid)
      with_fd_oracle False skips FD-oracle (the quick evaluations of a learning curve)
      with_joint     False skips the joint pairs (synthetic data only: they are judged by the oracle and the labeler)"""
    n = len(pairs)
    images, reports, domains = [p.image for p in pairs], [p.report for p in pairs], [p.domain for p in pairs]
    model.eval()
    gen_reports = [r for r, _, _ in generate(model, tok, condition_on_images(tok, images, domains), sampler, seed=seed)]
    gen_images = [im for _, im, _ in generate(model, tok, condition_on_reports(tok, reports, domains), sampler,
                                               seed=seed + 1)]
    metrics = {"n_eval": n, "per_domain": {}}
    joint_examples = []  # (image, report) generated together, for the grid
    for domain in sorted(set(domains)):
        idx = [i for i, d in enumerate(domains) if d == domain]
        synthetic = all(pairs[i].uid.startswith("synthetic") for i in idx)  # ground-truth labels and an oracle exist
        m = {}
        # -- image → report ------------------------------------------------------------------------------------------
        refs, gens = [reports[i] for i in idx], [gen_reports[i] for i in idx]
        m["i2t"] = dict(report_metrics(gens, refs))
        rng = np.random.default_rng(seed)
        train_same = train_pairs[domain]
        random_refs = [train_same[j].report for j in rng.integers(len(train_same), size=len(gens))]
        m["i2t_baseline_random_train_report"] = {k: v for k, v in report_metrics(random_refs, refs).items()
                                                 if k != "meteor_stages"}
        pred, true, names = report_findings(gens, [pairs[i] for i in idx])
        lm = label_metrics(pred, true, names)
        m["i2t"].update(label_f1_macro=lm["f1_macro"], label_acc=lm["acc"], label_per_finding=lm["per_finding"])
        train_true = np.array([binary_labels(p.labels, names) for p in train_same]) if synthetic else None
        m["i2t_baselines"] = trivial_baselines(true, train_prior=None if train_true is None else train_true.mean(0))
        # -- report → image ------------------------------------------------------------------------------------------
        if synthetic:
            oracle = train_oracle(train_same, names, os.path.join(run_dir, f"oracle_{domain}"), seed=seed,
                                  steps=oracle_steps)
            gimgs, rimgs = [gen_images[i] for i in idx], [images[i] for i in idx]
            read = np.asarray(oracle.predict(gimgs))
            tm = label_metrics(read, true, names)
            # kappa as joint pairs' coherence computes it: what one report -> image pass gives a pair's two halves
            m["t2i"] = {"label_acc": tm["acc"], "label_f1_macro": tm["f1_macro"], "label_per_finding": tm["per_finding"],
                        "label_kappa": pair_coherence(read, true, names)["kappa"]}
            m["t2i_baselines"] = m["i2t_baselines"]
            m["oracle"] = {"test_acc": label_metrics(np.asarray(oracle.predict(rimgs)), true, names)["acc"]}
            if with_fd_oracle:
                # the same set sizes as the floor (first half of the real images vs images generated from the other
                # half's reports), since Fréchet distances are biased upward at small N
                half = len(rimgs) // 2
                m["t2i"]["fd_oracle"] = fd_oracle(oracle, rimgs[:half], gimgs[half:2 * half])
                m["t2i"]["fd_oracle_real_floor"] = fd_oracle_floor(oracle, rimgs)
            if with_joint:  # image and report generated together: unconditional, then from a report's first words
                m["joint"] = {}
                reference = real_pair_reference([pairs[i] for i in idx], train_same, oracle, names, domain, seed)
                kinds = (("unconditional", len(idx), "", ""), ("prompted", max(1, len(idx) // PROMPTED_SHARE),
                                                                        *JOINT_PROMPTS[domain]))
                for name, n_pairs, prompt, finding in kinds:
                    out = generate(model, tok, condition_on_prompt(tok, n_pairs, domain, prompt), sampler, seed=seed + 2)
                    gen_r, gen_i = [r for r, _, _ in out], [im for _, im, _ in out]
                    m["joint"][name] = joint_metrics(gen_i, gen_r, reference)
                    m["joint"][name].update(prompt=prompt, prompt_finding=finding)
                    joint_examples += list(zip(gen_i, gen_r))[:3]
        metrics["per_domain"][domain] = m
    # the top level holds the mean over domains (the only domain, for single-domain runs), as the paper's Table 4 does
    doms = list(metrics["per_domain"].values())
    for task in ("i2t", "t2i", "oracle", "i2t_baselines", "t2i_baselines", "i2t_baseline_random_train_report", "joint"):
        if all(task in d for d in doms):
            metrics[task] = _mean_dicts([d[task] for d in doms])
    if getattr(tok, "stats", None):
        metrics["tokenizer"] = dict(tok.stats)
    if grid_path:
        k = min(8, n)
        cells, caps = [], []
        for i in range(k):
            cells += [images[i], gen_images[i], images[i]]
            caps += ["REAL: " + reports[i], "GENERATED IMAGE from the report at left", "GENERATED REPORT: " + gen_reports[i]]
        for image, report in joint_examples[:3]:  # a last row: pairs generated together (unconditional first)
            cells.append(image)
            caps.append("JOINT (image and report generated together): " + report)
        save_grid(cells, caps, grid_path, cols=3)
    return metrics


def _mean_dicts(ds: list[dict]) -> dict:
    out = {}
    for k, v in ds[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(isinstance(d.get(k), (int, float)) for d in ds):
            out[k] = float(np.mean([d[k] for d in ds]))
        elif isinstance(v, dict) and all(isinstance(d.get(k), dict) for d in ds) and len(ds) > 1:
            out[k] = _mean_dicts([d[k] for d in ds])
        elif len(ds) == 1:
            out[k] = v
    return out


def write_json(path: str, obj):
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def curve_row(m: dict) -> dict:
    """The numbers a learning curve plots."""
    row = {"i2t_f1": m["i2t"]["label_f1_macro"], "bleu4": m["i2t"]["bleu4"]}
    if "t2i" in m:
        row.update(t2i_f1=m["t2i"]["label_f1_macro"], t2i_acc=m["t2i"]["label_acc"])
    return row


def format_table(m: dict) -> str:
    """A markdown table: every quality number beside its trivial baseline."""
    rows = ["| metric | model | trivial baseline |", "|---|---|---|"]
    base = m.get("i2t_baselines", {})
    def b(name, key):
        return f"{base[name][key]:.3f} ({name.replace('_', ' ')})" if name in base and key in base[name] else "-"
    i2t = m["i2t"]
    rows.append(f"| i2t label macro-F1 | {i2t['label_f1_macro']:.3f} | {b('prior_sampling', 'f1_macro')} |")
    rows.append(f"| i2t label accuracy | {i2t['label_acc']:.3f} | {b('all_negative', 'acc')} |")
    rb = m.get("i2t_baseline_random_train_report", {})
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"):
        if k in i2t:
            rows.append(f"| i2t {k} | {i2t[k]:.3f} | {rb.get(k, float('nan')):.3f} (a random training report) |")
    if "t2i" in m:
        t = m["t2i"]
        rows.append(f"| t2i label macro-F1 (oracle) | {t['label_f1_macro']:.3f} | {b('prior_sampling', 'f1_macro')} |")
        rows.append(f"| t2i label accuracy (oracle) | {t['label_acc']:.3f} | {b('all_negative', 'acc')} |")
        if "fd_oracle" in t:
            rows.append(f"| t2i FD-oracle (lower is better) | {t['fd_oracle']:.3f} | {t['fd_oracle_real_floor']:.3f} (real vs real floor) |")
    t = m.get("t2i", {})  # one report -> image pass from real reports, read the same way: what a pair's last pass gives
    t2i_kappa = f", {t['label_kappa']:.3f} / {t['label_f1_macro']:.3f} (report → image)" if "label_kappa" in t else ""
    for name, j in m.get("joint", {}).items():
        c, real, floor = j["coherence"], j["coherence_real"], j["coherence_shuffled"]
        rows.append(f"| joint {name}: image-report kappa / F1 | {c['kappa']:.3f} / {c['f1_macro']:.3f} | "
                    f"{real['kappa']:.3f} / {real['f1_macro']:.3f} (real pairs), {floor['kappa']:.3f} / "
                    f"{floor['f1_macro']:.3f} (shuffled){t2i_kappa} |")
        rows.append(f"| joint {name}: largest prevalence gap to the training prior | {j['prevalence_max_gap']:.3f} | "
                    f"{j['prevalence_max_gap_real']:.3f} (as many real test pairs) |")
        if j.get("prompt_finding"):
            p = j["prevalence"][j["prompt_finding"]]
            rows.append(f"| joint {name}: {j['prompt_finding']} in images / reports | {p['image']:.3f} / "
                        f"{p['report']:.3f} | {p['train']:.3f} (training prior) |")
        rows.append(f"| joint {name}: distinct reports / nearest-training-image distance | {j['distinct_reports']:.3f} / "
                    f"{j['nearest_train_distance']:.3f} | 1 / {j['nearest_train_distance_real']:.3f} (real test images) |")
    if "oracle" in m:
        rows.append(f"| oracle accuracy on real test images | {m['oracle']['test_acc']:.3f} | |")
    if "tokenizer" in m:
        rows.append(f"| tokenizer PSNR dB / codebook usage | {m['tokenizer'].get('psnr_db', float('nan')):.1f} / "
                    f"{m['tokenizer'].get('codebook_usage', float('nan')):.2f} | |")
    return "\n".join(rows)


#### Command line

def _parse_setting(kv: str) -> tuple[str, object]:
    """--set KEY=VALUE, KEY a SamplerConfig field (the same setting as its --key flag)."""
    types = {f.name: f.type for f in fields(SamplerConfig)}
    key, _, value = kv.partition("=")
    if key not in types or not value:
        raise ValueError(f"--set {kv!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
    if types[key] is bool:
        return key, value.lower() in ("1", "true", "yes")
    try:
        return key, types[key](value)
    except ValueError:
        raise ValueError(f"--set {kv!r}: {value!r} is not a {types[key].__name__}") from None


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate MeDiM runs, image folders (FID, IS) or report folders.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a run directory: all tasks, all metrics -> metrics.json + a markdown table")
    g.add_argument("--fid", nargs=2, metavar=("DIR_A", "DIR_B"), help="FID between two image folders (like pytorch-fid)")
    g.add_argument("--is", dest="is_dir", metavar="DIR",
                   help=f"Inception Score of an image folder (mean ± std over {IS_SPLITS} splits, the FID Inception-v3)")
    g.add_argument("--reports", nargs=2, metavar=("GEN_DIR", "REF_DIR"), help="report metrics over text_{i}.txt pairs")
    p.add_argument("--inception-weights", default=os.environ.get("MEDIM_INCEPTION", ""),
                   help="path to pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID weights; --fid and --is)")
    p.add_argument("--n-eval", type=int, default=0, help="--run: test pairs per domain (default: the run's n_eval)")
    p.add_argument("--out", default="", help="--run: where metrics go (default RUN/metrics.json; another name to compare)")
    p.add_argument("--raw-weights", action="store_true", help="--run: the raw weights instead of the EMA weights")
    p.add_argument("--no-joint", action="store_true", help="--run: skip the pairs generated together (about two "
                   "thirds of the sampling), e.g. to compare report and image settings")
    p.add_argument("--device", default="cpu")
    add_sampler_flags(p.add_argument_group("sampler settings for --run (default: the run's own, saved in its ckpt.pt)"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--run: a sampler setting by its field name, the same as its flag: --set cfg_scale=2 is "
                        "--cfg-scale 2")
    args = p.parse_args(argv)
    if args.fid or args.is_dir:
        for d in args.fid or [args.is_dir]:
            if not os.path.isdir(d):
                p.error(f"--{'fid' if args.fid else 'is'}: {d} is not a directory")
        try:  # a missing or wrong weight file, too few images: the message, not a traceback
            if args.fid:
                print(f"FID: {fid_folders(args.fid[0], args.fid[1], args.inception_weights, device=args.device):.4f}")
            else:
                mean, std = inception_score_folder(args.is_dir, args.inception_weights, device=args.device)
                print(f"IS: {mean:.4f} ± {std:.4f} ({IS_SPLITS} splits)")
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        return
    if args.reports:
        gen, ref = _read_text_pairs(*args.reports)
        print(json.dumps(report_metrics(gen, ref), indent=2))
        return
    model, tok, sampler, run = load_run(args.run, args.device, use_ema=not args.raw_weights)
    try:
        sampler = sampler_from_flags(replace(sampler, **dict(_parse_setting(kv) for kv in args.set)), args)
        options = loader_options(run.get("shuffle_sentences", False), run.get("data_options", ""))
    except ValueError as e:
        p.error(str(e))
    pairs, train_pairs = evaluation_data(run["data"], data_dir=run["data_dir"], image_size=run["image_size"],
                                         seed=run["seed"], options=options, n_eval=args.n_eval or run["n_eval"])
    out = args.out or os.path.join(args.run, "metrics.json")
    m = evaluate(model, tok, pairs, train_pairs, sampler, seed=run["seed"],
                 oracle_steps=run.get("oracle_steps") or ORACLE_STEPS,  # 0 in runs from before it had a value
                 run_dir=args.run, grid_path=os.path.splitext(out)[0] + ".png" if args.out else
                 os.path.join(args.run, "samples.png"), with_joint=not args.no_joint)
    m["sampler"] = asdict(sampler)
    if os.path.exists(os.path.join(args.run, "metrics.json")) and not args.out:
        with open(os.path.join(args.run, "metrics.json")) as f:
            m.setdefault("train", json.load(f).get("train", {}))
    write_json(out, m)
    print(format_table(m))


def _read_text_pairs(gen_dir: str, ref_dir: str):
    """text_{i}.txt files present in both folders, paired by index (the layout of MeDiM's report_metric.py)."""
    def index(d):
        if not os.path.isdir(d):
            raise SystemExit(f"error: --reports: {d} is not a directory")
        return {int(m.group(1)): os.path.join(d, f) for f in os.listdir(d) if (m := re.fullmatch(r"text_(\d+)\.txt", f))}
    g, r = index(gen_dir), index(ref_dir)
    common = sorted(set(g) & set(r))
    if not common:
        raise SystemExit(f"error: no text_<i>.txt file is in both {gen_dir} ({len(g)} files) and {ref_dir} ({len(r)} files)")
    def read(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    return [read(g[i]) for i in common], [read(r[i]) for i in common]


if __name__ == "__main__":
    main()
