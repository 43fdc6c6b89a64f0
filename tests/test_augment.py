"""bench/augment.py: each arm holds the pairs it says, folders load as train.py loads them, the table's gains are the
paper's relative form, and missing runs are named."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import augment  # noqa: E402

from data import load_pairs  # noqa: E402


def _rows(prefix, n):
    return [{"image": f"/x/{prefix}{i}.png", "report": f"{prefix} report {i}"} for i in range(n)]


def test_arms_share_the_real_pairs_and_the_shuffled_arm_keeps_images_and_reports_but_breaks_pairs():
    real, extra, gen = _rows("real", 5), _rows("extra", 50), _rows("gen", 50)
    arms = {arm: augment.arm_rows(arm, real, extra, gen) for arm in augment.ARMS}
    assert arms["real"] == real
    assert all(rows[:5] == real for rows in arms.values())
    assert arms["real + MeDiM"][5:] == gen and arms["real + real"][5:] == extra
    shuffled = arms["real + shuffled MeDiM"][5:]
    assert [r["image"] for r in shuffled] == [g["image"] for g in gen]
    assert sorted(r["report"] for r in shuffled) == sorted(g["report"] for g in gen)
    kept = sum(r["report"] == g["report"] for r, g in zip(shuffled, gen))
    assert kept <= 3  # a random permutation of 50 keeps about one pair in place
    with pytest.raises(ValueError, match="unknown arm"):
        augment.arm_rows("real + nothing", real, extra, gen)


def test_an_arm_folder_loads_with_its_rows_as_the_train_split(tmp_path):
    rng = np.random.default_rng(0)
    rows = [augment.save_pair(str(tmp_path / "png"), f"p{i}", rng.integers(0, 255, (16, 16), dtype=np.uint8),
                              f"FINDINGS: report number {i}.") for i in range(6)]
    # (section=both is how train.py reads these folders: DOWNSTREAM's --data-options)
    folder = str(tmp_path / "arm")
    augment.write_folder(rows[:4], rows[4:], folder)
    train = load_pairs("folder", "train", data_dir=folder, image_size=16, section="both")
    test = load_pairs("folder", "test", data_dir=folder, image_size=16, section="both")
    assert sorted(train[i].report for i in range(len(train))) == [f"report number {i}." for i in range(4)]
    assert len(test) == 2 and test[0].report == "report number 4."   # the loader cuts the FINDINGS: heading
    first = json.loads(open(os.path.join(folder, "pairs.jsonl")).readline())
    assert np.array_equal(train[[train[i].uid for i in range(len(train))].index(first["id"])].image,
                          np.asarray(Image.open(first["image"])))


def _m(f1, bleu1):
    return {"label_f1_macro": f1, "bleu1": bleu1, "bleu2": 0.2, "bleu3": 0.1, "bleu4": 0.05, "meteor": 0.3}


def test_table_gives_relative_gain_of_seed_means_paired_intervals_and_names_missing_runs():
    results = {"real": {0: _m(0.4, 0.5), 1: _m(0.6, 0.5)},
               "real + MeDiM": {0: _m(0.5, 0.6), 1: _m(0.7, 0.6)},
               "real + shuffled MeDiM": {0: _m(0.3, 0.5)},
               "real + real": {}}
    table = augment.markdown(results, [0, 1])
    lines = table.splitlines()
    row = next(line for line in lines if line.startswith("| real + MeDiM | 2"))
    assert "0.600 ± 0.100" in row                                    # label F1 mean ± population std
    gain = next(line for line in lines if line.startswith("| real + MeDiM | +"))
    assert "+20.0%" in gain.split("|")[2] and "+20.0%" in gain.split("|")[3]   # 0.6 / 0.5 and 0.6 / 0.5
    assert "missing: [1]" in next(line for line in lines if line.startswith("| real + shuffled MeDiM | 1"))
    assert "missing: seeds [0, 1]" in next(line for line in lines if line.startswith("| real + real | 0"))
    paired = [line for line in lines if line.startswith("| real + MeDiM | +0.100")]
    assert paired and "(2/2 better)" in paired[0]                      # both seeds +0.1 label F1
