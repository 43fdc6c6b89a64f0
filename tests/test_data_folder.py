"""data/folder.py (`--data folder`): each layout (images + .txt, pairs.jsonl, pairs.csv), each image kind (8 / 16 bit,
gray / RGB, PNG / JPEG), each kind of bad input, the no-usable-pair error and the deterministic split, on tiny folders
built in tmp_path; then train.py and sample.py end to end on one. Oracles: hand-written expected texts and counts, the
PIL pipeline applied directly, the closed-form 16-bit scaling (v / 257), and a split computed from the id's hash."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from data.common import square_resize  # noqa: E402
from data.records import group_split  # noqa: E402

REPORT = ("FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: ___ with cough.\n FINDINGS:\n Heart size is "
          "normal. No pleural effusion.\n IMPRESSION:\n No acute cardiopulmonary process.\n")


def gray(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def direct(path, size, mode="L"):
    """What a folder pair's pixels must be: PIL's own decode, converted, padded to a centred square (black film for
    CXR, white glass for pathology) and resized."""
    return square_resize(Image.open(path).convert(mode), size, fill=0 if mode == "L" else 255)


def ids_in_every_split(n_per_split=2, prefix="case"):
    """Ids whose hash puts n_per_split of them in each of train / val / test (at the default 10% / 10% fractions)."""
    want, out, k = {"train": n_per_split, "val": n_per_split, "test": n_per_split}, [], 0
    while any(want.values()):
        uid = f"{prefix}{k:03d}"
        split = group_split(uid, 0.1, 0.1)
        if want[split]:
            want[split] -= 1
            out.append((uid, split))
        k += 1
    return out


def load(root, split="train", **kw):
    return data.load_pairs("folder", split, str(root), image_size=kw.pop("image_size", 32), **kw)


def everything(root, **kw):
    """{uid: pair} over all three splits."""
    return {p.uid: p for s in ("train", "val", "test") for p in load(root, s, **kw)}


#################################################################################
#                                    Layouts                                    #
#################################################################################

def test_txt_layout_pairs_each_image_with_its_same_stem_report_in_every_subfolder(tmp_path):
    ids = ids_in_every_split()
    for k, (uid, _) in enumerate(ids):
        folder = tmp_path / ("patients/p1" if k % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray(40, 56, k)).save(folder / f"{uid}.png")
        (folder / f"{uid}.txt").write_text(REPORT if k == 0 else f"Report number {k}.", encoding="utf-8")
    pairs = everything(tmp_path)
    expected_ids = {(f"patients/p1/{uid}" if k % 2 else uid) for k, (uid, _) in enumerate(ids)}
    assert set(pairs) == expected_ids
    first = pairs[ids[0][0]]
    assert first.report == "Heart size is normal. No pleural effusion."          # FINDINGS, as the MIMIC loader
    assert first.domain == "cxr" and first.image.shape == (32, 32)
    np.testing.assert_array_equal(first.image, direct(tmp_path / f"{ids[0][0]}.png", 32))
    assert pairs[f"patients/p1/{ids[1][0]}"].report == "Report number 1."                  # no headings: used whole
    assert {p.meta["split"] for p in pairs.values()} == {"train", "val", "test"}


@pytest.mark.parametrize("section,text", [("findings", "Heart size is normal. No pleural effusion."),
                                          ("impression", "No acute cardiopulmonary process."),
                                          ("both", "Heart size is normal. No pleural effusion. No acute "
                                                   "cardiopulmonary process.")])
def test_section_option_chooses_findings_or_impression_as_the_mimic_loader_does(tmp_path, section, text):
    for uid, _ in ids_in_every_split(1):
        Image.fromarray(gray(16, 16, 0)).save(tmp_path / f"{uid}.png")
        (tmp_path / f"{uid}.txt").write_text(REPORT)
    assert {p.report for p in everything(tmp_path, section=section).values()} == {text}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_layout_reads_paths_relative_to_the_file_and_every_optional_field(tmp_path):
    (tmp_path / "imgs").mkdir()
    for k in range(4):
        Image.fromarray(gray(20, 30, k)).save(tmp_path / "imgs" / f"{k}.png")
    write_jsonl(tmp_path / "pairs.jsonl", [
        {"image": "imgs/0.png", "report": "Normal chest.", "split": "train", "id": "A"},
        {"image": "imgs/1.png", "findings": "Small left effusion.", "impression": "Effusion.", "split": "test",
         "labels": {"Pleural Effusion": 1, "Pneumothorax": 0}},
        {"image": "imgs/2.png", "report": "FINDINGS: Clear lungs. IMPRESSION: Normal.", "split": "validate",
         "labels": ["Support Devices"]},
        {"image": str(tmp_path / "imgs" / "3.png"), "report": "Absolute path.", "split": "train", "domain": "cxr"},
    ])
    pairs = everything(tmp_path)
    assert set(pairs) == {"A", "imgs/1", "imgs/2", str(tmp_path / "imgs" / "3")}
    assert pairs["A"].meta["split"] == "train" and pairs["imgs/1"].meta["split"] == "test"
    assert pairs["imgs/2"].meta["split"] == "val" and pairs["imgs/2"].report == "Clear lungs."   # findings, one line
    assert pairs["imgs/1"].report == "Small left effusion."
    assert everything(tmp_path, section="both")["imgs/1"].report == "Small left effusion. Effusion."
    assert pairs["imgs/1"].labels == {"Pleural Effusion": 1, "Pneumothorax": 0}
    assert pairs["imgs/2"].labels == {"Support Devices": 1} and pairs["A"].labels is None
    np.testing.assert_array_equal(pairs["imgs/1"].image, direct(tmp_path / "imgs" / "1.png", 32))


def test_csv_layout_with_sections_group_and_chexpert_columns(tmp_path):
    for k in range(3):
        Image.fromarray(gray(24, 24, k)).save(tmp_path / f"x{k}.jpg", quality=95)
    (tmp_path / "pairs.csv").write_text(
        "Image,Findings,Impression,Split,Cardiomegaly,Pleural Effusion\n"
        'x0.jpg,"Heart is enlarged, lungs clear.",Cardiomegaly.,train,1,\n'
        "x1.jpg,,No acute process.,test,0,0\n"
        "x2.jpg,Clear.,,val,,-1\n", encoding="utf-8")
    pairs = everything(tmp_path)
    assert pairs["x0"].report == "Heart is enlarged, lungs clear."
    assert pairs["x0"].labels == {"Cardiomegaly": 1, "Pleural Effusion": None}
    assert pairs["x1"].report == "No acute process." and pairs["x1"].meta["split"] == "test"   # no findings: fallback
    assert pairs["x2"].labels == {"Cardiomegaly": None, "Pleural Effusion": -1}
    np.testing.assert_array_equal(pairs["x0"].image, direct(tmp_path / "x0.jpg", 32))


def test_data_dir_may_name_the_index_file_and_options_arrive_as_text(tmp_path):
    for uid, _ in ids_in_every_split(1):
        Image.fromarray(gray(16, 16, 1)).save(tmp_path / f"{uid}.png")
    write_jsonl(tmp_path / "my_pairs.jsonl", [{"image": f"{uid}.png", "report": "Fine."}
                                              for uid, _ in ids_in_every_split(1)])
    options = data.parse_options("val_fraction=0.1,test_fraction=0.1,section=both")     # what --data-options gives
    assert len(load(tmp_path / "my_pairs.jsonl", "test", **options)) == 1
    assert len(load(tmp_path, "test", index="my_pairs.jsonl")) == 1


#################################################################################
#                                 Image kinds                                   #
#################################################################################

def test_16bit_gray_png_is_scaled_by_bit_depth_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    Image.fromarray(values).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    (tmp_path / "ramp.txt").write_text("A 16-bit image.")
    pairs = load(tmp_path, group_split("ramp", 0.1, 0.1))
    np.testing.assert_array_equal(pairs[0].image, np.rint(values / 257.0).astype(np.uint8))  # 65535 -> 255, linear
    assert pairs.load_report.fixed["I;16 image scaled to 8 bit"] == 1


def test_gray_and_rgb_png_and_jpeg_become_the_domains_channels(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    files = {"g.png": Image.fromarray(gray(30, 20, 2)), "g.jpg": Image.fromarray(gray(20, 30, 4)),
             "c.png": Image.fromarray(rgb), "c.jpg": Image.fromarray(rgb)}
    for name, img in files.items():
        sub = tmp_path / name.replace(".", "_")
        sub.mkdir()
        img.save(sub / name)
        (sub / f"{name.split('.')[0]}.txt").write_text(f"Image {name}.")
    for domain, mode, shape in (("cxr", "L", (32, 32)), ("path", "RGB", (32, 32, 3))):
        pairs = everything(tmp_path, domain=domain, rebuild_cache=True)
        assert len(pairs) == 4 and {p.domain for p in pairs.values()} == {domain}
        for name in files:
            sub = name.replace(".", "_")
            pair = pairs[f"{sub}/{name.split('.')[0]}"]
            assert pair.image.shape == shape
            want = direct(tmp_path / sub / name, 32, mode).astype(int)
            if name.endswith(".png"):
                np.testing.assert_array_equal(pair.image, want)
            else:  # libjpeg decodes straight to gray (draft mode): the same luma up to chroma rounding
                assert np.abs(pair.image.astype(int) - want).mean() < 2, name


def test_rows_tagged_with_both_domains_come_back_as_one_sequence_with_both_stacks(tmp_path):
    Image.fromarray(gray(16, 16, 0)).save(tmp_path / "xray.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "slide.png")
    write_jsonl(tmp_path / "pairs.jsonl", [{"image": "xray.png", "report": "Chest.", "split": "train"},
                                           {"image": "slide.png", "report": "H&E.", "split": "train", "domain": "path"}])
    pairs = load(tmp_path)
    assert sorted(data.domains_of(pairs)) == ["cxr", "path"]
    assert sorted(pairs[i].image.ndim for i in range(2)) == [2, 3]


#################################################################################
#                     Bad input: skipped, counted, named                        #
#################################################################################

def skips(pairs):
    return dict(pairs.load_report.skipped)


def good_txt_pairs(root, n=1):
    """n clean pairs per split, so a load always has something left."""
    for uid, _ in ids_in_every_split(n, prefix="good"):
        Image.fromarray(gray(16, 16, 0)).save(root / f"{uid}.png")
        (root / f"{uid}.txt").write_text("Clean report.")


def test_bad_items_in_the_txt_layout_are_skipped_counted_and_named(tmp_path, capsys):
    good_txt_pairs(tmp_path)
    Image.fromarray(gray(16, 16, 1)).save(tmp_path / "noreport.png")
    (tmp_path / "orphan.txt").write_text("Text without an image.")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "broken.txt").write_text("Fine text.")
    Image.fromarray(gray(16, 16, 2)).save(tmp_path / "blank.png")
    (tmp_path / "blank.txt").write_text("  \n\t ")
    Image.fromarray(gray(16, 16, 3)).save(tmp_path / "latin1.png")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 at 5\u00b0.".encode("cp1252"))
    Image.fromarray(gray(16, 16, 4)).save(tmp_path / "twice.png")
    Image.fromarray(gray(16, 16, 4)).save(tmp_path / "twice.jpg")
    (tmp_path / "twice.txt").write_text("One report, two images.")
    every = {s: load(tmp_path, s) for s in ("train", "val", "test")}
    record_level = skips(every["train"])
    assert record_level["missing report"] == 1 and record_level["orphan report (no image)"] == 1
    assert record_level["empty report"] == 1 and record_level["duplicate id"] == 1
    assert record_level["report is not UTF-8 text (pass encoding=cp1252 or the export's encoding)"] == 1
    broken_split = group_split("broken", 0.1, 0.1)
    assert skips(every[broken_split])["corrupt or truncated image"] == 1
    out = capsys.readouterr().out
    for name in ("noreport.png", "orphan.txt", "blank.png", "latin1.txt", "twice.png", "broken.png"):
        assert name in out, name
    assert "Fine text" not in out and "Caf" not in out                     # file names only, never report text
    assert "twice" in {p.uid for s in every.values() for p in s}           # the first of the two images is kept


def test_encoding_option_reads_windows_encoded_reports(tmp_path):
    good_txt_pairs(tmp_path)
    Image.fromarray(gray(16, 16, 3)).save(tmp_path / "latin1.png")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 at 5\u00b0.".encode("cp1252"))
    pairs = everything(tmp_path, encoding="cp1252")
    assert pairs["latin1"].report == "Caf\u00e9 at 5\u00b0."


def test_bad_lines_of_a_jsonl_index_are_skipped_counted_and_named(tmp_path, capsys):
    for k in range(4):
        Image.fromarray(gray(16, 16, k)).save(tmp_path / f"{k}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    lines = [{"image": "0.png", "report": "Good.", "split": "train", "id": "same"},
             "{not json",
             {"image": "1.png", "report": "Again.", "split": "train", "id": "same"},
             {"image": "nowhere.png", "report": "Missing image.", "split": "train"},
             {"image": "2.png", "report": "   ", "split": "train"},
             {"report": "No image field.", "split": "train"},
             [1, 2, 3],
             {"image": "bad.png", "report": "Unreadable.", "split": "train"},
             {"image": "3.png", "report": "Odd split.", "split": "holdout"}]
    write_jsonl(tmp_path / "pairs.jsonl", lines)
    with open(tmp_path / "pairs.jsonl", "ab") as f:
        f.write(b'{"image": "3.png", "report": "Caf\xe9", "split": "train"}\n')
    pairs = load(tmp_path)
    assert [p.uid for p in pairs] == ["same"]
    assert skips(pairs) == {"duplicate id": 1, "line is not JSON": 1, "missing image": 1, "empty report": 1,
                            "entry without an image path": 1, "line is not a JSON object": 1,
                            "corrupt or truncated image": 1, "unknown split value (use train, val or test)": 1,
                            "report is not UTF-8 text (pass encoding=cp1252 or the export's encoding)": 1}
    out = capsys.readouterr().out
    for where in ("pairs.jsonl:2", "pairs.jsonl:3", "pairs.jsonl:4", "pairs.jsonl:10", "bad.png"):
        assert where in out, where


def test_csv_without_the_needed_columns_is_counted_and_a_folder_with_nothing_else_is_one_clear_error(tmp_path):
    Image.fromarray(gray(16, 16, 0)).save(tmp_path / "0.png")
    (tmp_path / "pairs.csv").write_text("file_id,caption_text\n0.png,Hello.\n")
    with pytest.raises(ValueError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "pairs.csv" in msg and "no usable image-report pair" in msg
    assert "CSV without an image column" in msg and "file_id, caption_text" in msg


def test_csv_rows_with_bad_bytes_or_no_image_are_skipped(tmp_path):
    Image.fromarray(gray(16, 16, 0)).save(tmp_path / "0.png")
    with open(tmp_path / "pairs.csv", "wb") as f:
        f.write(b"image,report,split\n0.png,Good.,train\n0.png,Caf\xe9,train\n,No image.,train\n")
    pairs = load(tmp_path)
    assert len(pairs) == 1 and skips(pairs) == {
        "report is not UTF-8 text (pass encoding=cp1252 or the export's encoding)": 1, "entry without an image path": 1}


@pytest.mark.parametrize("content", ["nothing", "images_only", "texts_only"])
def test_a_folder_with_no_usable_pair_is_one_error_naming_it_and_what_was_sought(tmp_path, content):
    if content == "images_only":
        Image.fromarray(gray(16, 16, 0)).save(tmp_path / "a.png")
    if content == "texts_only":
        (tmp_path / "a.txt").write_text("Report.")
    with pytest.raises(ValueError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "same-stem .txt" in msg and "pairs.jsonl" in msg and "pairs.csv" in msg
    if content != "nothing":
        assert ("missing report" if content == "images_only" else "orphan report") in msg


def test_wrong_options_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="domain"):
        load(tmp_path, domain="mri")
    with pytest.raises(FileNotFoundError, match="pairs.csv"):
        load(tmp_path, layout="csv")


#################################################################################
#                          Splits: stable and leak-free                         #
#################################################################################

def test_split_is_a_fixed_hash_of_the_id_independent_of_seed_and_listing(tmp_path):
    for k in range(40):
        Image.fromarray(gray(8, 8, k)).save(tmp_path / f"s{k:02d}.png")
        (tmp_path / f"s{k:02d}.txt").write_text(f"Report {k}.")
    first = {uid: p.meta["split"] for uid, p in everything(tmp_path, seed=0).items()}
    again = {uid: p.meta["split"] for uid, p in everything(tmp_path, seed=7, cache_dir=tmp_path / "other").items()}
    assert first == again == {f"s{k:02d}": group_split(f"s{k:02d}", 0.1, 0.1) for k in range(40)}
    assert len(first) == 40                                               # the splits are disjoint and cover all


def test_group_column_and_group_by_folder_keep_a_patient_in_one_split(tmp_path):
    rows = []
    for patient in range(12):
        for view in range(3):
            name = f"p{patient}/v{view}.png"
            (tmp_path / f"p{patient}").mkdir(exist_ok=True)
            Image.fromarray(gray(8, 8, view)).save(tmp_path / name)
            (tmp_path / f"p{patient}/v{view}.txt").write_text(f"Patient {patient} view {view}.")
            rows.append({"image": name, "report": "x", "group": f"patient-{patient}"})
    for pairs in (everything(tmp_path, group_by="folder"), everything(tmp_path, index=write_index(tmp_path, rows))):
        by_patient = {}
        for uid, p in pairs.items():
            by_patient.setdefault(uid.split("/")[0], set()).add(p.meta["split"])
        assert len(by_patient) == 12 and all(len(s) == 1 for s in by_patient.values())
        assert len({s for splits in by_patient.values() for s in splits}) > 1


def write_index(root, rows):
    write_jsonl(root / "groups.jsonl", rows)
    return str(root / "groups.jsonl")


def test_split_folders_decide_and_a_missing_val_folder_is_carved_from_train(tmp_path):
    for split, n in (("data", 20), ("test", 3)):
        (tmp_path / split).mkdir()
        for k in range(n):
            Image.fromarray(gray(8, 8, k)).save(tmp_path / split / f"{split}{k}.png")
            (tmp_path / split / f"{split}{k}.txt").write_text("Report.")
    pairs = everything(tmp_path)
    assert {u for u, p in pairs.items() if p.meta["split"] == "test"} == {f"test/test{k}" for k in range(3)}
    carved = {u for u, p in pairs.items() if p.meta["split"] == "val"}
    assert carved == {f"data/data{k}" for k in range(20) if group_split(f"data/data{k}", 0.1, 0.0) == "val"}


def test_a_tiny_folder_still_gets_a_val_and_a_test_pair(tmp_path):
    names = [f"t{k}" for k in range(30) if group_split(f"t{k}", 0.1, 0.1) == "train"][:4]
    for name in names:
        Image.fromarray(gray(8, 8, 0)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text("Report.")
    sizes = {s: len(load(tmp_path, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 2, "val": 1, "test": 1}


#################################################################################
#                       End to end: train.py, sample.py                         #
#################################################################################

def run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_train_smoke_and_sample_i2t_on_a_fixture_folder(tmp_path):
    folder = tmp_path / "mydata"
    (folder / "scans").mkdir(parents=True)
    reports = ["FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.",
               "FINDINGS: Small left pleural effusion. IMPRESSION: Effusion.",
               "FINDINGS: Lungs are clear. No pneumothorax. IMPRESSION: No acute process."]
    rows = []
    for k in range(24):
        img = gray(48, 40, k) if k % 3 else np.random.default_rng(k).integers(0, 65536, (40, 48)).astype(np.uint16)
        Image.fromarray(img).save(folder / "scans" / f"{k}.png")
        rows.append({"image": f"scans/{k}.png", "report": reports[k % 3], "id": f"study{k}"})
    write_jsonl(folder / "pairs.jsonl", rows)
    out = tmp_path / "run"
    r = run(["train.py", "--preset", "smoke", "--data", "folder", "--data-dir", str(folder), "--out", str(out),
             "--steps", "4", "--vq-steps", "10", "--codebook-size", "16", "--text-vocab", "300", "--d-model", "32",
             "--n-layers", "1", "--n-heads", "2", "--batch-size", "4", "--n-eval", "2", "--sample-steps", "2",
             "--threads", "1", "--warmup", "2", "--image-size", "32", "--data-options", "section=both"])
    assert "[data] folder (jsonl) split=train" in r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == 4 and 0 <= m["i2t"]["label_f1_macro"] <= 1
    samples = tmp_path / "samples"
    run(["sample.py", "--ckpt", str(out), "--task", "i2t", "--image", str(folder / "scans" / "1.png"), "--n", "1",
         "--sample-steps", "2", "--out", str(samples)])
    assert {"grid.png", "image_0.png", "text_0.txt"} <= set(os.listdir(samples))
