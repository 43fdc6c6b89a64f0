"""The one item type every dataset yields, the one place images are squared and resized, and the one way files are
written (atomically).

Every loader in data/ (synthetic, MIMIC-CXR, R2Gen annotation.json, PathGen) returns `Pair`s, so tokenizer.py,
train.py and eval.py never care where a pair came from.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# one tag token per domain in the vocabulary: a tag, not the official code's size string (docs/paper-notes.md
# "The official code: quirks and what medim does instead")
DOMAINS = ("cxr", "path")


@dataclass
class Pair:
    image: np.ndarray             # uint8, (S, S) grayscale for CXR or (S, S, 3) RGB for pathology, already square-resized
    report: str                   # the report / caption text
    domain: str                   # one of DOMAINS
    uid: str = ""                 # an id or file path, for error messages and output names
    labels: dict | None = None    # finding -> 1 / 0 / -1 (uncertain) / None (not mentioned); None when unknown
    meta: dict = field(default_factory=dict)


def square_resize(img: Image.Image, size: int, fill=0) -> np.ndarray:
    """Pad to a centred square (never crop: a crop could cut off a lung or a lesion), then resize to size×size.

    Returns uint8 (size, size) for 'L' images and (size, size, 3) for 'RGB'. Callers convert modes first
    (16-bit and RGBA handling live in the loaders, see docs/data.md "Edge cases")."""
    if img.mode not in ("L", "RGB"):
        raise ValueError(f"square_resize expects an 'L' or 'RGB' image, got mode {img.mode!r}")
    w, h = img.size
    side = max(w, h)
    if (w, h) != (side, side):
        canvas = Image.new(img.mode, (side, side), fill if img.mode == "L" else (fill,) * 3)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


@contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write to: on success it replaces `path` in one step (os.replace), so a crash
    mid-write leaves the old file (or none), never half a file; on failure it is removed. The process id in the name
    keeps processes that write the same file (DDP ranks) apart."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomic(path, write):
    """Write `path` atomically: write(binary file object) fills a temporary file that then replaces it (atomic_path).
    E.g. write_atomic(p, lambda f: torch.save(obj, f)) or write_atomic(p, lambda f: f.write(text.encode()))."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
