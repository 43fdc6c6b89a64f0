"""What every real-data loader shares: the `Record` it produces before images are read, the `LoadReport` that counts
what was skipped or repaired, tolerant text/CSV reading, leakage-free group splits and paired-file listings.

A loader (data/mimic.py, data/pathgen.py) turns a folder into a list of `Record`s (paths + cleaned text, cheap); then
data/cache.py reads every image once, caches the resized stack and returns a Sequence of `data.common.Pair`.
Data formats: docs/data.md; edge-case policy: docs/data.md "Edge cases" ("skip, count per reason, summary at end").

Privacy (PhysioNet DUA, docs/data.md): report text of real data never goes into a log line, an error message or an
example list. Only file names and ids (which are de-identified) are printed.
"""
import csv
import gzip
import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val", "test": "test"}


def canonical_split(split: str) -> str:
    """'validate' (MIMIC split csv) and 'val' (R2Gen annotation.json) both mean our 'val'."""
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"split must be one of {SPLITS} (or 'validate'), got {split!r}")
    return SPLIT_ALIASES[key]


#################################################################################
#                     Record: one pair before its image is read                 #
#################################################################################

@dataclass
class Record:
    uid: str                      # unique within a source (dicom_id, R2Gen id, patch stem)
    domain: str                   # 'cxr' | 'path'
    image_path: str               # absolute path of the image file
    report: str                   # cleaned report / caption text
    labels: dict | None = None    # CheXpert-style {class: 1|0|-1|None}, None when the source has none
    meta: dict = field(default_factory=dict)  # ids, view, split, source; never report text

    def to_json(self) -> dict:
        return asdict(self)


#################################################################################
#                      LoadReport: skipped / repaired items                     #
#################################################################################

class LoadReport:
    """Counts every item a loader skipped or repaired, per reason, with up to 3 example file names.

    strict=True turns the first skip into an error (docs/data.md "Edge cases": `strict=False` skips + counts,
    `strict=True` raises)."""
    N_EXAMPLES = 3

    def __init__(self, source: str, split: str, strict: bool = False):
        self.source, self.split, self.strict = source, split, strict
        self.skipped, self.fixed = Counter(), Counter()
        self.examples: dict[str, list[str]] = {}
        self.notes: list[str] = []

    def _example(self, reason, where):
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.N_EXAMPLES and where not in examples:
            examples.append(str(where))

    def skip(self, reason: str, where):
        """The item is dropped. `where` is a file name or id, never text content."""
        if self.strict:
            raise ValueError(f"{self.source} {self.split}: {reason}: {where} "
                             f"(strict mode; pass strict=False to skip and count)")
        self.skipped[reason] += 1
        self._example(reason, where)

    def fix(self, reason: str, where):
        """The item is kept after a repair (bytes replaced, 16-bit rescaled, alpha composited, ...)."""
        self.fixed[reason] += 1
        self._example(reason, where)

    def summary(self, n_kept: int, cached: str = "") -> str:
        lines = [f"[data] {self.source} split={self.split}: {n_kept} pairs"
                 f" ({sum(self.skipped.values())} skipped){cached}"]
        for title, counts in (("skipped", self.skipped), ("fixed", self.fixed)):
            for reason, n in sorted(counts.items()):
                lines.append(f"  {title:7s} {n:7d}  {reason}   e.g. {', '.join(self.examples.get(reason, []))}")
        lines += [f"  note    {note}" for note in self.notes]
        return "\n".join(lines)

    def state(self) -> dict:
        return {"skipped": dict(self.skipped), "fixed": dict(self.fixed), "examples": self.examples, "notes": self.notes}

    def merge(self, state: dict):
        """Add counts saved with a cache entry, so a cached load prints the same summary as the first one."""
        self.skipped.update(state["skipped"])
        self.fixed.update(state["fixed"])
        for reason, examples in state["examples"].items():
            for where in examples:
                self._example(reason, where)
        self.notes += [n for n in state["notes"] if n not in self.notes]


#################################################################################
#                               Text and CSV reading                            #
#################################################################################

LONG_REPORT_CHARS = 2000  # findings are a few hundred chars; longer is kept (the tokenizer truncates + counts), noted


def decode_text(raw: bytes, report: LoadReport, where) -> str:
    """Bytes -> str: UTF-8 (a BOM is dropped), undecodable bytes become U+FFFD and are counted; CRLF -> LF; NFKC."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
        report.fix("non-UTF-8 bytes replaced", where)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFKC", text)


def read_text(path: Path, report: LoadReport, where) -> str | None:
    """A report / caption file; None (and counted) when it is missing or unreadable."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        report.skip("missing report", where)
        return None
    except OSError:
        report.skip("unreadable report", where)
        return None
    return decode_text(raw, report, where)


DEID_BLANK = re.compile(r"_{2,}")  # MIMIC replaces PHI by '___'; runs of 2+ underscores are normalised to exactly three


def clean_text(text: str, deid: str = "keep") -> str:
    """One line of text: lines joined, whitespace collapsed, de-identification blanks kept as '___' (a single BPE
    token, docs/data.md "Edge cases") or removed (deid='strip'). Full lines of underscores (MIMIC addendum separators)
    are dropped."""
    if deid not in ("keep", "strip"):
        raise ValueError(f"deid must be 'keep' or 'strip', got {deid!r}")
    text = re.sub(r"(?m)^\s*_{8,}\s*$", " ", text)
    text = DEID_BLANK.sub("" if deid == "strip" else "___", text)
    text = " ".join(text.split())
    if deid == "strip":
        text = re.sub(r" ([,.;:])", r"\1", text)  # "Dr. ___ , the" -> "Dr., the" rather than a floating comma
    return text


def note_length(text: str, report: LoadReport, where):
    if len(text) > LONG_REPORT_CHARS:
        report.fix(f"long report kept (> {LONG_REPORT_CHARS} chars; the tokenizer truncates)", where)


def open_maybe_gzip(path: Path):
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8", errors="replace")
    return open(path, newline="", encoding="utf-8", errors="replace")


def read_csv_rows(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    """All rows of a .csv or .csv.gz as dicts; columns are selected by name, never by position (docs/data.md
    "MIMIC-CXR-JPG")."""
    try:
        with open_maybe_gzip(path) as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; found columns {columns}")
            return list(reader)
    except (OSError, EOFError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read CSV ({e})") from e


def find_file(root: Path, stem: str) -> Path | None:
    """`stem.csv.gz` or `stem.csv` in root (PhysioNet ships gzip; people often unzip)."""
    for name in (f"{stem}.gz", stem):
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


#################################################################################
#                   Splits by group (patient / slide) and file pairs            #
#################################################################################

def group_split(group: str, val_fraction: float, test_fraction: float) -> str:
    """A fixed, seed-independent split from a stable hash of the group id (patient or slide), so all images of one
    patient / WSI fall in the same split (no leakage, docs/data.md "Edge cases") and the split never changes between
    runs."""
    h = int(hashlib.sha1(f"medim-split:{group}".encode()).hexdigest()[:12], 16) / 16 ** 12
    if h < test_fraction:
        return "test"
    return "val" if h < test_fraction + val_fraction else "train"


SPLIT_DIRS = {"train": ("train", "data"), "val": ("val", "valid", "validate"), "test": ("test",)}


def split_dirs(root: Path) -> dict[str, Path]:
    """Split folders present in root: MeDiM uses data/ (train) and test/; others use train/ val/ test/."""
    found = {}
    for split, names in SPLIT_DIRS.items():
        for name in names:
            if (Path(root) / name).is_dir():
                found[split] = Path(root) / name
                break
    return found


def paired_files(folder: Path, image_exts: tuple[str, ...], report: LoadReport, root: Path,
                 keep=lambda stem: True) -> list[tuple[Path, Path]]:
    """(image, same-stem .txt) pairs in one folder, sorted (glob order is file-system dependent), for the stems
    `keep` accepts. An image without text is skipped ('missing report'); a text without image is counted."""
    images, texts = {}, set()
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)  # splitext, not split('.'): PathGen wsi_ids contain dots
            if not keep(stem):
                continue
            if ext.lower() in image_exts:
                images[stem] = Path(entry.path)
            elif ext.lower() == ".txt":
                texts.add(stem)
    pairs = []
    for stem in sorted(images):
        if stem in texts:
            pairs.append((images[stem], Path(folder) / f"{stem}.txt"))
        else:
            report.skip("missing report", relative(images[stem], root))
    for stem in sorted(texts - set(images)):
        report.skip("orphan report (no image)", relative(Path(folder) / f"{stem}.txt", root))
    return pairs


def csv_members(path: Path, split: str) -> set[str]:
    """File stems listed for `split` by a split CSV: either one CSV with a 'split' column, or a folder of CSVs whose
    names carry the split word (e.g. pathgen_train.csv, pathgen_test_image.csv; docs/data.md "PathGen"). The column holding
    file names is found by its values (most end in .png/.jpg), since the release's column names are unknown."""
    path = Path(path)
    if path.is_dir():
        words = {"train": ("train",), "val": ("val",), "test": ("test",)}[split]
        files = sorted(p for p in path.glob("*.csv*") if any(w in p.name.lower() for w in words))
        rows = [row for f in files for row in read_csv_rows(f)]
        if not files:
            raise FileNotFoundError(f"split_csv={path}: no CSV with '{split}' in its name; {listing(path)}")
    else:
        rows = read_csv_rows(path, required=("split",))
        rows = [r for r in rows if SPLIT_ALIASES.get(str(r["split"]).strip().lower()) == split]
    if not rows:
        return set()
    columns = list(rows[0])
    image_like = lambda c: sum(str(r.get(c, "")).lower().endswith((".png", ".jpg", ".jpeg")) for r in rows)  # noqa: E731
    column = max(columns, key=image_like) if max(map(image_like, columns)) > 0 else columns[0]
    return {os.path.splitext(os.path.basename(str(r[column]).strip()))[0] for r in rows if r.get(column)}


def flat_records(root: Path, split: str, report: LoadReport, *, domain: str, parse_name, image_exts: tuple[str, ...],
                 val_fraction: float, test_fraction: float, split_csv=None, deid: str = "keep",
                 source: str = "flat") -> list[Record]:
    """Folders of `<name>.<image ext>` + `<name>.txt` (MeDiM release layout, docs/data.md "MIMIC-CXR-JPG" / "PathGen").

    The split comes from, in order: a split CSV (option), a folder per split (data/ or train/, val/, test/), or a
    stable hash of the group id (patient / slide) from `parse_name(stem) -> (group, meta)`. When there is a train
    folder but no val folder (MeDiM ships data/ + test/), val is carved out of train by group and removed from it."""
    root, dirs = Path(root), split_dirs(root)
    group_split_of = lambda stem, vf, tf: group_split(parse_name(stem)[0], vf, tf)  # noqa: E731
    if split_csv is not None:
        members = csv_members(split_csv, split)
        folders, keep = (list(dirs.values()) or [root]), (lambda stem: stem in members)
        report.notes.append(f"split from {Path(split_csv).name}: {len(members)} names listed for {split}")
    elif split in dirs and not (split == "train" and "val" not in dirs):
        folders, keep = [dirs[split]], (lambda stem: True)
    elif split in ("train", "val") and "train" in dirs:
        folders = [dirs["train"]]
        keep = lambda stem: group_split_of(stem, val_fraction, 0.0) == split  # noqa: E731
        report.notes.append(f"no val folder: val = {val_fraction:.0%} of {dirs['train'].name}/ by group (patient/slide), "
                            f"removed from train")
    elif not dirs:
        folders = [root]
        keep = lambda stem: group_split_of(stem, val_fraction, test_fraction) == split  # noqa: E731
        report.notes.append(f"no split folders: split by a hash of the group id (val {val_fraction:.0%}, "
                            f"test {test_fraction:.0%})")
    else:
        raise FileNotFoundError(f"{root}: no folder for split '{split}' (looked for {list(SPLIT_DIRS[split])}); "
                                f"{listing(root)}")
    pairs = [pair for folder in folders for pair in paired_files(folder, image_exts, report, root, keep)]
    records = []
    for image_path, text_path in tqdm(pairs, desc=f"[data] {split} texts", unit="file", disable=len(pairs) < 2000):
        where = relative(text_path, root)
        text = read_text(text_path, report, where)
        if text is None:
            continue
        text = clean_text(text, deid)
        if not text:
            report.skip("empty report", where)
            continue
        note_length(text, report, where)
        group, meta = parse_name(image_path.stem)
        records.append(Record(uid=image_path.stem, domain=domain, image_path=str(image_path), report=text,
                              meta={**meta, "group": group, "split": split, "source": source}))
    return records


def relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def listing(root: Path, n: int = 12) -> str:
    """What is actually in a folder, for 'wrong --data-dir' errors (names only)."""
    root = Path(root)
    if not root.exists():
        return f"{root} does not exist"
    if root.is_file():
        return f"{root} is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return f"{root} contains: {', '.join(names[:n]) or '(nothing)'}{more}"


def fingerprint(paths) -> list:
    """(path, size, mtime) of index files, so a cache entry is rebuilt when a CSV / json / folder changes."""
    out = []
    for p in paths:
        p = Path(p)
        st = p.stat() if p.exists() else None
        out.append([str(p.resolve()), st.st_size if st and p.is_file() else 0, st.st_mtime_ns if st else 0])
    return out


def cache_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
