"""Your own data: a folder of images with their reports, in one of three layouts (auto-detected, or `layout=`).

  txt    image files, each with a same-stem .txt report beside it (`0001.png` + `0001.txt`), in any subfolders
  jsonl  `pairs.jsonl`: one JSON object a line, {"image": "imgs/0001.png", "report": "..."}
  csv    `pairs.csv`: one row a pair, columns `image` and `report`
In jsonl / csv, image paths are relative to the index file (absolute paths work too) and optional fields are:
`id`, `split` (train / val / test), `domain` (cxr / path), `findings` and `impression` (sections, instead of or beside
`report`), `group` (e.g. a patient id: all of a group's pairs land in one split), `labels` (a JSON object
{"Cardiomegaly": 1, ...}, or a ';'-separated list of positive findings) or one column per CheXpert class.

Reports with FINDINGS: / IMPRESSION: headings are split as MIMIC-CXR reports are (data/mimic.py, after MIT-LCP's
section_parser.py) and `section` chooses the text; a report without those headings is used whole. The split comes from
the `split` field, else from train/ val/ test/ folders under the data dir, else from a stable hash of the group id
(data/records.py group_split), so it never changes between runs. Every pair is tagged with `domain` (default 'cxr')
unless its row says otherwise. Images are read as MIMIC / PathGen images are (data/images.py: 8 or 16 bit, gray or
RGB, PNG / JPEG / TIFF / BMP / DICOM, any size, padded to a square) and cached once (data/cache.py).

Bad items never stop a load and are never dropped silently: a missing or unreadable image, an empty report, a repeated
id, a report that is not UTF-8 text (pass encoding=cp1252 for Windows exports), a jsonl line that is not JSON or a CSV
without an image and a report column are skipped, and the load summary counts each reason with the first file names.
Only a folder with no usable pair at all is an error, naming the folder and what was looked for.
"""
import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path

from .cache import build_pairs, cached_records, default_cache_dir, take
from .common import DOMAINS
from .images import IMAGE_EXTS
from .mimic import CHEXPERT_CLASSES, SECTION_CHOICES, choose_section, split_sections
from .records import (SPLIT_ALIASES, LoadReport, Record, cache_key, clean_text, decode_text, fingerprint, group_split,
                      listing, note_length, split_dirs)

INDEX_NAMES = {"jsonl": "pairs.jsonl", "csv": "pairs.csv"}
LAYOUTS_HELP = """expected one of these layouts:
  (a) image files (.png .jpg .jpeg .tif .tiff .bmp .dcm) each with a same-stem .txt report, in DIR or its subfolders
      (optionally under train/ val/ test/)
  (b) DIR/pairs.jsonl: {"image": "<path relative to the file>", "report": "..."} per line
  (c) DIR/pairs.csv: columns image, report
  optional in (b) and (c): id, split, domain, findings, impression, group, labels (or one column per CheXpert class)"""
# Field names accepted in jsonl / csv (lower case), first found wins.
FIELDS = {"image": ("image", "image_path", "path", "file", "filename", "file_name"),
          "report": ("report", "text", "caption"),
          "id": ("id", "uid", "study_id", "study"),
          "group": ("group", "patient", "patient_id", "subject_id", "subject")}


#################################################################################
#                       Report text: bytes -> one cleaned line                  #
#################################################################################

def read_report_bytes(raw: bytes, report: LoadReport, where, encoding: str | None) -> str | None:
    """UTF-8 (or `encoding`) bytes -> text; None (skipped and counted) when the bytes are not UTF-8."""
    if encoding is None:
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            report.skip("report is not UTF-8 text (pass encoding=cp1252 or the export's encoding)", where)
            return None
    else:
        raw = raw.decode(encoding, errors="replace").encode("utf-8")
    return decode_text(raw, report, where)


def has_bad_bytes(value) -> bool:
    """A field decoded with 'surrogateescape' holds lone surrogates exactly where the bytes were not UTF-8."""
    return isinstance(value, str) and re.search("[\udc80-\udcff]", value) is not None


# Exports often lose the line breaks: "FINDINGS: ... IMPRESSION: ..." on one line. A capitalised heading inside a line
# is moved to a line of its own, where data/mimic.py's section splitter looks for headings.
INLINE_HEADING = re.compile(r"(?<=\S)[ \t]+(?=(FINDINGS|IMPRESSION|CONCLUSION|INDICATION|COMPARISON|HISTORY|TECHNIQUE|"
                            r"EXAMINATION|CLINICAL HISTORY|RECOMMENDATIONS?|NOTIFICATION)\s*:)")


def choose_text(text: str | None, findings: str | None, impression: str | None, *, section: str, fallback: bool,
                deid: str) -> tuple[str | None, str]:
    """(one cleaned line, '') or (None, why). Section fields win; a report with FINDINGS / IMPRESSION headings is cut
    into sections; a report without them is used whole."""
    sections = {k: v for k, v in (("findings", findings), ("impression", impression)) if v and clean_text(v)}
    if not sections and text:
        sections = split_sections(INLINE_HEADING.sub("\n", text))
        if "findings" not in sections and "impression" not in sections:
            sections = None
    if not sections:
        cleaned = clean_text(text or "", deid)
        return (cleaned, "") if cleaned else (None, "empty report")
    chosen = choose_section(sections, section, fallback)
    cleaned = clean_text(chosen, deid) if chosen else ""
    return (cleaned, "") if cleaned else (None, f"no {section} section" + ("" if fallback else " (fallback off)"))


def parse_labels(value, row: dict) -> dict | None:
    """{class: 1 | 0 | -1 | None} from a labels field (dict, JSON text or 'A;B' positives) or CheXpert-named columns."""
    def number(v):
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, dict):
        return {str(k): number(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (isinstance(value, str) and value.strip()):
        names = value if isinstance(value, (list, tuple)) else re.split(r"[;|]", value)
        return {str(n).strip(): 1 for n in names if str(n).strip()}
    columns = {c: number(row[k]) for k in row for c in CHEXPERT_CLASSES if k.strip().lower() == c.lower()}
    return columns or None


#################################################################################
#                         Items: one per candidate pair                         #
#################################################################################

class Items:
    """Turns candidate pairs (from any layout) into Records, checking what every layout shares: the image exists, the
    report has text, the id is new, the domain is known; it decides the split."""

    def __init__(self, root: Path, report: LoadReport, *, domain: str, section: str, fallback: bool, deid: str,
                 group_by: str, val_fraction: float, test_fraction: float, split_dirs: dict):
        self.root, self.report, self.domain, self.section, self.fallback, self.deid = \
            root, report, domain, section, fallback, deid
        self.group_by, self.val_fraction, self.test_fraction = group_by, val_fraction, test_fraction
        self.split_dirs = split_dirs  # {split: folder name} of the train/ val/ test/ folders directly under root
        self.records, self.seen = [], set()

    def split_of(self, given, group: str, image: Path) -> tuple[str | None, str]:
        """(split, how): the given split, else the split folder the image sits in, else a hash of the group."""
        if given not in (None, ""):
            return SPLIT_ALIASES.get(str(given).strip().lower()), "given"
        try:
            top = image.relative_to(self.root).parts[0].lower()
        except (ValueError, IndexError):
            top = ""
        folder = next((s for s, name in self.split_dirs.items() if top == name.lower()), None)
        if folder == "train" and "val" not in self.split_dirs:  # data/ + test/ (MeDiM): val carved out of train
            return group_split(group, self.val_fraction, 0.0), "folder"
        if folder:
            return folder, "folder"
        return group_split(group, self.val_fraction, self.test_fraction), "hash"

    def add(self, where: str, image: Path, uid: str, *, text=None, findings=None, impression=None, split=None,
            domain=None, group=None, labels=None, source: str):
        if uid in self.seen:
            return self.report.skip("duplicate id", f"{where} (id {uid})")
        if not image.is_file():
            return self.report.skip("missing image", where)
        domain = str(domain).strip().lower() if domain not in (None, "") else self.domain
        if domain not in DOMAINS:
            return self.report.skip(f"unknown domain (use one of {', '.join(DOMAINS)})", where)
        chosen, why = choose_text(text, findings, impression, section=self.section, fallback=self.fallback,
                                  deid=self.deid)
        if chosen is None:
            return self.report.skip(why, where)
        rel = relative_to(image, self.root)
        if group in (None, ""):
            group = str(Path(rel).parent) if self.group_by == "folder" else uid
        split, how = self.split_of(split, str(group), image)
        if split is None:
            return self.report.skip("unknown split value (use train, val or test)", where)
        self.seen.add(uid)
        note_length(chosen, self.report, where)
        self.records.append(Record(uid=uid, domain=domain, image_path=str(image), report=chosen, labels=labels,
                                   meta={"group": str(group), "split": split, "split_from": how, "image": rel,
                                         "source": source}))


def relative_to(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


#################################################################################
#                       Layout (a): images + same-stem .txt                     #
#################################################################################

def walk(root: Path):
    """(folder, sorted file names) for root and every subfolder, in sorted order; hidden folders (.cache) skipped."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


def txt_items(root: Path, items: Items, encoding):
    for folder, files in walk(root):
        images, texts = {}, set()
        for name in files:
            stem, ext = os.path.splitext(name)      # splitext, not split('.'): ids may contain dots
            if ext.lower() in IMAGE_EXTS:
                images.setdefault(stem, []).append(name)
            elif ext.lower() == ".txt":
                texts.add(stem)
        for stem in sorted(images):
            first, *others = images[stem]
            where = relative_to(folder / first, root)
            for other in others:                    # 0001.png + 0001.jpg share one report: one pair, not two
                items.report.skip("duplicate id", f"{relative_to(folder / other, root)} (id {where.rsplit('.', 1)[0]})")
            if stem not in texts:
                items.report.skip("missing report", where)
                continue
            txt = folder / f"{stem}.txt"
            try:
                raw = txt.read_bytes()
            except OSError:
                items.report.skip("unreadable report", relative_to(txt, root))
                continue
            text = read_report_bytes(raw, items.report, relative_to(txt, root), encoding)
            if text is not None:
                uid = relative_to(folder / stem, root)
                items.add(where, folder / first, uid, text=text, source="folder-txt")
        for stem in sorted(texts - set(images)):
            items.report.skip("orphan report (no image)", relative_to(folder / f"{stem}.txt", root))


#################################################################################
#                         Layouts (b), (c): pairs.jsonl / pairs.csv             #
#################################################################################

def field(row: dict, name: str):
    """The first present, non-empty field among FIELDS[name] (or `name` itself), matched case-insensitively."""
    lower = {str(k).strip().lower(): v for k, v in row.items()}
    for key in FIELDS.get(name, (name,)):
        value = lower.get(key)
        if value not in (None, "") and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def row_item(row: dict, where: str, base: Path, items: Items, source: str, all_images: bool):
    """One jsonl object / csv row -> Items.add (one call per image when all_images)."""
    if any(has_bad_bytes(v) for v in row.values()):
        return items.report.skip("report is not UTF-8 text (pass encoding=cp1252 or the export's encoding)", where)
    images = field(row, "image")
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, (list, tuple)) or not images or not all(isinstance(i, str) for i in images):
        return items.report.skip("entry without an image path", where)
    text, findings, impression = field(row, "report"), field(row, "findings"), field(row, "impression")
    if not all(v is None or isinstance(v, str) for v in (text, findings, impression)):
        return items.report.skip("report is not text", where)
    uid = str(field(row, "id") or os.path.splitext(images[0].replace("\\", "/"))[0])
    group = field(row, "group") or (uid if len(images) > 1 else None)   # the views of one study stay together
    labels = parse_labels(field(row, "labels"), row)
    for k, rel in enumerate(images if all_images else images[:1]):
        path = Path(rel.replace("\\", "/").strip())
        items.add(f"{where} ({rel})", path if path.is_absolute() else base / path, uid if k == 0 else f"{uid}/{k}",
                  text=text, findings=findings, impression=impression, split=field(row, "split"),
                  domain=field(row, "domain"), group=group, labels=labels, source=source)


def jsonl_items(path: Path, items: Items, encoding, all_images: bool):
    raw = path.read_bytes()
    text = raw.decode(encoding, errors="replace") if encoding else raw.decode("utf-8-sig", errors="surrogateescape")
    for n, line in enumerate(text.splitlines()):
        where = f"{path.name}:{n + 1}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            items.report.skip("line is not JSON", where)
            continue
        if not isinstance(row, dict):
            items.report.skip("line is not a JSON object", where)
            continue
        row_item(row, where, path.parent, items, "folder-jsonl", all_images)


def csv_items(path: Path, items: Items, encoding, all_images: bool):
    raw = path.read_bytes()
    text = raw.decode(encoding, errors="replace") if encoding else raw.decode("utf-8-sig", errors="surrogateescape")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [str(c).strip().lower() for c in reader.fieldnames or []]
        rows = list(reader)
    except csv.Error as e:
        return items.report.skip(f"CSV that cannot be parsed ({e})", path.name)
    has = lambda name: any(k in columns for k in FIELDS.get(name, (name,)))  # noqa: E731
    if not has("image") or not (has("report") or has("findings") or has("impression")):
        return items.report.skip("CSV without an image column and a report / findings / impression column",
                                 f"{path.name} (columns: {', '.join(columns) or 'none'})")
    for n, row in enumerate(rows):
        row_item(row, f"{path.name}:{n + 2}", path.parent, items, "folder-csv", all_images)  # line 1 = header


#################################################################################
#                                  Entry point                                  #
#################################################################################

def find_index(root: Path, layout: str | None, index) -> list[tuple[str, Path]]:
    """[(layout, index file)]: the given index, else pairs.jsonl / pairs.csv in root ([] for the txt layout)."""
    if index is not None:
        path = Path(index).expanduser()
        path = path if path.is_absolute() or path.exists() else root / path
        kind = "csv" if path.name.lower().endswith(".csv") else "jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"index={index}: no such file; {LAYOUTS_HELP}")
        return [(kind, path)]
    if layout == "txt":
        return []
    found = [(kind, root / name) for kind, name in INDEX_NAMES.items()
             if (root / name).is_file() and layout in (None, kind)]
    if layout in INDEX_NAMES and not found:
        raise FileNotFoundError(f"layout={layout}: no {INDEX_NAMES[layout]} in {root}; {listing(root)}")
    return found


def folder_records(root: Path, split: str, report: LoadReport, *, indexes, encoding, all_images, **item_options):
    """Every usable pair of the folder (all splits, so a folder with pairs in other splits only gets a precise error),
    then this split's."""
    items = Items(root, report, **item_options)
    for kind, path in indexes:
        (csv_items if kind == "csv" else jsonl_items)(path, items, encoding, all_images)
    if not indexes:
        txt_items(root, items, encoding)
    looked_for = (", ".join(p.name for _, p in indexes) if indexes else
                  f"image files ({' '.join(IMAGE_EXTS)}) with a same-stem .txt report in it and its subfolders")
    if not items.records:
        raise ValueError(f"{root}: no usable image-report pair (looked for {looked_for}); {LAYOUTS_HELP}\n"
                         f"found: {listing(root)}\n" + report.summary(0))
    fill_empty_splits(items.records, report)
    mine = [r for r in items.records if r.meta["split"] == split]
    if not mine:
        counts = {s: sum(r.meta["split"] == s for r in items.records) for s in ("train", "val", "test")}
        raise ValueError(f"{root}: {len(items.records)} usable pairs ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
                         f"none in split '{split}': add a split column / a {split}/ folder, or change "
                         f"val_fraction={item_options['val_fraction']} / test_fraction={item_options['test_fraction']}")
    report.notes.append(f"reports and ids checked over the whole folder ({len(items.records)} pairs in all splits), "
                        f"images over this split")
    return mine


def fill_empty_splits(records: list[Record], report: LoadReport):
    """A small folder can hash no group into val or test; then train.py would fail only at its final evaluation.
    Each empty split gets the one hashed train group that ranks first by a second stable hash (notes say which)."""
    for split in ("val", "test"):
        hashed = sorted({r.meta["group"] for r in records if r.meta["split_from"] == "hash" and r.meta["split"] == "train"},
                        key=lambda g: hashlib.sha1(f"medim-fill:{g}".encode()).hexdigest())
        if any(r.meta["split"] == split for r in records) or len(hashed) < 2:
            continue
        for r in records:
            if r.meta["group"] == hashed[0] and r.meta["split_from"] == "hash":
                r.meta["split"] = split
        report.notes.append(f"no pair hashed into {split}: group {hashed[0]} moved there from train")


def load_folder(split: str, data_dir, *, image_size: int = 64, seed: int = 0, limit: int | None = None,
                cache_dir=None, layout: str | None = None, index=None, domain: str = "cxr", section: str = "findings",
                fallback: bool = True, deid: str = "keep", encoding: str | None = None, group_by: str = "id",
                all_images: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.1, strict: bool = False,
                workers: int | None = None, window: str = "bits", pad_fill=None, rebuild_cache: bool = False):
    """Image-report pairs from a folder (see the module docstring), tagged `domain` ('cxr' | 'path').

    Options: layout ('txt' | 'jsonl' | 'csv', default auto: an index file if there is one, else .txt reports);
    index (path of a .jsonl / .csv index with another name); section ('findings', R2Gen's and the MIMIC loader's
    default | 'impression' | 'both' | 'conclusion', for reports with headings) and fallback (on: a report without the
    chosen section gives the other, else its last paragraph); deid ('keep' | 'strip' the '___' blanks); encoding (of the text files, when not UTF-8); group_by ('id'
    | 'folder': the hash split keeps each image folder together); all_images (every image of a jsonl / csv entry that
    lists several, not only the first); val_fraction / test_fraction (hash split); strict (raise on the first bad item);
    workers, window ('bits' | 'minmax' for 16-bit images), pad_fill, rebuild_cache as for MIMIC."""
    if data_dir is None:
        raise ValueError(f"--data folder needs --data-dir; {LAYOUTS_HELP}")
    root = Path(data_dir).expanduser()
    if root.is_file() and root.suffix.lower() in (".jsonl", ".csv"):  # the index file given directly
        root, index = root.parent, root if index is None else index
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {root} does not exist or is not a folder; {LAYOUTS_HELP}")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if section not in SECTION_CHOICES:
        raise ValueError(f"section must be one of {SECTION_CHOICES}, got {section!r}")
    if layout not in (None, "txt", "jsonl", "csv"):
        raise ValueError(f"layout must be 'txt', 'jsonl' or 'csv', got {layout!r}")
    if group_by not in ("id", "folder"):
        raise ValueError(f"group_by must be 'id' or 'folder', got {group_by!r}")
    if encoding is not None:
        try:
            "".encode(encoding)
        except LookupError as e:
            raise ValueError(f"encoding={encoding!r} is not a known text encoding") from e
    val_fraction, test_fraction = float(val_fraction), float(test_fraction)  # --data-options gives "0.2" as text
    indexes = find_index(root, layout, index)
    kind = indexes[0][0] if len(indexes) == 1 else "jsonl+csv" if indexes else "txt"
    report = LoadReport(f"folder ({kind})", split, strict)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    cache_dir.mkdir(parents=True, exist_ok=True)  # before the fingerprint: creating <root>/.cache changes root's mtime
    watched = [p for _, p in indexes] or [folder for folder, _ in walk(root)]  # folder mtimes change with their files
    options = dict(domain=domain, section=section, fallback=fallback, deid=deid, group_by=group_by,
                   val_fraction=val_fraction, test_fraction=test_fraction,
                   split_dirs={s: p.name for s, p in split_dirs(root).items()})
    key = cache_key("folder", kind, str(root.resolve()), split, fingerprint(watched), options,
                    [str(p) for _, p in indexes], encoding, all_images)
    build = lambda: folder_records(root, split, report, indexes=indexes, encoding=encoding,  # noqa: E731
                                   all_images=all_images, **options)
    records, cached = cached_records(cache_dir, key, build, report, rebuild_cache)
    records = take(records, limit, seed)
    by_domain = {d: [r for r in records if r.domain == d] for d in DOMAINS}
    parts = [build_pairs(rs, d, image_size, cache_dir, report, root, window=window, pad_fill=pad_fill, workers=workers,
                         rebuild=rebuild_cache, records_cached=cached) for d, rs in by_domain.items() if rs]
    if len(parts) == 1:
        return parts[0]
    from . import ConcatPairs  # a folder holding both CXR and pathology pairs: one image stack per domain
    return ConcatPairs(parts)
