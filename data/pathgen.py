"""PathGen loaders: histopathology patch / caption pairs (H&E, TCGA diagnostic slides).

Data: Sun et al., "PathGen-1.6M: 1.6 Million Pathology Image-text Pairs Generation through Multi-agent Collaboration"
(arXiv 2407.00203), repo PathFoundation/PathGen-1.6M; MeDiM (arXiv 2510.06131) trains on PathGen pairs laid out as flat
png + txt folders (UCSC-VLAA/MeDiM, HF dataset JiaMao/pathgen). Formats in docs/data.md "PathGen".

Layouts (auto-detected, or `layout=`):
  json  PathGen-1.6M.json (a list) or .jsonl: {"wsi_id" | "WSI_id", "position": ["x", "y"], "caption", "file_id"?}
        + a folder of patches named `{wsi_id}_{x}_{y}.png` (the README's OpenSlide extraction: 672x672 RGBA, level 0)
  flat  train/ and test/ (and val/) folders of `<name>.png` + `<name>.txt`, or one folder; optional split CSV
Splits without a split folder / column are made by slide (wsi_id), never by patch: neighbouring patches of one slide
look alike, so a patch-level split would leak. RGBA patches are composited on white (glass), see data/images.py.
"""
import json
from pathlib import Path

from .cache import load_cached_pairs
from .records import (SPLIT_ALIASES, LoadReport, Record, clean_text, decode_text, flat_records,
                      group_split, listing, note_length, split_dirs)

PATCH_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

LAYOUTS_HELP = """expected one of these layouts:
  (a) PathGen json: a .json list (or .jsonl) of {"wsi_id", "position": ["x", "y"], "caption"} and the patches
      {wsi_id}_{x}_{y}.png in patches/ or images/ or the same folder (or annotation=..., image_dir=...)
  (b) flat: train/ and test/ folders (or one folder) of <name>.png + <name>.txt pairs, optional split_csv=..."""


def parse_patch_name(stem: str) -> tuple[str, dict]:
    """`{wsi_id}_{x}_{y}` -> (wsi_id, meta). Split from the right: TCGA wsi_ids contain '-' and '.'."""
    parts = stem.rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], {"wsi_id": parts[0], "position": [parts[1], parts[2]]}
    return stem, {}


#################################################################################
#                          Layout (a): PathGen json / jsonl                     #
#################################################################################

def read_entries(path: Path, report: LoadReport) -> list:
    """A JSON list (or an object holding one list) or JSON-lines file -> list of entries; bad lines counted."""
    text = decode_text(path.read_bytes(), report, path.name)
    if path.suffix == ".jsonl":
        entries = []
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    report.skip("malformed json line", f"{path.name}:{n + 1}")
        return entries
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if isinstance(data, dict):  # {"train": [...], "test": [...]}: flatten, remembering the split
        return [{**e, "split": key} for key, items in data.items() if isinstance(items, list)
                for e in items if isinstance(e, dict)]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{wsi_id, position, caption}} entries, "
                         f"got {type(data).__name__}")
    return data


def entry_fields(entry) -> tuple[str, str, list[str], str] | None:
    """(patch stem, wsi_id, position, caption) or None when a key is missing (wsi_id also spelled WSI_id)."""
    if not isinstance(entry, dict):
        return None
    wsi = entry.get("wsi_id", entry.get("WSI_id"))
    position, caption = entry.get("position"), entry.get("caption")
    if not wsi or not isinstance(caption, str) or not isinstance(position, (list, tuple)) or len(position) != 2:
        return None
    position = [str(int(p)) if isinstance(p, (int, float)) else str(p).strip() for p in position]
    return f"{wsi}_{position[0]}_{position[1]}", str(wsi), position, caption


def patch_root(root: Path, image_dir, stems: list[str]) -> Path:
    """image_dir if given, else the first of patches/, images/, . holding one of the first patches."""
    if image_dir is not None:
        return Path(image_dir)
    candidates = [root / "patches", root / "images", root]
    for candidate in candidates:
        if any((candidate / f"{stem}.png").is_file() for stem in stems):
            return candidate
    return next((c for c in candidates if c.is_dir()), root)


def json_records(root: Path, split: str, report: LoadReport, *, annotation: Path, image_dir,
                 val_fraction: float, test_fraction: float) -> list[Record]:
    entries = read_entries(annotation, report)
    fields = [entry_fields(e) for e in entries]
    patches = patch_root(root, image_dir, [f[0] for f in fields[:20] if f])
    report.notes.append(f"patches resolved under {patches}")
    records, seen = [], set()
    for n, (entry, f) in enumerate(zip(entries, fields)):
        if f is None:
            report.skip("malformed entry (needs wsi_id, position [x, y], caption)", f"{annotation.name}[{n}]")
            continue
        stem, wsi, position, caption = f
        given = SPLIT_ALIASES.get(str(entry.get("split", "")).strip().lower())
        if (given or group_split(wsi, val_fraction, test_fraction)) != split:
            continue
        if stem in seen:
            report.skip("duplicate patch entry", stem)
            continue
        seen.add(stem)
        text = clean_text(caption)
        if not text:
            report.skip("empty caption", stem)
            continue
        note_length(text, report, stem)
        meta = {"wsi_id": wsi, "position": position, "split": split, "source": "pathgen-json"}
        if entry.get("file_id"):
            meta["file_id"] = str(entry["file_id"])
        records.append(Record(uid=stem, domain="path", image_path=str(patches / f"{stem}.png"), report=text, meta=meta))
    return records


#################################################################################
#                                  Entry point                                  #
#################################################################################

def find_annotation(root: Path) -> Path | None:
    """The PathGen json/jsonl in root: the only one, or the one named like PathGen."""
    found = sorted(p for p in root.glob("*.json*") if p.suffix in (".json", ".jsonl") and not p.name.startswith("."))
    if len(found) > 1:
        named = [p for p in found if "pathgen" in p.name.lower()]
        if len(named) != 1:
            raise ValueError(f"{root}: several json files ({', '.join(p.name for p in found)}); pass annotation=...")
        return named[0]
    return found[0] if found else None


def detect_layout(root: Path, annotation=None) -> str:
    if annotation is not None or find_annotation(root) is not None:
        return "json"
    folders = list(split_dirs(root).values()) or [root]
    if any(p.suffix.lower() in PATCH_EXTS for f in folders for p in f.iterdir()):
        return "flat"
    raise FileNotFoundError(f"--data-dir {root} does not look like PathGen data; {LAYOUTS_HELP}\nfound: {listing(root)}")


def load_pathgen(split: str, data_dir, *, image_size: int = 64, seed: int = 0, limit: int | None = None,
                 cache_dir=None, layout: str | None = None, annotation=None, image_dir=None, split_csv=None,
                 val_fraction: float = 0.02, test_fraction: float = 0.02, strict: bool = False,
                 workers: int | None = None, window: str = "bits", pad_fill=None, rebuild_cache: bool = False):
    """PathGen pairs (domain 'path', RGB) for one split; see the module docstring.

    Options: layout ('json'|'flat', default auto); json: annotation (path of the .json/.jsonl), image_dir;
    flat: split_csv (a CSV with a 'split' column, or a folder of *train*/*val*/*test* CSVs listing file names);
    val_fraction / test_fraction (slide-level split when the data has none); strict, workers, window, pad_fill,
    rebuild_cache as for MIMIC."""
    if data_dir is None:
        raise ValueError(f"--data pathgen needs --data-dir; {LAYOUTS_HELP}")
    root = Path(data_dir).expanduser()
    if root.is_file() and root.suffix in (".json", ".jsonl"):
        root, annotation = root.parent, root if annotation is None else annotation
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {root} does not exist or is not a folder; {LAYOUTS_HELP}")
    layout = layout or detect_layout(root, annotation)
    report = LoadReport(f"pathgen ({layout})", split, strict)
    if layout == "json":
        annotation = Path(annotation) if annotation is not None else find_annotation(root)
        if annotation is None or not annotation.is_file():
            raise FileNotFoundError(f"PathGen json not found ({annotation}); {LAYOUTS_HELP}\nfound: {listing(root)}")
        index = [annotation]
        options = dict(annotation=annotation, image_dir=image_dir, val_fraction=val_fraction, test_fraction=test_fraction)
        build = lambda: json_records(root, split, report, **options)  # noqa: E731
    elif layout == "flat":
        index = [root, *split_dirs(root).values()] + ([Path(split_csv)] if split_csv else [])
        options = dict(domain="path", parse_name=parse_patch_name, image_exts=PATCH_EXTS, val_fraction=val_fraction,
                       test_fraction=test_fraction, split_csv=split_csv, source="pathgen-flat")
        build = lambda: flat_records(root, split, report, **options)  # noqa: E731
    else:
        raise ValueError(f"layout must be 'json' or 'flat', got {layout!r}")
    return load_cached_pairs("pathgen", layout, root, split, index, options, build, report, domain="path",
                             image_size=image_size, limit=limit, seed=seed, cache_dir=cache_dir, window=window,
                             pad_fill=pad_fill, workers=workers, rebuild_cache=rebuild_cache)
