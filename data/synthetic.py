"""Embedded synthetic image–report data with ground truth: a toy chest X-ray and a toy H&E pathology patch.

MeDiM (Mao et al. 2025, "Discrete Diffusion Models with MLLMs for Unified Medical Multimodal Generation",
arXiv 2510.06131) trains on MIMIC-CXR (Johnson et al. 2019, arXiv 1901.07042) and PathGen-1.6M (Sun et al. 2024,
arXiv 2407.00203). Neither can be downloaded here, so the default data is procedural, and every pair carries the binary
findings it was drawn from. That makes the toy data a yardstick: data/labeler.py reads the findings back from generated
reports and `pixel_labels` (below) from generated images; both are exact / ≥ 0.98 on real toy pairs
(tests/test_synthetic.py, tests/test_labeler.py). Design and prototype numbers: docs/data.md "Synthetic data".

What the model sees, and why the generator looks the way it does
- Images are tokenised by a VQ-VAE with f = 8, so at 64 px one token covers 8×8 pixels. Every finding is drawn big and
  contrasty enough to change whole tokens (the prototype's 2.2-px nodule hid inside one token and capped macro-F1):
  nodule radius ≥ 3.6 px, effusions ≥ 1/4 of the lung height, a pneumothorax rim ≥ 4 px, nuclei sizes differ by 2×,
  mitotic figures ~10×4 px in a clear halo. All sizes scale with image_size / 64.
- Pixel noise is low by default (`noise`, σ in grey levels): noise makes VQ codes high-entropy and expensive to model.
- Reports keep a CANONICAL sentence order (CXR: heart → lungs → pleura → devices → impression; pathology: architecture →
  cellularity → nuclei → mitoses → inflammation → necrosis → diagnosis). A parallel decoder trained on shuffled order
  wrote word salad (4× lower label F1 in an early prototype), so shuffling is an option, off by default.
- Orientation: radiological convention. The patient's RIGHT is on the IMAGE LEFT (x < S/2): a "left pleural effusion"
  is drawn in the image-right lung, the heart bulges to the image right, a left chest pacemaker sits top right.

Sample i of a split is a pure function of (seed, split, i): np.random.default_rng([seed, split_id, i, domain_id]).
Nothing is stored, so 20,000 pairs cost nothing until indexed; drawing one costs ≈0.5 ms (toy CXR) / ≈1 ms (pathology)
at 64 px and ≈1.1 / 2.3 ms at 128 px on one core (CPU time, `python -m data.synthetic --bench`).
Only numpy and scipy.ndimage are used; PIL only for the sample/grid export at the bottom.
"""
import functools
import os
import sys

import numpy as np
from scipy import ndimage

from data.common import Pair

#### Finding names (the label keys) and ids ############################################################################

CXR_FINDINGS = ("cardiomegaly", "effusion_left", "effusion_right", "pneumothorax", "nodule", "consolidation",
                "support_device")
PATH_FINDINGS = ("high_cellularity", "pleomorphism", "glands", "inflammation", "necrosis", "mitoses")
FINDINGS = {"cxr": CXR_FINDINGS, "path": PATH_FINDINGS}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}        # seeds the rng, so the splits are disjoint by construction
DEFAULT_SIZES = {"train": 20000, "val": 1000, "test": 1000}
_DOMAIN_IDS = {"cxr": 0, "path": 1}                  # so toy CXR i and toy pathology i are not drawn from one stream
DEFAULT_NOISE = 2.0                                  # pixel noise σ (grey levels); the prototype's 4 made codes noisier

#### Drawing helpers (vectorised numpy, no per-pixel Python loops) #####################################################


@functools.lru_cache(maxsize=8)
def _grid(S):
    """Pixel-centre coordinates (y, x), each (S, S) float32. Cached: every image of one size shares them."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@functools.lru_cache(maxsize=8)
def _noise_bank(S):
    """A fixed (2S, 2S) float32 bank of N(0, 1) samples; each image takes a random (S, S) window (×σ). Drawing
    S·S fresh normals per image costs more than the whole chest drawing, and pixel noise needs no more randomness."""
    bank = np.random.default_rng(12345).standard_normal((2 * S, 2 * S), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _pixel_noise(rng, S, channels=0):
    """(S, S) or (S, S, channels) unit Gaussian noise: windows of the cached bank at random offsets."""
    bank = _noise_bank(S)
    windows = []
    for _ in range(max(channels, 1)):
        y, x = rng.integers(0, S + 1, size=2)
        windows.append(bank[y:y + S, x:x + S])
    return np.stack(windows, -1) if channels else windows[0]


@functools.lru_cache(maxsize=16)
def _upsample_matrix(S, cells):
    """(S, cells+1) bilinear interpolation weights: W @ coarse @ W.T upsamples a coarse grid to S×S in two tiny matmuls."""
    pos = (np.arange(S) + 0.5) / S * cells                                       # pixel centre in coarse-grid units
    W = np.clip(1 - np.abs(pos[:, None] - np.arange(cells + 1)[None, :]), 0, None).astype(np.float32)
    W.setflags(write=False)
    return W


def _smooth_noise(rng, S, cells):
    """Low-frequency noise in [-1, 1], (S, S): a (cells+1)² random grid, bilinearly upsampled."""
    W = _upsample_matrix(S, cells)
    return W @ rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32) @ W.T


def _stamp(canvas, cy, cx, ry, rx, angle, color, by_size=False):
    """Paint N filled, rotated ellipses into canvas (S, S) or (S, S, C), each only on its own small window.

    cy, cx, ry, rx, angle: (N,) arrays in pixels / radians (or one value); color: one value, or (N,) / (N, C) per ellipse.
    Later ellipses overwrite earlier ones. Working on (N, P, P) windows instead of N full images keeps 80 nuclei ~0.1 ms.
    by_size=True paints small ellipses before big ones, each size class with its own window (for nuclei of mixed sizes,
    where the paint order does not matter but one window fitted to the largest would cost 5×)."""
    cy, cx = np.asarray(cy, np.float32).ravel(), np.asarray(cx, np.float32).ravel()
    if cy.size == 0:
        return
    ry, rx, angle = (np.broadcast_to(np.asarray(a, np.float32), cy.shape) for a in (ry, rx, angle))
    color = np.asarray(color, canvas.dtype)
    per_ellipse = color.ndim == canvas.ndim - 1          # (N,) on a grey canvas, (N, C) on a colour one
    halves = np.ceil(np.maximum(rx, ry)).astype(int) + 1
    if by_size:
        for h in np.unique(2 * ((halves + 1) // 2)):    # size classes of even half-widths, smallest first
            sel = 2 * ((halves + 1) // 2) == h
            _stamp(canvas, cy[sel], cx[sel], ry[sel], rx[sel], angle[sel], color[sel] if per_ellipse else color)
        return
    ry, rx, angle = ry[:, None, None], rx[:, None, None], angle[:, None, None]
    S = canvas.shape[0]
    d = np.arange(-halves.max(), halves.max() + 1)
    ys = np.floor(cy).astype(np.int32)[:, None, None] + d[None, :, None]         # (N, P, 1)
    xs = np.floor(cx).astype(np.int32)[:, None, None] + d[None, None, :]         # (N, 1, P)
    v = ys + 0.5 - cy[:, None, None]
    u = xs + 0.5 - cx[:, None, None]
    c, s = np.cos(angle), np.sin(angle)
    inside = ((c * u + s * v) / rx) ** 2 + ((c * v - s * u) / ry) ** 2 <= 1.0    # (N, P, P)
    inside &= (ys >= 0) & (ys < S) & (xs >= 0) & (xs < S)
    n, i, j = np.nonzero(inside)
    canvas[ys[n, i, 0], xs[n, 0, j]] = color[n] if per_ellipse else color


def _blur(img, passes):
    """Binomial [1, 2, 1]/4 blur along both image axes, `passes` times (σ ≈ 0.71·√passes px): optics-like softening
    at a fraction of the cost of ndimage.gaussian_filter on a 3-channel image. Edges are replicated."""
    for _ in range(passes):
        for axis in (0, 1):
            p = np.concatenate([img.take([0], axis), img, img.take([-1], axis)], axis)
            n = img.shape[axis]
            img = 0.25 * p.take(range(0, n), axis) + 0.5 * img + 0.25 * p.take(range(2, n + 2), axis)
    return img


def _polyline(canvas, points, width, value):
    """Paint a thick curve through points (M, 2) of (y, x): discs of diameter `width` every 0.4 px of arc length."""
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    t = np.arange(0.0, arc[-1] + 1e-6, 0.4)
    p = np.stack([np.interp(t, arc, points[:, 0]), np.interp(t, arc, points[:, 1])], 1)
    _stamp(canvas, p[:, 0], p[:, 1], width / 2, width / 2, 0.0, value)


def _bezier(p0, p1, p2, m=24):
    """m points of the quadratic Bézier curve p0 → p2 pulled toward p1 (points are (y, x))."""
    t = np.linspace(0, 1, m)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)


def _pick(rng, options):
    """One element of a tuple/list, drawn with rng (keeps every random choice on the sample's own stream)."""
    return options[int(rng.integers(len(options)))]


def _cap(s):
    return s[:1].upper() + s[1:]


#### Toy chest X-ray: geometry ##########################################################################################
# All lengths are in "64-px units" times k = S/64, in a canonical pose (then warped). Patient right = image left.
# Intensities (before the global gain/bias jitter of ±5%/±5): background 15, body 90, abdomen 112, lung 45 (+ribs 14),
# spine 118, clavicles 130, effusion 165, consolidation ≤ 125, nodule 212, heart 215, pneumothorax 4 (pleural line 72),
# devices 250.
# The windows are chosen so that pixel_labels can tell the findings apart by intensity and place alone.

_CXR = dict(body=(28.0, 32.0, 4.0), lung_dx=12.5, lung_rx=10.0, lung_ry=21.0, lung_dy=-1.0, dome=16.0, dome_h=5.0,
            heart_dy=11.0, heart_ry=7.5, thorax_half=22.5)
_CTR = {"normal": (0.36, 0.45), "mild": (0.54, 0.58), "marked": (0.62, 0.67)}        # dead zone 0.45–0.54 never drawn
_EFFUSION_FILL = {"small": (0.25, 0.31), "moderate": (0.37, 0.43), "large": (0.50, 0.57)}   # fraction of lung height
_PTX_SIZE = {"small": (0.22, 0.26), "moderate": (0.31, 0.35), "large": (0.42, 0.47)}         # collapse fraction
_NODULE_R = {"small": (3.6, 4.0), "large": (4.6, 5.2)}
_CONSOL_R = {"focal": (6.0, 6.8), "extensive": (7.8, 8.8)}
_LOBES = {("right", "upper"): "right upper lobe", ("right", "middle"): "right middle lobe",
          ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe", ("left", "middle"): "lingula",
          ("left", "lower"): "left lower lobe"}
_ZONE_CENTRE = {"upper": 0.22, "middle": 0.50, "lower": 0.72}     # fraction of the lung height, top = 0


def _superellipse(yy, xx, cy, cx, ry, rx, p=2.6):
    """< 1 inside a boxy ellipse (p > 2 gives the lungs' broad bases and straight medial borders)."""
    return np.abs((xx - cx) / rx) ** p + np.abs((yy - cy) / ry) ** p


@functools.lru_cache(maxsize=4)
def _cxr_anatomy(S):
    """The canonical chest for one image size: base intensities and lung geometry, computed once and cached.

    Per-image pose variety (scale ±6%, shift ±2 px) is a single affine warp at the end of _render_cxr, so the ~40
    full-image operations that draw the anatomy run once per size instead of once per image."""
    k = S / 64
    yy, xx = _grid(S)
    cx, cy = S / 2, S / 2 + 1.0 * k
    img = np.full((S, S), 15.0, np.float32)
    brx, bry, bdy = _CXR["body"]
    body = ((xx - cx) / (brx * k)) ** 2 + ((yy - cy - bdy * k) / (bry * k)) ** 2 <= 1
    img[body] = 90
    lungs = {}
    for side, sign in (("right", -1), ("left", +1)):            # patient right = image left (sign -1)
        L = dict(cx=cx + sign * _CXR["lung_dx"] * k, cy=cy + _CXR["lung_dy"] * k, rx=_CXR["lung_rx"] * k,
                 ry=_CXR["lung_ry"] * k, medial=-sign,
                 dome=cy + (_CXR["dome"] - (1.5 if side == "right" else 0.0)) * k)   # right hemidiaphragm sits higher
        u = np.clip((xx - L["cx"]) / L["rx"], -1.2, 1.2)
        L["dome_y"] = L["dome"] - _CXR["dome_h"] * k * (1 - u ** 2)    # dome over the lung centre, deep costophrenic angle
        L["mask"] = (_superellipse(yy, xx, L["cy"], L["cx"], L["ry"], L["rx"]) <= 1) & (yy < L["dome_y"])
        L["top"], L["height"] = L["cy"] - L["ry"], L["dome"] - (L["cy"] - L["ry"])
        L["lateral"] = np.clip((xx - L["cx"]) * sign / L["rx"], 0, 1) ** 2            # 0 medially … 1 at the chest wall
        lungs[side] = L
    img[body & (yy > np.where(xx < cx, lungs["right"]["dome_y"], lungs["left"]["dome_y"]))] = 112   # abdomen
    img[body & (np.abs(xx - cx) < 2.2 * k)] = 118                                                     # spine
    for side, L in lungs.items():                               # dark lungs crossed by arched ribs
        rib = ((yy + 3.0 * k * (1 - ((xx - L["cx"]) / L["rx"]) ** 2)) / (5.5 * k) + 0.3) % 1.0 < 0.22
        img[L["mask"]] = 45 + 14 * rib[L["mask"]]
    clavicles = np.zeros((S, S), np.float32)
    for sign in (-1, 1):
        _polyline(clavicles, np.array([[cy - 21.5 * k, cx + sign * 3 * k], [cy - 23.5 * k, cx + sign * 13 * k],
                                       [cy - 24.5 * k, cx + sign * 25 * k]]), 2.2 * k, 1.0)
    img[(clavicles > 0) & (img < 130)] = 130
    clavicles = ndimage.binary_dilation(clavicles > 0, iterations=max(1, round(k)))
    for a in [img, body, clavicles] + [L[key] for L in lungs.values() for key in ("dome_y", "mask", "lateral")]:
        a.setflags(write=False)
    return dict(k=k, cx=cx, cy=cy, base=img, body=body, clavicles=clavicles, right=lungs["right"], left=lungs["left"])


#### Toy chest X-ray: findings, image, report ###########################################################################


def _sample_cxr_findings(rng):
    """Binary labels plus their attributes, with ~30% normal studies and clinical co-occurrence:
    effusions (often bilateral) and pacemakers go with cardiomegaly, consolidation with an effusion on its side,
    pneumothorax with a central line. Lesions (nodule, consolidation) never sit in a collapsed lung: there is no room
    to draw them visibly there."""
    lab = dict.fromkeys(CXR_FINDINGS, 0)
    meta = {}
    normal = rng.random() < 0.30
    cardio = (not normal) and rng.random() < 0.36
    effusion = (not normal) and rng.random() < (0.50 if cardio else 0.20)
    if effusion:
        sides = ("right", "left") if rng.random() < (0.5 if cardio else 0.25) else (_pick(rng, ("right", "left")),)
        for side in sides:
            lab[f"effusion_{side}"] = 1
            meta[f"effusion_{side}_severity"] = _pick(rng, tuple(_EFFUSION_FILL))
    device = (not normal) and rng.random() < (0.40 if cardio else 0.20)
    if device:
        lab["support_device"] = 1
        kind = "pacemaker" if rng.random() < (0.7 if cardio else 0.35) else "line"
        meta["device"] = kind
        meta["device_side"] = ("left" if rng.random() < 0.85 else "right") if kind == "pacemaker" else \
                              ("right" if rng.random() < 0.7 else "left")
    ptx = (not normal) and rng.random() < (0.35 if meta.get("device") == "line" else 0.17)
    if ptx:
        lab["pneumothorax"] = 1
        meta["pneumothorax_side"] = _pick(rng, ("right", "left"))
        meta["pneumothorax_size"] = _pick(rng, tuple(_PTX_SIZE))
    consol = (not normal) and rng.random() < (0.45 if effusion else 0.22)
    if consol:
        lab["consolidation"] = 1
        open_sides = tuple(s for s in ("right", "left") if s != meta.get("pneumothorax_side"))
        eff_sides = [s for s in open_sides if lab[f"effusion_{s}"]]
        side = _pick(rng, eff_sides) if eff_sides and rng.random() < 0.7 else _pick(rng, open_sides)
        # a lower-zone consolidation would sit on top of an effusion: then it goes higher (place decides, not taste)
        zone = _pick(rng, ("upper", "middle") if lab[f"effusion_{side}"] else ("upper", "middle", "lower"))
        meta.update(consolidation_side=side, consolidation_zone=zone, consolidation_extent=_pick(rng, tuple(_CONSOL_R)))
    nodule = (not normal) and rng.random() < 0.25
    if nodule:
        lab["nodule"] = 1
        side = _pick(rng, tuple(s for s in ("right", "left") if s != meta.get("pneumothorax_side")))
        zones = ("upper", "middle") if lab[f"effusion_{side}"] else ("upper", "middle", "lower")
        meta.update(nodule_side=side, nodule_zone=_pick(rng, zones), nodule_size=_pick(rng, tuple(_NODULE_R)))
    if cardio:
        lab["cardiomegaly"] = 1
        meta["cardiomegaly_severity"] = _pick(rng, ("mild", "marked"))
    if not normal and not any(lab.values()):             # "abnormal" but nothing drawn: make it a single finding
        lab["cardiomegaly"] = 1
        meta["cardiomegaly_severity"] = _pick(rng, ("mild", "marked"))
    return lab, meta


def _render_cxr(rng, lab, meta, S, noise):
    """Draw the toy radiograph (S, S) uint8 in the canonical pose, then warp it to a random pose. May move a nodule or a
    consolidation to another zone if its zone has no room; meta is updated so that the report describes what was drawn."""
    A = _cxr_anatomy(S)
    yy, xx = _grid(S)
    k, cx, cy = A["k"], A["cx"], A["cy"]
    img = A["base"].copy()
    lung = {side: A[side]["mask"].copy() for side in ("right", "left")}     # the still-visible (aerated) lung
    both = lung["right"] | lung["left"]
    img[both] += 6.0 * _smooth_noise(rng, S, 5)[both]                      # faint vascular markings
    # pleural effusion: the lower part of the lung, top edge a meniscus rising toward the chest wall
    for side in ("right", "left"):
        if lab[f"effusion_{side}"]:
            L = A[side]
            f = rng.uniform(*_EFFUSION_FILL[meta[f"effusion_{side}_severity"]])
            fluid = lung[side] & (yy > L["dome"] - f * L["height"] - 3.0 * k * L["lateral"])
            img[fluid] = 165
            lung[side] &= ~fluid
    # pneumothorax: the lung collapses toward the hilum; the apical-lateral rim is black (no markings); pleural line
    if lab["pneumothorax"]:
        L = A[meta["pneumothorax_side"]]
        s = rng.uniform(*_PTX_SIZE[meta["pneumothorax_size"]])
        collapsed = _superellipse(yy, xx, L["cy"] + 0.8 * s * L["ry"], L["cx"] + L["medial"] * s * L["rx"],
                                  (1 - 0.8 * s) * L["ry"], (1 - s) * L["rx"])
        m = lung[meta["pneumothorax_side"]]
        img[m & (collapsed > 1)] = 4
        img[m & (collapsed > 0.80) & (collapsed <= 1)] = 72                  # visceral pleural line
        m &= collapsed <= 0.80
    # heart: half-width = CTR · thorax width / 2, bulging to the patient's left; drawn after the lesions, over the lungs.
    # (Shifted only 0.15·hw so that a left effusion stays visible lateral to even a marked cardiomegaly.)
    lo, hi = _CTR[meta["cardiomegaly_severity"]] if lab["cardiomegaly"] else _CTR["normal"]
    ctr = rng.uniform(lo, hi)
    meta["ctr"] = round(float(ctr), 3)
    hw = ctr * _CXR["thorax_half"] * k
    hcx, hcy = cx + 0.15 * hw, cy + _CXR["heart_dy"] * k
    hry = (_CXR["heart_ry"] + (1.0 if lab["cardiomegaly"] else 0.0)) * k
    heart_r2 = ((xx - hcx) / hw) ** 2 + ((yy - hcy) / hry) ** 2
    keep_out = ((xx - hcx) / (hw + 2.5 * k)) ** 2 + ((yy - hcy) / (hry + 2.5 * k)) ** 2 <= 1
    device = np.zeros((S, S), np.float32)
    if lab["support_device"]:
        _draw_device(device, meta, A, hcx, hcy, hw, k)
        keep_out |= ndimage.binary_dilation(device > 0, iterations=max(2, round(2.5 * k)))
    for finding in ("consolidation", "nodule"):   # only where lung is visible (not behind heart/fluid/air, off devices)
        if lab[finding]:
            keep_out |= _draw_lesion(rng, img, finding, lab, meta, A, lung, keep_out, yy, xx, k)
    img[heart_r2 <= 1] = 215
    img[device > 0] = 250
    # pose: output = centre + scale·(canonical − centre) + shift, as one bilinear warp (ndimage uses index coordinates)
    scale, shift = rng.uniform(0.94, 1.06), rng.uniform(-2, 2, size=2) * k
    centre = (S - 1) / 2
    img = ndimage.affine_transform(img, [1 / scale, 1 / scale], offset=centre - (centre + shift) / scale, order=1,
                                   mode="nearest")
    meta["pose"] = (round(float(scale), 4), round(float(shift[0]), 3), round(float(shift[1]), 3))
    img = _blur(img * rng.uniform(0.95, 1.05) + rng.uniform(-5, 5), max(1, round(k * k / 2)))    # gain/bias, optics
    img += noise * _pixel_noise(rng, S)             # drawn even when noise = 0, so the report does not depend on it
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _draw_lesion(rng, img, finding, lab, meta, A, lung, keep_out, yy, xx, k):
    """A nodule (round, sharp, bright) or a consolidation (larger, dimmer, soft-edged, mottled) inside one lung zone.
    Returns its footprint, so the next lesion keeps clear of it. Moves it (and updates meta) if its zone has no room;
    if no lung has room, it is not drawn and its label is cleared, so labels always describe the pixels."""
    side, zone = meta[f"{finding}_side"], meta[f"{finding}_zone"]
    if finding == "nodule":
        r = rng.uniform(*_NODULE_R[meta["nodule_size"]]) * k
        margin = r + 2.5 * k                     # dark lung all round, so it never merges with heart/effusion/chest wall
    else:
        r = rng.uniform(*_CONSOL_R[meta["consolidation_extent"]]) * k
        margin = 0.55 * r
    other = "left" if side == "right" else "right"
    zones = [zone] + [z for z in ("middle", "upper", "lower") if z != zone]
    tries = [(side, z) for z in zones]
    if meta.get("pneumothorax_side") != other:          # a crowded lung (heart, device, other lesion): try the other one
        tries += [(other, z) for z in zones]
    room = {}
    for (side_, z), need in [(t, margin) for t in tries] + [(t, margin - 1.5 * k) for t in tries]:
        L = A[side_]                                     # sampled place first, else the nearest with room, else tighter
        if side_ not in room:                            # px to the nearest pixel that is not free lung
            room[side_] = ndimage.distance_transform_edt(lung[side_] & ~keep_out)
        band = np.abs(yy - (L["top"] + _ZONE_CENTRE[z] * L["height"])) < 0.12 * L["height"]
        cand = np.flatnonzero(band & (room[side_] >= need))
        if cand.size:
            break
    else:              # no room anywhere (~1 in 1,000: a collapsed lung, a device and a lesion already): not drawn
        lab[finding] = 0
        for key in [key for key in meta if key.startswith(finding + "_")]:
            del meta[key]
        return np.zeros_like(keep_out)
    side = side_
    meta[f"{finding}_side"], meta[f"{finding}_zone"], meta[f"{finding}_lobe"] = side, z, _LOBES[(side, z)]
    p = cand[int(rng.integers(cand.size))]
    py, px = yy.flat[p], xx.flat[p]
    if finding == "nodule":
        w = np.clip(r + 0.5 - np.hypot(xx - px, yy - py), 0, 1)                   # sharp, anti-aliased disk
        img += w * (212 - img)
        return w > 0
    else:
        mottle = 0.75 + 0.25 * _smooth_noise(rng, img.shape[0], 9)
        d = np.hypot(xx - px, (yy - py) / 1.2)
        w = np.clip(2.0 * (1 - d / r), 0, 1) * mottle * lung[side]             # plateau in the inner half, soft rim
        img += w * (125 - img)
        return d < r + 2 * k


def _draw_device(img, meta, A, hcx, hcy, hw, k):
    """A pacemaker (generator box + lead to the right ventricle) or a central venous line (neck → SVC), painted as 1.0."""
    cx, cy = A["cx"], A["cy"]
    sign = -1 if meta["device_side"] == "right" else 1          # image x direction of the patient's side
    if meta["device"] == "pacemaker":
        gy, gx = cy - 17.5 * k, cx + sign * 17 * k
        _stamp(img, [gy], [gx], 2.6 * k, 3.8 * k, 0.0, 1.0)
        lead = _bezier((gy + 1 * k, gx - sign * 2 * k), (cy - 10 * k, cx + sign * 3 * k), (hcy + 2 * k, hcx - 0.2 * hw))
        _polyline(img, lead, 2.4 * k, 1.0)
    else:
        line = _bezier((cy - 26 * k, cx + sign * 7 * k), (cy - 14 * k, cx + sign * 4 * k), (cy - 1 * k, cx - 2.5 * k))
        _polyline(img, line, 2.4 * k, 1.0)       # tip in the SVC, just right of the spine


def _cxr_report(rng, lab, meta, shuffle):
    """FINDINGS: heart → lungs → pleura → devices, then IMPRESSION. Positive findings always get a sentence; a negative one
    gets an explicit negation with probability 0.3–0.6 (the heart sentence always), none when ≥ 3 findings are positive
    (keeps the longest reports near 50 words)."""
    say = lambda options, **slots: _pick(rng, options).format(**slots)
    busy = 0.0 if sum(lab.values()) >= 3 else 1.0
    heart, lungs, pleura, devices = [], [], [], []
    if lab["cardiomegaly"]:
        sev = meta["cardiomegaly_severity"]
        heart.append(say(_T["cardio_pos"], Sev=_cap(sev), sev=sev, sevly=sev + "ly"))
    else:
        heart.append(say(_T["cardio_neg"]))
    if lab["consolidation"]:
        ext = say(_T["consol_" + meta["consolidation_extent"]])
        lungs.append(say(_T["consol_pos"], ext=ext, Ext=_cap(ext), lobe=meta["consolidation_lobe"],
                         Lobe=_cap(meta["consolidation_lobe"])))
    if lab["nodule"]:
        size = say(_T["nodule_" + meta["nodule_size"]])
        lungs.append(say(_T["nodule_pos"], size=size, Size=_cap(size), lobe=meta["nodule_lobe"],
                         Lobe=_cap(meta["nodule_lobe"]), zone=f"{meta['nodule_side']} {meta['nodule_zone']} zone",
                         measure={"small": "8 mm", "large": "2 cm"}[meta["nodule_size"]],
                         a="an" if size[0] in "aeiou8" else "a", A="An" if size[0] in "aeiou8" else "A"))
    if not (lab["consolidation"] or lab["nodule"] or lab["effusion_left"] or lab["effusion_right"] or lab["pneumothorax"]):
        if rng.random() < 0.6:
            lungs.append(say(_T["lungs_clear"]))
    else:
        if not lab["consolidation"] and rng.random() < 0.5 * busy:
            lungs.append(say(_T["consol_neg"]))
        if not lab["nodule"] and rng.random() < 0.3 * busy:
            lungs.append(say(_T["nodule_neg"]))
    eff = [s for s in ("right", "left") if lab[f"effusion_{s}"]]
    if len(eff) == 2:
        sr, sl = meta["effusion_right_severity"], meta["effusion_left_severity"]
        if sr == sl:
            pleura.append(say(_T["eff_bilat"], sev=sr, Sev=_cap(sr)))
        else:
            pleura.append(say(_T["eff_bilat_mixed"], sr=sr, Sr=_cap(sr), sl=sl))
    elif len(eff) == 1:
        sev = meta[f"effusion_{eff[0]}_severity"]
        pleura.append(say(_T["eff_pos"], sev=sev, Sev=_cap(sev), side=eff[0], Side=_cap(eff[0])))
        if rng.random() < 0.3 * busy:
            other = "left" if eff[0] == "right" else "right"
            pleura.append(say(_T["eff_side_neg"], side=other, Side=_cap(other)))
    if lab["pneumothorax"]:
        sev, side = meta["pneumothorax_size"], meta["pneumothorax_side"]
        pleura.append(say(_T["ptx_pos"], sev=sev, Sev=_cap(sev), side=side, Side=_cap(side)))
    if not eff and not lab["pneumothorax"] and rng.random() < 0.6 * busy:
        pleura.append(say(_T["eff_ptx_neg"]))                  # merged negation
    else:
        if not eff and rng.random() < 0.5 * busy:
            pleura.append(say(_T["eff_neg"]))
        if not lab["pneumothorax"] and rng.random() < 0.5 * busy:
            pleura.append(say(_T["ptx_neg"]))
    if lab["support_device"]:
        side = meta["device_side"]
        devices.append(say(_T[meta["device"]], side=side, Side=_cap(side)))
    elif rng.random() < 0.25 * busy:
        devices.append(say(_T["device_neg"]))
    findings = heart + lungs + pleura + devices
    if shuffle:
        findings = [findings[j] for j in rng.permutation(len(findings))]
    return "FINDINGS: " + " ".join(findings) + " IMPRESSION: " + _cxr_impression(rng, lab, meta)


def _cxr_impression(rng, lab, meta):
    """One summary sentence: the acute positives as short noun phrases, or a normal statement."""
    items = []
    if lab["cardiomegaly"]:
        items.append(_pick(rng, ("cardiomegaly", "enlarged heart", "cardiomegaly")))
    if lab["consolidation"]:
        items.append(meta["consolidation_lobe"] + " " + _pick(rng, ("consolidation", "pneumonia", "airspace disease")))
    if lab["nodule"]:
        items.append(meta["nodule_lobe"] + " nodule")
    eff = [s for s in ("right", "left") if lab[f"effusion_{s}"]]
    if eff:
        items.append("bilateral pleural effusions" if len(eff) == 2 else
                     f"{eff[0]} " + _pick(rng, ("pleural effusion", "effusion")))
    if lab["pneumothorax"]:
        items.append(f"{meta['pneumothorax_side']} pneumothorax")
    if not items:
        return _pick(rng, _T["impression_neg"] if lab["support_device"] else _T["impression_neg"] + _T["impression_normal"])
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return _cap(text) + "."


# Sentence templates. Each positive finding has ≥ 5 phrasings (synonyms, word order); negatives are explicit.
# No hedges ("possible", "likely") anywhere: the ground truth is certain, and labeler.py reads hedges as uncertain (-1).
_T = {
    "cardio_pos": ("The heart is {sevly} enlarged.", "{Sev} cardiomegaly.",
                   "There is {sev} enlargement of the cardiac silhouette.",
                   "The cardiac silhouette is {sevly} enlarged.", "{Sev} cardiomegaly is present.",
                   "Heart size is {sevly} enlarged."),
    "cardio_neg": ("The heart size is normal.", "Heart size is within normal limits.",
                   "The cardiac silhouette is normal in size.",
                   "No cardiomegaly.", "Normal heart size.", "The heart is not enlarged."),
    "consol_focal": ("focal", "patchy", "small"),
    "consol_extensive": ("extensive", "dense", "large"),
    "consol_pos": ("There is {ext} consolidation in the {lobe}.", "{Ext} consolidation in the {lobe}.",
                   "{Ext} airspace opacity in the {lobe}.", "Consolidation is seen in the {lobe}.",
                   "{Lobe} shows {ext} airspace consolidation.", "{Ext} airspace disease in the {lobe}."),
    "consol_neg": ("No focal consolidation.", "There is no consolidation.", "No airspace consolidation.",
                   "No focal airspace disease."),
    "nodule_small": ("small", "8 mm", "subcentimeter"),
    "nodule_large": ("large", "2 cm", "sizable"),
    "nodule_pos": ("There is {a} {size} nodule in the {lobe}.", "{A} {size} pulmonary nodule is seen in the {lobe}.",
                   "{Size} nodular opacity in the {lobe}.", "{Lobe} nodule measuring {measure}.",
                   "A well-circumscribed {size} nodule projects over the {zone}.", "{Size} rounded nodule in the {lobe}."),
    "nodule_neg": ("No pulmonary nodules.", "No suspicious nodules are seen.", "There is no focal nodule."),
    "lungs_clear": ("The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear."),
    "eff_pos": ("{Sev} {side} pleural effusion.", "There is a {sev} {side} pleural effusion.",
                "{Sev} {side}-sided pleural effusion is present.", "{Side} pleural effusion, {sev} in size.",
                "Blunting of the {side} costophrenic angle from a {sev} effusion.",
                "A {sev} {side} pleural effusion is seen."),
    "eff_bilat": ("{Sev} bilateral pleural effusions.", "There are {sev} bilateral pleural effusions.",
                  "Bilateral {sev} pleural effusions are present.", "{Sev} pleural effusions on both sides.",
                  "Bilateral pleural effusions, {sev} in size."),
    "eff_bilat_mixed": ("{Sr} right and {sl} left pleural effusions.",
                        "There are {sr} right and {sl} left pleural effusions.",
                        "Bilateral pleural effusions, {sr} on the right and {sl} on the left."),
    "eff_side_neg": ("No {side} effusion.", "No {side} pleural effusion.", "The {side} costophrenic angle is sharp."),
    "eff_neg": ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusions.", "No effusion is seen."),
    "ptx_pos": ("{Sev} {side} pneumothorax.", "There is a {sev} {side} apical pneumothorax.",
                "A {sev} {side}-sided pneumothorax is present.", "{Side} pneumothorax, {sev} in size.",
                "{Sev} {side} apical pneumothorax with a visible pleural line.",
                "Air in the {side} pleural space from a {sev} pneumothorax."),
    "ptx_neg": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax.",
                "Pneumothorax is not seen."),
    "eff_ptx_neg": ("No pleural effusion or pneumothorax.", "No effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion."),
    "pacemaker": ("{Side} chest wall pacemaker with a lead in the ventricle.", "A {side}-sided pacemaker is present.",
                  "Pacemaker generator overlies the {side} chest.", "{Side} pectoral pacemaker with its lead in place.",
                  "Cardiac pacemaker projects over the {side} upper chest."),
    "line": ("{Side} internal jugular central venous catheter ends in the SVC.", "A {side} IJ line ends in the SVC.",
             "{Side} central line with its tip in the superior vena cava.",
             "Central venous catheter from the {side} with tip in the SVC.",
             "{Side}-sided central venous line terminates in the SVC."),
    "device_neg": ("No support devices.", "No lines or tubes.", "No medical devices are seen."),
    "impression_neg": ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.", "No acute findings."),
    "impression_normal": ("Normal chest radiograph.", "Normal chest."),
}


#### Toy pathology patch: findings, image, caption ######################################################################
# RGB "H&E": pink stroma, purple nuclei (hematoxylin), white gland lumens, pale acellular necrosis, near-black mitoses.
# Per-image stain jitter multiplies each channel by 0.97–1.03. Sizes in 64-px units × k = S/64.

_STROMA = np.array([232, 162, 202], np.float32)
_FIBRE = np.array([212, 132, 180], np.float32)
_NUCLEUS = np.array([104, 62, 150], np.float32)
_NUCLEUS_ATYPICAL = np.array([66, 32, 112], np.float32)
_LYMPHOCYTE = np.array([22, 40, 140], np.float32)         # basophilic: the only blue-ish nuclei
_LUMEN = np.array([252, 248, 250], np.float32)
_EPITHELIUM = np.array([218, 140, 188], np.float32)
_NECROSIS = np.array([244, 204, 226], np.float32)
_DEBRIS = np.array([186, 120, 176], np.float32)
_MITOSIS = np.array([28, 14, 46], np.float32)
_HALO = np.array([240, 215, 230], np.float32)
_NECROSIS_R = {"focal": (10.0, 12.0), "extensive": (14.0, 16.0)}


def _sample_path_findings(rng):
    """Tumour (= pleomorphism) in ~40% of patches brings high cellularity, mitoses and necrosis; benign patches are mostly
    stroma with or without glands and inflammation. Grade follows from glands + mitoses (see _path_diagnosis)."""
    tumour = rng.random() < 0.40
    lab = {"pleomorphism": int(tumour),
           "high_cellularity": int(rng.random() < (0.65 if tumour else 0.15)),
           "mitoses": int(rng.random() < (0.60 if tumour else 0.10)),
           "necrosis": int(rng.random() < (0.35 if tumour else 0.10)),
           "glands": int(rng.random() < (0.50 if tumour else 0.45)),
           "inflammation": int(rng.random() < (0.25 if tumour else 0.35))}
    lab = {f: lab[f] for f in PATH_FINDINGS}
    meta = {}
    if lab["glands"]:
        meta["n_glands"] = int(rng.integers(1, 3))
    if lab["necrosis"]:
        meta["necrosis_extent"] = _pick(rng, tuple(_NECROSIS_R))
    if lab["mitoses"]:
        meta["n_mitoses"] = int(rng.integers(3, 6))
    if lab["pleomorphism"]:
        meta["pleomorphism_severity"] = _pick(rng, ("moderate", "marked"))
    meta["diagnosis"], meta["grade"] = _path_diagnosis(lab)
    return lab, meta


def _path_diagnosis(lab):
    """The caption's last sentence, a deterministic function of the labels (so it is learnable, never noise)."""
    if lab["pleomorphism"]:
        if lab["glands"]:
            if lab["mitoses"]:
                return "moderately differentiated adenocarcinoma", 2
            return "well differentiated adenocarcinoma", 1
        return "poorly differentiated carcinoma", 3
    for finding, dx in (("glands", "benign glandular tissue"), ("inflammation", "chronic inflammation"),
                        ("necrosis", "necrotic tissue"), ("high_cellularity", "hypercellular benign stroma"),
                        ("mitoses", "reactive stromal proliferation")):
        if lab[finding]:
            return dx, 0
    return "unremarkable fibrous stroma", 0


def _render_path(rng, lab, meta, S, noise):
    """Draw the toy H&E patch (S, S, 3) uint8. Regions (necrosis, glands, an inflammatory focus) get separate cells of a
    3×3 layout so they never overlap; nuclei fill the rest on a jittered grid whose spacing sets the cellularity.
    Ellipses are collected per size class and painted in four vectorised _stamp calls (paint order = list order)."""
    k = S / 64
    yy, xx = _grid(S)
    img = _STROMA + 8.0 * _smooth_noise(rng, S, 4)[..., None]                      # (S, S, 3)
    # collagen fibres: wavy lines, |signed distance to a sinusoid| < half width, all fibres at once
    F = int(rng.integers(3, 7))
    u = rng.uniform(0, 1, (5, F, 1, 1)).astype(np.float32)                      # float32 throughout: 6× faster here
    c, s = np.cos(u[0] * np.pi), np.sin(u[0] * np.pi)
    offset, amp, freq, phase = (u[1] - 0.5) * 0.9 * S, (1 + 2 * u[2]) * k, (0.05 + 0.07 * u[3]) / k, u[4] * 6.3
    Y, X = yy - S / 2, xx - S / 2
    across = X * c + Y * s - offset - amp * np.sin(freq * (Y * c - X * s) + phase)           # (F, S, S)
    img[(np.abs(across) < 0.5 * k).any(0)] = _FIBRE
    occupied = np.zeros((S, S), bool)
    big, nuclei, tiny, mitoses = [], [], [], []          # ellipse groups: (cy, cx, ry, rx, angle, color (n, 3))
    cells = list(rng.permutation(9))
    def cell_centre(c):                                  # centre of layout cell c (0..8), jittered ±2 px
        return (c // 3 + 0.5) * S / 3 + rng.uniform(-2, 2) * k, (c % 3 + 0.5) * S / 3 + rng.uniform(-2, 2) * k
    if lab["necrosis"]:
        corner = _pick(rng, (0, 2, 6, 8))                # a corner cell; the necrosis spills into its neighbours
        cells = [c for c in cells if c not in _neighbours(corner)]
        ny, nx = cell_centre(corner)
        ny, nx = ny + (S / 2 - ny) * 0.35, nx + (S / 2 - nx) * 0.35
        r = rng.uniform(*_NECROSIS_R[meta["necrosis_extent"]]) * k
        ragged = 1 + 0.25 * _smooth_noise(rng, S, 6)
        dist2 = ((yy - ny) ** 2 + (xx - nx) ** 2) / r ** 2
        necrosis = dist2 < ragged
        img[necrosis] = _NECROSIS
        occupied |= dist2 * r ** 2 / (r + 2 * k) ** 2 < ragged
        n = int(14 * k * k)                              # karyorrhectic debris: small fragments, only inside the necrosis
        dy, dx = rng.normal(0, r / 2.5, (2, n))
        keep = necrosis[np.clip((ny + dy).astype(int), 0, S - 1), np.clip((nx + dx).astype(int), 0, S - 1)]
        rr = rng.uniform(0.5, 0.9, n)[keep] * k
        tiny.append((ny + dy[keep], nx + dx[keep], rr, rr, np.zeros_like(rr), np.broadcast_to(_DEBRIS, (rr.size, 3))))
    ring_color = _NUCLEUS_ATYPICAL if lab["pleomorphism"] else _NUCLEUS
    for _ in range(meta.get("n_glands", 0)):
        gy, gx = cell_centre(cells.pop())
        gr = rng.uniform(5.0, 7.0) * k
        big.append(([gy], [gx], [gr + 2.2 * k], [gr + 2.2 * k], [0.0], [_EPITHELIUM]))             # epithelial lining
        big.append(([gy], [gx], [gr], [gr * rng.uniform(0.8, 1.0)], [rng.uniform(0, np.pi)], [_LUMEN]))
        n = int(round(2 * np.pi * (gr + 1.6 * k) / (3.4 * k)))              # cuboidal nuclei around the lumen
        a = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
        nuclei.append((gy + (gr + 1.6 * k) * np.sin(a), gx + (gr + 1.6 * k) * np.cos(a), np.full(n, 1.2 * k),
                       np.full(n, 1.5 * k), a + np.pi / 2, np.broadcast_to(ring_color, (n, 3))))
        occupied |= (yy - gy) ** 2 + (xx - gx) ** 2 < (gr + 4 * k) ** 2
    if lab["inflammation"]:                              # a dense focus of small, very dark lymphocytes
        iy, ix = cell_centre(cells.pop())
        ir = rng.uniform(9.0, 11.0) * k
        n = int(rng.integers(60, 76) * k * k)
        rad, ang = ir * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
        lr = rng.uniform(1.0, 1.3, n) * k
        tiny.append((iy + rad * np.sin(ang), ix + rad * np.cos(ang), lr, lr, np.zeros(n),
                     np.broadcast_to(_LYMPHOCYTE, (n, 3))))
        occupied |= (yy - iy) ** 2 + (xx - ix) ** 2 < (ir + 2 * k) ** 2
    # background nuclei on a jittered grid (never stacked); the spacing sets the cellularity
    spacing = (5.6 if lab["high_cellularity"] else 12.0) * k
    centres = np.arange(0, S, spacing) + spacing / 2
    py, px = (g.ravel() + rng.uniform(-0.28, 0.28, g.size) * spacing for g in np.meshgrid(centres, centres, indexing="ij"))
    ok = (py >= 0) & (py < S) & (px >= 0) & (px < S)
    py, px = py[ok], px[ok]
    ok = ~occupied[py.astype(int), px.astype(int)]
    py, px = py[ok], px[ok]
    n = py.size
    if lab["pleomorphism"]:                              # big, eccentric, hyperchromatic, varied
        ry = rng.uniform(1.4, 3.6 if meta["pleomorphism_severity"] == "marked" else 3.0, n) * k
        rx = ry * rng.uniform(1.0, 1.5, n)
        color = np.where(rng.random((n, 1)) < 0.8, _NUCLEUS_ATYPICAL, _NUCLEUS)
    else:                                                # small, round, uniform
        ry = rng.uniform(1.4, 1.9, n) * k
        rx = ry * rng.uniform(1.0, 1.3, n)
        color = np.broadcast_to(_NUCLEUS, (n, 3))
    if lab["high_cellularity"]:                          # crowded: nuclei may touch, but not merge into blobs
        rx, ry = np.minimum(rx, 0.45 * spacing), np.minimum(ry, 0.45 * spacing)
    nuclei.insert(0, (py, px, ry, rx, rng.uniform(0, np.pi, n), color))
    if lab["mitoses"]:                                   # condensed chromatin (metaphase bar + cross) in a clear halo
        m = meta["n_mitoses"]
        e = int(5 * k)                                   # whole figures only: not cut by the patch border
        free = np.flatnonzero(~occupied[e:S - e, e:S - e])
        fy, fx = np.divmod(free[rng.choice(free.size, m, replace=False)], S - 2 * e)
        my, mx, a = fy + e + 0.5, fx + e + 0.5, rng.uniform(0, np.pi, m)
        mitoses += [(my, mx, np.full(m, 3.6 * k), np.full(m, 5.0 * k), a, np.broadcast_to(_HALO, (m, 3))),
                    (my, mx, np.full(m, 1.8 * k), np.full(m, 4.2 * k), a, np.broadcast_to(_MITOSIS, (m, 3))),
                    (my, mx, np.full(m, 1.3 * k), np.full(m, 2.6 * k), a + np.pi / 2, np.broadcast_to(_MITOSIS, (m, 3)))]
    for group in (big, nuclei, tiny, mitoses):
        if group:
            _stamp(img, *(np.concatenate([np.asarray(e[j], np.float32).reshape(-1, 3) if j == 5 else
                                          np.asarray(e[j], np.float32).ravel() for e in group]) for j in range(6)),
                   by_size=group is nuclei)
    img = _blur(img * rng.uniform(0.97, 1.03, size=3).astype(np.float32), max(1, round(k / 2)))   # stain jitter, optics
    img += noise * _pixel_noise(rng, S, 3)          # drawn even when noise = 0, so the caption does not depend on it
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _neighbours(c):
    """Cells of the 3×3 layout touching cell c, c included (8-connected)."""
    r, q = divmod(c, 3)
    return {rr * 3 + qq for rr in range(max(0, r - 1), min(3, r + 2)) for qq in range(max(0, q - 1), min(3, q + 2))}


def _path_caption(rng, lab, meta, shuffle):
    """Descriptive caption: architecture (always) → cellularity → nuclei → mitoses → inflammation → necrosis → diagnosis."""
    say = lambda options, **slots: _pick(rng, options).format(**slots)
    parts = []
    if lab["glands"]:
        n = meta["n_glands"]
        parts.append(say(_P["glands_pos"], n=("a single", "two")[n - 1], N=("A single", "Two")[n - 1],
                         s="" if n == 1 else "s", are="is" if n == 1 else "are"))
    else:
        parts.append(say(_P["glands_neg"]))
    sev = meta.get("pleomorphism_severity", "")
    ext = meta.get("necrosis_extent", "")
    count = ("", "", "two", "three", "four", "five")[meta.get("n_mitoses", 0)]
    slots = dict(sev=sev, sevly=sev + "ly", Sevly=_cap(sev + "ly"), ext=ext, Ext=_cap(ext), n=count, N=_cap(count))
    for finding in ("high_cellularity", "pleomorphism", "mitoses", "inflammation", "necrosis"):
        if lab[finding]:
            parts.append(say(_P[finding + "_pos"], **slots))
        elif rng.random() < 0.45:
            parts.append(say(_P[finding + "_neg"]))
    if shuffle:
        parts = [parts[j] for j in rng.permutation(len(parts))]
    dx = meta["diagnosis"]
    grade = {1: " (grade 1)", 2: " (grade 2)", 3: " (grade 3)"}.get(meta["grade"], "")
    parts.append(say(_P["diagnosis"], dx=dx + grade, Dx=_cap(dx) + grade))
    return " ".join(parts)


_P = {
    "glands_pos": ("{N} gland{s} with open lumen{s} {are} seen.", "The tissue shows {n} glandular structure{s}.",
                   "{N} well-formed gland{s} lined by cuboidal cells.", "Gland formation is present, with {n} lumen{s}.",
                   "{N} tubular gland{s} {are} present in the stroma."),
    "glands_neg": ("No gland formation is seen.", "The tissue lacks glandular structures.", "There are no glands.",
                   "Fibrous stroma without glands.", "No glandular structures are present."),
    "high_cellularity_pos": ("The tissue is highly cellular.", "Cellularity is markedly increased.",
                             "Dense sheets of crowded cells.", "There is high cellularity.", "Hypercellular tissue.",
                             "Nuclei are densely packed."),
    "high_cellularity_neg": ("Cellularity is low.", "The stroma is sparsely cellular.", "Cellularity is not increased.",
                             "Scattered cells in a loose stroma."),
    "pleomorphism_pos": ("Nuclei are {sevly} pleomorphic.", "There is {sev} nuclear pleomorphism.",
                         "The nuclei vary greatly in size and shape.", "Enlarged hyperchromatic nuclei with {sev} atypia.",
                         "Nuclear atypia is {sev}.", "{Sevly} pleomorphic, atypical nuclei."),
    "pleomorphism_neg": ("Nuclei are uniform and bland.", "No nuclear pleomorphism.", "There is no significant atypia.",
                         "Nuclei are small and regular."),
    "mitoses_pos": ("Mitotic figures are present.", "{N} mitoses are seen.", "There are {n} mitotic figures.",
                    "Mitotic activity is increased.", "Several mitotic figures are present.", "Mitoses are easily found."),
    "mitoses_neg": ("No mitotic figures are seen.", "Mitoses are not identified.", "No mitoses.",
                    "Mitotic activity is absent."),
    "inflammation_pos": ("There is a dense lymphocytic infiltrate.", "A cluster of inflammatory cells is present.",
                         "Chronic inflammation is seen.", "A focal lymphoid aggregate is present.",
                         "An inflammatory infiltrate of lymphocytes.", "Lymphocytes cluster in the stroma."),
    "inflammation_neg": ("No significant inflammation.", "There is no inflammatory infiltrate.", "Inflammation is absent."),
    "necrosis_pos": ("There is {ext} necrosis.", "An area of {ext} coagulative necrosis is present.",
                     "{Ext} necrotic debris is seen.", "{Ext} necrosis with karyorrhectic debris.", "Necrosis is {ext}.",
                     "A {ext} necrotic focus is present."),
    "necrosis_neg": ("No necrosis is seen.", "Necrosis is absent.", "There is no necrosis."),
    "diagnosis": ("Findings are consistent with {dx}.", "Diagnosis: {dx}.", "Overall picture of {dx}.",
                  "The features are those of {dx}.", "{Dx}."),
}


#### The dataset ########################################################################################################


class SyntheticDataset:
    """Lazy toy image–report pairs. `ds[i]` draws sample i from np.random.default_rng([seed, split_id, i, domain_id]),
    so it is reproducible, independent of access order, and the train/val/test splits never share a sample.

    domain: 'cxr' (grayscale toy chest X-ray, FINDINGS/IMPRESSION report) or 'path' (RGB toy H&E patch, caption).
    n: number of pairs (default train 20000, val 1000, test 1000). image_size: side in px (≥ 32; 64 default, 128 works).
    shuffle_sentences: shuffle the findings sentences (canonical order by default, see the module docstring).
    noise: Gaussian pixel noise σ in grey levels (low by default: noise makes VQ codes high-entropy).
    """

    def __init__(self, domain="cxr", split="train", n=None, image_size=64, seed=0, shuffle_sentences=False,
                 noise=DEFAULT_NOISE):
        if domain not in FINDINGS:
            raise ValueError(f"SyntheticDataset: domain must be one of {tuple(FINDINGS)}, got {domain!r}")
        if split not in SPLIT_IDS:
            raise ValueError(f"SyntheticDataset: split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        if not isinstance(image_size, (int, np.integer)) or image_size < 32:
            raise ValueError(f"SyntheticDataset: image_size must be an int ≥ 32, got {image_size!r}")
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
            raise ValueError(f"SyntheticDataset: n must be a non-negative int or None, got {n!r}")
        if noise < 0:
            raise ValueError(f"SyntheticDataset: noise must be ≥ 0, got {noise!r}")
        self.domain, self.split, self.seed = domain, split, int(seed)
        self.n = DEFAULT_SIZES[split] if n is None else int(n)
        self.image_size, self.shuffle_sentences, self.noise = int(image_size), bool(shuffle_sentences), float(noise)
        self.findings = FINDINGS[domain]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"SyntheticDataset({self.domain}, {self.split}): index {i} out of range for length {self.n}")
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], i, _DOMAIN_IDS[self.domain]])
        if self.domain == "cxr":
            lab, meta = _sample_cxr_findings(rng)
            image = _render_cxr(rng, lab, meta, self.image_size, self.noise)
            report = _cxr_report(rng, lab, meta, self.shuffle_sentences)
        else:
            lab, meta = _sample_path_findings(rng)
            image = _render_path(rng, lab, meta, self.image_size, self.noise)
            report = _path_caption(rng, lab, meta, self.shuffle_sentences)
        uid = f"synthetic-{self.domain}-{self.split}-s{self.seed}-{i:06d}"
        return Pair(image=image, report=report, domain=self.domain, uid=uid, labels=lab, meta=meta)

    def __iter__(self):
        return (self[i] for i in range(self.n))


#### Procedural pixel detector: read the findings back from the pixels ##################################################
# Fixed rules on intensities and places, with no access to the generator's state. Used to prove that every finding is
# visible (tests), and by other parts to check that findings survive VQ reconstruction or generation.


def _to_64(image):
    """float32 (64, 64[, 3]) view of an image of any size: block mean when the side is a multiple of 64."""
    img = np.asarray(image, np.float32)
    S = img.shape[0]
    if S == 64:
        return img
    if S % 64 == 0:
        f = S // 64
        return img.reshape(64, f, 64, f, *img.shape[2:]).mean(axis=(1, 3))
    from PIL import Image
    mode = "L" if img.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode).resize((64, 64), Image.Resampling.BOX),
                      np.float32)


def _longest_run(mask_rows):
    """Longest run of True along the last axis, per row: (R, W) bool -> (R,) int."""
    padded = np.pad(mask_rows.astype(np.int8), ((0, 0), (1, 1)))
    d = np.diff(padded, axis=1)
    out = np.zeros(len(mask_rows), int)
    for r in range(len(mask_rows)):
        starts, ends = np.flatnonzero(d[r] == 1), np.flatnonzero(d[r] == -1)
        out[r] = (ends - starts).max() if starts.size else 0
    return out


def _cxr_canonical(img):
    """Undo the pose: find the body outline (threshold 50), estimate scale and shift, resample to the canonical frame."""
    body = img[16:48] > 50                                       # rows where the thorax is widest
    any_col = body.any(1)
    first = np.where(any_col, body.argmax(1), 64)
    last = np.where(any_col, 63 - body[:, ::-1].argmax(1), -1)
    r = int(np.argmax(last - first))
    left, right = first[r], last[r] + 1                          # pixel boundaries of the body outline
    centre_cols = (img[:, 28:36] > 50).mean(1) > 0.5
    top = int(np.argmax(centre_cols))
    brx, bry, bdy = _CXR["body"]
    scale = (right - left) / (2 * brx)
    dx = (left + right) / 2 - 32
    dy = top - (32 + scale * (33 + bdy - bry - 32))             # canonical body top = cy + bdy − bry, cy = 33 at 64 px
    yy, xx = _grid(64)
    coords = [32 + scale * (yy - 32) + dy - 0.5, 32 + scale * (xx - 32) + dx - 0.5]
    return ndimage.map_coordinates(img, coords, order=1, mode="nearest"), (scale, dy, dx)


def _cxr_stats(image):
    """Per-finding pixel statistics of a toy CXR, measured in the canonical 64-px frame (see _CXR_RULES):
    heart_width: widest run > 190 across the heart rows · fluid_<side>: effusion-grey (145–185) pixels in the lower 30%
    of that lung, away from brighter things · air_<side>: black (< 25) pixels in the upper lung · haze: consolidation-grey
    (85–145) lung pixels away from brighter things · blobs: round, heart-bright, non-metal components inside a lung ·
    device: bright pixels above the heart that are no nodule."""
    img, pose = _cxr_canonical(_to_64(image))
    A = _cxr_anatomy(64)
    yy, xx = _grid(64)
    st = {}
    hcy = int(A["cy"] + _CXR["heart_dy"])
    st["heart_width"] = int(_longest_run(img[hcy - 2:hcy + 3] > 190).max())
    bright = img > 190
    near_bright = ndimage.binary_dilation(bright, iterations=2)
    for side in ("right", "left"):
        L = A[side]
        lower = L["mask"] & (yy > L["dome"] - 0.3 * L["height"])
        st[f"fluid_{side}"] = int(((img >= 145) & (img <= 185) & lower & ~near_bright).sum())
        st[f"air_{side}"] = int(((img < 25) & L["mask"] & ~lower).sum())
    lungs = A["right"]["mask"] | A["left"]["mask"]
    st["haze"] = int(((img >= 85) & (img < 145) & lungs & ~A["clavicles"] &
                      ~ndimage.binary_dilation(img >= 145, iterations=2)).sum())
    comp, n = ndimage.label(img > 180)
    heart_id = comp[hcy, int(A["cx"]) + 3]
    metal = np.median(img[hcy - 1:hcy + 2, int(A["cx"]):int(A["cx"]) + 6]) + 17    # brighter than heart/nodule: a device
    blob_ids = []
    for j, sl in enumerate(ndimage.find_objects(comp), start=1):
        m = comp[sl] == j
        area, h, w = m.sum(), m.shape[0], m.shape[1]
        centre = (sl[0].start + h // 2, sl[1].start + w // 2)
        if j != heart_id and 12 <= area <= 130 and area / (h * w) >= 0.5 and max(h, w) / min(h, w) <= 1.8 \
                and img[sl][m].max() < metal and lungs[centre]:
            blob_ids.append(j)             # round, not metal-bright, in a lung: a nodule
    st["blobs"] = len(blob_ids)
    # devices: bright pixels above the heart that are not nodules (generator, lead, line)
    above_heart = (yy < A["cy"]) & (img > 180) & ~np.isin(comp, blob_ids)
    st["device"] = int(above_heart.sum())
    return st


def _path_stats(image):
    """Per-finding pixel statistics of a toy H&E patch at 64 px (see _PATH_RULES): lumens: near-white components ≥ 30 px ·
    dark: near-black (mitotic) pixels · pale: pale-pink (necrosis) pixels · blue: lymphocyte-blue pixels · atypical:
    dark-purple (hyperchromatic) pixels · density: nuclear-purple fraction of the area not taken by those structures."""
    img = _to_64(image)
    R, G, B = img[..., 0], img[..., 1], img[..., 2]
    st = {}
    white = img.min(-1) > 228
    comp, n = ndimage.label(white)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    st["lumens"] = int((sizes >= 30).sum())
    near_lumen = ndimage.binary_dilation(white, iterations=2)
    dark = (R < 60) & (G < 40) & (B < 85)
    st["dark"] = int(dark.sum())
    near_mitosis = ndimage.binary_dilation(dark, iterations=4)
    smooth = _blur(img, 1)                               # the area rule is robust to pixel noise when smoothed first
    pale = (smooth[..., 0] > 200) & (smooth[..., 1] >= 0.765 * smooth[..., 0]) & ~near_lumen & ~near_mitosis
    st["pale"] = int(pale.sum())
    blue = (G >= 0.8 * R) & (R < 150) & ~near_lumen & ~near_mitosis
    st["blue"] = int(blue.sum())
    st["atypical"] = int(((R < 85) & (B >= 85) & (G < 0.8 * R)).sum())
    nuclear = (B - R > 12) & (R < 170) & (G < 0.8 * R)
    free = ~(near_lumen | near_mitosis | ndimage.binary_dilation(pale | blue, iterations=3))
    st["nuclear"] = int(nuclear.sum())
    st["density"] = float((nuclear & free).sum() / max(free.sum(), 1))
    return st


_CXR_RULES = {"cardiomegaly": lambda st: st["heart_width"] >= 21,      # px at 64; normal ≤ 20, enlarged ≥ 22 (CTR gap)
              "effusion_left": lambda st: st["fluid_left"] >= 10,
              "effusion_right": lambda st: st["fluid_right"] >= 10,
              "pneumothorax": lambda st: max(st["air_left"], st["air_right"]) >= 20,
              "nodule": lambda st: st["blobs"] >= 1,
              "consolidation": lambda st: st["haze"] >= 25,
              "support_device": lambda st: st["device"] >= 12}
_PATH_RULES = {"high_cellularity": lambda st: st["density"] > (0.30 if st["atypical"] >= 40 else 0.135),
               "pleomorphism": lambda st: st["atypical"] >= 40,
               "glands": lambda st: st["lumens"] >= 1,
               "inflammation": lambda st: st["blue"] >= 30,
               "necrosis": lambda st: st["pale"] >= 120,
               "mitoses": lambda st: st["dark"] >= 2}


def pixel_labels(image, domain="cxr", return_stats=False):
    """Findings read from the pixels alone: {finding: 0|1} for every finding of the domain (and the raw statistics
    when return_stats=True). Any image size (measured at 64 px). Accuracy on real toy images: see tests/test_synthetic.py
    (≥ 0.98 per finding is required; measured ≥ 0.999 per finding on 3,000 test images per domain at 64 px and 1,000 at
    128 px, also with noise 0 and 6). A crude k-means patch VQ (f = 8, K = 512, no decoder, 22–29 dB) kept CXR findings
    at 0.94–1.00 but smeared the rare pathology colours (mitoses 0.73, inflammation 0.82): check real reconstructions.
    Built for toy images, so generated or VQ-reconstructed images that drift in intensity will score lower: that drop is
    the signal it exists to measure."""
    image = np.asarray(image)
    if domain == "cxr":
        if image.ndim != 2:
            raise ValueError(f"pixel_labels: a toy CXR image is (S, S) grayscale, got shape {image.shape}")
        stats, rules = _cxr_stats(image), _CXR_RULES
    elif domain == "path":
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"pixel_labels: a toy pathology image is (S, S, 3) RGB, got shape {image.shape}")
        stats, rules = _path_stats(image), _PATH_RULES
    else:
        raise ValueError(f"pixel_labels: domain must be 'cxr' or 'path', got {domain!r}")
    labels = {f: int(rule(stats)) for f, rule in rules.items()}
    return (labels, stats) if return_stats else labels


#### Export: sample files and the README grid (PIL only here) ##########################################################

# What the grid shows: one example per finding (alone where the data has one), then a typical combination.
_SHOWCASE = {"cxr": [(), ("cardiomegaly",), ("effusion_right",), ("effusion_left",), ("pneumothorax",), ("nodule",),
                     ("consolidation",), ("support_device",), ("support_device",),      # a pacemaker and a line
                     ("cardiomegaly", "effusion_left", "effusion_right")],
             "path": [(), ("high_cellularity",), ("pleomorphism",), ("glands",), ("inflammation",), ("necrosis",),
                      ("mitoses",), ("high_cellularity", "pleomorphism", "mitoses"),
                      ("pleomorphism", "glands", "necrosis")]}


def showcase(domain, image_size=64, seed=0):
    """The first test-split pair with exactly each finding set of _SHOWCASE[domain] (deterministic)."""
    ds = SyntheticDataset(domain, "test", n=5000, image_size=image_size, seed=seed)
    wanted = [set(w) for w in _SHOWCASE[domain]]
    found = [None] * len(wanted)
    for i in range(len(ds)):
        pair = ds[i]
        positive = {f for f, v in pair.labels.items() if v}
        shown_devices = {p.meta.get("device") for p in found if p is not None}
        for j, w in enumerate(wanted):
            repeat_device = w == {"support_device"} and pair.meta.get("device") in shown_devices
            if found[j] is None and positive == w and not repeat_device:
                found[j] = pair                          # (the two device slots get a pacemaker and a line)
                break
        if all(p is not None for p in found):
            return found
    raise RuntimeError(f"showcase: could not find every finding set for {domain} in 5000 test pairs")


def write_samples(out_dir, image_size=64, seed=0):
    """Write the showcase pairs as <domain>_<nn>_<findings>.png + .txt (the report) and labels.json (ground truth)."""
    import json
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    index = {}
    for domain in ("cxr", "path"):
        for j, pair in enumerate(showcase(domain, image_size, seed)):
            names = [f for f, v in pair.labels.items() if v] or ["normal"]
            if pair.meta.get("device"):
                names = [n + "_" + pair.meta["device"] if n == "support_device" else n for n in names]
            stem = f"{domain}_{j:02d}_{'-'.join(names)}"
            Image.fromarray(pair.image).save(os.path.join(out_dir, stem + ".png"))
            with open(os.path.join(out_dir, stem + ".txt"), "w") as f:
                f.write(pair.report + "\n")
            index[stem] = {"uid": pair.uid, "labels": pair.labels}
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(index, f, indent=1)
    return sorted(index)


def _wrap(draw, text, font, width):
    lines, line = [], ""
    for word in text.split():
        trial = (line + " " + word).strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + [line] if line else lines


def write_grid(path, image_size=64, seed=0, scale=3):
    """A labelled PNG grid: one row per domain, each tile the upscaled image, its findings in bold, and its report."""
    from PIL import Image, ImageDraw, ImageFont
    try:
        font, bold = ImageFont.load_default(size=11), ImageFont.load_default(size=13)
    except TypeError:                                    # Pillow without FreeType: the fixed bitmap font
        font = bold = ImageFont.load_default()
    tile, pad, text_h, head = image_size * scale, 8, 170, 24
    rows = [showcase(d, image_size, seed) for d in ("cxr", "path")]
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (tile + pad) + pad, head + len(rows) * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), f"Synthetic toy data ({image_size} px, shown x{scale}). Red: ground-truth findings; "
              "black: the report. Chest X-ray in radiological convention: the patient's RIGHT is on the IMAGE LEFT.",
              fill="black", font=bold)
    for r, pairs in enumerate(rows):
        for c, pair in enumerate(pairs):
            x, y = pad + c * (tile + pad), head + pad + r * (tile + text_h + pad)
            img = Image.fromarray(pair.image).convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)
            canvas.paste(img, (x, y))
            names = [f for f, v in pair.labels.items() if v]
            title = ", ".join(names) if names else "normal"
            if pair.meta.get("device"):
                title = title.replace("support_device", f"support_device ({pair.meta['device']})")
            ty = y + tile + 3
            for line in _wrap(draw, title, bold, tile):
                draw.text((x, ty), line, fill=(150, 0, 0), font=bold)
                ty += 15
            for line in _wrap(draw, pair.report, font, tile)[:int((y + tile + text_h - ty) // 13)]:
                draw.text((x, ty), line, fill="black", font=font)
                ty += 13
    canvas.save(path)
    return canvas.size


def _bench(n=2000, image_size=64):
    """ms per pair (CPU time, one thread) for both domains."""
    import time
    out = {}
    for domain in ("cxr", "path"):
        ds = SyntheticDataset(domain, "train", image_size=image_size)
        ds[0]                                                # warm the per-size caches
        t = time.process_time()
        for i in range(1, n + 1):
            ds[i]
        out[domain] = (time.process_time() - t) / n * 1e3
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Toy CXR / pathology data: sample files, the README grid, speed.")
    ap.add_argument("--samples", help="folder for sample PNG + report files (e.g. docs/samples)")
    ap.add_argument("--grid", help="path of the labelled grid PNG (e.g. docs/synthetic_grid.png)")
    ap.add_argument("--bench", action="store_true", help="time pair generation (ms per pair, CPU time)")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    if args.samples:
        print("wrote", len(write_samples(args.samples, args.image_size)), "samples to", args.samples)
    if args.grid:
        print("wrote grid", write_grid(args.grid, args.image_size), "to", args.grid)
    if args.bench:
        for domain, ms in _bench(image_size=args.image_size).items():
            print(f"{domain}: {ms:.2f} ms per {args.image_size}-px pair → 20,000 pairs in {ms * 20:.0f} s (one core)")
    if not (args.samples or args.grid or args.bench):
        ap.print_help(sys.stderr)
