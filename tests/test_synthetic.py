"""data/synthetic.py: determinism, splits, visible findings, report grammar, speed, the sample fixture."""
import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from data.labeler import report_labels
from data.synthetic import CXR_FINDINGS, PATH_FINDINGS, SyntheticDataset, pixel_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pairs(domain, n, split="val", **kw):
    ds = SyntheticDataset(domain, split, n=n, **kw)
    return [ds[i] for i in range(n)]


@pytest.fixture(scope="module")
def cxr():
    return _pairs("cxr", 300)


@pytest.fixture(scope="module")
def path():
    return _pairs("path", 300)


def _auc(pos, neg):
    """P(stat of a random positive > stat of a random negative), ties count half (Mann–Whitney AUC)."""
    pos, neg = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


#### Contract: fields, sizes, errors ####################################################################################

def test_finding_lists_have_at_least_six_binary_labels_each():
    assert len(CXR_FINDINGS) >= 6 and len(PATH_FINDINGS) >= 6
    assert len(set(CXR_FINDINGS)) == len(CXR_FINDINGS) and len(set(PATH_FINDINGS)) == len(PATH_FINDINGS)


@pytest.mark.parametrize("domain,shape", [("cxr", (64, 64)), ("path", (64, 64, 3))])
def test_pair_has_uint8_image_report_and_a_label_for_every_finding(domain, shape):
    pair = SyntheticDataset(domain, "train")[3]
    findings = CXR_FINDINGS if domain == "cxr" else PATH_FINDINGS
    assert pair.image.dtype == np.uint8 and pair.image.shape == shape
    assert pair.domain == domain and isinstance(pair.report, str) and pair.report
    assert list(pair.labels) == list(findings) and set(pair.labels.values()) <= {0, 1}
    assert isinstance(pair.meta, dict) and pair.uid == f"synthetic-{domain}-train-s0-000003"


def test_default_split_sizes_and_negative_index():
    assert [len(SyntheticDataset("cxr", s)) for s in ("train", "val", "test")] == [20000, 1000, 1000]
    ds = SyntheticDataset("path", "val", n=5)
    assert np.array_equal(ds[-1].image, ds[4].image)
    assert [p.uid for p in ds[1:3]] == [ds[1].uid, ds[2].uid]


@pytest.mark.parametrize("kwargs,match", [(dict(domain="mri"), "domain"), (dict(split="validate"), "split"),
                                          (dict(image_size=16), "image_size"), (dict(n=-1), "n must"),
                                          (dict(noise=-1.0), "noise")])
def test_bad_arguments_raise_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticDataset(**kwargs)


def test_index_out_of_range_names_the_dataset():
    with pytest.raises(IndexError, match="out of range for length 10"):
        SyntheticDataset("cxr", "test", n=10)[10]


#### Determinism and splits ##############################################################################################

@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_same_seed_gives_an_identical_pair_in_any_access_order(domain):
    a, b = SyntheticDataset(domain, "train", seed=5), SyntheticDataset(domain, "train", seed=5)
    first = a[7]
    for i in (0, 100, 3):
        b[i]                                                 # touching other indices first changes nothing
    second = b[7]
    assert np.array_equal(first.image, second.image)
    assert (first.report, first.labels, first.meta) == (second.report, second.labels, second.meta)


@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_different_index_or_seed_gives_a_different_pair(domain):
    ds = SyntheticDataset(domain, "train", seed=0)
    assert not np.array_equal(ds[0].image, ds[1].image)
    assert not np.array_equal(ds[0].image, SyntheticDataset(domain, "train", seed=1)[0].image)


@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_train_val_test_share_no_image(domain):
    digests = {}
    for split in ("train", "val", "test"):
        ds = SyntheticDataset(domain, split, n=150)
        digests[split] = {hashlib.sha1(ds[i].image.tobytes()).hexdigest() for i in range(150)}
        assert len(digests[split]) == 150                    # no duplicate within a split either
    assert not (digests["train"] & digests["val"]) and not (digests["train"] & digests["test"])
    assert not (digests["val"] & digests["test"])


def test_samples_fixture_in_docs_regenerates_exactly():
    """docs/samples was written by `python -m data.synthetic --samples docs/samples`; regenerate and compare
    (labels and reports exactly; pixels with a tolerance, in case a numpy release changes a float detail)."""
    folder = os.path.join(ROOT, "docs", "samples")
    assert os.path.isfile(os.path.join(folder, "labels.json")), \
        "docs/samples missing: run `python -m data.synthetic --samples docs/samples` and commit it (not git-ignored)"
    with open(os.path.join(folder, "labels.json")) as f:
        index = json.load(f)
    assert len(index) >= 10
    for stem, entry in index.items():
        domain, split, seed, i = re.fullmatch(r"synthetic-(\w+)-(\w+)-s(\d+)-(\d+)", entry["uid"]).groups()
        pair = SyntheticDataset(domain, split, n=int(i) + 1, seed=int(seed))[int(i)]
        assert pair.labels == entry["labels"], stem
        with open(os.path.join(folder, stem + ".txt")) as f:
            assert f.read().strip() == pair.report, stem
        saved = np.asarray(Image.open(os.path.join(folder, stem + ".png")))
        assert saved.shape == pair.image.shape
        assert np.abs(saved.astype(int) - pair.image.astype(int)).mean() < 1.0, stem


#### Every finding is visible in the pixels ##############################################################################
# Simple statistics on fixed 64-px regions (no knowledge of the generator's state), compared by AUC between images with and
# without the finding, among images without the one finding that shares the statistic's intensity window.

def _bright_off_heart(img):
    """Pixels > 180 that are not part of the largest bright region (the heart)."""
    from scipy import ndimage
    comp, n = ndimage.label(img > 180)
    sizes = np.bincount(comp.ravel())[1:]
    return int(sizes.sum() - sizes.max()) if n else 0


def _cxr_simple_stats(img):
    img = img.astype(float)
    heart_rows = img[41:48]
    runs = [max(len(r) for r in "".join("1" if v > 190 else "0" for v in row).split("0")) for row in heart_rows]
    lungs = np.zeros_like(img, bool)
    lungs[12:42, 9:28] = lungs[12:42, 37:56] = True
    return {"heart_width": max(runs),
            "lower_right_lung": img[38:46, 9:19].mean(),          # patient's right = image left
            "lower_left_lung": img[38:46, 46:56].mean(),
            "black_in_lungs": (img[14:40, 11:53] < 25).sum(),
            "bright_off_heart": _bright_off_heart(img),
            "bright_above_heart": (img[8:34, 9:56] > 180).sum(),
            "hazy_lung": ((img > 85) & (img < 145) & lungs).sum()}


_CXR_STATS = [("cardiomegaly", "heart_width", None), ("effusion_right", "lower_right_lung", "consolidation"),
              ("effusion_left", "lower_left_lung", "consolidation"), ("pneumothorax", "black_in_lungs", None),
              ("nodule", "bright_off_heart", "support_device"), ("support_device", "bright_above_heart", "nodule"),
              ("consolidation", "hazy_lung", "effusion_right")]


@pytest.mark.parametrize("finding,stat,confounder", _CXR_STATS)
def test_cxr_finding_changes_a_simple_pixel_statistic(cxr, finding, stat, confounder):
    keep = [p for p in cxr if not (confounder and p.labels[confounder]) and
            not (confounder == "effusion_right" and p.labels["effusion_left"])]
    values = [(_cxr_simple_stats(p.image)[stat], p.labels[finding]) for p in keep]
    pos, neg = [v for v, y in values if y], [v for v, y in values if not y]
    assert len(pos) >= 15 and len(neg) >= 100
    assert _auc(pos, neg) >= 0.97, (finding, stat, np.percentile(pos, 5), np.percentile(neg, 95))


def _path_simple_stats(img):
    R, G, B = (img[..., c].astype(float) for c in range(3))
    return {"nuclear_fraction": ((B - R > 12) & (R < 170) & (G < 0.8 * R)).mean(),
            "dark_purple": ((R < 85) & (B >= 85) & (G < 0.8 * R)).sum(),
            "white": (img.min(-1) > 228).sum(),
            "blue": ((G >= 0.8 * R) & (R < 150)).sum(),
            "pale_pink": ((R > 205) & (G >= 0.765 * R) & (img.min(-1) <= 228)).sum(),
            "near_black": ((R < 60) & (G < 40) & (B < 85)).sum()}


_PATH_STATS = [("high_cellularity", "nuclear_fraction", "pleomorphism"), ("pleomorphism", "dark_purple", None),
               ("glands", "white", None), ("inflammation", "blue", "mitoses"), ("necrosis", "pale_pink", "mitoses"),
               ("mitoses", "near_black", None)]


@pytest.mark.parametrize("finding,stat,confounder", _PATH_STATS)
def test_pathology_finding_changes_a_simple_pixel_statistic(path, finding, stat, confounder):
    keep = [p for p in path if not (confounder and p.labels[confounder])]
    values = [(_path_simple_stats(p.image)[stat], p.labels[finding]) for p in keep]
    pos, neg = [v for v, y in values if y], [v for v, y in values if not y]
    assert len(pos) >= 15 and len(neg) >= 40
    assert _auc(pos, neg) >= 0.97, (finding, stat, np.percentile(pos, 5), np.percentile(neg, 95))


@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_pixel_detector_reads_every_finding_back_at_64_px(domain, cxr, path):
    pairs = cxr if domain == "cxr" else path
    pred = np.array([[pixel_labels(p.image, domain)[f] for f in p.labels] for p in pairs])
    true = np.array([list(p.labels.values()) for p in pairs])
    acc = (pred == true).mean(0)
    assert acc.min() >= 0.98, dict(zip(pairs[0].labels, acc.round(3)))


@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_128_px_generation_scales_every_finding(domain):
    pairs = _pairs(domain, 120, split="test", image_size=128)
    assert pairs[0].image.shape[:2] == (128, 128) and pairs[0].image.dtype == np.uint8
    pred = np.array([[pixel_labels(p.image, domain)[f] for f in p.labels] for p in pairs])
    true = np.array([list(p.labels.values()) for p in pairs])
    assert (pred == true).mean(0).min() >= 0.98
    same = SyntheticDataset(domain, "test", image_size=64)[0]
    assert pairs[0].labels == same.labels and pairs[0].report == same.report   # size changes pixels, not content


def test_pixel_detector_rejects_the_wrong_image_kind():
    with pytest.raises(ValueError, match="grayscale"):
        pixel_labels(np.zeros((64, 64, 3), np.uint8), "cxr")
    with pytest.raises(ValueError, match="RGB"):
        pixel_labels(np.zeros((64, 64), np.uint8), "path")


def test_noise_knob_adds_pixel_noise_and_changes_nothing_else():
    clean, noisy = SyntheticDataset("cxr", "val", noise=0.0)[2], SyntheticDataset("cxr", "val", noise=6.0)[2]
    diff = noisy.image.astype(float) - clean.image.astype(float)
    assert 3.0 < diff[20:50, 10:54].std() < 8.0              # ≈ σ = 6 where nothing clips
    assert (clean.report, clean.labels) == (noisy.report, noisy.labels)


#### Labels, co-occurrence and reports ###################################################################################

def test_about_30_percent_of_cxr_are_normal_and_effusion_goes_with_cardiomegaly():
    labels = np.array([list(p.labels.values()) for p in _pairs("cxr", 1000, split="train")])
    normal = (labels.sum(1) == 0).mean()
    assert 0.25 < normal < 0.35
    cardio, effusion = labels[:, 0] == 1, labels[:, 1:3].any(1)
    assert effusion[cardio].mean() > 2 * effusion[~cardio].mean()
    assert 0.05 < labels.mean(0).min() and labels.mean(0).max() < 0.5  # every finding common enough to learn


def test_report_sentences_follow_the_canonical_order_unless_shuffled():
    order = ["heart", "lungs", "pleura", "devices"]
    cues = [("devices", r"pacemaker|(?<!pleural )line|catheter|device|tube"),       # first match wins
            ("pleura", r"effusion|costophrenic|pneumothora|pleural space"),
            ("lungs", r"consolidat|airspace|nodul|lungs"), ("heart", r"heart|cardi")]

    def ranks(report):
        findings = report.split("IMPRESSION:")[0].replace("FINDINGS:", "")
        return [order.index(next(g for g, cue in cues if re.search(cue, s, re.I)))
                for s in re.split(r"(?<!\d)\.(?!\d)", findings) if any(re.search(c, s, re.I) for _, c in cues)]

    canonical = [ranks(p.report) for p in _pairs("cxr", 300, split="train")]
    assert all(r == sorted(r) and r[0] == 0 for r in canonical)       # heart first, then lungs, pleura, devices
    shuffled_ds = SyntheticDataset("cxr", "train", shuffle_sentences=True)
    shuffled = [ranks(shuffled_ds[i].report) for i in range(300)]
    assert sum(r != sorted(r) for r in shuffled) > 30
    same = SyntheticDataset("cxr", "train")[11], shuffled_ds[11]
    assert np.array_equal(same[0].image, same[1].image) and same[0].labels == same[1].labels


def _template(sentence):
    """A sentence with its slot fillers (side, lobe, zone, severity, size, count) replaced, i.e. its template."""
    s = sentence.lower()
    s = re.sub(r"\b(right|left|bilateral)\b", "<side>", s)
    s = re.sub(r"\b(upper|middle|lower)\b|lingula", "<zone>", s)
    s = re.sub(r"\b(small|moderate|large|mild|mildly|marked|markedly|focal|patchy|extensive|dense|sizable|subcentimeter|"
               r"8 mm|2 cm|a single|two|three|four)\b", "<slot>", s)
    return s


@pytest.mark.parametrize("domain", ["cxr", "path"])
def test_every_finding_has_at_least_five_phrasings_and_explicit_negations(domain):
    positive, negative = {}, {}
    for p in _pairs(domain, 700, split="train"):
        for sentence in re.split(r"(?<=\.)\s+", p.report.split("IMPRESSION:")[0].replace("FINDINGS:", "").strip()):
            labels = report_labels(sentence, domain)
            for f, v in labels.items():
                if v == 1:
                    positive.setdefault(f, set()).add(_template(sentence))
            if sentence.lower().startswith("no ") or " no " in sentence.lower() or "absent" in sentence.lower():
                for f in p.labels:
                    if p.labels[f] == 0:
                        negative.setdefault(f, set()).add(sentence)
    findings = CXR_FINDINGS if domain == "cxr" else PATH_FINDINGS
    too_few = {f: len(positive.get(f, ())) for f in findings if len(positive.get(f, ())) < 5}
    assert not too_few, f"positive phrasings (templates) per finding: {too_few}"
    too_few = {f: len(negative.get(f, ())) for f in findings if len(negative.get(f, ())) < 3}
    assert not too_few, f"negation sentences per finding: {too_few}"


@pytest.mark.parametrize("domain,mean_max,p95_max", [("cxr", 30, 45), ("path", 30, 45)])
def test_reports_are_short_enough_for_64_text_tokens(domain, mean_max, p95_max):
    words = np.array([len(p.report.split()) for p in _pairs(domain, 500, split="train")])
    assert words.mean() <= mean_max and np.percentile(words, 95) <= p95_max
    if domain == "cxr":
        assert all(p.report.startswith("FINDINGS: ") and " IMPRESSION: " in p.report for p in _pairs(domain, 50))


def test_grounded_slots_in_the_report_match_the_drawn_attributes(cxr):
    for p in cxr:
        m, text = p.meta, p.report.lower()
        if p.labels["nodule"]:
            assert m["nodule_lobe"] in text
        if p.labels["consolidation"]:
            assert m["consolidation_lobe"] in text
        if p.labels["pneumothorax"]:
            assert f"{m['pneumothorax_side']} pneumothorax" in text
        if p.labels["cardiomegaly"]:
            assert m["cardiomegaly_severity"] in text and m["ctr"] >= 0.54
        elif "ctr" in m:
            assert m["ctr"] <= 0.45

