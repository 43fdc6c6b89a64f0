"""MIMIC-CXR loaders: the PhysioNet MIMIC-CXR-JPG 2.0.0 tree, R2Gen's annotation.json, and MeDiM's flat jpg+txt folders.

Data: Johnson et al., "MIMIC-CXR-JPG, a large publicly available database of labeled chest radiographs" (arXiv 1901.07042)
and MIMIC-CXR 2.0.0 (reports). Formats written down in docs/data.md ("MIMIC-CXR-JPG", "R2Gen annotation.json") from:
- MIT-LCP/mimic-cxr `txt/section_parser.py` (report section splitting; re-implemented in our own words below),
- cuhksz-nlp/R2Gen (annotation.json: {"train"|"val"|"test": [{id, report, image_path: [...], split}]}),
- UCSC-VLAA/MeDiM `models/datasets/all_dataset.py` (flat `data/` and `test/` folders of `<name>.jpg` + `<name>.txt`).

Layouts (auto-detected from what `data_dir` holds, or `layout=`):
  physionet  mimic-cxr-2.0.0-{split,metadata,chexpert}.csv(.gz) + files/p1X/p<subject>/s<study>/<dicom_id>.jpg,
             reports in mimic-cxr-reports/files/p1X/p<subject>/s<study>.txt (or mimic-cxr-reports.zip, or reports_dir=)
  r2gen      annotation.json + images/ (MIMIC-CXR or IU X-ray as preprocessed by R2Gen)
  flat       data/ (train) and test/ folders of <name>.jpg + <name>.txt (MeDiM's release)
Report text is never printed (PhysioNet DUA): the load summary names files and ids only.
"""
import difflib
import json
import re
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from .cache import load_cached_pairs
from .images import IMAGE_EXTS
from .records import (SPLIT_ALIASES, LoadReport, Record, clean_text, decode_text, find_file,
                      flat_records, listing, note_length, read_csv_rows, split_dirs)

CHEXPERT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                    "Pneumothorax", "Support Devices")
FRONTAL_VIEWS = ("PA", "AP")  # ViewPosition values that count as frontal; PA preferred (standing, less magnified heart)

LAYOUTS_HELP = """expected one of these layouts:
  (a) MIMIC-CXR-JPG 2.0.0: mimic-cxr-2.0.0-split.csv.gz, mimic-cxr-2.0.0-metadata.csv.gz (optional
      mimic-cxr-2.0.0-chexpert.csv.gz) and files/p1X/p<subject>/s<study>/<dicom_id>.jpg, plus the reports from
      MIMIC-CXR 2.0.0: mimic-cxr-reports/files/p1X/p<subject>/s<study>.txt or mimic-cxr-reports.zip (or reports_dir=...)
  (b) R2Gen: annotation.json ({"train": [...], "val": [...], "test": [...]}) and its images under images/ (or image_dir=...)
  (c) MeDiM flat: data/ (train) and test/ folders of <name>.jpg + <name>.txt pairs"""


#################################################################################
#                 Report sections (after MIT-LCP txt/section_parser.py)         #
#################################################################################

# A header is a line start, at most one space (MIMIC indents every line by one), a run of capitals / spaces / ()/,&-,
# then a colon followed by whitespace or the end of the line: " FINDINGS:", " CHEST, TWO VIEWS:", " WET READ:".
SECTION_HEADER = re.compile(r"^ ?([A-Z][A-Z ()/,&-]*[A-Z)])\s*:(?=\s|$)")
CANONICAL_SECTIONS = ("impression", "findings", "indication", "comparison", "examination", "technique", "history",
                      "addendum", "notification", "recommendations", "wet read")
SECTION_SYNONYMS = {  # the frequent variants, mapped as MIT-LCP's table maps them
    "comparisons": "comparison", "comparison exam": "comparison", "comparison film": "comparison",
    "reference exam": "comparison", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history", "reason for exam": "indication",
    "reason for examination": "indication", "clinical indication": "indication", "exam": "examination",
    "type of examination": "examination", "conclusion": "impression", "findings and impression": "impression",
    "findings/impression": "impression", "finding": "findings", "recommendation": "recommendations",
    "recommendation(s)": "recommendations", "wetread": "wet read",
}
# A header that describes the whole study ("CHEST, PA AND LATERAL:") is followed by what the findings say.
STUDY_HEADER = re.compile(r"chest|portable|pa and lat|lateral and pa|ap and lat|lateral and ap|frontal|two views|"
                          r"one view|pa view|ap view|lateral view|bone window|ribs")


def normalize_section_name(raw: str) -> str:
    """'FINDINGS' -> 'findings', 'CONCLUSION' -> 'impression', 'IMPRESSON' (typo) -> 'impression', ..."""
    name = " ".join(raw.lower().split())
    if name in SECTION_SYNONYMS:
        return SECTION_SYNONYMS[name]
    if name in CANONICAL_SECTIONS:
        return name
    for key in ("impression", "findings", "history", "comparison", "addendum"):  # "FINAL IMPRESSION", "FINDINGS (PA)"
        if key in name:
            return key
    if STUDY_HEADER.search(name):
        return "findings"
    typo = difflib.get_close_matches(name, CANONICAL_SECTIONS, n=1, cutoff=0.8)  # 'impresson', 'findngs', 'comparsion'
    return typo[0] if typo else name


def split_sections(text: str) -> dict[str, str]:
    """Report text -> {normalized section name: raw section text}. Text before the first header is 'preamble'.
    Empty findings/impression sections are dropped; when a name repeats, the last non-empty one wins (as in MIT-LCP
    create_section_files.py). Without findings and impression, the final paragraph becomes 'last_paragraph'."""
    parts = [("preamble", [])]
    for line in text.split("\n"):
        header = SECTION_HEADER.match(line)
        if header:
            parts.append((normalize_section_name(header.group(1)), [line[header.end():]]))
        else:
            parts[-1][1].append(line)
    sections = {}
    for name, lines in parts:
        body = "\n".join(lines).strip()
        if name in ("findings", "impression") and not clean_text(body):
            continue
        sections[name] = body
    if "findings" not in sections and "impression" not in sections:
        paragraphs = [p for p in re.split(r"\n\s*\n", "\n".join(parts[-1][1])) if clean_text(p)]
        if len(paragraphs) > 1:
            sections["last_paragraph"] = paragraphs[-1].strip()
    return sections


SECTION_CHOICES = ("findings", "impression", "both", "conclusion")
FALLBACKS = {"findings": ("impression", "last_paragraph"), "impression": ("findings", "last_paragraph")}


def choose_section(sections: dict[str, str], section: str = "findings", fallback: bool = False) -> str | None:
    """The report text to train on (docs/data.md "Report sections").
    findings   R2Gen-style, the default; studies without FINDINGS are dropped unless fallback=True
               (then IMPRESSION, then the last paragraph)
    impression the summary; fallback: findings, last paragraph
    both       FINDINGS + IMPRESSION (whichever exist)
    conclusion MIT-LCP's label text: impression > findings > last_paragraph > comparison"""
    if section == "both":
        text = " ".join(sections[k] for k in ("findings", "impression") if k in sections)
        return text or (sections.get("last_paragraph") if fallback else None)
    if section == "conclusion":
        chain = ("impression", "findings", "last_paragraph", "comparison")
    elif section in FALLBACKS:
        chain = (section,) + (FALLBACKS[section] if fallback else ())
    else:
        raise ValueError(f"section must be one of {SECTION_CHOICES}, got {section!r}")
    return next((sections[k] for k in chain if sections.get(k)), None)


def report_text(raw: str, section: str, fallback: bool, deid: str) -> str | None:
    """Raw report -> one cleaned line of the chosen section, or None when the section is absent / empty."""
    chosen = choose_section(split_sections(raw), section, fallback)
    text = clean_text(chosen, deid) if chosen else ""
    return text or None


#################################################################################
#                      Layout (a): PhysioNet MIMIC-CXR-JPG 2.0.0                #
#################################################################################

def study_report_name(subject: str, study: str) -> str:
    """files/p1X/p<subject>/s<study>.txt: the report sits in the patient folder, beside the study folder."""
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


class ReportFiles:
    """The MIMIC-CXR 2.0.0 reports, from an unzipped folder or straight from mimic-cxr-reports.zip."""

    def __init__(self, location: Path):
        self.location = Path(location)
        self.zip, self.members = None, {}
        if self.location.is_file():
            self.zip = zipfile.ZipFile(self.location)
            # index by file name (s<study>.txt, unique): robust to whatever folder prefix the zip uses
            self.members = {PurePosixPath(n).name: n for n in self.zip.namelist() if n.endswith(".txt")}
        else:
            self.base = self.location / "files" if (self.location / "files").is_dir() else self.location

    def read(self, subject: str, study: str) -> bytes | None:
        if self.zip is not None:
            member = self.members.get(f"s{study}.txt")
            return self.zip.read(member) if member else None
        try:
            return (self.base / study_report_name(subject, study).removeprefix("files/")).read_bytes()
        except FileNotFoundError:
            return None


def find_reports(root: Path, reports_dir, probe: list[tuple[str, str]]) -> ReportFiles:
    """The first candidate location that holds a report of one of the `probe` (subject, study) pairs."""
    if reports_dir is not None:
        candidates = [Path(reports_dir)]
    else:
        candidates = [root / "mimic-cxr-reports", root / "reports", root, root.parent / "mimic-cxr-reports",
                      root / "mimic-cxr-reports.zip", root.parent / "mimic-cxr-reports.zip",
                      root.parent.parent / "mimic-cxr" / "2.0.0" / "mimic-cxr-reports.zip"]  # physionet.org/files/...
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            source = ReportFiles(candidate)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{candidate}: not a readable zip file ({e})") from e
        if any(source.read(subject, study) is not None for subject, study in probe):
            return source
    example = study_report_name(*probe[0]) if probe else "files/p1X/p<subject>/s<study>.txt"
    raise FileNotFoundError(
        f"MIMIC-CXR reports not found: looked for {example} (and the other studies of this split) under "
        f"{', '.join(str(c) for c in candidates)}. Reports are not part of MIMIC-CXR-JPG: get mimic-cxr-reports.zip "
        f"from the MIMIC-CXR 2.0.0 project and unzip it into {root / 'mimic-cxr-reports'}, or pass reports_dir=...")


def parse_views(views) -> set | None:
    """'frontal' -> {PA, AP}; 'all' -> None (no filter); 'PA,LATERAL' or a list -> that set."""
    if views == "frontal":
        return set(FRONTAL_VIEWS)
    if views == "all":
        return None
    items = views.split(",") if isinstance(views, str) else list(views)
    return {v.strip().upper() for v in items if v.strip()}


def view_rank(view: str) -> tuple:
    """Preference when one image per study is kept: PA, then AP, then others alphabetically, blank last."""
    return (FRONTAL_VIEWS.index(view) if view in FRONTAL_VIEWS else 2, view == "", view)


def study_labels(root: Path, labeler: str | None) -> dict | None:
    """{(subject, study): {class: 1|0|-1|None}} from mimic-cxr-2.0.0-<labeler>.csv(.gz); None when absent.
    1.0 positive, 0.0 negated, -1.0 uncertain, blank = not mentioned (kept as None; binarising is an eval choice)."""
    if labeler is None:
        return None
    path = find_file(root, f"mimic-cxr-2.0.0-{labeler}.csv")
    if path is None:
        return None
    rows = read_csv_rows(path, required=("subject_id", "study_id"))

    def value(v):
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return None  # blank / NaN: not mentioned
    return {(r["subject_id"].strip(), r["study_id"].strip()): {c: value(r.get(c)) for c in CHEXPERT_CLASSES}
            for r in rows}


def physionet_records(root: Path, split: str, report: LoadReport, *, reports_dir, section: str, fallback: bool,
                      deid: str, views, one_per_study: bool, labeler) -> list[Record]:
    split_csv = find_file(root, "mimic-cxr-2.0.0-split.csv")
    if split_csv is None:
        raise FileNotFoundError(f"{root}: no mimic-cxr-2.0.0-split.csv(.gz); {LAYOUTS_HELP}\nfound: {listing(root)}")
    rows = read_csv_rows(split_csv, required=("dicom_id", "study_id", "subject_id", "split"))
    for r in rows:
        if str(r["split"]).strip().lower() not in SPLIT_ALIASES:
            report.skip("unknown split value in split csv", r["dicom_id"])
    rows = [r for r in rows if SPLIT_ALIASES.get(str(r["split"]).strip().lower()) == split]
    allowed = parse_views(views)
    meta_csv = find_file(root, "mimic-cxr-2.0.0-metadata.csv")
    if meta_csv is None and allowed is not None:
        raise FileNotFoundError(f"{root}: mimic-cxr-2.0.0-metadata.csv(.gz) is needed to choose views={views!r} "
                                f"(ViewPosition column); pass views='all' to use every image. {listing(root)}")
    view_of = {}
    if meta_csv is not None:
        view_of = {m["dicom_id"].strip(): (m["ViewPosition"] or "").strip().upper()
                   for m in read_csv_rows(meta_csv, required=("dicom_id", "ViewPosition"))}
    studies: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in rows:
        dicom = r["dicom_id"].strip()
        studies.setdefault((r["subject_id"].strip(), r["study_id"].strip()), []).append((dicom, view_of.get(dicom, "")))
    labels_of = study_labels(root, labeler)
    reports = find_reports(root, reports_dir, sorted(studies)[:50]) if studies else None
    if reports is not None:
        report.notes.append(f"reports from {reports.location}")
    records = []
    for (subject, study), images in tqdm(sorted(studies.items()), desc=f"[data] MIMIC-CXR {split} reports",
                                         unit="study", disable=len(studies) < 2000):
        where = study_report_name(subject, study)
        chosen = [im for im in images if allowed is None or im[1] in allowed]
        chosen.sort(key=lambda im: (view_rank(im[1]), im[0]))
        if not chosen:
            report.skip(f"no {views if isinstance(views, str) else '/'.join(views)} image in study", f"s{study}")
            continue
        raw = reports.read(subject, study)
        if raw is None:
            report.skip("missing report", where)
            continue
        text = decode_text(raw, report, where)
        if not clean_text(text):
            report.skip("empty report", where)
            continue
        text = report_text(text, section, fallback, deid)
        if text is None:
            report.skip(f"no {section} section" + ("" if fallback else " (fallback off)"), where)
            continue
        note_length(text, report, where)
        labels = None if labels_of is None else labels_of.get((subject, study), dict.fromkeys(CHEXPERT_CLASSES))
        for dicom, view in chosen[:1] if one_per_study else chosen:
            image = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            if not image.exists() and image.with_suffix(".dcm").exists():  # MIMIC-CXR (DICOM) tree: same folders
                image = image.with_suffix(".dcm")
            records.append(Record(uid=dicom, domain="cxr", image_path=str(image), report=text, labels=labels,
                                  meta={"subject_id": subject, "study_id": study, "dicom_id": dicom, "view": view,
                                        "split": split, "source": "mimic-cxr-jpg"}))
    return records


#################################################################################
#                           Layout (b): R2Gen annotation.json                   #
#################################################################################

def r2gen_image_root(root: Path, image_dir, entries: list) -> Path:
    """image_dir if given, else the first of images/, files/, . that holds the first entries' images."""
    if image_dir is not None:
        return Path(image_dir)
    candidates = [root / "images", root / "files", root]
    probe = [e["image_path"] for e in entries[:20] if isinstance(e, dict) and e.get("image_path")]
    probe = [p if isinstance(p, str) else p[0] for p in probe]
    for candidate in candidates:
        if any((candidate / p).is_file() for p in probe):
            return candidate
    return next((c for c in candidates if c.is_dir()), root)


def r2gen_records(root: Path, split: str, report: LoadReport, *, annotation, image_dir, all_images: bool,
                  deid: str) -> list[Record]:
    path = Path(annotation) if annotation is not None else root / "annotation.json"
    try:
        data = json.loads(decode_text(path.read_bytes(), report, path.name))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable R2Gen annotation.json ({e})") from e
    if not isinstance(data, dict) or not {"train", "val", "test"} & set(data):
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected an R2Gen annotation object with keys 'train', 'val', 'test'; found {found}")
    entries = data.get(split, data.get("validate", []) if split == "val" else [])
    image_root = r2gen_image_root(root, image_dir, entries)
    report.notes.append(f"images resolved under {image_root}")
    records = []
    for n, entry in enumerate(entries):
        where = f"{path.name}:{split}[{n}]"
        paths = entry.get("image_path") if isinstance(entry, dict) else None
        paths = [paths] if isinstance(paths, str) else paths
        if not paths or not isinstance(entry.get("report"), str):
            report.skip("malformed annotation entry (needs report + image_path)", where)
            continue
        uid = str(entry.get("id", n))
        text = clean_text(entry["report"], deid)
        if not text:
            report.skip("empty report", uid)
            continue
        note_length(text, report, uid)
        for k, rel in enumerate(paths if all_images else paths[:1]):  # IU X-ray: 2 views; default the first
            records.append(Record(
                uid=uid if k == 0 else f"{uid}/{k}", domain="cxr", image_path=str(image_root / rel), report=text,
                meta={"study_id": str(entry.get("study_id", "")), "subject_id": str(entry.get("subject_id", "")),
                      "image": str(rel), "split": split, "source": "r2gen"}))
    return records


#################################################################################
#                         Layout (c): MeDiM flat jpg + txt                      #
#################################################################################

MEDIM_NAME = re.compile(r"^p\d+_p(\d+)_s(\d+)_(.+)$")  # p10_p<subject>_s<study>_<dicom> = R2Gen image_path, '/' -> '_'


def parse_medim_name(stem: str) -> tuple[str, dict]:
    """(group for the split = patient, meta ids) from a MeDiM file name; other names group by their own stem."""
    m = MEDIM_NAME.match(stem)
    if not m:
        return stem, {}
    return f"p{m.group(1)}", {"subject_id": m.group(1), "study_id": m.group(2), "dicom_id": m.group(3)}


#################################################################################
#                                  Entry point                                  #
#################################################################################

def detect_layout(root: Path, annotation=None) -> str:
    if annotation is not None or (root / "annotation.json").is_file():
        return "r2gen"
    if find_file(root, "mimic-cxr-2.0.0-split.csv"):
        return "physionet"
    folders = list(split_dirs(root).values()) or ([root] if root.is_dir() else [])
    if any(p.suffix.lower() in IMAGE_EXTS for f in folders for p in f.iterdir()):
        return "flat"
    raise FileNotFoundError(f"--data-dir {root} does not look like MIMIC-CXR data; {LAYOUTS_HELP}\n"
                            f"found: {listing(root)}")


def load_mimic(split: str, data_dir, *, image_size: int = 64, seed: int = 0, limit: int | None = None,
               cache_dir=None, layout: str | None = None, section: str = "findings", fallback: bool = False,
               deid: str = "keep", views="frontal", one_per_study: bool = True, labeler: str | None = "chexpert",
               reports_dir=None, annotation=None, image_dir=None, all_images: bool = False,
               val_fraction: float = 0.02, test_fraction: float = 0.02, strict: bool = False,
               workers: int | None = None, window: str = "bits", pad_fill=None, rebuild_cache: bool = False):
    """MIMIC-CXR (or IU X-ray via R2Gen's annotation.json) pairs for one split; see the module docstring.

    Options: layout ('physionet'|'r2gen'|'flat', default auto); physionet: section ('findings'|'impression'|'both'|
    'conclusion'), fallback, views ('frontal'|'all'|'PA,AP,...'), one_per_study, labeler ('chexpert'|'negbio'|None),
    reports_dir; r2gen: annotation, image_dir, all_images (every view of an IU study, not only the first);
    flat: val_fraction / test_fraction (split by patient when folders lack one); all: deid ('keep'|'strip' the '___'
    blanks), strict (raise instead of skip), workers (decoding threads; default up to 8 for big jobs),
    window ('bits'|'minmax' for 16-bit), pad_fill, rebuild_cache."""
    if data_dir is None:
        raise ValueError(f"--data mimic needs --data-dir; {LAYOUTS_HELP}")
    root = Path(data_dir).expanduser()
    if root.is_file() and root.suffix == ".json":  # an annotation.json given directly
        root, annotation = root.parent, root if annotation is None else annotation
    if not root.exists():
        raise FileNotFoundError(f"--data-dir {root} does not exist; {LAYOUTS_HELP}")
    layout = layout or detect_layout(root, annotation)
    report = LoadReport(f"mimic ({layout})", split, strict)
    if layout == "physionet":
        index = [find_file(root, f"mimic-cxr-2.0.0-{n}.csv") for n in ("split", "metadata", labeler) if n]
        index = [p for p in index if p is not None] + ([Path(reports_dir)] if reports_dir else [])
        options = dict(reports_dir=reports_dir, section=section, fallback=fallback, deid=deid,
                       views=views if isinstance(views, str) else list(views), one_per_study=one_per_study,
                       labeler=labeler)
        build = lambda: physionet_records(root, split, report, **options)  # noqa: E731
    elif layout == "r2gen":
        index = [Path(annotation) if annotation else root / "annotation.json"]
        options = dict(annotation=annotation, image_dir=image_dir, all_images=all_images, deid=deid)
        build = lambda: r2gen_records(root, split, report, **options)  # noqa: E731
    elif layout == "flat":
        index = [root, *split_dirs(root).values()]  # folder mtimes change when files are added or removed
        options = dict(domain="cxr", parse_name=parse_medim_name, image_exts=IMAGE_EXTS, val_fraction=val_fraction,
                       test_fraction=test_fraction, deid=deid, source="medim-flat")
        build = lambda: flat_records(root, split, report, **options)  # noqa: E731
    else:
        raise ValueError(f"layout must be 'physionet', 'r2gen' or 'flat', got {layout!r}")
    return load_cached_pairs("mimic", layout, root, split, index, options, build, report, domain="cxr",
                             image_size=image_size, limit=limit, seed=seed, cache_dir=cache_dir, window=window,
                             pad_fill=pad_fill, workers=workers, rebuild_cache=rebuild_cache)
