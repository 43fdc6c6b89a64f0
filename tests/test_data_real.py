"""Real-data loaders (data/mimic.py, data/pathgen.py, data/images.py, data/cache.py, data/__init__.py) on small fake
trees in each on-disk layout (tests/fixtures_real.py). Oracles: hand-written expected texts / ids / counts, the PIL
pipeline applied directly, and closed-form pixel values (16-bit ramp / 257, DICOM window arithmetic)."""
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
from data import cache as data_cache  # noqa: E402
from data.common import square_resize  # noqa: E402
from data.images import MissingDependency, dicom_to_8bit, read_dicom, read_image  # noqa: E402
from data.mimic import ReportFiles, choose_section, normalize_section_name, split_sections  # noqa: E402
from data.records import clean_text  # noqa: E402
from fixtures_real import (FINDINGS_T1, FINDINGS_T3, LAST_PARAGRAPH_V2, REPORT_ADDENDUM, REPORT_FULL,  # noqa: E402
                           REPORT_NO_HEADERS, make_medim_flat, make_mimic_jpg_tree, make_pathgen, make_r2gen,
                           save_16bit_ramp)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return {"mimic": make_mimic_jpg_tree(base / "mimic"),
            "mimic_zip": make_mimic_jpg_tree(base / "mimic_zip", reports="zip"),
            "mimic_inside": make_mimic_jpg_tree(base / "mimic_inside", reports="inside"),
            "iu": make_r2gen(base / "iu", "iu"), "r2gen_mimic": make_r2gen(base / "r2gen_mimic", "mimic"),
            "flat": make_medim_flat(base / "flat"), "pg_json": make_pathgen(base / "pg_json", "json"),
            "pg_jsonl": make_pathgen(base / "pg_jsonl", "jsonl"),
            "pg_flat": make_pathgen(base / "pg_flat", "flat", split_csv=True)}


def load(name, split, tree, **kw):
    return data.load_pairs(name, split, str(tree["root"]), **kw)


#################################################################################
#                       Report sections (MIMIC-CXR text)                        #
#################################################################################

def test_findings_and_impression_are_extracted_from_a_wrapped_mimic_report():
    sections = split_sections(REPORT_FULL)
    assert clean_text(sections["findings"]) == clean_text(FINDINGS_T1)
    assert clean_text(sections["impression"]) == "Cardiomegaly and small right pleural effusion."
    assert clean_text(sections["indication"]).startswith("___ year old woman")
    assert clean_text(sections["examination"]) == "CHEST (PA AND LAT)"
    assert "FINAL REPORT" in sections["preamble"]


def test_addendum_on_top_stays_out_of_findings():
    sections = split_sections(REPORT_ADDENDUM)
    assert clean_text(sections["findings"]) == FINDINGS_T3
    assert "discussed" in sections["addendum"] and "discussed" not in sections["findings"]
    assert clean_text(sections["impression"]) == "Low lung volumes with bibasilar atelectasis."


def test_report_without_headers_yields_last_paragraph_used_only_with_fallback():
    sections = split_sections(REPORT_NO_HEADERS)
    assert "findings" not in sections and "impression" not in sections
    assert clean_text(sections["last_paragraph"]) == LAST_PARAGRAPH_V2
    assert choose_section(sections, "findings", fallback=False) is None
    assert clean_text(choose_section(sections, "findings", fallback=True)) == LAST_PARAGRAPH_V2


@pytest.mark.parametrize("raw,name", [("FINDINGS", "findings"), ("CONCLUSION", "impression"), ("IMPRESSON", "impression"),
                                      ("FINDNGS", "findings"), ("CHEST, TWO VIEWS", "findings"),
                                      ("FINDINGS AND IMPRESSION", "impression"), ("REASON FOR EXAMINATION", "indication"),
                                      ("COMPARSION", "comparison"), ("CLINICAL HISTORY", "history"),
                                      ("WET READ", "wet read"), ("NOTE", "note")])
def test_section_names_are_normalised(raw, name):
    assert normalize_section_name(raw) == name


def test_empty_findings_never_win_and_the_last_named_section_does():
    text = (" FINDINGS:\n \n INDICATION: Cough.\n FINDINGS: First look.\n IMPRESSION: Normal.\n"
            " FINDINGS: Final word.\n FINDINGS:\n \n")
    sections = split_sections(text)
    assert clean_text(sections["findings"]) == "Final word."
    assert choose_section(sections, "both") == "Final word. Normal."
    assert choose_section(sections, "conclusion") == "Normal."
    assert choose_section({"impression": "Normal."}, "findings") is None
    assert choose_section({"impression": "Normal."}, "findings", fallback=True) == "Normal."


def test_clean_text_joins_lines_and_normalises_deid_blanks():
    raw = " Dr. ____ was\n   notified  at ___ .\n ______________________________\n Next line."
    assert clean_text(raw) == "Dr. ___ was notified at ___ . Next line."
    assert clean_text(raw, deid="strip") == "Dr. was notified at. Next line."
    with pytest.raises(ValueError, match="deid"):
        clean_text(raw, deid="zap")


#################################################################################
#                         MIMIC-CXR-JPG (PhysioNet tree)                        #
#################################################################################

def test_mimic_train_keeps_one_frontal_per_study_and_counts_every_skip(trees):
    m = trees["mimic"]
    pairs = load("mimic", "train", m)
    st = m["studies"]
    clean = [st[f"TC{i}"]["dicom_ids"][0] for i in range(m["n_clean"][0])]
    expected = {m["pa"]["T1"], m["pa"]["T3"], st["T8"]["dicom_ids"][0], st["T9"]["dicom_ids"][1], *clean}
    assert {p.uid for p in pairs} == expected and len(pairs) == len(expected)
    assert dict(pairs.load_report.skipped) == {"no findings section (fallback off)": 1, "no frontal image in study": 1,
                                               "corrupt or truncated image": 2, "missing report": 1}
    assert pairs.load_report.fixed["non-UTF-8 bytes replaced"] == 1
    by_uid = {p.uid: p for p in pairs}
    t1 = by_uid[m["pa"]["T1"]]
    assert t1.report == clean_text(FINDINGS_T1) and t1.domain == "cxr" and t1.meta["view"] == "PA"
    assert t1.labels["Cardiomegaly"] == 1 and t1.labels["Pleural Effusion"] == -1 and t1.labels["Edema"] == 0
    assert t1.labels["Pneumonia"] is None and len(t1.labels) == 14
    assert by_uid[m["pa"]["T3"]].report == FINDINGS_T3
    assert all(v is None for v in by_uid[m["pa"]["T3"]].labels.values())  # study without a CheXpert row
    assert "\ufffd" in by_uid[st["T8"]["dicom_ids"][0]].report
    assert by_uid[st["T9"]["dicom_ids"][1]].meta["view"] == "AP"  # blank ViewPosition is not frontal
    for p in pairs:
        assert p.image.shape == (64, 64) and p.image.dtype == np.uint8


def test_mimic_pixels_equal_the_pil_pipeline_applied_directly(trees):
    m = trees["mimic"]
    pair = next(p for p in load("mimic", "train", m, image_size=48) if p.uid == m["pa"]["T1"])
    st = m["studies"]["T1"]
    path = m["root"] / "files" / "p10" / f"p{st['subject']}" / f"s{st['study']}" / f"{pair.uid}.jpg"
    expected = square_resize(Image.open(path).convert("L"), 48, fill=0)
    assert pair.image.shape == (48, 48)
    np.testing.assert_array_equal(pair.image, expected)
    assert (pair.image[:2] == 0).all()  # 72x60 padded to a square with black rows on top


def test_mimic_validate_and_test_splits(trees):
    m = trees["mimic"]
    st = m["studies"]
    val = load("mimic", "validate", m)
    assert {p.uid for p in val} == {st["V1"]["dicom_ids"][0]} | {st[f"VC{i}"]["dicom_ids"][0] for i in range(2)}
    assert dict(val.load_report.skipped) == {"no findings section (fallback off)": 1}
    test = load("mimic", "test", m)
    assert dict(test.load_report.skipped) == {"missing image": 1, "empty report": 1}
    by_uid = {p.uid: p for p in test}
    long = by_uid[st["X3"]["dicom_ids"][0]].report
    assert len(long) > 2000 and long.endswith("consolidation.")  # kept whole: the tokenizer truncates and counts
    assert sum(test.load_report.fixed.values()) == 1
    assert by_uid[st["X4"]["dicom_ids"][0]].report == clean_text(FINDINGS_T1)  # CRLF report
    assert not {p.meta["subject_id"] for p in test} & {p.meta["subject_id"] for p in load("mimic", "train", m)}


@pytest.mark.parametrize("where", ["mimic_zip", "mimic_inside"])
def test_reports_from_zip_or_inside_the_image_tree_give_the_same_pairs(trees, where):
    a, b = load("mimic", "train", trees["mimic"]), load("mimic", "train", trees[where])
    assert [(p.uid, p.report) for p in a] == [(p.uid, p.report) for p in b]
    assert b.load_report.skipped == a.load_report.skipped


def test_mimic_options_fallback_all_views_and_both_sections(trees):
    m = trees["mimic"]
    st = m["studies"]
    fb = {p.uid: p for p in load("mimic", "val", m, fallback=True)}
    assert fb[st["V2"]["dicom_ids"][0]].report == LAST_PARAGRAPH_V2
    fb_train = {p.uid: p for p in load("mimic", "train", m, fallback=True)}
    assert fb_train[st["T2"]["dicom_ids"][0]].report.startswith("Interval placement of a right internal jugular")
    every = load("mimic", "train", m, views="all", one_per_study=False)
    uids = [p.uid for p in every]
    assert set(st["T1"]["dicom_ids"]) <= set(uids) and st["T4"]["dicom_ids"][0] in uids  # lateral-only study kept
    assert len(set(st["T3"]["dicom_ids"]) & set(uids)) == 3
    both = {p.uid: p for p in load("mimic", "train", m, section="both")}
    assert both[m["pa"]["T1"]].report == clean_text(FINDINGS_T1) + " Cardiomegaly and small right pleural effusion."
    imp = {p.uid: p for p in load("mimic", "train", m, section="impression")}
    assert imp[st["T2"]["dicom_ids"][0]].report.endswith("No pneumothorax.")


def test_strict_mode_raises_naming_the_bad_file(trees):
    with pytest.raises(ValueError, match=r"s50000004|s50000002|s50000007"):
        load("mimic", "train", trees["mimic"], strict=True, rebuild_cache=True)


def test_load_summary_names_files_and_counts_but_never_report_text(trees, capsys):
    load("mimic", "train", trees["mimic"], rebuild_cache=True)
    out = capsys.readouterr().out
    assert "missing report" in out and "s50000007.txt" in out and "corrupt or truncated image" in out
    assert "moderately enlarged" not in out and "Interval placement" not in out


#################################################################################
#                            Cache: every image read once                       #
#################################################################################

def test_second_load_reads_no_image_and_no_report(trees, tmp_path, monkeypatch):
    m = trees["mimic"]
    reads = {"image": 0, "report": 0}

    def counting(kind, fn):
        def wrapper(*a, **k):
            reads[kind] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(data_cache, "read_image", counting("image", data_cache.read_image))
    monkeypatch.setattr(ReportFiles, "read", counting("report", ReportFiles.read))
    first = load("mimic", "train", m, cache_dir=tmp_path)
    assert {p.name.split("-")[0] for p in tmp_path.iterdir()} == {"records", "images"}
    assert reads["image"] == len(first) + 2 and reads["report"] > len(first)  # + the 2 corrupt images
    reads.update(image=0, report=0)
    second = load("mimic", "train", m, cache_dir=tmp_path)
    assert reads == {"image": 0, "report": 0}
    assert [p.uid for p in second] == [p.uid for p in first]
    assert second.load_report.skipped == first.load_report.skipped
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.report == b.report and a.labels == b.labels
    smaller = load("mimic", "train", m, cache_dir=tmp_path, image_size=32)  # another size: images re-read, not reports
    assert reads == {"image": len(first) + 2, "report": 0} and smaller[0].image.shape == (32, 32)


def test_default_cache_inside_data_dir_is_reused_by_the_flat_layout(tmp_path, monkeypatch):
    f = make_medim_flat(tmp_path / "flat")
    first = data.load_pairs("mimic", "train", str(f["root"]))
    assert (f["root"] / ".cache").is_dir()
    import data.records as data_records
    monkeypatch.setattr(data_records, "read_text", lambda *a, **k: pytest.fail("text re-read although cached"))
    monkeypatch.setattr(data_cache, "read_image", lambda *a, **k: pytest.fail("image re-read although cached"))
    second = data.load_pairs("mimic", "train", str(f["root"]))
    assert [p.report for p in second] == [p.report for p in first]


def test_limit_takes_a_seeded_subset_in_order(trees, tmp_path):
    m = trees["mimic"]
    full = [p.uid for p in load("mimic", "train", m, cache_dir=tmp_path)]
    a = [p.uid for p in load("mimic", "train", m, cache_dir=tmp_path, limit=4, seed=1)]
    b = [p.uid for p in load("mimic", "train", m, cache_dir=tmp_path, limit=4, seed=1)]
    assert a == b and len(a) <= 4 and a == [u for u in full if u in a]


def test_threaded_decoding_matches_serial(trees, tmp_path):
    serial = load("mimic", "train", trees["mimic"], cache_dir=tmp_path / "a", workers=0)
    threaded = load("mimic", "train", trees["mimic"], cache_dir=tmp_path / "b", workers=2)
    np.testing.assert_array_equal(np.stack([p.image for p in serial]), np.stack([p.image for p in threaded]))


#################################################################################
#                         R2Gen annotation.json + flat                          #
#################################################################################

def test_r2gen_iu_pairs_splits_and_skips(trees):
    iu = trees["iu"]
    train = load("mimic", "train", iu)
    assert [p.uid for p in train] == iu["ids"]["train"]
    assert train[0].report == "Heart size normal. XXXX opacity in the right lower lobe. No pneumothorax."
    val = load("mimic", "val", iu)
    assert [p.uid for p in val] == iu["ids"]["val"][1:] and dict(val.load_report.skipped) == {"missing image": 1}
    test = load("mimic", "test", iu)
    assert dict(test.load_report.skipped) == {"empty report": 1,
                                              "malformed annotation entry (needs report + image_path)": 1}
    both_views = load("mimic", "train", iu, all_images=True)
    assert len(both_views) == 8 and both_views[1].uid == iu["ids"]["train"][0] + "/1"


def test_r2gen_mimic_entries_keep_study_ids(trees):
    r = trees["r2gen_mimic"]
    train = load("mimic", "train", r)
    assert [p.uid for p in train] == r["ids"]["train"]
    assert train[0].meta["study_id"] == "50000001" and train[0].meta["subject_id"] == "10000001"


def test_16bit_png_is_scaled_by_bit_depth_not_clipped(tmp_path, trees):
    values = save_16bit_ramp(tmp_path / "ramp.png", 64, 64)
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    image, repairs = read_image(tmp_path / "ramp.png", "cxr", 64)
    np.testing.assert_array_equal(image, np.rint(values / 257.0).astype(np.uint8))  # 65535 -> 255, linear
    assert repairs == ["I;16 image scaled to 8 bit"]
    # through the R2Gen loader: the 64x80 ramp of entry CXR2, padded and resized, against the same arithmetic
    uid, ramp = trees["iu"]["sixteen_bit"]
    pair = next(p for p in load("mimic", "train", trees["iu"]) if p.uid == uid)
    expected = square_resize(Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8)), 64)
    np.testing.assert_array_equal(pair.image, expected)


def test_medim_flat_carves_val_by_patient(trees):
    f = trees["flat"]
    train, val, test = (load("mimic", s, f) for s in ("train", "val", "test"))
    assert [p.uid for p in train] == f["train"] and [p.uid for p in val] == f["val"]
    assert [p.uid for p in test] == f["test"]
    assert not {p.meta["subject_id"] for p in train} & {p.meta["subject_id"] for p in val}
    assert dict(train.load_report.skipped) == {"missing report": 1, "orphan report (no image)": 1}
    assert train.load_report.fixed["non-UTF-8 bytes replaced"] == 1
    assert "\ufffd" in train[1].report


#################################################################################
#                                   PathGen                                     #
#################################################################################

@pytest.mark.parametrize("layout", ["pg_json", "pg_jsonl"])
def test_pathgen_json_splits_by_slide_and_composites_rgba_on_white(trees, layout):
    pg = trees[layout]
    splits = {s: load("pathgen", s, pg) for s in ("train", "val", "test")}
    for s, pairs in splits.items():
        assert [p.uid for p in pairs] == pg["uids"][s]
        assert all(p.domain == "path" and p.image.shape == (64, 64, 3) and p.labels is None for p in pairs)
    slides = {s: {p.meta["wsi_id"] for p in pairs} for s, pairs in splits.items()}
    assert not slides["train"] & slides["val"] and not slides["train"] & slides["test"]
    skipped = splits["train"].load_report.skipped
    assert skipped["missing image"] == 1 and skipped["malformed entry (needs wsi_id, position [x, y], caption)"] == 1
    if layout == "pg_jsonl":
        assert skipped["malformed json line"] == 1
    rgba = next(p for p in splits["train"] if p.uid == pg["rgba"])
    assert rgba.image[:, 40:].min() >= 250  # transparent half -> white glass, not black
    assert rgba.image[:, :20].mean() < 240
    captions = " ".join(p.report for pairs in splits.values() for p in pairs)
    assert "—" in captions and "Müller" in captions


def test_pathgen_flat_folders_and_split_csv(trees):
    pg = trees["pg_flat"]
    train, val, test = (load("pathgen", s, pg) for s in ("train", "val", "test"))
    assert [p.uid for p in train] == pg["uids"]["train"] and [p.uid for p in val] == pg["uids"]["val"]
    assert [p.uid for p in test] == pg["uids"]["test"]
    assert train.load_report.skipped["missing report"] == 1 and train.load_report.fixed["non-UTF-8 bytes replaced"] == 1
    assert train[0].meta["wsi_id"] + "_448_896" == train[0].uid
    listed = load("pathgen", "train", pg, split_csv=str(pg["root"] / "splits"))
    assert [p.uid for p in listed] == pg["csv_uids"]["train"]


#################################################################################
#                                Image decoding                                 #
#################################################################################

def test_image_modes_become_8bit_without_clipping(tmp_path):
    cases = {  # mode image, domain, expected pixel value of a constant image
        "I32": (Image.fromarray(np.full((8, 8), 32768, np.int32), "I"), "cxr", 128),
        "F": (Image.fromarray(np.full((8, 8), 0.5, np.float32), "F"), "cxr", 128),
        "CMYK": (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "path", 255),
        "LA": (Image.new("LA", (8, 8), (200, 0)), "cxr", 0),
        "P": (Image.new("P", (8, 8), 1), "path", None),
        "1": (Image.new("1", (8, 8), 1), "cxr", 255),
    }
    cases["P"][0].putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    for name, (img, domain, value) in cases.items():
        path = tmp_path / f"{name}.{'tif' if name in ('I32', 'F', 'CMYK') else 'png'}"
        img.save(path)
        array, _ = read_image(path, domain, 8)
        assert array.dtype == np.uint8 and array.shape == ((8, 8) if domain == "cxr" else (8, 8, 3)), name
        if value is not None:
            assert (array == value).all(), (name, np.unique(array))
    array, _ = read_image(tmp_path / "P.png", "path", 8)
    assert tuple(array[0, 0]) == (10, 20, 30)


def test_big_jpeg_is_draft_decoded_and_close_to_a_full_decode(tmp_path, monkeypatch):
    y, x = np.mgrid[0:1600, 0:2000]
    picture = (127 + 100 * np.sin(x / 300.0) * np.cos(y / 250.0)).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "big.jpg", quality=95)
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: calls.append(original(self, mode, size)) or calls[-1])
    fast, _ = read_image(tmp_path / "big.jpg", "cxr", 64)
    assert calls and calls[0][1][2] == 2000 / 8  # libjpeg decoded at 1/8 scale
    full = square_resize(Image.fromarray(picture), 64)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0


def test_dicom_values_follow_slope_window_and_monochrome1():
    stored = np.array([[0, 100], [200, 400]], np.uint16)
    # slope 2, intercept -100 -> [-100, 100, 300, 700]; window center 300 width 400 -> [100, 500]
    out = dicom_to_8bit(stored, 2, -100, 300, 400)
    np.testing.assert_array_equal(out, np.array([[0, 0], [128, 255]], np.uint8))
    # MONOCHROME1: high values dark; 255 - 127.5 rounds to 128
    np.testing.assert_array_equal(dicom_to_8bit(stored, 2, -100, 300, 400, "MONOCHROME1"), [[255, 255], [128, 0]])
    np.testing.assert_array_equal(dicom_to_8bit(stored), np.rint(stored / 400 * 255).astype(np.uint8))


def test_dicom_without_pydicom_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    (tmp_path / "x.dcm").write_bytes(b"DICM")
    with pytest.raises(MissingDependency, match="pydicom"):
        read_dicom(tmp_path / "x.dcm")


#################################################################################
#                         load_pairs: names, dirs, errors                       #
#################################################################################

def test_wrong_data_dir_says_what_was_expected_and_what_was_found(tmp_path, trees):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "scans").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        data.load_pairs("mimic", "train", str(tmp_path))
    msg = str(e.value)
    for expected in ("mimic-cxr-2.0.0-split.csv", "annotation.json", "data/ (train) and test/", "notes.txt", "scans/"):
        assert expected in msg, expected
    with pytest.raises(FileNotFoundError, match=r"(?s)PathGen.*notes\.txt"):
        data.load_pairs("pathgen", "train", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_pairs("mimic", "train", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs --data-dir"):
        data.load_pairs("mimic", "train")


def test_image_tree_without_reports_says_where_reports_were_sought(tmp_path):
    m = make_mimic_jpg_tree(tmp_path / "m", reports="folder", n_clean=(1, 0, 0))
    import shutil
    shutil.rmtree(m["root"] / "mimic-cxr-reports")
    with pytest.raises(FileNotFoundError, match=r"mimic-cxr-reports.*s50000001\.txt|s50000001\.txt.*mimic-cxr-reports"):
        data.load_pairs("mimic", "train", str(m["root"]))


def test_mixed_sources_concatenate_with_domain_tags_and_balanced_weights(trees):
    dirs = f"{trees['mimic']['root']},{trees['pg_json']['root']}"
    mixed = data.load_pairs("mimic,pathgen", "train", dirs)
    n_cxr, n_path = len(load("mimic", "train", trees["mimic"])), len(load("pathgen", "train", trees["pg_json"]))
    assert len(mixed) == n_cxr + n_path
    assert mixed.domains == ["cxr"] * n_cxr + ["path"] * n_path
    assert mixed[0].image.shape == (64, 64) and mixed[-1].image.shape == (64, 64, 3) and mixed[-1].domain == "path"
    p = data.sampling_weights(mixed, {"cxr": 1, "path": 1})
    assert np.isclose(p.sum(), 1) and np.isclose(p[:n_cxr].sum(), 0.5)
    p = data.sampling_weights(mixed, {"cxr": 3, "path": 1})
    assert np.isclose(p[:n_cxr].sum(), 0.75) and np.allclose(p[:n_cxr], p[0])
    with pytest.raises(ValueError, match="path"):
        data.sampling_weights(mixed, {"cxr": 1})


def test_synthetic_names_dispatch_lazily_and_need_no_data_dir(trees, monkeypatch):
    made = []

    class FakeSynthetic(list):
        def __init__(self, domain="cxr", split="train", n=None, image_size=64, seed=0, shuffle_sentences=False):
            made.append(dict(domain=domain, split=split, n=n, image_size=image_size, seed=seed,
                             shuffle_sentences=shuffle_sentences))
            super().__init__([data.Pair(np.zeros((image_size,) * 2, np.uint8), "x", domain)] * 3)
            self.domain = domain
    monkeypatch.setattr(data, "_synthetic_dataset", lambda: FakeSynthetic)
    mixed = data.load_pairs("synthetic,mimic,synthetic-path", "validate", str(trees["mimic"]["root"]),
                            image_size=32, seed=5, shuffle_sentences=True, section="findings")
    assert [d["domain"] for d in made] == ["cxr", "path"] and made[0]["split"] == "val" and made[0]["seed"] == 5
    assert made[0]["shuffle_sentences"] is True and made[0]["image_size"] == 32
    assert mixed.domains[:3] == ["cxr"] * 3 and mixed.domains[-3:] == ["path"] * 3 and len(mixed) == 9
    with pytest.raises(ValueError, match="no source takes it"):
        data.load_pairs("synthetic", "train", colour="blue")
    with pytest.raises(ValueError, match="another source"):
        data.load_pairs("synthetic", "train", section="both")
    with pytest.raises(ValueError, match="another source"):
        data.load_pairs("mimic", "train", str(trees["mimic"]["root"]), shuffle_sentences=True)
    assert len(data.load_pairs("mimic", "train", str(trees["mimic"]["root"]), shuffle_sentences=False)) == 8
    with pytest.raises(ValueError, match="unknown data source"):
        data.load_pairs("imagenet", "train")
    with pytest.raises(ValueError, match="split"):
        data.load_pairs("synthetic", "dev")
    with pytest.raises(ValueError, match="data dir"):
        data.load_pairs("mimic,pathgen", "train", "only-one-dir")
