"""Builders of small fake data trees in each real on-disk layout, warts included, for tests of data/mimic.py and
data/pathgen.py (and the end-to-end `train.py --data mimic --data-dir FIXTURE` test).

Everything here is made up: report texts are invented in MIMIC style (docs/data.md "Report sections"), images are drawn shapes.
No real patient data. Each builder writes a SYNTHETIC_TOY_DATA marker file and returns a manifest dict.

    make_mimic_jpg_tree(root, reports='folder'|'zip'|'inside', n_clean=(4, 2, 2))   MIMIC-CXR-JPG 2.0.0 + reports
    make_r2gen(root, dataset='iu'|'mimic')                                          R2Gen annotation.json + images/
    make_medim_flat(root)                                                           MeDiM data/ + test/ jpg + txt
    make_pathgen(root, layout='json'|'jsonl'|'flat', split_csv=False)               PathGen json + patches / flat

CLI: python tests/fixtures_real.py {mimic,r2gen-iu,r2gen-mimic,flat,pathgen-json,pathgen-flat} OUT_DIR
"""
import csv
import gzip
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.records import group_split  # noqa: E402  (only to pick ids that land in every split)

CHEXPERT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")


#################################################################################
#                                 Small writers                                 #
#################################################################################

def cxr_like(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 (h, w) picture with two dark 'lungs' and a bright 'heart', different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 90 + 40 * y + rng.normal(0, 4, (h, w))
    for cx in (0.32, 0.68):
        img[((x - cx) / 0.13) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1] = 40 + rng.integers(0, 20)
    img[((x - 0.55 - rng.uniform(0, 0.05)) / 0.12) ** 2 + ((y - 0.65) / 0.12) ** 2 < 1] = 210
    return np.clip(img, 0, 255).astype(np.uint8)


def patch_like(size: int, seed: int) -> np.ndarray:
    """A uint8 (size, size, 3) pink 'stroma' with purple 'nuclei'."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float64)
    img[:] = (236, 176, 208)
    y, x = np.mgrid[0:size, 0:size]
    for _ in range(12):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(2, 5)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = (80, 50, 140)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def save_truncated_jpeg(path: Path, array: np.ndarray):
    """A JPEG cut at 60%: Image.open() succeeds, load() raises 'image file is truncated'."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.6)])


def save_corrupt(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x01 this is not an image, just bytes " * 8)


def save_16bit_ramp(path: Path, h: int = 64, w: int = 64) -> np.ndarray:
    """A full-range 16-bit grayscale PNG (opens as mode 'I;16'); returns its values (h, w) uint16."""
    values = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    save(path, values)
    return values


def write_csv_gz(path: Path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def mimic_lines(*sections: tuple[str, str], title=True) -> str:
    """MIMIC report shape: a centred FINAL REPORT title, ' HEADER:' lines, a leading space on every line,
    blank lines holding one space, text wrapped at <= 79 columns."""
    lines = ["                                 FINAL REPORT"] if title else []
    for header, body in sections:
        words, line = body.split(), ""
        lines.append(f" {header}:")
        for word in words:
            if len(line) + len(word) + 1 > 76:
                lines.append(" " + line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(" " + line)
        lines.append(" ")
    return "\n".join(lines) + "\n"


def marker(root: Path, what: str):
    (root / "SYNTHETIC_TOY_DATA").write_text(f"made-up fixture data ({what}) written by tests/fixtures_real.py\n")


#################################################################################
#                         MIMIC-CXR report texts (made up)                      #
#################################################################################

FINDINGS_T1 = ("The heart is moderately enlarged.  There is a small right pleural effusion, possibly with adjacent "
               "atelectasis.  No pneumothorax is seen.  The previously noted ___ catheter has been removed.")
REPORT_FULL = mimic_lines(("EXAMINATION", "CHEST (PA AND LAT)"),
                          ("INDICATION", "___ year old woman with cough and fever, evaluate for pneumonia."),
                          ("TECHNIQUE", "Chest PA and lateral"), ("COMPARISON", "___"),
                          ("FINDINGS", FINDINGS_T1), ("IMPRESSION", "Cardiomegaly and small right pleural effusion."))
REPORT_IMPRESSION_ONLY = mimic_lines(("EXAMINATION", "CHEST (PORTABLE AP)"),
                                     ("INDICATION", "___ with shortness of breath"),
                                     ("IMPRESSION", "Interval placement of a right internal jugular line with tip "
                                                    "in the low SVC. No pneumothorax."))
REPORT_ADDENDUM = (
    "                                 FINAL REPORT\n"
    " ADDENDUM:\n \n"
    " Findings were discussed with Dr. ___ by telephone at 4:10 p.m. on ___.\n \n"
    " ______________________________________________________________________________\n"
    "                                 FINAL REPORT\n"
    " HISTORY:  Fever.\n \n"
    " COMPARISON:  Radiograph from ___.\n \n"
    " FINDINGS:  PA and lateral views of the chest demonstrate low lung volumes.\n"
    " Mild bibasilar opacities likely reflect atelectasis.  No large effusion.\n \n"
    " IMPRESSION:  Low lung volumes with bibasilar atelectasis.\n")
FINDINGS_T3 = ("PA and lateral views of the chest demonstrate low lung volumes. Mild bibasilar opacities likely reflect "
               "atelectasis. No large effusion.")
REPORT_NON_UTF8 = mimic_lines(("INDICATION", "Chest pain."),
                              ("FINDINGS", "The lungs are clear. The patient is rotated 15 DEGREE to the left. Heart "
                                           "size is normal."), ("IMPRESSION", "No acute process.")
                              ).encode("utf-8").replace(b" DEGREE", b"\xb0")  # a Latin-1 degree sign: not UTF-8
REPORT_NO_HEADERS = ("                                 FINAL REPORT\n"
                     " PORTABLE CHEST RADIOGRAPH ___ AT 08:15\n \n"
                     " Comparison is made to the prior study from ___.\n \n"
                     " The endotracheal tube terminates 4 cm above the carina.  Lungs are clear.\n")
LAST_PARAGRAPH_V2 = "The endotracheal tube terminates 4 cm above the carina. Lungs are clear."
LONG_SENTENCE = "Stable appearance of multiple calcified granulomas in both upper lobes without new consolidation. "
REPORT_LONG = mimic_lines(("FINDINGS", LONG_SENTENCE * 40), ("IMPRESSION", "No change."))
CLEAN_FINDINGS = ("The lungs are clear without focal consolidation. No pleural effusion or pneumothorax. The "
                  "cardiomediastinal silhouette is normal.",
                  "There is mild pulmonary vascular congestion. Heart size is mildly enlarged. No pneumothorax.",
                  "Left lower lobe opacity may reflect pneumonia. Small left pleural effusion. No pneumothorax.",
                  "Right PICC line ends in the mid SVC. Lungs are clear. No effusion.")


def dicom_id(n: int) -> str:
    """40 hex chars in 5 groups of 8, like MIMIC dicom ids (made up)."""
    return "-".join(f"{(n * 2654435761 + k * 40503) % 16 ** 8:08x}" for k in range(5))


#################################################################################
#                       (a) MIMIC-CXR-JPG 2.0.0 + reports                       #
#################################################################################

def make_mimic_jpg_tree(root, reports: str = "folder", n_clean=(4, 2, 2)) -> dict:
    """MIMIC-CXR-JPG 2.0.0 layout: files/p1X/p<subject>/s<study>/<dicom>.jpg, metadata/split/chexpert .csv.gz, and
    the MIMIC-CXR reports in mimic-cxr-reports/files/... (reports='folder'), mimic-cxr-reports.zip ('zip'), or beside
    the study folders in files/ ('inside').

    Special studies (expected outcome with the default options: findings, frontal, one image per study):
      train T1 PA+LATERAL, full report (FINDINGS + IMPRESSION, '___')       -> PA kept, CheXpert labels
            T2 AP, IMPRESSION only                                       -> skipped: no findings section
            T3 AP+PA+LATERAL, addendum on top, no CheXpert row           -> PA kept, labels all None
            T4 LATERAL only                                              -> skipped: no frontal image
            T5 PA, corrupt JPEG / T6 AP, truncated JPEG                  -> skipped: corrupt or truncated image
            T7 PA, report file missing                                   -> skipped: missing report
            T8 PA, report with a non-UTF-8 byte                          -> kept, U+FFFD, counted as fixed
            T9 blank-ViewPosition image + AP                             -> AP kept
      validate V1 PA full report -> kept; V2 PA, no section headers      -> skipped (kept with fallback=True)
      test  X1 PA, image file missing -> skipped; X2 empty report -> skipped; X3 very long report -> kept + noted;
            X4 CRLF line endings -> kept
    plus n_clean = (train, val, test) clean PA+LATERAL studies named TC0.., VC0.., XC0.. with CLEAN_FINDINGS text."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    studies = []  # (name, subject, study, split, [(dicom, view, kind)], report bytes|None, chexpert dict|None)
    n = 0

    def images(*specs):
        nonlocal n
        out = []
        for view, kind in specs:
            n += 1
            out.append((dicom_id(n), view, kind))
        return out

    no_finding = {"No Finding": "1.0"}
    studies += [
        ("T1", "10000001", "50000001", "train", images(("PA", "ok"), ("LATERAL", "ok")), REPORT_FULL,
         {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0", "Edema": "0.0"}),
        ("T2", "10000001", "50000002", "train", images(("AP", "ok")), REPORT_IMPRESSION_ONLY, {"Support Devices": "1.0"}),
        ("T3", "10000002", "50000003", "train", images(("PA", "ok"), ("AP", "ok"), ("LATERAL", "ok")),  # AP id sorts first
         REPORT_ADDENDUM, None),
        ("T4", "10000002", "50000004", "train", images(("LATERAL", "ok")), REPORT_FULL, no_finding),
        ("T5", "10000003", "50000005", "train", images(("PA", "corrupt")), REPORT_FULL, no_finding),
        ("T6", "10000003", "50000006", "train", images(("AP", "truncated")), REPORT_FULL, no_finding),
        ("T7", "10000004", "50000007", "train", images(("PA", "ok")), None, no_finding),
        ("T8", "10000004", "50000008", "train", images(("PA", "ok")), REPORT_NON_UTF8, no_finding),
        ("T9", "10000004", "50000009", "train", images(("", "ok"), ("AP", "ok")), REPORT_FULL, no_finding),
        ("V1", "10000005", "50000010", "validate", images(("PA", "ok")), REPORT_FULL, no_finding),
        ("V2", "10000005", "50000011", "validate", images(("PA", "ok")), REPORT_NO_HEADERS, no_finding),
        ("X1", "10000006", "50000012", "test", images(("PA", "missing")), REPORT_FULL, no_finding),
        ("X2", "10000006", "50000013", "test", images(("PA", "ok")), "", no_finding),
        ("X3", "10000006", "50000014", "test", images(("PA", "ok")), REPORT_LONG, no_finding),
        ("X4", "10000007", "50000015", "test", images(("PA", "ok")), REPORT_FULL.replace("\n", "\r\n"), no_finding),
    ]
    for split, count in zip(("train", "validate", "test"), n_clean):
        for i in range(count):
            subject = {"train": 10000010, "validate": 10000030, "test": 10000050}[split] + i
            text = mimic_lines(("INDICATION", "___ with dyspnea."), ("FINDINGS", CLEAN_FINDINGS[i % 4]),
                               ("IMPRESSION", "As above."))
            studies.append((f"{dict(train='T', validate='V', test='X')[split]}C{i}", str(subject), str(50000100 + n), split,
                            images(("PA", "ok"), ("LATERAL", "ok")), text, no_finding))

    meta_rows, split_rows, label_rows, report_files = [], [], [], {}
    for name, subject, study, split, imgs, text, labels in studies:
        study_dir = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        for k, (dicom, view, kind) in enumerate(imgs):
            path = study_dir / f"{dicom}.jpg"
            picture = cxr_like(60 + 4 * k, 72, seed=int(study) + k)  # non-square: checks pad-to-square
            if kind == "ok":
                save(path, picture, quality=92)
            elif kind == "corrupt":
                save_corrupt(path)
            elif kind == "truncated":
                save_truncated_jpeg(path, picture)
            meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 72, 60 + 4 * k, "21800101",
                              "120000.000", "Chest 2V", "postero-anterior" if view == "PA" else view.lower(), "Erect"])
            split_rows.append([dicom, study, subject, split])
        if labels is not None:
            label_rows.append([subject, study] + [labels.get(c, "") for c in CHEXPERT])
        if text is not None:
            report_files[f"files/p{subject[:2]}/p{subject}/s{study}.txt"] = (
                text if isinstance(text, bytes) else text.encode("utf-8"))
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows)
    write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ("dicom_id", "study_id", "subject_id", "split"), split_rows)
    write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ("subject_id", "study_id") + CHEXPERT, label_rows)
    if reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
            for rel, data in report_files.items():
                zf.writestr(rel, data)
    else:
        base = root / "mimic-cxr-reports" if reports == "folder" else root
        for rel, data in report_files.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_bytes(data)
    marker(root, "MIMIC-CXR-JPG layout")
    ids = {name: imgs for name, _, _, _, imgs, _, _ in studies}
    return {"root": root, "studies": {name: {"subject": s, "study": st, "split": sp, "dicom_ids": [d for d, _, _ in im]}
                                      for name, s, st, sp, im, _, _ in studies},
            "pa": {name: next((d for d, v, _ in im if v == "PA"), None) for name, im in ids.items()},
            "n_clean": tuple(n_clean)}


#################################################################################
#                        (b) R2Gen annotation.json + images                     #
#################################################################################

def make_r2gen(root, dataset: str = "iu") -> dict:
    """R2Gen layout: annotation.json {"train", "val", "test"} + images/.
    dataset='iu': ids CXR<n>_IM-<m>, two PNG views per entry (<id>/0.png, <id>/1.png). Entry CXR2 has a 16-bit
      PNG as view 0, CXR3 a palette PNG; val has one entry whose image is missing, test one with an empty report and
      one malformed entry (no image_path).
    dataset='mimic': one JPG per entry at p1X/p<subject>/s<study>/<dicom>.jpg, with study_id / subject_id."""
    root = Path(root)
    images = root / "images"
    ann = {"train": [], "val": [], "test": []}
    texts = ("The heart is normal in size. The lungs are clear. No pleural effusion.",
             "Heart size normal. XXXX opacity in the right lower lobe. No pneumothorax.",
             "Mild cardiomegaly. No focal airspace disease. No effusion.",
             "Lungs are hyperexpanded. No acute cardiopulmonary abnormality.")
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 3
    manifest = {"root": root, "sixteen_bit": None, "ids": {s: [] for s in ann}}
    for i, split in enumerate(splits, 1):
        text = texts[i % 4]
        if dataset == "iu":
            uid = f"CXR{i}_IM-{1000 + i}"
            paths = [f"{uid}/0.png", f"{uid}/1.png"]
            entry = {"id": uid, "report": text, "image_path": paths, "split": split}
            for k, rel in enumerate(paths):
                if i == 2 and k == 0:
                    manifest["sixteen_bit"] = (uid, save_16bit_ramp(images / rel, 64, 80))
                elif i == 3 and k == 0:
                    save(images / rel, np.asarray(Image.fromarray(cxr_like(64, 64, i)).convert("RGB")))
                    Image.open(images / rel).convert("P").save(images / rel)  # palette PNG
                elif not (i == 5 and k == 0):  # val entry 5: first view missing
                    save(images / rel, cxr_like(64, 70, 100 * i + k))
        else:
            subject, study, dicom = str(10000000 + i), str(50000000 + i), dicom_id(1000 + i)
            uid = dicom
            rel = f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
            entry = {"id": dicom, "study_id": int(study), "subject_id": int(subject), "report": text,
                     "image_path": [rel], "split": split}
            if i != 5:
                save(images / rel, cxr_like(64, 70, i), quality=92)
        if i == 8:
            entry["report"] = "   "
        ann[split].append(entry)
        manifest["ids"][split].append(uid)
    ann["test"].append({"id": "broken", "report": "No image path here.", "split": "test"})
    (root / "annotation.json").write_text(json.dumps(ann))
    marker(root, f"R2Gen {dataset} layout")
    return manifest


#################################################################################
#                          (c) MeDiM flat jpg + txt folders                     #
#################################################################################

def subjects_in(split: str, count: int, start: int) -> list[int]:
    """Subject ids that our hash split puts in `split` (val carve-out of data/ at 2%), for a fixture that covers it."""
    out, s = [], start
    while len(out) < count:
        if group_split(f"p{s}", 0.02, 0.0) == split:
            out.append(s)
        s += 1
    return out


def make_medim_flat(root) -> dict:
    """MeDiM's layout: data/ (train) and test/ with p1X_p<subject>_s<study>_<dicom>.jpg + same-stem .txt.
    data/ holds 6 train-patient images + 2 of a patient our split carves out as val, one image without .txt,
    one orphan .txt, one .txt with a non-UTF-8 byte; test/ holds 3 pairs."""
    root = Path(root)
    train_subjects, val_subjects = subjects_in("train", 3, 10000000), subjects_in("val", 1, 10000000)
    n = 0

    def pair(folder, subject, text: bytes | None, with_image=True):
        nonlocal n
        n += 1
        stem = f"p{str(subject)[:2]}_p{subject}_s{50000000 + n}_{dicom_id(n)}"
        if with_image:
            save(root / folder / f"{stem}.jpg", cxr_like(64, 72, n), quality=92)
        if text is not None:
            (root / folder / f"{stem}.txt").write_bytes(text)
        return stem

    stems = {"train": [], "val": [], "test": [], "no_text": None, "orphan": None}
    for s in train_subjects:
        for k in range(2):
            stems["train"].append(pair("data", s, CLEAN_FINDINGS[(s + k) % 4].encode()))
    (root / "data" / f"{stems['train'][1]}.txt").write_bytes(b"Heart size is normal. Rotated 10\xb0 to the right.")
    for k in range(2):
        stems["val"].append(pair("data", val_subjects[0], CLEAN_FINDINGS[k].encode()))
    stems["no_text"] = pair("data", train_subjects[0], None)
    stems["orphan"] = pair("data", train_subjects[1], b"A report without its image.", with_image=False)
    for k in range(3):
        stems["test"].append(pair("test", 10000900 + k, CLEAN_FINDINGS[k].encode()))
    marker(root, "MeDiM flat layout")
    return {"root": root, **stems}


#################################################################################
#                                  (d) PathGen                                  #
#################################################################################

CAPTIONS = ("This H&E-stained section shows colonic mucosa with crowded, irregular glands lined by atypical columnar "
            "cells. Nuclei are enlarged and hyperchromatic. Features suggest adenocarcinoma.",
            "The image shows lung tissue with sheets of tumor cells and areas of necrosis — the nuclei are "
            "pleomorphic. Findings are consistent with a poorly differentiated carcinoma.",
            "Breast tissue with benign ducts surrounded by fibrous stroma; no atypia is seen (Müller stain artefact).",
            "Lymphoid tissue with dense sheets of small mature lymphocytes. No malignant cells are identified.")


def slides_in(split: str, count: int, test_fraction: float = 0.02) -> list[str]:
    """TCGA-like slide ids (made up) that the default slide-level split (val 2%, test 2%; test 0% when carving val
    out of a train/ folder) puts in `split`."""
    out, n = [], 0
    while len(out) < count:
        wsi = f"TCGA-Z{n % 10}-{1000 + n:04d}-01Z-00-DX1.{n:08x}-0000-4000-8000-{n:012x}"
        if group_split(wsi, 0.02, test_fraction) == split:
            out.append(wsi)
        n += 1
    return out


def _patch(path: Path, seed: int, rgba: bool = False):
    rgb = patch_like(48, seed)
    if rgba:  # OpenSlide read_region output: RGBA; the right half outside the tissue is fully transparent black
        alpha = np.full((48, 48, 1), 255, np.uint8)
        alpha[:, 24:] = 0
        rgb[:, 24:] = 0
        save(path, np.concatenate([rgb, alpha], axis=2))
    else:
        save(path, rgb)


def make_pathgen(root, layout: str = "json", split_csv: bool = False) -> dict:
    """PathGen layouts.
    json / jsonl: PathGen-1.6M.json(l) entries {wsi_id|WSI_id, position [str, str], caption, file_id} + patches/
      {wsi_id}_{x}_{y}.png; slides chosen so the slide-level split has 3 train, 1 val, 1 test slide with 2 patches each.
      One train patch is RGBA with a transparent half, one entry's patch is missing, one entry is malformed (no caption).
    flat: train/ (4 train slides + 1 slide the default split carves out as val) and test/ (2 slides) of png + txt:
      one RGBA patch, one caption with a non-UTF-8 byte, one png without txt; with split_csv=True also
      splits/pathgen_{train,test}.csv listing the first 2 file names of each split in an 'image' column."""
    root = Path(root)
    manifest = {"root": root, "uids": {"train": [], "val": [], "test": []}, "rgba": None, "missing": None}
    if layout in ("json", "jsonl"):
        slides = {"train": slides_in("train", 3), "val": slides_in("val", 1), "test": slides_in("test", 1)}
        entries, n = [], 0
        for split, wsis in slides.items():
            for wsi in wsis:
                for k in range(2):
                    n += 1
                    x, y = str(672 * (n + 3)), str(672 * (2 * k + 1))
                    stem = f"{wsi}_{x}_{y}"
                    key = "WSI_id" if n % 3 == 0 else "wsi_id"  # the README's extraction snippet spells it WSI_id
                    entries.append({key: wsi, "position": [x, y], "caption": CAPTIONS[n % 4],
                                    "file_id": f"{n:08x}-aaaa-bbbb-cccc-{n:012x}"})
                    if split == "train" and n == 2:
                        manifest["missing"] = stem  # listed, never extracted
                        continue
                    _patch(root / "patches" / f"{stem}.png", n, rgba=(split == "train" and n == 1))
                    if n == 1:
                        manifest["rgba"] = stem
                    manifest["uids"][split].append(stem)
        entries.append({"wsi_id": slides["train"][0], "position": ["0", "0"]})  # malformed: no caption
        if layout == "json":
            (root / "PathGen-1.6M.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        else:
            (root / "PathGen-1.6M.jsonl").write_text(
                "\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n{not json\n", encoding="utf-8")
        manifest["slides"] = slides
    elif layout == "flat":
        # train/ holds 4 train slides + 1 slide that the default split carves out as val; test/ holds 2 slides
        slides = [("train", w, "train") for w in slides_in("train", 4, 0.0)]
        slides += [("train", slides_in("val", 1, 0.0)[0], "val")]
        slides += [("test", f"TCGA-Y{k}-{2100 + k}-01Z-00-DX1.{k:08x}", "test") for k in range(2)]
        for n, (folder, wsi, split) in enumerate(slides, 1):
            stem = f"{wsi}_{448 * n}_{896}"
            _patch(root / folder / f"{stem}.png", 50 + n, rgba=(n == 1))
            caption = CAPTIONS[n % 4].encode("utf-8")
            if n == 2:
                caption = caption.replace(b"tissue", b"tissu\xe9", 1)  # a Latin-1 byte: not UTF-8
            if n == 4:
                manifest["missing"] = stem  # png without its caption file
            else:
                (root / folder / f"{stem}.txt").write_bytes(caption)
                manifest["uids"][split].append(stem)
            if n == 1:
                manifest["rgba"] = stem
        if split_csv:
            (root / "splits").mkdir(exist_ok=True)
            for split in ("train", "test"):
                listed = manifest["uids"][split][:2]
                with open(root / "splits" / f"pathgen_{split}.csv", "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["idx", "image"])
                    w.writerows([[i, f"{s}.png"] for i, s in enumerate(listed)])
            manifest["csv_uids"] = {s: manifest["uids"][s][:2] for s in ("train", "test")}
    else:
        raise ValueError(f"layout must be json, jsonl or flat, got {layout!r}")
    marker(root, f"PathGen {layout} layout")
    return manifest


if __name__ == "__main__":
    builders = {"mimic": make_mimic_jpg_tree, "r2gen-iu": lambda r: make_r2gen(r, "iu"),
                "r2gen-mimic": lambda r: make_r2gen(r, "mimic"), "flat": make_medim_flat,
                "pathgen-json": lambda r: make_pathgen(r, "json"), "pathgen-flat": lambda r: make_pathgen(r, "flat")}
    if len(sys.argv) != 3 or sys.argv[1] not in builders:
        sys.exit(f"usage: python tests/fixtures_real.py {{{','.join(builders)}}} OUT_DIR")
    print(builders[sys.argv[1]](Path(sys.argv[2])))
