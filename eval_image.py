"""Image metrics for MeDiM, self-contained (torch / numpy / scipy): FID between image folders as pytorch-fid 0.3.0
computes it (github.com/mseitzer/pytorch-fid fid_score.py, inception.py; Heusel et al. 2017, arXiv 1706.08500; the
Inception-v3 of Szegedy et al. 2016, arXiv 1512.00567), the Inception Score from the same network (Salimans et al. 2016,
arXiv 1606.03498), and the oracle classifier with FD-oracle, our offline stand-ins on the synthetic data (docs/data.md
"Synthetic data"). FD-oracle is NOT FID and must never be reported as FID.
Definitions: docs/metrics.md "FID", "Inception Score", "The FID Inception network", "Inception weights".
"""
import os
import time

import numpy as np
import scipy.linalg
import scipy.special
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from data.common import write_atomic

def stats(features):
    """(N, D) features -> (mu (D,), sigma (D, D)): mean and unbiased (N-1) covariance in float64, as pytorch-fid."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"stats: need features of shape (N >= 2, D), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (docs/metrics.md "FID", step 6; FID is this
    d², no sqrt):

        d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)

    pytorch-fid's safeguards: if sqrtm is not finite (singular product, e.g. N < D), add eps·I to both covariances and retry;
    a complex result is accepted only when the diagonal's imaginary part is ~0 (atol 1e-3), then its real part is used."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D), maybe complex from round-off
    if not np.isfinite(covmean).all():
        print(f"frechet_distance: sqrtm(sigma1 @ sigma2) is not finite; adding {eps} to both covariance diagonals")
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has an imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --- The FID Inception-v3: TF's 2015-12-05 graph in torchvision's module layout (docs/metrics.md "The FID Inception
# network"). The names of every module below are the key names of the weight file, so load_state_dict needs no renaming
# (472 tensors, docs/metrics.md "Inception weights").
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE


class FrozenBatchNorm2d(nn.Module):
    """Inference-only BatchNorm with TF's eps 0.001. The FID net is never trained, and unlike nn.BatchNorm2d this holds
    exactly the 4 tensors per BN that the weight file holds (no num_batches_tracked)."""

    def __init__(self, n, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.weight, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN -> ReLU: every conv of Inception-v3 is one of these."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = FrozenBatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):
    """3x3/1 average pool that, like TF, divides by the number of real (non-padding) pixels: count_include_pad=False.
    torchvision's Inception counts the zero padding; the FID weights were trained without it
    (the first difference in docs/metrics.md "The FID Inception network")."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):  # Mixed_5b..5d: 35x35
    def __init__(self, c_in, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(c_in, 48, 1), BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17 (same as torchvision)
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):  # Mixed_6b..6e: 17x17 with factorised 7x7 convs
    def __init__(self, c_in, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8 (same as torchvision)
    def __init__(self, c_in):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(c_in, 192, 1), BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (pytorch-fid's FIDInceptionE_1: TF average pool) and Mixed_7c (FIDInceptionE_2: a 3x3 MAX pool in the
    pool branch, the second difference — most likely a bug in the TF graph, but the weights were trained with it)."""

    def __init__(self, c_in, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """pytorch-fid's InceptionV3 (output block 3): float images (B, 3, H, W) in [0, 1] -> pool3 features (B, 2048).
    Resized to 299x299 (bilinear, align_corners=False, no antialias), then scaled to [-1, 1] (no ImageNet transform_input).
    fc (1008 classes, the third difference) is unused by FID; `logits` reads its weight for the Inception Score."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = FIDInceptionC(768, c7=128), FIDInceptionC(768, c7=160)
        self.Mixed_6d, self.Mixed_6e = FIDInceptionC(768, c7=160), FIDInceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = FIDInceptionE(1280, max_pool=False), FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.eval().requires_grad_(False)

    def forward(self, x):
        if x.shape[-2:] != (299, 299):  # an exact no-op at 299, so pre-resized batches give identical features
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1                                                                 # (B, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))            # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                  # (B, 64, 73, 73)  block 0
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                                 # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                  # (B, 192, 35, 35) block 1
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)                                                              # (B, 768, 17, 17) block 2
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))                            # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))                                                     # (B, 2048) pool3, block 3

    def logits(self, x):
        """(B, 3, H, W) in [0, 1] -> (B, 1008) class logits for the Inception Score: pool3 @ fc.weight.T, without
        fc.bias. The IS code of Salimans et al. 2016 (openai/improved-gan, inception_score/model.py) takes the graph's
        softmax/logits/MatMul, before the bias is added; torch-fidelity's "logits_unbiased" is the same."""
        return self(x) @ self.fc.weight.T                                             # (B, 1008)


def load_fid_inception(weights_path=None, device="cpu"):
    """InceptionV3FID with the standard FID weights from a local file. weights_path=None looks where pytorch-fid's
    torch.hub download would have put it ($TORCH_HOME/hub/checkpoints/, default ~/.cache/torch/hub/checkpoints/)."""
    path = weights_path or os.path.join(torch.hub.get_dir(), "checkpoints", FID_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID and IS need the Inception-v3 FID weight file {FID_WEIGHTS_FILE} (pytorch-fid's port of TF "
            f"inception-2015-12-05); not found at {path}. Download it (once, by hand) from {FID_WEIGHTS_URL} and pass its "
            f"path with --inception-weights PATH (python eval.py --fid DIR_A DIR_B, or --is DIR, --inception-weights PATH), "
            f"or put it at {os.path.join(torch.hub.get_dir(), 'checkpoints', FID_WEIGHTS_FILE)}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read the FID weight file {path}: {e}") from None
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # present or not: we don't need it
    model = InceptionV3FID()
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path} is not the FID Inception weight file {FID_WEIGHTS_FILE}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]} "
                         f"({len(missing)}/{len(unexpected)}/{len(wrong)} in all)")
    model.load_state_dict(state, strict=True)
    return model.to(device)


IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's list, lowercase only


def image_files(folder, at_least=2, metric="FID"):
    """Sorted image files of one folder, matched like pytorch-fid (lower-case extensions only, no recursion)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS)
    if len(files) < at_least:
        raise ValueError(f"{folder}: {metric} needs at least {at_least} images ({', '.join(IMAGE_EXTENSIONS)}), "
                         f"found {len(files)}")
    return files


def read_rgb(path):
    """uint8 (H, W, 3). 16-bit PNGs are scaled to 8 bits first: convert('RGB') would saturate them to white (docs/metrics.md "FID").
    (pytorch-fid does saturate them; we deliberately don't.)"""
    img = Image.open(path)
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def inception_features(model, images, batch_size=50, device="cpu", logits=False):
    """Images (uint8 arrays (H, W) / (H, W, 3), or file paths) -> float64 (N, 2048) pool3 features, in batches like pytorch-fid;
    logits=True gives the (N, 1008) Inception Score logits (InceptionV3FID.logits) of the same input instead.
    Each image is resized to 299 on its own (the same bilinear resize the model would do), so sizes may be mixed."""
    run = model.logits if logits else model
    feats = []
    for i in range(0, len(images), batch_size):
        batch = []
        for im in images[i:i + batch_size]:
            arr = read_rgb(im) if isinstance(im, (str, os.PathLike)) else np.asarray(im)
            arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr  # gray -> RGB, as convert('RGB')
            x = torch.from_numpy(rearrange(arr, "h w c -> 1 c h w").astype(np.float32) / 255)  # ToTensor: [0, 1]
            batch.append(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        with torch.no_grad():
            feats.append(run(torch.cat(batch).to(device)).double().cpu().numpy())  # (b, 2048) or (b, 1008)
    return np.concatenate(feats)


def fid_folders(dir_a, dir_b, weights_path=None, batch_size=50, device="cpu"):
    """FID between two image folders, as `python -m pytorch_fid DIR_A DIR_B` (2048-d pool3 features, batch 50)."""
    files_a, files_b = image_files(dir_a), image_files(dir_b)
    model = load_fid_inception(weights_path, device)
    print(f"FID: {len(files_a)} images in {dir_a} vs {len(files_b)} in {dir_b}")
    mu_a, sigma_a = stats(inception_features(model, files_a, batch_size, device))
    mu_b, sigma_b = stats(inception_features(model, files_b, batch_size, device))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


IS_SPLITS = 10  # the paper's code and torch-fidelity's default


def inception_score(scores, splits=IS_SPLITS, probabilities=False):
    """(N, K) class logits (or, with probabilities=True, rows of p(y|x)) -> (mean, std) Inception Score over `splits`
    parts, in float64. Salimans et al. 2016, "Improved Techniques for Training GANs", §4:

        IS = exp(E_x KL(p(y|x) || p(y))),   p(y) = E_x p(y|x), the marginal over the part's images

    As the paper's code: the rows are cut in order into parts [i·N // splits, (i+1)·N // splits) (no shuffle;
    torch-fidelity shuffles by default), each part gets its own p(y), and the result is the mean and the population
    std (ddof 0) of the per-part scores. It runs from 1 (every image gets the same p(y|x)) to K (each image certain
    of one class, the classes used evenly)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or len(x) < splits or splits < 1:
        raise ValueError(f"inception_score: need (N >= splits = {splits}, K) scores, got shape {x.shape}")
    if probabilities and (x.min() < 0 or not np.allclose(x.sum(axis=1), 1, atol=1e-4)):
        raise ValueError("inception_score: probabilities=True needs non-negative rows that sum to 1")
    p = x if probabilities else scipy.special.softmax(x, axis=1)  # (N, K) p(y|x)
    n, per_split = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]          # (n_i, K)
        p_y = part.mean(axis=0, keepdims=True)                    # (1, K) p(y)
        kl = scipy.special.rel_entr(part, p_y).sum(axis=1)        # (n_i,) KL(p(y|x) || p(y)); 0·log 0 = 0
        per_split.append(np.exp(kl.mean()))
    return float(np.mean(per_split)), float(np.std(per_split))


def inception_score_folder(folder, weights_path=None, batch_size=50, device="cpu", splits=IS_SPLITS):
    """(mean, std) Inception Score of the images of one folder, listed, read and resized as for FID (fid_folders)."""
    files = image_files(folder, at_least=splits, metric=f"IS over {splits} splits")
    model = load_fid_inception(weights_path, device)
    print(f"IS: {len(files)} images in {folder}, {splits} splits")
    return inception_score(inception_features(model, files, batch_size, device, logits=True), splits)


# --- Oracle classifier for the synthetic data: a small CNN trained on real synthetic images to predict their ground-truth
# findings. It turns report->image generation into a measurable task (label accuracy / F1 of generated images) and gives
# a feature space for FD-oracle (docs/data.md "Synthetic data"). Multi-label: one sigmoid per finding, BCE.

ORACLE_STEPS = 600  # the oracle's training steps (300 already reach > 0.95 per toy finding: tests/test_eval_image.py)


def images_to_tensor(images, channels):
    """List of uint8 arrays ((S, S) gray or (S, S, 3) RGB) -> float (N, channels, S, S) in [-1, 1].
    Gray is repeated to 3 channels and RGB averaged to 1, so a 1-channel oracle can read 3-channel decoded images."""
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).float() / 127.5 - 1
    x = x.unsqueeze(1) if x.dim() == 3 else rearrange(x, "n h w c -> n c h w")  # (N, C, S, S)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
    return x


class OracleClassifier(nn.Module):
    """4 stride-2 conv blocks (S -> S/16) -> global max + mean pool (a nodule is a tiny bright spot: max finds it anywhere)
    -> features (D = 2·width) -> one logit per finding."""

    def __init__(self, findings, image_size=64, channels=1, width=32):
        super().__init__()
        self.findings, self.image_size, self.channels, self.width = tuple(findings), image_size, channels, width
        layers, c = [], channels
        for c_out in (width // 2, width, width, width):
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width, len(self.findings))
        self.heldout_acc = None  # {finding: accuracy} on held-out real images, set by train_oracle

    def forward_features(self, x):  # (N, C, S, S) -> (N, 2·width)
        h = self.convs(x)  # (N, width, S/16, S/16)
        return torch.cat([h.amax(dim=(2, 3)), h.mean(dim=(2, 3))], dim=1)

    def forward(self, x):  # (N, C, S, S) -> logits (N, F)
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def _run(self, images, fn, batch_size=256):
        for im in images[:1]:
            if np.asarray(im).shape[:2] != (self.image_size, self.image_size):
                raise ValueError(f"oracle was trained on {self.image_size}px images, got {np.asarray(im).shape}")
        self.eval()
        return torch.cat([fn(images_to_tensor(images[i:i + batch_size], self.channels))
                          for i in range(0, len(images), batch_size)]).numpy()

    def predict(self, images):
        """uint8 images -> (N, F) int 0/1 findings (sigmoid > 0.5)."""
        return self._run(images, lambda x: (self(x) > 0).long())

    def features(self, images):
        """uint8 images -> (N, D) float penultimate features, the space FD-oracle is measured in."""
        return self._run(images, self.forward_features).astype(np.float64)


def pair_labels(pairs, findings):
    """(N, F) int 0/1 ground truth from Pair.labels; anything else is an error naming the pair (the oracle needs 0/1)."""
    out = np.zeros((len(pairs), len(findings)), dtype=np.int64)
    for i, p in enumerate(pairs):
        for j, f in enumerate(findings):
            v = (p.labels or {}).get(f)
            if v not in (0, 1):
                raise ValueError(f"pair {p.uid or i}: finding {f!r} has label {v!r}; the oracle needs 0/1 labels")
            out[i, j] = v
    return out


def train_oracle(train_pairs, findings, run_dir=None, steps=ORACLE_STEPS, batch_size=32, n_images=4000, n_heldout=500,
                 channels=None, lr=1e-2, seed=0):
    """Train (or load from run_dir/oracle.pt when it matches findings, image size and channels) the oracle classifier.

    Uses the first n_images + n_heldout pairs; the last n_heldout are never trained on and give the printed held-out
    accuracy. channels=None keeps the images' own channel count. A seed reproduces the run exactly on CPU."""
    findings = tuple(findings)
    n = min(len(train_pairs), n_images + n_heldout)
    if n < 2 * n_heldout:
        raise ValueError(f"train_oracle: need at least {2 * n_heldout} pairs, got {n} (or lower n_heldout)")
    first = np.asarray(train_pairs[0].image)
    image_size, channels = first.shape[0], channels or (3 if first.ndim == 3 else 1)
    path = os.path.join(run_dir, "oracle.pt") if run_dir else None
    if path and os.path.isfile(path):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a stale or broken cache is not worth stopping an evaluation for: retrain
            print(f"oracle: cannot read {path} ({type(e).__name__}); retraining")
            ckpt = {"findings": (), "image_size": None, "channels": None}
        if (tuple(ckpt["findings"]), ckpt["image_size"], ckpt["channels"]) == (findings, image_size, channels):
            oracle = OracleClassifier(findings, image_size, channels, ckpt["width"])
            oracle.load_state_dict(ckpt["state_dict"])
            oracle.heldout_acc = ckpt["heldout_acc"]
            print(f"oracle: loaded {path} (held-out acc {np.mean(list(oracle.heldout_acc.values())):.4f})")
            return oracle.eval()
        elif ckpt["image_size"] is not None:
            print(f"oracle: {path} was trained for other findings/size/channels; retraining")
    t0 = time.time()
    pairs = [train_pairs[i] for i in range(n)]
    images, labels = [np.asarray(p.image) for p in pairs], pair_labels(pairs, findings)
    if any(im.shape != first.shape for im in images):
        raise ValueError(f"train_oracle: all images must have the shape of the first one, {first.shape}")
    train_images, y = images[:-n_heldout], torch.from_numpy(labels[:-n_heldout]).float()  # (N, F)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's global RNG alone
        torch.manual_seed(seed)
        oracle = OracleClassifier(findings, image_size, channels)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(oracle.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    oracle.train()
    for _ in range(steps):
        idx = torch.randint(len(train_images), (batch_size,), generator=gen)
        x = images_to_tensor([train_images[i] for i in idx.tolist()], channels)  # (B, C, S, S); uint8 until needed
        loss = F.binary_cross_entropy_with_logits(oracle(x), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    oracle.eval()
    acc = (oracle.predict(images[-n_heldout:]) == labels[-n_heldout:]).mean(axis=0)  # (F,)
    oracle.heldout_acc = {f: float(a) for f, a in zip(findings, acc)}
    print(f"oracle: {steps} steps on {len(train_images)} images in {time.time() - t0:.1f}s; held-out acc {acc.mean():.4f} ("
          + ", ".join(f"{f} {a:.3f}" for f, a in oracle.heldout_acc.items()) + ")")
    if path:
        os.makedirs(run_dir, exist_ok=True)
        ckpt = {"state_dict": oracle.state_dict(), "findings": list(findings), "image_size": image_size,
                "channels": channels, "width": oracle.width, "heldout_acc": oracle.heldout_acc}
        write_atomic(path, lambda f: torch.save(ckpt, f))
    return oracle


def fd_oracle(oracle, real_images, gen_images):
    """FD-oracle: the Fréchet distance in the oracle's feature space (a toy analogue of FID, NOT comparable to FID).
    Like FID it is biased upward for small N: compare numbers only at the same N."""
    return frechet_distance(*stats(oracle.features(real_images)), *stats(oracle.features(gen_images)))


def fd_oracle_floor(oracle, real_images):
    """The real-vs-real floor: FD-oracle between the first and second half of one real set (each half N/2)."""
    half = len(real_images) // 2
    return fd_oracle(oracle, real_images[:half], real_images[half:2 * half])
