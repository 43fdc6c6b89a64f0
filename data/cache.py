"""The pre-processing pass: read every image of a record list once, square-resize it, store the uint8 stack as one
.npy file, and serve `Pair`s from a memory map of it.

MIMIC-CXR-JPG train is ~370k full-resolution JPEGs; decoding them takes tens of minutes, so it must happen once, not
once per epoch. Two cache entries per load, both in `cache_dir` (default `<data_dir>/.cache`):
- `records-<key>.json`: the loader's record list (paths, cleaned text, labels) + its LoadReport counts, keyed by the
  source's index files (size + mtime), the split and the text options. Skips re-reading 200k report files.
- `images-<key>.npy` + `.json`: the image stack, keyed by a hash of the record list (uid + path), the image size and
  the image options. The .json (rows kept + counts) is written last, so it marks a complete entry.
Writes are atomic (temp file + os.replace). Delete the folder, or pass rebuild_cache=True, after editing files in place.
"""
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .common import Pair, atomic_path, write_atomic
from .images import MissingDependency, read_image
from .records import LoadReport, Record, cache_key, relative

CACHE_VERSION = 1    # bump when the meaning of a cache entry changes
CHUNK = 256          # images decoded per thread-pool batch (bounds memory held by finished-but-unwritten results)


#################################################################################
#                                 Cache location                                #
#################################################################################

def default_cache_dir(data_dir) -> Path:
    """`<data_dir>/.cache` when writable (the cache stays with the data it was made from, which matters for
    credentialed data), else `$XDG_CACHE_HOME/medim` (~/.cache/medim)."""
    root = Path(data_dir)
    root = root if root.is_dir() else root.parent
    if os.access(root, os.W_OK):
        return root / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medim"


def write_json_atomic(path: Path, obj):
    write_atomic(path, lambda f: f.write(json.dumps(obj, ensure_ascii=False).encode("utf-8")))


def cached_records(cache_dir: Path, key: str, build, report: LoadReport,
                   rebuild: bool = False) -> tuple[list[Record], bool]:
    """The record list from the cache when present, else `build()` (which fills `report`) and store it."""
    path = Path(cache_dir) / f"records-{key}.json"
    if path.is_file() and not rebuild:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        report.merge(saved["report"])
        return [Record(**r) for r in saved["records"]], True
    records = build()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"version": CACHE_VERSION, "records": [r.to_json() for r in records],
                             "report": report.state()})
    return records, False


#################################################################################
#                        The pass: every image read once                        #
#################################################################################

def _decode(record: Record, domain: str, size: int, window: str, pad_fill):
    """-> (array, repairs, None) or (None, None, reason). Never raises for a bad file: a long run must not crash."""
    try:
        array, repairs = read_image(record.image_path, domain, size, window=window, pad_fill=pad_fill)
        return array, repairs, None
    except MissingDependency:
        raise
    except FileNotFoundError:
        return None, None, "missing image"
    except Image.DecompressionBombError:
        return None, None, "image over Pillow's decompression-bomb pixel limit"
    except (OSError, SyntaxError, ValueError, EOFError):
        return None, None, "corrupt or truncated image"
    except Exception as e:  # noqa: BLE001 -- any other decoder failure is one bad file, not a reason to stop
        return None, None, f"unreadable image ({type(e).__name__})"


def preprocess_images(records: list[Record], domain: str, size: int, npy_path: Path, report: LoadReport,
                      root: Path, window: str = "bits", pad_fill=None, workers: int | None = None) -> np.ndarray:
    """Decode + resize all images into a (N, S, S[, 3]) uint8 .npy; returns the row index of each kept record
    (-1 = skipped). Threads, not processes: PIL releases the GIL while decoding, and threads need no
    `if __name__ == '__main__'` guard in the calling script."""
    shape = (len(records), size, size) + ((3,) if domain == "path" else ())
    rows = np.full(len(records), -1, dtype=np.int64)
    if workers is None:  # auto: threads only pay off on big jobs (MIMIC train: ~15 ms per full-size JPEG)
        workers = min(8, os.cpu_count() or 1) if len(records) >= 2000 else 0
    # strict mode, Ctrl-C, a missing optional package: atomic_path leaves no half-written file behind
    with atomic_path(npy_path) as tmp:
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        pool = ThreadPoolExecutor(workers) if workers > 1 else None
        bar = tqdm(total=len(records), desc=f"[data] caching {len(records)} images at {size}px", unit="img",
                   disable=len(records) < 500)
        try:
            for start in range(0, len(records), CHUNK):
                chunk = records[start:start + CHUNK]
                decode = lambda r: _decode(r, domain, size, window, pad_fill)  # noqa: E731
                results = pool.map(decode, chunk) if pool else map(decode, chunk)
                for i, (record, (array, repairs, reason)) in enumerate(zip(chunk, results), start):
                    where = relative(record.image_path, root)
                    if reason:
                        report.skip(reason, where)
                        continue
                    stack[i], rows[i] = array, i
                    for repair in repairs:
                        report.fix(repair, where)
                bar.update(len(chunk))
            stack.flush()
        finally:
            del stack  # the memory map is closed before the file is renamed or removed
            bar.close()
            if pool:
                pool.shutdown()
    return rows


#################################################################################
#                          The Sequence the loaders return                      #
#################################################################################

class PairList(Sequence):
    """Records + a (memory-mapped) image stack -> `Pair`s. Supports len, int and slice indexing.
    `.reports` / `.domains` give the text / domain of every item without touching the images."""

    def __init__(self, records: list[Record], images: np.ndarray, rows: np.ndarray, report: LoadReport | None = None):
        self.records, self.images, self.rows, self.load_report = records, images, rows, report

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PairList(self.records[i], self.images, self.rows[i], self.load_report)
        r = self.records[i]
        image = np.array(self.images[self.rows[i]])  # a copy: callers may modify it, the memmap is read-only
        return Pair(image=image, report=r.report, domain=r.domain, uid=r.uid, labels=r.labels, meta=dict(r.meta))

    def __getstate__(self):
        """Pickle (DataLoader workers under 'spawn') the .npy path, not a copy of the whole memory-mapped stack."""
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap):
            state["images"] = str(self.images.filename)
        return state

    def __setstate__(self, state):
        if isinstance(state["images"], str):
            state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)

    @property
    def reports(self) -> list[str]:
        return [r.report for r in self.records]

    @property
    def domains(self) -> list[str]:
        return [r.domain for r in self.records]


def take(records: list, limit: int | None, seed: int) -> list:
    """A seeded random subset of `limit` records, in the original order (a prefix would be a few patients only)."""
    if limit is None or limit >= len(records):
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=int(limit), replace=False))
    return [records[i] for i in keep]


def build_pairs(records: list[Record], domain: str, image_size: int, cache_dir: Path, report: LoadReport, root: Path,
                *, window: str = "bits", pad_fill=None, workers: int | None = None, rebuild: bool = False,
                records_cached: bool = False) -> PairList:
    """Images for `records` from the cache (or the pass), then the load summary. Raises when nothing is left."""
    if not records:
        raise ValueError(f"{report.source}: no usable pairs for split '{report.split}' under {root}\n"
                         + report.summary(0))
    key = cache_key(CACHE_VERSION, [(r.uid, r.image_path) for r in records], domain, image_size, window, pad_fill)
    npy_path, meta_path = Path(cache_dir) / f"images-{key}.npy", Path(cache_dir) / f"images-{key}.json"
    image_report = LoadReport(report.source, report.split, report.strict)
    cached = meta_path.is_file() and npy_path.is_file() and not rebuild
    if cached:
        with open(meta_path, encoding="utf-8") as f:
            saved = json.load(f)
        rows = np.asarray(saved["rows"], dtype=np.int64)
        image_report.merge(saved["report"])
    else:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        rows = preprocess_images(records, domain, image_size, npy_path, image_report, root, window, pad_fill, workers)
        write_json_atomic(meta_path, {"version": CACHE_VERSION, "rows": rows.tolist(), "report": image_report.state()})
    report.merge(image_report.state())
    kept = np.flatnonzero(rows >= 0)
    if len(kept) == 0:
        raise ValueError(f"{report.source}: no readable images for split '{report.split}' under {root}\n"
                         + report.summary(0))
    images = np.load(npy_path, mmap_mode="r")
    pairs = PairList([records[i] for i in kept], images, rows[kept], report)
    note = " [records + images from cache]" if cached and records_cached else " [images from cache]" if cached else ""
    print(report.summary(len(pairs), cached=note), flush=True)
    return pairs


def load_cached_pairs(source: str, layout: str, root: Path, split: str, index: list, options: dict, build,
                      report: LoadReport, *, domain: str, image_size: int, limit, seed: int, cache_dir=None,
                      window="bits", pad_fill=None, workers=None, rebuild_cache=False):
    """The tail every real loader shares: fingerprint the index files, reuse or build the record list, then read
    (or reuse) the resized image stack. `build()` makes the records; `options` are what the records depend on."""
    from .records import cache_key, fingerprint
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    cache_dir.mkdir(parents=True, exist_ok=True)  # before the fingerprint: creating <root>/.cache changes root's mtime
    key = cache_key(source, layout, str(root.resolve()), split, fingerprint(index),
                    {k: v for k, v in options.items() if k != "parse_name"})
    records, cached = cached_records(cache_dir, key, build, report, rebuild_cache)
    return build_pairs(take(records, limit, seed), domain, image_size, cache_dir, report, root, window=window,
                       pad_fill=pad_fill, workers=workers, rebuild=rebuild_cache, records_cached=cached)
