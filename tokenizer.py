"""
The tokenizers of MeDiM in one file. A small VQ-VAE turns an image into K-way codes on an (S/f)×(S/f) grid, a byte-level
BPE turns a report into text ids, and `Vocab` puts both, the special tokens and [MASK] into ONE id space and ONE
fixed-length sequence, the thing the discrete diffusion model of medim.py denoises:

    [<domain>] [<boi>] img_1 .. img_N [<eoi>] txt_1 .. txt_L        (text slots: report ids, <eos>, then <pad>s)
    [<domain>] txt_1 .. txt_L [<boi>] img_1 .. img_N [<eoi>]        (text_first: the report before the image)

MeDiM itself (MeDiM §3.2; docs/paper-notes.md "Image tokenizer") uses the frozen 8192-code Chameleon VQGAN (512 px →
32×32 codes) and the LLaMA-2 tokenizer.
Neither can be downloaded here, so we train small ones in minutes on a CPU, and keep the layout general enough for real
data (f = 16, K up to 8192) and for a pretrained LLM's own tokenizer.json.
Measured on the toy test splits at 64 px, defaults (f=8, K=512, 2000 steps of 16 images, ~170 s on one CPU thread):
CXR 32.9 dB PSNR, all 512 codes used (perplexity 437), findings read back from reconstructions 99.1%; pathology only
23.0 dB / 92% at f=8 (64 codes cannot hold ~50 nuclei and the small mitoses), 29.2 dB / 98% at f=4 (256 codes).

Papers: VQ-VAE, van den Oord et al. 2017, arXiv 1711.00937 (straight-through estimator, commitment loss, EMA codebook in
App. A.1); VQGAN, Esser et al. 2021, arXiv 2012.09841 (the ResNet encoder/decoder); MeDiM, Mao et al. 2025, arXiv 2510.06131.
Reference code (read, not copied): rosinality/vq-vae-2-pytorch vqvae.py (EMA `Quantize`), karpathy/deep-vector-quantization
quantize.py (k-means init), lucidrains/vector-quantize-pytorch (`expire_codes_`: dead-code restart), HF `tokenizers` docs.
"""
import argparse
import hashlib
import json
import math
import os
import re
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tqdm import tqdm

from data import load_pairs
from data.common import DOMAINS, write_atomic
from data.synthetic import pixel_labels

# ----------------------------------------------------------------------------------------------------------------------
#### VQ-VAE: the EMA vector quantiser, then the conv encoder / decoder around it
# ----------------------------------------------------------------------------------------------------------------------


class Quantizer(nn.Module):
    """Nearest-neighbour codebook with EMA updates (VQ-VAE App. A.1, rosinality's `Quantize`), k-means init on the first
    batch (karpathy) and restart of dead codes (lucidrains). The codebook is a buffer: no gradient ever reaches it, the EMA
    moves each code to the running mean of the encoder outputs assigned to it."""

    def __init__(self, K: int, dim: int, decay=0.99, beta=0.25, dead_threshold=0.1, eps=1e-5):
        super().__init__()
        self.K, self.decay, self.beta, self.dead_threshold, self.eps = K, decay, beta, dead_threshold, eps
        self.register_buffer("codebook", torch.zeros(K, dim))
        # EMA counts and sums start at 0 (in an early prototype, counts started at 1 hid dead codes for ~350 steps).
        # Both decay alike, so their ratio, the code, is a running mean that needs no bias correction.
        self.register_buffer("ema_count", torch.zeros(K))
        self.register_buffer("ema_sum", torch.zeros(K, dim))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        self.last_restarts = 0

    def nearest(self, z):  # z (N, D) -> codes (N,)
        # ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖², without materialising the (N, K, D) differences
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(1)  # (N, K)
        return dist.argmin(1)

    @torch.no_grad()
    def kmeans_init(self, z, iters=10):  # z (N, D)
        # Random codes far from the data never win an argmin ("catastrophic index collapse", karpathy's README), so the
        # codebook starts as k-means centroids of the first batch. With fewer vectors than codes some start as duplicates:
        # they win nothing and the dead-code restart scatters them.
        N = z.shape[0]
        self.codebook.copy_(z[torch.randperm(N)[:self.K]] if N >= self.K else z[torch.randint(0, N, (self.K,))])
        for _ in range(iters):
            onehot = F.one_hot(self.nearest(z), self.K).type(z.dtype)                  # (N, K)
            n = onehot.sum(0)[:, None]                                                 # (K, 1)
            self.codebook.copy_(torch.where(n > 0, onehot.T @ z / n.clamp(min=1), self.codebook))

    @torch.no_grad()
    def ema_update(self, z, codes):  # z (N, D), codes (N,)
        onehot = F.one_hot(codes, self.K).type(z.dtype)                                # (N, K)
        self.ema_count.lerp_(onehot.sum(0), 1 - self.decay)    # count_k ← γ·count_k + (1 − γ)·n_k
        self.ema_sum.lerp_(onehot.T @ z, 1 - self.decay)       # sum_k ← γ·sum_k + (1 − γ)·Σ_{z→k} z
        self.n_updates += 1
        # Laplace smoothing keeps the division finite for codes nobody picked (they become ~0, then get restarted)
        total = self.ema_count.sum()
        count = (self.ema_count + self.eps) / (total + self.K * self.eps) * total
        self.codebook.copy_(self.ema_sum / count[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z):  # z (N, D) -> how many codes were restarted
        """Codes picked fewer than `dead_threshold` times per batch (EMA, bias-corrected) jump onto random encoder outputs
        of this batch, from the very first step."""
        seen = 1 - self.decay ** self.n_updates.item()        # the weight the EMA has accumulated since its start at 0
        dead = self.ema_count / seen < self.dead_threshold                                              # (K,)
        self.last_restarts = n = int(dead.sum())
        if n:
            new = z[torch.randint(0, z.shape[0], (n,))]                                                 # (n, D)
            # exactly the threshold count: a revived code must win vectors in the next batch to survive
            self.codebook[dead], self.ema_count[dead] = new, self.dead_threshold * seen
            self.ema_sum[dead] = new * self.dead_threshold * seen
        return n

    def forward(self, z):  # z (B, D, h, w) -> (z_q with straight-through gradient, commitment loss, codes (B, h, w))
        B, D, h, w = z.shape
        z = rearrange(z, "b d h w -> (b h w) d")
        if self.training and self.n_updates == 0:
            self.kmeans_init(z.detach())
        codes = self.nearest(z.detach())
        z_q = self.codebook[codes]                          # (N, D), read before this batch moves the codebook
        if self.training:
            self.ema_update(z.detach(), codes)
            self.restart_dead_codes(z.detach())
        # VQ-VAE eq. 3 minus the codebook term (the EMA replaces it): β‖z − sg[e]‖² keeps the encoder near its codes
        commit_loss = self.beta * F.mse_loss(z, z_q)
        z_q = z + (z_q - z).detach()  # noop in the forward pass, straight-through gradient estimator in the backward pass
        return rearrange(z_q, "(b h w) d -> b d h w", b=B, h=h), commit_loss, rearrange(codes, "(b h w) -> b h w", b=B, h=h)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))): the VQGAN block, at one width."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class VQVAE(nn.Module):
    """Encoder → Quantizer → Decoder, downsampling by f (a power of 2). Images are float (B, C, S, S) in [-1, 1].

    Built for a CPU: a space-to-depth stem (PixelUnshuffle(2): S×S×C → S/2×S/2×4C, lossless) replaces the costly
    full-resolution convolutions, then log2(f) − 1 stride-2 stages double the width (f = 8 at 64 px: 32 → 16 → 8, i.e. 64
    codes, widths 16/32/64, 0.3M parameters). The decoder mirrors it with nearest upsampling + conv and PixelShuffle(2)."""

    def __init__(self, in_channels=1, f=8, K=512, code_dim=32, ch=None, decay=0.99, beta=0.25, dead_threshold=0.1):
        super().__init__()
        n_levels = int(math.log2(f)) if f >= 2 and f & (f - 1) == 0 else 0
        ch = list(ch or [16 * 2 ** i for i in range(n_levels)])                        # one width per resolution
        if not n_levels or len(ch) != n_levels:
            raise ValueError(f"VQVAE: f must be a power of 2 ≥ 2 and ch hold log2(f) widths, got f={f}, ch={ch}")
        self.config = dict(in_channels=in_channels, f=f, K=K, code_dim=code_dim, ch=ch, decay=decay, beta=beta,
                           dead_threshold=dead_threshold)          # saved with the weights, so load() can rebuild it
        self.f, self.K = f, K
        enc = [nn.PixelUnshuffle(2), nn.Conv2d(4 * in_channels, ch[0], 3, padding=1), ResBlock(ch[0])]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ResBlock(c_out)]
        enc += [ResBlock(ch[-1]), nn.GroupNorm(8, ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = Quantizer(K, code_dim, decay, beta, dead_threshold)
        dec = [nn.Conv2d(code_dim, ch[-1], 3, padding=1), ResBlock(ch[-1])]
        for c_in, c_out in zip(ch[::-1][:-1], ch[::-1][1:]):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1), ResBlock(c_out)]
        dec += [nn.GroupNorm(8, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 4 * in_channels, 3, padding=1), nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):  # x (B, C, S, S) -> codes (B, S/f, S/f); never touches the codebook
        z = self.encoder(x)                                                            # (B, D, S/f, S/f)
        codes = self.quantizer.nearest(rearrange(z, "b d h w -> (b h w) d"))
        return rearrange(codes, "(b h w) -> b h w", b=z.shape[0], h=z.shape[2])

    def decode(self, codes):  # codes (B, h, w) -> x (B, C, S, S)
        return self.decoder(rearrange(self.quantizer.codebook[codes], "b h w d -> b d h w"))

    def forward(self, x):  # -> (reconstruction (B, C, S, S), commitment loss, codes (B, h, w))
        z_q, commit_loss, codes = self.quantizer(self.encoder(x))
        return self.decoder(z_q), commit_loss, codes


def images_to_tensor(images, channels: int, S: int) -> torch.Tensor:
    """uint8 (S, S) gray / (S, S, 3) RGB arrays -> float (B, C, S, S) in [-1, 1]; gray is replicated for 3 channels."""
    out = []
    for img in map(np.asarray, images):
        if img.dtype != np.uint8 or img.shape not in ((S, S), (S, S, 3)):
            raise ValueError(f"expected uint8 images of shape ({S}, {S}) or ({S}, {S}, 3), got {img.dtype} {img.shape}")
        if img.ndim == 3 and channels == 1:
            raise ValueError("this tokenizer has 1 channel but got an RGB image: RGB or mixed-domain data needs channels=3")
        out.append(np.repeat(img[:, :, None], channels, 2) if img.ndim == 2 else img)
    return rearrange(torch.from_numpy(np.stack(out)).float(), "b h w c -> b c h w") / 127.5 - 1


def tensor_to_images(x: torch.Tensor) -> list:  # float (B, C, S, S) -> list of uint8 (S, S) or (S, S, 3)
    x = rearrange(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), "b c h w -> b h w c").numpy()
    return [img[:, :, 0] if img.shape[2] == 1 else img for img in x]


def psnr_db(a, b) -> float:
    """PSNR of two lists of uint8 images: 10·log10(255² / MSE), the MSE taken over every pixel of the set."""
    sq_err = [(np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2 for x, y in zip(a, b)]  # shapes may differ
    mse = sum(e.sum() for e in sq_err) / sum(e.size for e in sq_err)
    return float(10 * math.log10(255 ** 2 / max(mse, 1e-10)))


def train_vqvae(images: np.ndarray, channels: int, *, K=512, f=8, steps=2000, batch_size=16, lr=2e-3, seed=0,
                max_minutes=None, device="cpu", recon_loss="mse", **vq_kwargs) -> VQVAE:
    """Train on a uint8 stack (M, S, S[, 3]): Adam, 50 warm-up steps, cosine decay, reconstruction + commitment loss.
    recon_loss: 'mse' (what PSNR measures) or 'l1': on toy CXR with the defaults, +0.35 dB and −0.4 points of findings
    agreement for l1, i.e. a tie at one seed.
    Deterministic from `seed` on a CPU; max_minutes stops it early and then drives the schedule (not deterministic).
    Returns the model in eval mode, on the CPU."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model, S = VQVAE(channels, f, K, **vq_kwargs).to(device), images.shape[1]
    if S % f:
        raise ValueError(f"image_size {S} is not a multiple of the downsampling factor f={f}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, bar = time.time(), tqdm(range(steps), desc=f"VQ-VAE K={K} f={f}", dynamic_ncols=True, mininterval=1)
    for step in bar:
        progress = step / steps if max_minutes is None else max(step / steps, (time.time() - t0) / (60 * max_minutes))
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * progress))
        x = images_to_tensor(images[torch.randint(0, len(images), (batch_size,), generator=gen).numpy()], channels, S)
        x = x.to(device)
        recon, commit_loss, codes = model(x)                                           # (B, C, S, S), (), (B, h, w)
        mse = F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        ((mse if recon_loss == "mse" else F.l1_loss(recon, x)) + commit_loss).backward()
        opt.step()
        if step % 50 == 0:  # codebook perplexity exp(H) of this batch's codes: K would mean every code equally used
            p = torch.bincount(codes.flatten(), minlength=K) / codes.numel()
            ppl = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
            bar.set_postfix(mse=f"{mse.item():.4f}", ppl=f"{ppl:.0f}", restarts=model.quantizer.last_restarts)
    return model.cpu().eval()

# ----------------------------------------------------------------------------------------------------------------------
#### Text: byte-level BPE (or a pretrained LLM's tokenizer.json)
# ----------------------------------------------------------------------------------------------------------------------


def train_bpe(reports, vocab_size=2000, lowercase=False) -> Tokenizer:
    """Byte-level BPE (GPT-2 style): every string encodes (no <unk>) and decode(encode(s)) == s exactly. Case is kept by
    default so the round trip stays lossless and the labelers read exactly what the model wrote (the text metrics
    lower-case on their own). Template reports run out of merges early, so the vocabulary may stay below vocab_size."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(reports), trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok


def load_text_tokenizer(path: str) -> Tokenizer:
    """A tokenizer.json file, or a pretrained LLM directory holding one (its ids then match the LLM's embeddings)."""
    path = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (give a tokenizer.json or a model directory that holds one)")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:
        raise ValueError(f"{path} is not a valid `tokenizers` JSON file ({type(e).__name__}: {str(e)[:200]})") from None


def byte_chars() -> list:
    """The byte-level alphabet in byte order: byte b is the character byte_chars()[b] (GPT-2 encoder.py
    bytes_to_unicode): printable bytes stand for themselves, the others are moved past U+00FF, so no piece is
    whitespace or a control character."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    moved = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(moved)) for b in range(256)]


BYTE_CHARS = byte_chars()


def is_byte_level(text: Tokenizer) -> bool:
    """Whether the tokenizer decodes byte-level pieces (GPT-2, Llama-3, Qwen2, SmolLM2), so every token is spelt in the
    256 single-byte pieces of BYTE_CHARS."""
    decoder = json.loads(text.to_str()).get("decoder") or {}
    return "ByteLevel" in [decoder.get("type"), *(d.get("type") for d in decoder.get("decoders") or [])]


def trim_text_rows(text: Tokenizer, id_lists, where: str) -> list:
    """The LLM token ids a trimmed text vocabulary keeps, sorted: those the reports use (id_lists) and the single-byte
    pieces, but never the LLM's special tokens (the layout has its own, and decoding skips them). A token that is not
    kept is written in its byte pieces (MedTokenizer.encode_text), so every string still encodes, and decodes back
    exactly. Why: template reports use a few hundred of an LLM's ~50k ids, and with all of them every sequence position
    would pay for ~50k logits and the optimizer for ~50k embedding rows."""
    if not is_byte_level(text):
        raise ValueError(f"{where}: not a byte-level BPE (GPT-2 / Llama-3 / SmolLM2 style), so a token left out of a "
                         f"trimmed vocabulary could not be written in byte pieces; keep the whole vocabulary "
                         f"(train.py --no-trim-vocab)")
    specials = {i for i, t in text.get_added_tokens_decoder().items() if t.special}
    pieces = {text.token_to_id(c) for c in BYTE_CHARS} - {None}  # a byte with no piece: the LLM cannot encode it either
    return sorted(({i for ids in id_lists for i in ids} | pieces) - specials)


def text_len_for(lengths, quantile=0.995, multiple=8, max_len=256) -> int:
    """Text slots L from the training reports' id counts: the `quantile` (1.0 = the longest) + 1 for <eos>, rounded up to
    a multiple of 8, at most max_len (MeDiM: 256). Longer reports are truncated and counted. Why not the longest: every
    slot costs compute in every row, <pad> or not. On the toy CXR reports (31 ids on average, 78 at most) the longest
    asks for 80 slots and the 99.5th percentile for 64, which cuts 0.4% of the reports and makes a training step 9%
    cheaper (docs/experiments.md)."""
    need = math.ceil(np.quantile(np.asarray(lengths), quantile)) + 1
    return int(min(max_len, multiple * math.ceil(need / multiple)))

# ----------------------------------------------------------------------------------------------------------------------
#### One vocabulary, one sequence layout (docs/paper-notes.md "Vocabulary and sequence")
# ----------------------------------------------------------------------------------------------------------------------


class Vocab:
    """Ids: [text 0..n_text-1 | <boi> <eoi> <eos> <pad> | one tag per domain | [MASK] | K image codes].
    Sequence, T = N + L + 3: [<domain>] [<boi>] img_1..img_N [<eoi>] txt_1..txt_L. The text slots hold the report ids,
    <eos>, then <pad>s; <eos> and <pad> are diffused like words, so the model learns the report length. A report longer
    than L − 1 ids is cut and counted in `n_truncated`, never silently.
    text_rows: with a pretrained LLM's tokenizer, the LLM token id each text id 0..n_text-1 stands for (trim_text_rows):
    text id i is LLM id text_rows[i] and starts from the LLM's embedding row text_rows[i]. None: text ids are the text
    tokenizer's own ids.
    text_first: [<domain>] txt_1..txt_L [<boi>] img_1..img_N [<eoi>] instead, the report before the image. A
    bidirectional model sees the same tokens either way; a causal one (MeDiM Tab. 4 "w/ causal mask") can then read
    the report while it draws the image, and no longer the image while it writes the report. Everything else finds the
    slots through segment_ids (or image_slots / text_slots), never by position."""

    def __init__(self, n_text: int, K: int, n_image_tokens: int, text_len: int, domains=DOMAINS, text_rows=None,
                 text_first=False):
        if text_len < 2:
            raise ValueError(f"Vocab: text_len must be ≥ 2 (a report id and <eos>), got {text_len}")
        if text_rows is not None and len(text_rows) != n_text:
            raise ValueError(f"Vocab: {len(text_rows)} text_rows for n_text={n_text}")
        self.n_text, self.K, self.n_image_tokens, self.text_len = n_text, K, n_image_tokens, text_len
        self.text_rows = None if text_rows is None else [int(i) for i in text_rows]
        self.domains = tuple(domains)
        self.boi, self.eoi, self.eos, self.pad = n_text, n_text + 1, n_text + 2, n_text + 3
        self.domain_id = {d: n_text + 4 + i for i, d in enumerate(self.domains)}
        self.mask_id = n_text + 4 + len(self.domains)
        self.image_offset = self.mask_id + 1
        self.size = self.image_offset + K
        self.seq_len = n_image_tokens + text_len + 3
        self.n_truncated = 0
        # where the two segments sit; <boi> is right before the image, <eoi> right after it, the domain tag first
        self.text_first = bool(text_first)
        image_start = 2 + text_len if self.text_first else 2
        self.image_slots = slice(image_start, image_start + n_image_tokens)
        self.text_slots = slice(1, 1 + text_len) if self.text_first else slice(3 + n_image_tokens, self.seq_len)
        # 0 = never diffused (domain tag, <boi>, <eoi>), 1 = image codes, 2 = text slots
        self.segment_ids = torch.zeros(self.seq_len, dtype=torch.long)                                 # (T,)
        self.segment_ids[self.image_slots], self.segment_ids[self.text_slots] = 1, 2
        # the ids each segment may produce (the official force_argmax_valid_indices); [MASK] is never one of them
        self.legal = torch.zeros(3, self.size, dtype=torch.bool)                                       # (3, V)
        self.legal[0], self.legal[0, self.mask_id] = True, False
        self.legal[1, self.image_offset:] = True
        self.legal[2, :n_text] = self.legal[2, self.eos] = self.legal[2, self.pad] = True

    def to_dict(self) -> dict:
        d = dict(n_text=self.n_text, K=self.K, n_image_tokens=self.n_image_tokens, text_len=self.text_len,
                 domains=list(self.domains))
        # each only when set: the files and token-cache hashes of the runs before them stay unchanged
        d = d if self.text_rows is None else dict(d, text_rows=self.text_rows)
        return dict(d, text_first=True) if self.text_first else d

    def encode(self, text_ids, codes, domain: str) -> np.ndarray:  # (report ids, N codes in [0, K), domain) -> (T,) int64
        ids, codes = np.asarray(list(text_ids), np.int64), np.asarray(codes, np.int64).reshape(-1)
        if domain not in self.domain_id:
            raise ValueError(f"Vocab.encode: unknown domain {domain!r}; this vocabulary has {self.domains}")
        if codes.shape != (self.n_image_tokens,) or codes.min() < 0 or codes.max() >= self.K:
            raise ValueError(f"Vocab.encode: need {self.n_image_tokens} image codes in [0, {self.K}), got shape "
                             f"{codes.shape}, values {codes.min()}..{codes.max()}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_text):
            raise ValueError(f"Vocab.encode: text ids must lie in [0, {self.n_text}), got {ids.min()}..{ids.max()}")
        if len(ids) > self.text_len - 1:
            ids, self.n_truncated = ids[:self.text_len - 1], self.n_truncated + 1
        text = np.full(self.text_len, self.pad, np.int64)
        text[:len(ids)], text[len(ids)] = ids, self.eos
        seq = np.empty(self.seq_len, np.int64)
        seq[0], seq[self.image_slots.start - 1], seq[self.image_slots.stop] = self.domain_id[domain], self.boi, self.eoi
        seq[self.image_slots], seq[self.text_slots] = codes + self.image_offset, text
        return seq

    def decode(self, seq):  # (T,) -> (text ids before the first <eos>/<pad>, image codes (N,), domain)
        seq = np.asarray(seq, np.int64)
        domains = {v: k for k, v in self.domain_id.items()}
        if seq.shape != (self.seq_len,) or seq[0] not in domains:
            raise ValueError(f"Vocab.decode: expected {self.seq_len} ids starting with a domain tag {self.domain_id}, "
                             f"got shape {seq.shape}" + (f" starting with {seq[0]}" if seq.size else ""))
        codes, text = seq[self.image_slots] - self.image_offset, seq[self.text_slots]
        if codes.min() < 0 or codes.max() >= self.K:
            bad = int(np.flatnonzero((codes < 0) | (codes >= self.K))[0])
            raise ValueError(f"Vocab.decode: image slot {bad} holds id {seq[self.image_slots][bad]}, not an image code")
        end = np.flatnonzero((text == self.eos) | (text == self.pad))
        text = text[:end[0] if end.size else None]
        if text.size and text.max() >= self.n_text:
            raise ValueError(f"Vocab.decode: a text slot before <eos> holds id {text.max()}, not a text id")
        return text.tolist(), codes, domains[int(seq[0])]

# ----------------------------------------------------------------------------------------------------------------------
#### The bundle a run directory holds: vqvae.pt + tokenizer.json + vocab.json
# ----------------------------------------------------------------------------------------------------------------------

FILES = ("vqvae.pt", "tokenizer.json", "vocab.json")


class MedTokenizer:
    """Images ↔ codes (VQ-VAE), reports ↔ ids (BPE), pairs ↔ sequences (Vocab); `stats`: held-out PSNR, usage, ..."""

    def __init__(self, vqvae: VQVAE, text: Tokenizer, vocab: Vocab, image_size: int, channels: int, stats=None):
        self.vqvae, self.text, self.vocab = vqvae.eval(), text, vocab
        self.image_size, self.channels, self.stats = image_size, channels, dict(stats or {})
        rows = vocab.text_rows
        self._text_id = None if rows is None else {int(r): i for i, r in enumerate(rows)}  # LLM id -> our text id
        self._spelt = {}  # LLM id not kept -> our text ids of its byte pieces, filled on first use

    def encode_text(self, report: str) -> list:
        return self.text_ids(self.text.encode(report, add_special_tokens=False).ids)  # no BOS: the layout has markers

    def decode_text(self, ids) -> str:
        rows = self.vocab.text_rows
        return self.text.decode([rows[i] for i in ids] if rows is not None else list(ids), skip_special_tokens=True)

    def text_ids(self, ids) -> list:
        """The text tokenizer's ids -> our text ids: the same ids, or with a trimmed vocabulary (Vocab.text_rows) each
        id's position in text_rows, a token not kept written as its byte pieces (which decode to the same bytes)."""
        if self._text_id is None:
            return list(ids)
        out = []
        for i in ids:
            j = self._text_id.get(i)
            out += [j] if j is not None else self._byte_pieces(i)
        return out

    def _byte_pieces(self, llm_id: int) -> list:
        if llm_id not in self._spelt:
            added = self.text.get_added_tokens_decoder().get(llm_id)  # an added token's string is raw text, not pieces
            chars = "".join(BYTE_CHARS[b] for b in added.content.encode()) if added else self.text.id_to_token(llm_id)
            ids = [self._text_id.get(self.text.token_to_id(c)) for c in chars]
            if None in ids:
                raise ValueError(f"text token {llm_id} ({chars!r}) holds a byte that has no single-byte piece in the "
                                 f"text tokenizer, so a trimmed vocabulary cannot write it")
            self._spelt[llm_id] = ids
        return self._spelt[llm_id]

    # Both follow the VQ-VAE's device: tok.vqvae.to('cuda') speeds up encoding a large dataset.
    @torch.no_grad()
    def encode_images(self, images, batch_size=256) -> np.ndarray:  # list of uint8 arrays -> codes int64 (B, N)
        dev = self.vqvae.quantizer.codebook.device
        codes = [self.vqvae.encode(images_to_tensor(images[i:i + batch_size], self.channels, self.image_size).to(dev))
                 for i in range(0, len(images), batch_size)]
        return rearrange(torch.cat(codes).cpu(), "b h w -> b (h w)").numpy()      # raster order, as in the sequence

    @torch.no_grad()
    def decode_codes(self, codes, batch_size=256) -> list:  # codes (B, N) -> list of uint8 arrays
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.vqvae.quantizer.codebook.device)
        grid = [rearrange(c, "b (h w) -> b h w", h=math.isqrt(codes.shape[1])) for c in codes.split(batch_size)]
        return [img for g in grid for img in tensor_to_images(self.vqvae.decode(g).cpu())]

    def encode_pairs(self, pairs, batch_size=256, progress=False) -> np.ndarray:  # -> int64 (N, T)
        rows = []
        for i in tqdm(range(0, len(pairs), batch_size), desc="VQ-encoding", disable=not progress, mininterval=1):
            chunk = [pairs[j] for j in range(i, min(i + batch_size, len(pairs)))]
            try:
                codes = self.encode_images([p.image for p in chunk])
            except ValueError as e:
                raise ValueError(f"pairs {chunk[0].uid}..{chunk[-1].uid}: {e}") from None
            ids = self.text.encode_batch([p.report for p in chunk], add_special_tokens=False)
            rows += [self.vocab.encode(self.text_ids(t.ids), c, p.domain) for t, c, p in zip(ids, codes, chunk)]
        return np.stack(rows) if rows else np.zeros((0, self.vocab.seq_len), np.int64)

    def encode_pair(self, pair) -> np.ndarray:  # -> int64 (T,)
        return self.encode_pairs([pair])[0]

    def decode(self, seq):  # (T,) -> (report str, image uint8 array, domain)
        text_ids, codes, domain = self.vocab.decode(seq)
        return self.decode_text(text_ids), self.decode_codes(codes[None])[0], domain

    def save(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        ck = {"config": self.vqvae.config, "state_dict": self.vqvae.state_dict()}
        meta = dict(self.vocab.to_dict(), image_size=self.image_size, channels=self.channels, stats=self.stats)
        write_atomic(os.path.join(run_dir, "vqvae.pt"), lambda fh: torch.save(ck, fh))
        write_atomic(os.path.join(run_dir, "tokenizer.json"), lambda fh: fh.write(self.text.to_str().encode()))
        write_atomic(os.path.join(run_dir, "vocab.json"), lambda fh: fh.write(json.dumps(meta, indent=1).encode()))

    @staticmethod
    def exists(run_dir: str) -> bool:
        return all(os.path.exists(os.path.join(run_dir, f)) for f in FILES)

    @classmethod
    def load(cls, run_dir: str) -> "MedTokenizer":
        """Every failure names its file: missing, unreadable, or not matching the other two."""
        vq_path, text_path, vocab_path = (os.path.join(run_dir, f) for f in FILES)
        for path in (vq_path, text_path, vocab_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} is missing (train the tokenizers: python tokenizer.py --out {run_dir})")
        try:
            ck = torch.load(vq_path, map_location="cpu", weights_only=True)
            vqvae = VQVAE(**ck["config"])
        except Exception as e:
            raise ValueError(f"{vq_path} is not a readable VQ-VAE checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
        try:
            vqvae.load_state_dict(ck["state_dict"])
        except (RuntimeError, KeyError) as e:
            raise ValueError(f"{vq_path}: the weights do not fit the config saved with them ({str(e)[:300]})") from None
        text = load_text_tokenizer(text_path)
        try:
            with open(vocab_path) as fh:
                meta = json.load(fh)
            text_first = meta.get("text_first", False)  # files written before the field: the image first
            if not isinstance(text_first, bool):
                raise ValueError(f"text_first must be true or false, got {text_first!r}")
            vocab = Vocab(meta["n_text"], meta["K"], meta["n_image_tokens"], meta["text_len"], meta["domains"],
                          meta.get("text_rows"), text_first)
            image_size, channels = int(meta["image_size"]), int(meta["channels"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{vocab_path} is not a valid vocabulary file ({type(e).__name__}: {e})") from None
        size = text.get_vocab_size()
        if vocab.text_rows is None and size != vocab.n_text:
            raise ValueError(f"the text vocabulary of {text_path} is {size} but {vocab_path} says {vocab.n_text}: the "
                             f"files come from different runs")
        if vocab.text_rows is not None and not 0 <= min(vocab.text_rows) <= max(vocab.text_rows) < size:
            raise ValueError(f"{vocab_path} keeps text ids {min(vocab.text_rows)}..{max(vocab.text_rows)}, but "
                             f"{text_path} has {size}: the files come from different runs")
        for what, found, want in [(f"the codebook size K of {vq_path}", vqvae.K, vocab.K),
                                  (f"(image_size/f)² for {vq_path}", (image_size // vqvae.f) ** 2, vocab.n_image_tokens),
                                  (f"the input channels of {vq_path}", vqvae.config["in_channels"], channels)]:
            if found != want:
                raise ValueError(f"{what} is {found} but {vocab_path} says {want}: the files come from different runs")
        return cls(vqvae, text, vocab, image_size, channels, meta.get("stats"))


@torch.no_grad()
def reconstruction_stats(tok: MedTokenizer, pairs) -> dict:
    """On held-out pairs: PSNR (dB) of decode(encode(image)); codebook usage, the share of the K codes used at least once;
    codebook perplexity exp(H) (near K: the codes also spell out pixel noise, which the diffusion model must then learn);
    and on the synthetic toy data the share of findings that `pixel_labels` reads from the reconstructions as labelled."""
    images = [p.image for p in pairs]
    codes = tok.encode_images(images)                                                  # (M, N)
    # a 3-channel (mixed-domain) tokenizer decodes gray images to equal RGB channels: compare them as gray
    recon = [r.mean(2).round().astype(np.uint8) if r.ndim > i.ndim else r for r, i in zip(tok.decode_codes(codes), images)]
    p = np.bincount(codes.ravel(), minlength=tok.vocab.K) / codes.size
    stats = {"psnr_db": psnr_db(recon, images), "codebook_usage": float((p > 0).mean()),
             "codebook_perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))}
    domains = sorted({pair.domain for pair in pairs})
    for d in domains if len(domains) > 1 else []:  # mixed runs: the domains differ a lot (toy pathology is harder)
        mine = [k for k, pair in enumerate(pairs) if pair.domain == d]
        stats[f"psnr_db_{d}"] = psnr_db([recon[k] for k in mine], [images[k] for k in mine])
    toy = [k for k, pair in enumerate(pairs) if pair.uid.startswith("synthetic-") and pair.labels]
    if toy:
        stats["findings_agreement"] = float(np.mean([pixel_labels(recon[k], pairs[k].domain)[name] == value
                                                     for k in toy for name, value in pairs[k].labels.items()]))
    return stats

# ----------------------------------------------------------------------------------------------------------------------
#### Training both tokenizers, and the token cache
# ----------------------------------------------------------------------------------------------------------------------


def train_tokenizers(train_pairs, run_dir: str, image_size: int, *, K=512, f=8, vq_steps=2000, text_vocab=2000,
                     text_len=None, seed=0, max_minutes=None, eval_pairs=None, channels=None, pretrained_text=None,
                     max_pairs=10000, lowercase=False, device="cpu", trim_vocab=True, text_first=False) -> MedTokenizer:
    """Train the VQ-VAE and the BPE on a seeded subset of at most max_pairs training pairs, save them in run_dir, and
    measure the VQ-VAE on eval_pairs (default: up to 500 training pairs held out from VQ training) into `tok.stats`.
    channels: 1 or 3; default 3 as soon as one image is RGB (mixed CXR + pathology: gray is replicated).
    text_len: the text slots L, by default sized from the reports. pretrained_text: an LLM dir or tokenizer.json;
    trim_vocab: keep only its ids these reports use and its byte pieces (trim_text_rows), as compact text ids.
    device: where the VQ-VAE trains ('cuda' for 256-px data); the saved tokenizer is on the CPU. text_first: the
    sequence layout (Vocab), which neither tokenizer depends on."""
    t0, order = time.time(), np.random.default_rng(seed).permutation(len(train_pairs))
    n_hold = 0 if eval_pairs is not None else min(500, len(train_pairs) // 10)
    pairs = [train_pairs[int(i)] for i in tqdm(order[n_hold:n_hold + max_pairs], desc="reading pairs", mininterval=1)]
    if not pairs:
        raise ValueError("train_tokenizers: no training pairs")
    eval_pairs = [train_pairs[int(i)] for i in order[:n_hold]] if eval_pairs is None else eval_pairs
    channels = channels or (3 if any(p.image.ndim == 3 for p in pairs) else 1)
    images = np.stack([np.repeat(p.image[:, :, None], 3, 2) if p.image.ndim == 2 and channels == 3 else p.image
                       for p in pairs])                                            # (M, S, S[, 3]) uint8
    if images.shape[1:3] != (image_size, image_size):
        raise ValueError(f"train_tokenizers: the images are {images.shape[1:3]}, not image_size {image_size}")

    reports = [p.report for p in pairs]
    text = load_text_tokenizer(pretrained_text) if pretrained_text else train_bpe(reports, text_vocab, lowercase)
    ids = [e.ids for e in text.encode_batch(reports, add_special_tokens=False)]
    rows = trim_text_rows(text, ids, pretrained_text) if pretrained_text and trim_vocab else None
    lengths = [len(i) for i in ids]
    text_len = text_len or text_len_for(lengths)
    n_text = text.get_vocab_size() if rows is None else len(rows)
    print(f"text: {n_text} ids{f' kept of {text.get_vocab_size()}' if rows else ''}, reports {np.mean(lengths):.1f} "
          f"ids on average, at most {max(lengths)} -> L = {text_len} text slots ({sum(n >= text_len for n in lengths)} "
          f"of {len(lengths)} reports would be cut)")
    vqvae = train_vqvae(images, channels, K=K, f=f, steps=vq_steps, seed=seed, max_minutes=max_minutes, device=device)
    vocab = Vocab(n_text, K, (image_size // f) ** 2, text_len, text_rows=rows, text_first=text_first)
    tok = MedTokenizer(vqvae, text, vocab, image_size, channels)
    tok.stats = reconstruction_stats(tok, eval_pairs) if len(eval_pairs) else {}
    tok.stats["seconds"] = round(time.time() - t0, 1)
    tok.save(run_dir)
    print(f"tokenizers saved in {run_dir}: vocab {tok.vocab.size}, sequence length {tok.vocab.seq_len} | on "
          f"{len(eval_pairs)} held-out pairs: " + ", ".join(f"{k} {v:.4g}" for k, v in tok.stats.items()))
    return tok


def _cache_key(tok: MedTokenizer, pairs, n_sample=256) -> str:
    """Hash of all the cached tokens depend on: VQ-VAE weights, tokenizer.json, the layout, and the data (its length and
    uid, report and pixels of up to n_sample evenly spaced pairs: hashing every image would cost the full pass over the
    data that the cache exists to save; a different dataset, seed, size or image size changes every pair)."""
    h = hashlib.sha256()
    for name, t in tok.vqvae.state_dict().items():
        h.update(name.encode() + t.contiguous().numpy().tobytes())
    h.update((tok.text.to_str() + json.dumps([tok.vocab.to_dict(), tok.image_size, tok.channels, len(pairs)])).encode())
    for i in np.unique(np.linspace(0, len(pairs) - 1, min(n_sample, len(pairs))).astype(int)):
        p = pairs[int(i)]
        h.update(f"{p.uid}\0{p.report}\0{p.domain}".encode() + np.ascontiguousarray(p.image).tobytes())
    return h.hexdigest()[:16]


def token_cache(tok: MedTokenizer, pairs, run_dir: str, split_name: str) -> np.ndarray:
    """The pairs as token sequences (N, T): uint16 (uint32 past 65,536 ids), stored in run_dir/cache/<split>-<hash>.npy
    and returned as a read-only memmap. The hash covers tokenizer and data, so a stale cache is never read: a changed
    tokenizer or dataset gets a new file and the split's old file is deleted. Truncated reports are counted in
    tok.vocab.n_truncated on a hit as on a miss."""
    cache_dir = os.path.join(run_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{split_name}-{_cache_key(tok, pairs)}.npy")
    meta_path = path[:-4] + ".json"
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        for old in os.listdir(cache_dir):
            if re.fullmatch(re.escape(split_name) + r"-[0-9a-f]{16}\.(npy|json)", old):
                os.remove(os.path.join(cache_dir, old))
        before = tok.vocab.n_truncated
        seqs = tok.encode_pairs(pairs, progress=True)
        truncated, tok.vocab.n_truncated = tok.vocab.n_truncated - before, before      # added back below
        dtype = np.uint16 if tok.vocab.size <= 2 ** 16 else np.uint32
        write_atomic(path, lambda fh: np.save(fh, seqs.astype(dtype)))
        write_atomic(meta_path, lambda fh: fh.write(json.dumps({"n": len(pairs), "n_truncated": truncated}).encode()))
    with open(meta_path) as fh:
        truncated = json.load(fh)["n_truncated"]
    tok.vocab.n_truncated += truncated
    if truncated:
        print(f"token cache '{split_name}': {truncated} of {len(pairs)} reports cut to {tok.vocab.text_len - 1} ids")
    return np.load(path, mmap_mode="r")

# ----------------------------------------------------------------------------------------------------------------------
#### CLI: python tokenizer.py --data synthetic --out runs/tok
# ----------------------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Train the VQ-VAE + BPE tokenizers of a MeDiM run; report their quality.")
    ap.add_argument("--data", default="synthetic", help="synthetic | synthetic-path | mimic | pathgen, comma-separated to mix")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True, help="run directory: vqvae.pt, tokenizer.json and vocab.json go here")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--K", type=int, default=512, help="codebook size")
    ap.add_argument("--f", type=int, default=8, help="downsampling factor: (image_size/f)² image tokens")
    ap.add_argument("--steps", type=int, default=2000, help="VQ-VAE training steps (batch 16)")
    ap.add_argument("--text-vocab", type=int, default=2000)
    ap.add_argument("--text-len", type=int, default=None, help="text slots (default: longest training report + 1)")
    ap.add_argument("--pretrained-text", default=None, help="an LLM directory or tokenizer.json to use instead of BPE")
    ap.add_argument("--no-trim-vocab", dest="trim_vocab", action="store_false",
                    help="with --pretrained-text: keep all its ids (default: only those the reports use + byte pieces)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=None, help="cut VQ training after this long (not deterministic)")
    ap.add_argument("--device", default="cpu", help="where the VQ-VAE trains: cpu | cuda")
    ap.add_argument("--limit", type=int, default=None, help="use a seeded subset of this many pairs per split")
    args = ap.parse_args()
    train = load_pairs(args.data, "train", args.data_dir, image_size=args.image_size, seed=args.seed, limit=args.limit)
    try:  # the quality numbers come from the test split; real data may not have one
        held_out = load_pairs(args.data, "test", args.data_dir, image_size=args.image_size, seed=args.seed, limit=args.limit)
    except (ValueError, FileNotFoundError) as e:
        print(f"no test split ({e}): measuring on training pairs held out from VQ training")
        held_out = None
    train_tokenizers(train, args.out, args.image_size, K=args.K, f=args.f, vq_steps=args.steps, text_vocab=args.text_vocab,
                     text_len=args.text_len, seed=args.seed, max_minutes=args.max_minutes, eval_pairs=held_out,
                     pretrained_text=args.pretrained_text, device=args.device, trim_vocab=args.trim_vocab)
