"""Image decoding for real data: any file mode -> an 8-bit 'L' (chest X-ray) or 'RGB' (pathology) PIL image.

Edge cases from docs/data.md "Edge cases", each checked by tests/test_data_real.py:
- 16-bit / 32-bit grayscale (`I;16`, `I`, `F`): scaled by bit depth first. `convert('L')` on them clips (99.6% of a
  full-range ramp becomes 255), so it is never called on those modes.
- RGBA / LA / P with transparency (OpenSlide patches are RGBA): composited on white for pathology, black for CXR.
- CMYK, YCbCr, P, 1: converted by Pillow.
- Truncated or corrupt files: `Image.open` can succeed on a truncated JPEG and `load()` then raises, so `load()` is
  always called here, inside the caller's try. `LOAD_TRUNCATED_IMAGES` is never set.
- Big JPEGs (MIMIC-CXR-JPG is ~2500x3000): `draft()` asks libjpeg for a 1/2..1/8-scale decode that is still at least
  the target size, which makes the one-off pre-processing pass several times faster.
- DICOM (.dcm, .dcm.gz): only when the optional `pydicom` is installed (lazy import); rescale slope/intercept, the
  VOI window, and MONOCHROME1 inversion are applied here in numpy.
"""
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from .common import square_resize

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm")
CHANNELS = {"cxr": "L", "path": "RGB"}       # CXR is one channel, pathology RGB (docs/data.md "Edge cases")
BACKGROUND = {"cxr": 0, "path": 255}         # alpha compositing + square padding: black film, white glass slide


class MissingDependency(RuntimeError):
    """Raised (not skipped) when a file type needs an optional package: every such file would fail the same way."""


#################################################################################
#                         High-bit-depth grayscale -> 8 bit                     #
#################################################################################

def gray_to_8bit(img: Image.Image, window: str = "bits") -> Image.Image:
    """'I;16*', 'I' or 'F' -> 'L'. window='bits' divides by the bit depth's maximum (16-bit: v*255/65535 = v/257);
    window='minmax' stretches min..max to 0..255 (useful for 12-bit data stored in 16-bit files, which look dark)."""
    if window not in ("bits", "minmax"):
        raise ValueError(f"window must be 'bits' or 'minmax', got {window!r}")
    values = np.asarray(img).astype(np.float64)  # (H, W)
    full_scale = 1.0 if img.mode == "F" else 65535.0  # Pillow opens 16-bit PNG/TIFF as 'I;16' (new) or 'I' (old)
    if window == "minmax" or values.max(initial=0) > full_scale:  # values beyond any known bit depth: stretch
        lo, hi = values.min(initial=0), values.max(initial=0)
    else:
        lo, hi = 0.0, full_scale
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def dicom_to_8bit(pixels: np.ndarray, slope=1.0, intercept=0.0, center=None, width=None,
                  photometric="MONOCHROME2") -> np.ndarray:
    """DICOM stored values -> uint8 display values: modality LUT (slope/intercept), then the VOI window
    (center/width, else min..max), then inversion for MONOCHROME1 (where high values are dark)."""
    values = pixels.astype(np.float64) * float(slope) + float(intercept)
    if center is not None and width is not None and float(width) > 1:
        lo, hi = float(center) - float(width) / 2, float(center) + float(width) / 2
    else:
        lo, hi = values.min(), values.max()
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255.0
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.rint(scaled).astype(np.uint8)


def _first(value):
    """DICOM multi-valued window fields: use the first window."""
    if value is None:
        return None
    try:
        return value[0]
    except (TypeError, IndexError, KeyError):
        return value


def read_dicom(path: Path) -> Image.Image:
    try:
        import pydicom  # optional: only needed for .dcm files
    except ImportError as e:
        raise MissingDependency(f"{path}: reading DICOM needs the optional package pydicom (pip install pydicom), "
                                f"or use the MIMIC-CXR-JPG .jpg files") from e
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        ds = pydicom.dcmread(f)
        pixels = ds.pixel_array  # compressed transfer syntaxes raise here without their plugin -> caller counts it
    if pixels.ndim == 3:  # multi-frame: first frame
        pixels = pixels[0]
    return Image.fromarray(dicom_to_8bit(
        pixels, getattr(ds, "RescaleSlope", 1.0), getattr(ds, "RescaleIntercept", 0.0),
        _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None)),
        str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))), "L")


#################################################################################
#                          Any file -> square uint8 array                       #
#################################################################################

def to_channels(img: Image.Image, domain: str, window: str = "bits") -> tuple[Image.Image, list[str]]:
    """Any PIL mode -> 'L' (cxr) or 'RGB' (path). Returns the image and the repairs made (for the LoadReport)."""
    target, repairs = CHANNELS[domain], []
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img, repairs = gray_to_8bit(img, window), [f"{img.mode} image scaled to 8 bit"]
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        canvas = Image.new("RGBA", img.size, (BACKGROUND[domain],) * 3 + (255,))
        img = Image.alpha_composite(canvas, img.convert("RGBA"))
        repairs.append("alpha composited")
    if img.mode != target:
        img = img.convert(target)  # CMYK, YCbCr, 1, L<->RGB: 8-bit conversions, no clipping issue
    return img, repairs


def read_image(path: Path, domain: str, size: int, window: str = "bits", pad_fill=None) -> tuple[np.ndarray, list[str]]:
    """One image file -> (uint8 (size,size) for cxr / (size,size,3) for path, repairs).

    Raises OSError / SyntaxError / ValueError / EOFError / Image.DecompressionBombError for unreadable files
    (the caller skips and counts them) and FileNotFoundError when the file is missing."""
    path = Path(path)
    if path.name.lower().endswith((".dcm", ".dcm.gz")):
        img = read_dicom(path)
    else:
        img = Image.open(path)
        if img.format == "JPEG":
            img.draft(CHANNELS[domain] if img.mode in ("L", "RGB") else None, (size, size))
        img.load()  # decode now, so a truncated file fails here and not later
    img, repairs = to_channels(img, domain, window)
    fill = BACKGROUND[domain] if pad_fill is None else pad_fill
    return square_resize(img, size, fill=fill), repairs
