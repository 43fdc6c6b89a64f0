"""
MeDiM in one file: a bidirectional Llama / Qwen2 / Gemma transformer with timestep AdaLN, trained as an absorbing-state
(masked) discrete diffusion model over ONE sequence holding an image (VQ codes) and its report (text ids), sampled with
MaskGIT and classifier-free guidance, and initialisable from a pretrained causal LLM checkpoint.

    [<domain>] [<boi>] img_1 .. img_N [<eoi>] txt_1 .. txt_L        segment_ids: 0 = never diffused, 1 = image, 2 = text

Papers:
  MeDiM    Mao et al. 2025, Discrete Diffusion Models with MLLMs for Unified Medical Multimodal Generation,
           arXiv 2510.06131
  MDLM     Sahoo et al. 2024, Simple and Effective Masked Diffusion Language Models, arXiv 2406.07524 (SUBS, NELBO)
  MaskGIT  Chang et al. 2022, arXiv 2202.04200 (confidence-ordered parallel decoding)
  LLaDA    Nie et al. 2025, Large Language Diffusion Models, arXiv 2502.09992 (LLM minus causal mask = mask predictor)
  DiT      Peebles & Xie 2023, arXiv 2212.09748 (timestep embedding, AdaLN)
  UniDisc  Swerdlow et al. 2025, arXiv 2503.20853 (the code MeDiM forks; whole-modality masking)
Reference code (read, not copied): karpathy/nanoGPT model.py, facebookresearch/DiT models.py, kuleshov-group/mdlm
diffusion.py, ML-GSAI/LLaDA generate.py, HF transformers modeling_{llama,qwen2,gemma}.py (for the weight names),
UCSC-VLAA/MeDiM. docs/paper-notes.md holds our notes on the paper and the official code (cited by their headings).
"""
import json
import math
import os
import re
import struct
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

IMAGE, TEXT = 1, 2  # segment ids of the two diffused modalities (0 = tags / <boi> / <eoi>, never diffused)


@dataclass
class MeDiMConfig:
    vocab_size: int = 1024        # one id space: text | specials | [MASK] | image codes (tokenizer.Vocab.size)
    seq_len: int = 256            # longest sequence the model will see; sizes the cached RoPE tables
    mask_id: int = -1             # id of [MASK] (tokenizer.Vocab.mask_id); -1 = not set (only diffusion/sampling need it)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 0           # key/value heads (grouped-query attention); 0 = n_heads
    head_dim: int = 0             # 0 = d_model // n_heads; Gemma-7B has 16 heads x 256 = 4096 != d_model 3072
    d_ff: int = 384               # hidden width of the gated MLP
    act: str = 'silu'             # 'silu' (SwiGLU: Llama, Qwen2) | 'gelu_tanh' (GeGLU: Gemma, Liquid)
    norm_plus_one: bool = False   # Gemma RMSNorm: x_hat * (1 + w), w initialised at 0 (Llama: x_hat * w, w at 1)
    embed_scale: bool = False     # Gemma: token embeddings x sqrt(d_model)
    qkv_bias: bool = False        # Qwen2: biases on the q/k/v projections (never on o_proj)
    tie_embeddings: bool = False  # lm_head reuses the embedding matrix (Gemma, small Qwen2)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    causal: bool = False          # True brings the causal mask back (the paper's "w/ causal mask" ablation)
    time_cond: str = 'adaln'      # 'adaln' | 'add' (paper App. B "w/o AdaLN") | 'none' ("w/o timestep embedding")
    time_freq_dim: int = 256      # sinusoid features of the noise level (DiT; MeDiM §2.2)
    abs_pos: bool = False         # a learned absolute position embedding added to the tokens, on top of RoPE (not in
                                  # the paper): tells each image token where it sits in the 2-D grid (see MeDiM.forward)
    next_token_readout: bool = False  # token i's logits from position i-1's state, where an autoregressive LLM's
                                  # head names it (Dream's and DiffuLLaMA's shift, MeDiM.forward); False: its own
    attn_impl: str = 'sdpa'       # 'sdpa' (fused kernel) | 'manual' (the same math written out; slower, for reading)
    init_std: float = 0.02        # N(0, init_std) for fresh weights (GPT-2 / DiT)

    def __post_init__(self):
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        self.head_dim = self.head_dim or self.d_model // self.n_heads
        choices = dict(act=('silu', 'gelu_tanh'), time_cond=('adaln', 'add', 'none'), attn_impl=('sdpa', 'manual'))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"MeDiMConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"MeDiMConfig: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"MeDiMConfig: head_dim {self.head_dim} must be even for RoPE")
        if not -1 <= self.mask_id < self.vocab_size:
            raise ValueError(f"MeDiMConfig: mask_id {self.mask_id} is outside the vocabulary (size {self.vocab_size})")


# Architectures only: vocab_size, seq_len and mask_id come from the tokenizer's Vocab, e.g.
# MeDiMConfig(**PRESETS['small'], vocab_size=vocab.size, seq_len=vocab.seq_len, mask_id=vocab.mask_id).
PRESETS = {
    'tiny': dict(d_model=32, n_layers=2, n_heads=2, d_ff=64),                 # unit tests
    'small': dict(d_model=128, n_layers=4, n_heads=4, d_ff=384),              # CPU default: 1.25M params in the blocks
    'base': dict(d_model=512, n_layers=8, n_heads=8, d_ff=1536),              # one GPU, or a patient CPU
    # MeDiM §3.2: Liquid, a Gemma-7B; the official code keeps its first 10 layers (docs/paper-notes.md "Backbone")
    'gemma-7b-10L': dict(d_model=3072, n_layers=10, n_heads=16, n_kv_heads=16, head_dim=256, d_ff=24576,
                         act='gelu_tanh', norm_plus_one=True, embed_scale=True, tie_embeddings=True),
}

# ----------------------------------------------------------------------------------------------------------------------
#### Backbone: RMSNorm, RoPE, attention, gated MLP (Llama family; module names match HF so weights load key for key)
# ----------------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, plus_one):
        super().__init__()
        self.eps, self.plus_one = eps, plus_one
        self.weight = nn.Parameter(torch.zeros(dim) if plus_one else torch.ones(dim))

    def normalize(self, x):
        xf = x.float()  # the statistics in fp32 whatever the activation dtype, as HF does
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)

    def gain(self):
        return 1.0 + self.weight.float() if self.plus_one else self.weight

    def forward(self, x):
        if self.plus_one:  # Gemma scales in fp32 and casts after ("(x * w).to(float16)")
            return (self.normalize(x) * self.gain()).type_as(x)
        return self.gain() * self.normalize(x).type_as(x)  # Llama casts first, then scales


def rope_tables(seq_len, head_dim, theta):
    """cos/sin of the RoPE angles pos * theta^(-2i/head_dim), (seq_len, head_dim/2) each. Built once per model."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)               # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate the pairs (x[i], x[i + hd/2]) by their angles: HF's half-split layout, x*cos + rotate_half(x)*sin written on
    the two halves (HF repeats the tables twice; we don't), so HF q/k weights load unpermuted. x: (B, H, T, hd)."""
    x1, x2 = x.chunk(2, dim=-1)                   # (B, H, T, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)   # (T, hd/2), broadcast over B and H
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, Hkv, hd, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
        self.n_heads, self.n_kv_heads, self.head_dim, self.impl = H, Hkv, hd, cfg.attn_impl
        self.q_proj = nn.Linear(d, H * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, Hkv * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, Hkv * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(H * hd, d, bias=False)

    def forward(self, x, cos, sin, attn_mask, is_causal):
        """x (B, T, D); attn_mask None or bool (B, 1, 1|T, T) with True = may attend; is_causal only without attn_mask."""
        q = rearrange(self.q_proj(x), 'b t (h d) -> b h t d', d=self.head_dim)  # (B, H, T, hd)
        k = rearrange(self.k_proj(x), 'b t (h d) -> b h t d', d=self.head_dim)  # (B, Hkv, T, hd)
        v = rearrange(self.v_proj(x), 'b t (h d) -> b h t d', d=self.head_dim)  # (B, Hkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.impl == 'sdpa':  # a fused kernel; GQA shares each k/v head among n_heads / n_kv_heads query heads
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               enable_gqa=self.n_kv_heads != self.n_heads)  # (B, H, T, hd)
        else:  # what the kernel computes: softmax(q k^T / sqrt(hd)) v over the keys each query may see
            k, v = (z.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1) for z in (k, v))  # (B, H, T, hd)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)                          # (B, H, T, T)
            if is_causal:
                attn_mask = torch.ones(att.shape[-2:], dtype=torch.bool, device=x.device).tril()
            if attn_mask is not None:
                att = att.masked_fill(~attn_mask, float('-inf'))
            y = att.softmax(dim=-1) @ v                                                           # (B, H, T, hd)
        return self.o_proj(rearrange(y, 'b h t d -> b t (h d)'))                                  # (B, T, D)


class MLP(nn.Module):
    """Gated MLP: down(act(gate(x)) * up(x)); SwiGLU with silu (Llama, Qwen2), GeGLU with tanh-GELU (Gemma)."""

    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.act = F.silu if cfg.act == 'silu' else lambda z: F.gelu(z, approximate='tanh')

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))

# ----------------------------------------------------------------------------------------------------------------------
#### Timestep + AdaLN: the noise schedule, the time embedding, the block and the whole model
# ----------------------------------------------------------------------------------------------------------------------

SCHEDULE_EPS = 1e-3  # MDLM's log-linear schedule keeps the mask probability in [0, 1 - eps] so sigma stays finite


def mask_prob(t):
    """Log-linear schedule (MDLM; docs/paper-notes.md "Training loss"): at time t in [0, 1] each diffused token is
    [MASK] with probability (1 - eps) t."""
    return (1 - SCHEDULE_EPS) * t


def noise_level(t):
    """Total noise sigma(t) = -log(1 - (1 - eps) t), in [0, 6.9]: what the official code embeds, not t itself."""
    return -torch.log1p(-mask_prob(t))


class TimestepEmbedder(nn.Module):
    """sigma -> 256 sinusoid features (GLIDE/DiT: frequencies 10000^(-i/128), cos first) -> Linear, SiLU, Linear
    (MeDiM §2.2). Named like the official checkpoint (model.time_embedder.mlp.{0,2})."""

    def __init__(self, d_model, freq_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        half = freq_dim // 2
        self.register_buffer('freqs', torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)

    def forward(self, t):
        args = noise_level(t.float())[:, None] * self.freqs[None]      # (B, freq_dim/2)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))  # (B, D)


def modulate(x, norm, shift, scale):
    """AdaLN (DiT) after an RMSNorm: norm(x) * (1 + scale) + shift, a per-sample shift and scale on top of the
    normalised activations. The norm's own gain is folded into the scale, so it is one pass over x instead of two
    (it runs twice per layer). x (B, T, D); shift, scale (B, 1, D)."""
    return torch.addcmul(shift, norm.normalize(x), norm.gain() * (1 + scale)).type_as(x)


class Block(nn.Module):
    """Pre-norm decoder block; with time_cond='adaln' (MeDiM §2.2, DiT §3.2):
        h   = x + (1 + gate_msa) * Attn(RMSNorm1(x) * (1 + scale_msa) + shift_msa)
        out = h + (1 + gate_mlp) * MLP (RMSNorm2(h) * (1 + scale_mlp) + shift_mlp)
    The pretrained norm affine is kept and the modulation applied on top of it, as in the official code."""

    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_plus_one)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_plus_one)
        self.mlp = MLP(cfg)
        self.adaLN_modulation = nn.Linear(cfg.d_model, 6 * cfg.d_model) if cfg.time_cond == 'adaln' else None

    def forward(self, x, c, cos, sin, attn_mask, is_causal):
        if self.adaLN_modulation is None:  # plain Llama/Gemma block
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, is_causal)
            return x + self.mlp(self.post_attention_layernorm(x))
        mods = rearrange(self.adaLN_modulation(c), 'b (k d) -> k b 1 d', k=6)  # 6 x (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods  # the official chunk order
        h = modulate(x, self.input_layernorm, shift_msa, scale_msa)
        x = torch.addcmul(x, 1 + gate_msa, self.self_attn(h, cos, sin, attn_mask, is_causal))  # x + (1 + g) * attn
        h = modulate(x, self.post_attention_layernorm, shift_mlp, scale_mlp)
        return torch.addcmul(x, 1 + gate_mlp, self.mlp(h))                                     # x + (1 + g) * mlp


class MeDiM(nn.Module):
    """The denoiser: ids x_t (B, T) and time t (B,) -> logits (B, T, V) over the clean tokens, read at each token's own
    position by default, or one position earlier with cfg.next_token_readout (docs/paper-notes.md "From an
    autoregressive LLM to a diffusion model")."""

    def __init__(self, cfg: MeDiMConfig):
        super().__init__()
        self.cfg = cfg
        self.model = nn.ModuleDict(dict(  # HF's "model." prefix, so keys read model.layers.3.mlp.up_proj.weight etc.
            embed_tokens=nn.Embedding(cfg.vocab_size, cfg.d_model),
            layers=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)]),
            norm=RMSNorm(cfg.d_model, cfg.norm_eps, cfg.norm_plus_one),  # no AdaLN on the final norm (official code)
        ))
        if cfg.time_cond != 'none':
            self.model['time_embedder'] = TimestepEmbedder(cfg.d_model, cfg.time_freq_dim)
        if cfg.abs_pos:
            self.model['pos_embed'] = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)  # cached: never recomputed per forward
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        cfg = self.cfg
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, cfg.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.model.layers:  # GPT-2: residual projections scaled by 1/sqrt(2 n_layers) (nanoGPT)
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(proj.weight, 0.0, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        # The AdaLN init choice (docs/paper-notes.md "The official code: quirks and what medim does instead"). We zero
        # the modulation Linear AND write the gates as (1 + g), so at init shift = scale = g = 0 and every block
        # computes exactly its plain pre-norm function: a model loaded with from_pretrained starts as the pretrained
        # LLM (made bidirectional), bit for bit (tests/test_medim_pretrained.py).
        #  - DiT's AdaLN-Zero multiplies by g itself (gate = 0 at init): every block starts as the identity, which throws
        #    the pretrained blocks away at step 0 and must relearn to use them.
        #  - The official MeDiM code declares AdaLN-Zero, but transformers' ignore_mismatched_sizes re-initialises the
        #    layer to N(0, 0.02), so its gates start small and random: neither identity nor pretrained.
        # From scratch, (1 + g) with g = 0 is an ordinary pre-norm transformer, also a fine start. Gradients still flow:
        # dL/dW of the modulation is (dL/d mods) outer SiLU(t_emb), non-zero because the time MLP is random (DiT init).
        for block in self.model.layers:
            if block.adaLN_modulation is not None:
                nn.init.zeros_(block.adaLN_modulation.weight)
                nn.init.zeros_(block.adaLN_modulation.bias)
        if cfg.time_cond == 'add':  # the added time embedding starts at 0 too, so it cannot disturb pretrained inputs
            nn.init.zeros_(self.model.time_embedder.mlp[2].weight)
            nn.init.zeros_(self.model.time_embedder.mlp[2].bias)
        if cfg.abs_pos:  # additive, so zero is an identity start that still gets gradient
            nn.init.zeros_(self.model.pos_embed.weight)

    def forward(self, x, t=None, key_padding_mask=None, logits_at=None, columns=None):
        """x (B, T) long; t (B,) float time in [0, 1] (unused with time_cond='none'); key_padding_mask optional bool
        (B, T), True = a padding key nobody attends to (PyTorch's convention); logits_at optional bool (B, T) or long (M,)
        flat indices: logits only there, (M, V) row-major (the loss needs them at masked tokens only: up to half the
        lm_head and the logits memory saved, which matters with an LLM's vocabulary). columns optional
        {segment: ((M_s,) rows of those M, (V_s,) ids)}: then {segment: (M_s, V_s)}, each row's logits at its ids alone
        (the loss and the sampler: image rows need only the codebook's columns). Returns float32 logits."""
        cfg = self.cfg
        B, T = x.shape
        if T > cfg.seq_len:
            raise ValueError(f"MeDiM.forward: sequence length {T} > cfg.seq_len {cfg.seq_len}")
        if logits_at is not None and logits_at.dtype == torch.bool:
            logits_at = logits_at.flatten().nonzero().squeeze(1)  # (M,) now, while a GPU's queue is short: it syncs
        h = self.model.embed_tokens(x)                                       # (B, T, D)
        if cfg.embed_scale:  # Gemma: sqrt(d) cast to the weight dtype first (55.4256 is 55.5 in bf16), as HF does
            h = h * torch.tensor(math.sqrt(cfg.d_model), dtype=h.dtype)
        if cfg.abs_pos:
            # Why absolute positions when RoPE is there: RoPE scores depend on the query-key offset only. An image token
            # finds its place from its fixed offset to <boi>, but a report word reading "the lower right lung" sits at a
            # different offset from it in every report; with its grid position written into its content, the image
            # token can be found by what it is, wherever the asking word sits.
            h = h + self.model.pos_embed.weight[:T]                          # (B, T, D) + (T, D)
        c = None
        if cfg.time_cond != 'none':
            if t is None:
                raise ValueError(f"MeDiM.forward: time_cond={cfg.time_cond!r} needs t, a (B,) float tensor")
            t_emb = self.model.time_embedder(t.reshape(B))                   # (B, D)
            if cfg.time_cond == 'add':
                h = h + t_emb[:, None, :]  # one vector added to every token ("weighted addition", App. B)
            else:
                c = F.silu(t_emb)  # DiT puts a SiLU before adaLN_modulation; the official code has none
        attn_mask, is_causal = None, cfg.causal  # no mask at all in the common bidirectional case: the fast path
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]                 # (B, 1, 1, T) True = may attend
            if cfg.causal:
                attn_mask = attn_mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (B, 1, T, T)
            is_causal = False
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]                      # (T, hd/2)
        for block in self.model.layers:
            h = block(h, c, cos, sin, attn_mask, is_causal)
        h = self.model.norm(h)                                               # (B, T, D)
        if cfg.next_token_readout:
            # An autoregressive LLM's head at position i-1 names token i: read token i there, so a whole loaded LLM
            # starts with its own read-out (docs/experiments.md "Where to read a loaded LLM's logits"). Position 0
            # (a tag, never a target) keeps its own state so the shapes stay (B, T, D).
            h = torch.cat([h[:, :1], h[:, :-1]], dim=1)                      # (B, T, D): row i is state i-1
        if logits_at is not None:
            h = h.flatten(0, 1).index_select(0, logits_at)                   # (M, D)
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if columns is None:
            return F.linear(h, weight).float()                               # (B, T, V) or (M, V)
        # each row's logits over its segment's ids alone (SUBS rule 3 before the head, not after): image rows need
        # 512 columns, not the whole vocabulary, and no (M, V) tensor is made, gathered from, or back-propagated
        return {s: F.linear(h.index_select(0, r), weight.index_select(0, ids)).float()    # (M_s, V_s)
                for s, (r, ids) in columns.items()}

# ----------------------------------------------------------------------------------------------------------------------
#### Masked diffusion (MDLM SUBS): t, the forward process, the SUBS parameterisation, the loss
# ----------------------------------------------------------------------------------------------------------------------

JOINT, TEXT_GIVEN, IMAGE_GIVEN = 0, 1, 2  # what a training row learns: both modalities noised | t2i | i2t


def _uniform(shape, generator, device, dtype=torch.float32):
    """U[0, 1) drawn on the generator's device (so one CPU generator reproduces a run on any device), moved to device."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def sample_t(B, generator=None, device='cpu'):
    """Stratified ("antithetic", MDLM _sample_t) times: row i gets t uniform in the i-th of B equal slices of [eps, 1],
    so every batch covers all noise levels (lower-variance loss than B independent draws)."""
    u = (torch.arange(B, device=device) + _uniform(B, generator, device)) / B  # (B,) one per stratum
    return (1 - SCHEDULE_EPS) * u + SCHEDULE_EPS


def q_xt(x0, p_mask, mask_id, generator=None):
    """Forward process q(x_t | x_0) of absorbing-state diffusion: each token independently becomes [MASK] with its own
    probability p_mask (B, T) (0 where never diffused), else stays x0 (MDLM q_xt, with per-token probabilities)."""
    return torch.where(_uniform(x0.shape, generator, x0.device) < p_mask, mask_id, x0)


def token_mask_probs(t, segment_ids, task, *, i2t_power=0.0, t2i_power=0.0):
    """(B, T) mask probability of each token, given each row's time t (B,) and task (B,). JOINT: both modalities at
    mask_prob(t), one t shared by image and text (MeDiM §2.1). TEXT_GIVEN (t2i): text clean, image at
    mask_prob(t ** t2i_power); IMAGE_GIVEN (i2t): the reverse with i2t_power. Power 0 masks the target fully (UniDisc's
    whole-modality masking); 0.5, heavier than t but not fully, was better for reports (docs/experiments.md): a
    parallel decoder decides a report's content while most of it is still masked."""
    p_joint = mask_prob(t)                                                                     # (B,)
    p_img = torch.where(task == TEXT_GIVEN, mask_prob(t ** t2i_power), p_joint).masked_fill(task == IMAGE_GIVEN, 0)
    p_txt = torch.where(task == IMAGE_GIVEN, mask_prob(t ** i2t_power), p_joint).masked_fill(task == TEXT_GIVEN, 0)
    p = torch.where(segment_ids == IMAGE, p_img[:, None], p_txt[:, None])                   # (B, T)
    return p.masked_fill(segment_ids == 0, 0.0)


def segment_vocab(legal, mask_id):
    """{segment: (V_s,) long, the ids legal at its slots, sorted, never [MASK]} for the image and text segments."""
    not_mask = torch.arange(legal.shape[1], device=legal.device) != mask_id
    return {s: (legal[s] & not_mask).nonzero().squeeze(1) for s in (IMAGE, TEXT)}


def segment_rows(seg_m):
    """{segment: (M_s,) long}: which of M masked positions (their segment ids seg_m (M,)) belong to each modality."""
    return {s: (seg_m == s).nonzero().squeeze(1) for s in (IMAGE, TEXT)}


def segment_columns(rows, vocab):
    """MeDiM.forward's columns: {segment: ((M_s,) rows, (V_s,) ids)}, each masked row with its own segment's ids, from
    segment_rows and segment_vocab."""
    return {s: (r, vocab[s]) for s, r in rows.items()}


def at_columns(logits, columns):
    """{segment: (M_s, V_s)}: what MeDiM.forward(columns=...) computes, cut from logits (M, V) over every id; columns
    {segment: ((M_s,) rows, (V_s,) ids)}."""
    return {s: logits[r[:, None], ids] for s, (r, ids) in columns.items()}


def subs_logprobs(logits, rows, vocab):
    """SUBS parameterisation (MDLM §3.2, diffusion.py _subs_parameterization) with MeDiM's per-segment vocabulary
    (docs/paper-notes.md "Vocabulary and sequence"), where the loss and the sampler need it: at the masked positions.
      1. carry-over unmasking: an unmasked position copies its token (log p = 0 there), so it needs no logits at all;
      2. zero masking probability: [MASK] is never predicted;
      3. a position only produces the ids legal for its segment (image codes at image slots, text ids at text slots).
    So at a masked position SUBS is the softmax over its segment's legal ids alone, computed on those columns only:
    no exp(-inf) (a slow path on CPU), no work for ids a slot may never use.
    logits (M, V) at M masked positions; rows {segment: (M_s,)} from segment_rows; vocab {segment: (V_s,)} from
    segment_vocab; or logits already {segment: (M_s, V_s)} on those columns (MeDiM.forward(columns=...)).
    Returns {segment: (M_s, V_s) float32 log p}, column j being the id vocab[segment][j]."""
    if not isinstance(logits, dict):
        logits = at_columns(logits, segment_columns(rows, vocab))                         # {s: (M_s, V_s)}
    return {s: l.float().log_softmax(-1) for s, l in logits.items()}


def subs_logprob_of(logits, rows, vocab, ids):
    """log p (M,) float32 of the ids (M,) at the M masked positions of logits (M, V) or {s: (M_s, V_s)}, under
    subs_logprobs."""
    out = torch.zeros(len(ids), device=ids.device)
    for s, logp in subs_logprobs(logits, rows, vocab).items():                          # (M_s, V_s)
        column = torch.searchsorted(vocab[s], ids[rows[s]])                              # (M_s,) the ids' columns
        out[rows[s]] = logp.gather(1, column[:, None]).squeeze(1)
    return out


def diffusion_loss(model, x0, segment_ids, legal, *, generator=None, cond_frac=0.15, cond_text_share=0.5,
                   i2t_power=0.0, t2i_power=0.0, loss_weight='elbo', t=None):
    """One MDLM training loss on clean sequences x0 (B, T) long. The keyword defaults are the paper's recipe (MeDiM
    §2.1 with UniDisc's whole-modality masking; docs/paper-notes.md "Training loss"); train.py passes the values this
    repository measured to work better at its scale (train.PAPER lists both).

    segment_ids (T,) or (B, T) long: 0 never diffused, 1 image, 2 text (text slots include <eos> and <pad>, diffused and
    predicted like any token, so the model learns report length). legal (3, V) bool: the legal ids of each segment.
      cond_frac        share of rows where one modality is the clean condition (UniDisc; the official code sets
                       mask_entire_modality 0.15 but never reads it): the pure t2i / i2t states the sampler starts
                       from, and the unconditional branch CFG needs.
      cond_text_share  of those rows, the share where the TEXT is given (t2i); the rest are i2t.
      i2t_power, t2i_power   the target modality's mask rate there is t ** power (0 = fully masked); token_mask_probs.
      loss_weight      'elbo': CE of each masked token / its mask probability, summed, per diffused token: the MDLM
                       NELBO, whose weight alpha'/(1 - alpha) is 1/t for the log-linear schedule (MDLM Eq. 10,
                       diffusion.py L894; LLaDA's CE / p_mask is the same). 'uniform': mean CE over masked tokens
                       (MaskGIT), no bound.
      t                optional (B,) times instead of sample_t (tests).
    The model's time input is the masked share of the row's diffused tokens: a function of x_t, so the sampler feeds
    exactly the same quantity (the official sampler feeds a linear t that does not match its arccos schedule).
    Returns (loss, stats): stats holds detached scalars for logging (loss_image, loss_text, mask_frac, task shares)."""
    cfg = model.cfg
    if cfg.mask_id < 0:
        raise ValueError("diffusion_loss: model.cfg.mask_id is not set (use tokenizer Vocab.mask_id)")
    if loss_weight not in ('elbo', 'uniform'):
        raise ValueError(f"diffusion_loss: loss_weight must be 'elbo' or 'uniform', got {loss_weight!r}")
    B, T = x0.shape
    seg = segment_ids.to(x0.device).expand(B, T)                                       # (B, T)
    legal = legal.to(x0.device)
    if not legal[seg, x0].all():
        raise ValueError("diffusion_loss: x0 holds ids that are illegal for their segment (or [MASK]); check the Vocab")
    diffused = seg > 0                                                                 # (B, T)
    # 1. the task of each row, its time, and the masking
    u = _uniform((B, 2), generator, x0.device)
    task = torch.where(u[:, 0] < cond_frac, torch.where(u[:, 1] < cond_text_share, TEXT_GIVEN, IMAGE_GIVEN), JOINT)
    t = sample_t(B, generator, x0.device) if t is None else t.to(x0.device)           # (B,)
    p_mask = token_mask_probs(t, seg, task, i2t_power=i2t_power, t2i_power=t2i_power)  # (B, T)
    xt = q_xt(x0, p_mask, cfg.mask_id, generator)
    masked = xt == cfg.mask_id                                                         # (B, T)
    # every index is found before the forward: on a GPU, finding them waits for the queue, which is short here
    seg_m = seg[masked]                                                                # (M,) row-major, like the logits
    rows = segment_rows(seg_m)                                                         # masked rows of each modality
    weight = 1 / p_mask[masked] if loss_weight == 'elbo' else torch.ones_like(seg_m, dtype=torch.float)  # (M,)
    x0_m, vocab = x0[masked], segment_vocab(legal, cfg.mask_id)
    # 2. denoise: logits only where there is something to predict
    t_in = masked.sum(1) / diffused.sum(1).clamp(min=1)                                # (B,)
    logits = model(xt, t_in, logits_at=masked, columns=segment_columns(rows, vocab))  # {s: (M_s, V_s)}
    # 3. -log p_theta(x0 | xt) at the masked tokens (unmasked ones carry over: log p = 0, nothing to learn)
    nll = -subs_logprob_of(logits, rows, vocab, x0_m)                                  # (M,)
    total = {s: (nll[r] * weight[r]).sum() for s, r in rows.items()}  # modality -> sum of weight x CE
    if loss_weight == 'elbo':  # the NELBO: sum of CE / p_mask over the masked tokens, per diffused token
        denom = {s: (seg == s).sum() for s in (IMAGE, TEXT)}
        loss = (total[IMAGE] + total[TEXT]) / diffused.sum()
    else:                      # plain mean CE over the masked tokens
        denom = {s: (seg_m == s).sum() for s in (IMAGE, TEXT)}
        loss = (total[IMAGE] + total[TEXT]) / masked.sum().clamp(min=1)
    with torch.no_grad():
        stats = dict(loss=loss.detach(),
                     loss_image=total[IMAGE].detach() / denom[IMAGE].clamp(min=1),
                     loss_text=total[TEXT].detach() / denom[TEXT].clamp(min=1),
                     mask_frac=masked.sum() / diffused.sum(),
                     frac_text_given=(task == TEXT_GIVEN).float().mean(),
                     frac_image_given=(task == IMAGE_GIVEN).float().mean())
    return loss, stats

# ----------------------------------------------------------------------------------------------------------------------
#### Sampler (MaskGIT/LLaDA): reveal counts, noisy confidence, batched CFG; faster decoders (Fast-dLLM, ReMDM)
# ----------------------------------------------------------------------------------------------------------------------


JOINT_ORDERS = ("alternating", "report_first")


@dataclass
class SamplerConfig:
    """How sample() fills the masks: one place for every sampler setting and its default (this repository's measured
    choices, docs/experiments.md; train.PAPER lists the paper's). Each field keeps its name from the command-line flag
    (--cfg-scale) to the checkpoint (ck['sampler']) and here. threshold .. remask_ratio are faster or refining decoders
    (docs/paper-notes.md "Sampling"); reports are decoded in blocks of 16 with a 0.7 threshold, a quarter of the forwards
    of one slot per step for the same label F1 (docs/experiments.md "Faster decoders"); the joint_ fields are read by
    sample.py's generate, which draws pairs generated together in several sample() calls."""
    sample_steps: int = 16          # MaskGIT steps per modality, at most one per masked token
    text_steps: int = 0             # text-slot steps; 0 = one per slot if left to right or in blocks, else sample_steps
    cfg_scale: float = 2.0          # guidance w at image slots (report -> image): logits (1 + w) c - w u; 0 = off
    i2t_cfg_scale: float = 2.0      # guidance w at text slots (image -> report)
    temperature: float = 1.0        # Gumbel noise on the confidence, annealed to 0 (MaskGIT's choice temperature)
    token_temperature: float = 0.0  # tokens drawn from softmax(log p / token_temperature); 0 = argmax, 1 = the model's
    text_left_to_right: bool = True  # reveal text slots in position order, not by confidence (when text_block is 0)
    threshold: float = 0.7          # Fast-dLLM: also reveal every text slot whose drawn token has p > threshold; 0 = off
    image_threshold: float = 0.0    # the same for image slots (off: 16 steps already, and no gain measured)
    text_block: int = 16            # LLaDA semi-autoregressive blocks: text slots per block, left to right; 0 = off
    remask_steps: int = 0           # ReMDM-loop steps after the last reveal, each re-predicting the least sure tokens
    remask_ratio: float = 0.1       # share of each modality's generated tokens put back to [MASK] per remask step
    joint_order: str = "alternating"  # pairs generated together (docs/experiments.md "Joint pairs"): both halves at
    #   once in random order, then the report again from the image, then the image again from the report |
    #   'report_first': the report alone, then the image from it as report -> image
    joint_steps: int = 64           # alternating: steps of the random-order pass (64: one image code per step)
    joint_token_temperature: float = 1.0  # pairs generated together: their tokens drawn at this temperature
    candidates: int = 1             # sample.py's generate: draws per sample, keeping the one beside which the model
    #   finds the given half likeliest (sample.best_of; for a joint pair, its last pass: the image from the report)

    def __post_init__(self):
        if self.sample_steps < 1 or self.text_steps < 0:
            raise ValueError(f"SamplerConfig: sample_steps must be >= 1 and text_steps >= 0, got {self.sample_steps}, "
                             f"{self.text_steps}")
        if min(self.temperature, self.token_temperature, self.joint_token_temperature) < 0:
            raise ValueError(f"SamplerConfig: temperatures must be >= 0, got temperature {self.temperature}, "
                             f"token_temperature {self.token_temperature}, joint_token_temperature "
                             f"{self.joint_token_temperature}")
        if not (0 <= self.threshold <= 1 and 0 <= self.image_threshold <= 1):
            raise ValueError(f"SamplerConfig: threshold and image_threshold must be in [0, 1] (0 = off), got "
                             f"{self.threshold}, {self.image_threshold}")
        if self.text_block < 0 or self.remask_steps < 0:
            raise ValueError(f"SamplerConfig: text_block and remask_steps must be >= 0, got {self.text_block}, "
                             f"{self.remask_steps}")
        if self.joint_order not in JOINT_ORDERS or self.joint_steps < 1:
            raise ValueError(f"SamplerConfig: joint_order must be one of {JOINT_ORDERS} and joint_steps >= 1, got "
                             f"{self.joint_order!r}, {self.joint_steps}")
        if self.candidates < 1:
            raise ValueError(f"SamplerConfig: candidates must be >= 1, got {self.candidates}")
        if not 0 < self.remask_ratio <= 1:
            raise ValueError(f"SamplerConfig: remask_ratio must be in (0, 1], got {self.remask_ratio}")

    @classmethod
    def from_dict(cls, d):
        """The fields found in d (a saved ck['sampler'], or the train_config of a checkpoint written before the sampler
        had its own entry: the same names), the defaults for the rest."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def reveal_counts(n_masked, steps, schedule='arccos'):
    """Tokens to reveal at each of `steps` steps, (B, steps) long, for rows with n_masked (B,) masked tokens. 'arccos':
    the official adap_sche (MaskGIT's cosine family), step i's share is proportional to arccos(1 - (i+1)/steps): few
    tokens early (little context), many late. Cumulative counts are rounded, so they always sum to n_masked (the
    official code sets zero counts to 1 and dumps the rest on the last step). 'linear': equal counts (LLaDA), for
    left-to-right text."""
    i = torch.arange(1, steps + 1, dtype=torch.float64)
    w = torch.arccos(1 - i / steps) if schedule == 'arccos' else torch.ones(steps, dtype=torch.float64)  # (S,)
    cum = torch.cumsum(w, 0) / w.sum()                                         # (S,) share revealed after step i
    cum[-1] = 1.0
    done = torch.round(n_masked.double()[:, None].cpu() * cum[None])           # (B, S) revealed after step i
    return torch.diff(done, dim=1, prepend=torch.zeros_like(done[:, :1])).long().to(n_masked.device)


def gumbel(shape, generator, device):
    """Gumbel(0, 1) noise in float64. LLaDA (generate.py add_gumbel_noise): "The Gumbel max is a method for sampling
    categorical distributions. According to arXiv:2409.02908, for MDM, low-precision Gumbel Max improves perplexity
    score but reduces generation quality. Thus, we use float64." """
    return -torch.log(-torch.log(_uniform(shape, generator, device, torch.float64)))


def draw_tokens(logp, temperature, generator):
    """One id per row of logp (M, V) from softmax(logp / temperature) (0 = argmax) by inverse-CDF sampling: a float64
    uniform per row against the float64 running sum of the probabilities. LLaDA's failure (see gumbel) is float32 Gumbel
    noise whose truncated tail lowers the temperature; nothing is truncated here, and one uniform per row instead of one
    Gumbel per vocabulary entry keeps sampling cheap next to the forwards."""
    if temperature == 0:
        return logp.argmax(-1)
    probs = logp.exp() if temperature == 1 else (logp / temperature).softmax(-1)                    # (M, V)
    cdf = probs.cumsum(-1, dtype=torch.float64)                                                      # (M, V)
    u = _uniform((logp.shape[0], 1), generator, logp.device, torch.float64) * cdf[:, -1:]           # (M, 1)
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=logp.shape[1] - 1)  # first id with cdf > u


def top_n_per_row(score, n):
    """bool (B, T): True at the n[b] highest scores of each row b (a different n per row, no Python loop over rows)."""
    order = score.argsort(dim=1, descending=True, stable=True)                                # (B, T)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return rank < n[:, None]


def guided_logits(model, x, t, x_uncond, t_uncond, w, logits_at=None, columns=None):
    """Classifier-free guidance (1 + w) c - w u, with the conditional and unconditional rows in ONE batched forward
    (DiT forward_with_cfg, LLaDA). x, x_uncond (B, T); t, t_uncond (B,); w (B, T) the weight at each position;
    logits_at optional bool (B, T); columns optional, as in MeDiM.forward, over the M logits_at positions of x.
    Returns (B, T, V), (M, V) at the logits_at positions, or with columns {segment: (M_s, V_s)}."""
    at = None if logits_at is None else torch.cat([logits_at, logits_at])             # same positions in both halves
    w = w[..., None] if logits_at is None else w[logits_at][:, None]                  # (B, T, 1) or (M, 1)
    if columns is None:
        c, u = model(torch.cat([x, x_uncond]), torch.cat([t, t_uncond]), logits_at=at).chunk(2)  # (B, T, V) or (M, V)
        return (1 + w) * c - w * u
    M = len(w)  # the unconditional half's M positions come after the conditional half's, row-major
    both = {s: (torch.cat([r, r + M]), ids) for s, (r, ids) in columns.items()}
    out = model(torch.cat([x, x_uncond]), torch.cat([t, t_uncond]), logits_at=at, columns=both)
    guided = {}
    for s, (r, _) in columns.items():
        c, u = out[s].chunk(2)                                                        # (M_s, V_s) each
        guided[s] = (1 + w[r]) * c - w[r] * u
    return guided


def choose_reveals(candidates, n, score=None, sure=None):
    """bool (B, T): the slots to reveal among candidates (B, T) bool: the n[b] (B,) best of row b by score (B, T), or
    its n[b] leftmost when score is None; plus the sure slots (B, T) bool (Fast-dLLM), which the leftmost order only
    takes as the unbroken run right after those n, so a report revealed left to right never has holes."""
    if score is not None:
        picked = top_n_per_row(score.masked_fill(~candidates, float('-inf')), n)
        return (picked | sure if sure is not None else picked) & candidates
    rank = candidates.cumsum(1) - 1                                              # (B, T) order among the candidates
    stop_here = candidates & (rank >= n[:, None])
    if sure is not None:
        stop_here &= ~sure
    stop = torch.where(stop_here, rank, candidates.shape[1]).amin(1)             # (B,) first rank left masked
    return candidates & (rank < stop[:, None])


@torch.no_grad()
def sample(model, x, segment_ids, legal, sampler=None, *, generator=None, fill=None):
    """Fill every [MASK] of x (B, T) by MaskGIT-style iterative unmasking (MaskGIT; MeDiM §3.2; docs/paper-notes.md
    "Sampling"); every other token is the condition and never changes. Tasks are just what is masked: report -> image
    (image slots masked), image -> report (text slots masked), a joint pair (both), or a pair from a prompt (domain tag
    and/or first words given).

    segment_ids (T,) or (B, T), legal (3, V): as in diffusion_loss. sampler: a SamplerConfig (default SamplerConfig()).
    generator: torch.Generator, the same seed gives the same samples. fill: IMAGE or TEXT to fill only that segment's
    masks (the others stay [MASK], noise to the model, as in training's joint rows); None = every mask.
      - Each modality has its own reveal_counts table (arccos; linear for left-to-right text) and both start at step 0,
        so the shorter one finishes first.
      - Guidance: u = the same x with the condition (diffused tokens given at the start) replaced by [MASK]; the weight
        ramps as w = scale * (1 - t), t = masked share of the tokens to generate (the official get_cfg_weight: none at
        the first step, full at the end), with cfg_scale at image slots and i2t_cfg_scale at text slots. No extra rows
        when the scale of every modality to generate is 0.
      - The confidence log p(drawn token) gets temperature x Gumbel noise annealed linearly to 0 over the steps (the
        official r_temp * t).
      - text_left_to_right reveals text slots in position order, the same number per step, instead of by confidence,
        which fills "no", ".", "is" first and repeats words (docs/experiments.md: +0.10 to 0.14 label F1).
      - threshold, image_threshold (Fast-dLLM, Wu et al. 2025, arXiv 2505.22618, parallel decoding by confidence):
        each step also reveals every candidate text (image) slot whose drawn token has p > threshold (image_threshold),
        and at least one slot per row and modality, so the count tables become a floor and rows finish at their own
        pace. Left-to-right text takes the sure slots as a run after the leftmost one (choose_reveals); in blocks, any
        sure slot of the current block.
      - text_block (LLaDA, Nie et al. 2025, arXiv 2502.09992, generate.py block_length): each row's text slots to fill
        are cut into blocks of text_block, left to right; a block is only worked on once the ones before it are full,
        and inside it slots go by confidence. text_block=1 is left to right, one slot per step.
      - remask_steps (ReMDM, Wang et al. 2025, arXiv 2503.00307, the "loop" schedule held at the end): after the last
        reveal, each step puts the remask_ratio least sure generated tokens of each modality back to [MASK] (sure =
        p of the token when it was drawn) and fills them again in one forward. Only generated tokens are touched.
    The time input is each row's masked share of diffused tokens, as in training. Rows with nothing masked left skip
    the forward. Text is not cut at <eos> here (the caller does). Returns x, all filled."""
    sampler = sampler or SamplerConfig()
    mask_id = model.cfg.mask_id
    if mask_id < 0:
        raise ValueError("sample: model.cfg.mask_id is not set (use tokenizer Vocab.mask_id)")
    x = x.clone()
    B, T = x.shape
    seg = segment_ids.to(x.device).expand(B, T)                                          # (B, T)
    if ((x == mask_id) & (seg == 0)).any():
        raise ValueError("sample: [MASK] at a never-diffused position (segment 0: domain tag, <boi>, <eoi>)")
    todo = (x == mask_id) & (seg == fill if fill is not None else True)                   # (B, T) to generate
    cond = (seg > 0) & (x != mask_id)                         # the condition: never changes; masked in the uncond rows
    vocab = segment_vocab(legal.to(x.device), mask_id)                                   # segment -> legal ids
    n_diffused = (seg > 0).sum(1).clamp(min=1)                                            # (B,)
    blocks = sampler.text_block > 0
    tables = {}                                                                           # segment -> (B, S_seg)
    for s in (IMAGE, TEXT):
        n = (todo & (seg == s)).sum(1)                                                    # (B,)
        if n.max() > 0:
            linear = s == TEXT and (sampler.text_left_to_right or blocks)
            s_steps = sampler.sample_steps
            if s == TEXT and sampler.text_steps:
                s_steps = sampler.text_steps
            elif linear:
                s_steps = int(n.max())                                                    # one slot per step
            tables[s] = reveal_counts(n, max(1, min(s_steps, int(n.max()))), 'linear' if linear else 'arccos')
    S = max((tab.shape[1] for tab in tables.values()), default=0)
    by_position = {IMAGE: False, TEXT: sampler.text_left_to_right and not blocks}
    # (B, T) the block of each text slot to fill: its rank among its row's text slots to fill // text_block
    block = ((todo & (seg == TEXT)).cumsum(1) - 1) // max(1, sampler.text_block)
    scale = {IMAGE: sampler.cfg_scale, TEXT: sampler.i2t_cfg_scale}
    threshold = {IMAGE: sampler.image_threshold, TEXT: sampler.threshold}
    use_cfg = bool(cond.any()) and any(scale[s] != 0 for s in tables)
    scale_at = torch.where(seg == IMAGE, scale[IMAGE], scale[TEXT])                      # (B, T)

    def denoise(x, masked, token_temperature):
        """One denoiser call (guided when CFG is on) on the rows with a masked slot, then a token drawn at every masked
        slot from SUBS there (subs_logprobs). Returns the ids and their log-probs, (M,) each."""
        live = masked.any(1).nonzero().squeeze(1)                                        # (B',) the others are done
        x, masked, seg_, cond_, todo_, scale_ = (a[live] for a in (x, masked, seg, cond, todo, scale_at))
        t = (x == mask_id).sum(1) / n_diffused[live]                                      # (B',) masked share
        rows = segment_rows(seg_[masked])                                                 # segment -> (M_s,)
        columns = segment_columns(rows, vocab)  # as in the loss: image slots need 512 columns, not V
        if not use_cfg:
            logits = model(x, t, logits_at=masked, columns=columns)                      # {s: (M_s, V_s)}
        else:
            x_u = torch.where(cond_, mask_id, x)
            t_u = (x_u == mask_id).sum(1) / n_diffused[live]
            remaining = (masked & todo_).sum(1) / todo_.sum(1).clamp(min=1)              # 1 at the start, 0 at the end
            w = (1 - remaining)[:, None] * scale_                                         # (B', T)
            logits = guided_logits(model, x, t, x_u, t_u, w, logits_at=masked, columns=columns)  # {s: (M_s, V_s)}
        M = sum(len(r) for r in rows.values())
        drawn = torch.zeros(M, dtype=torch.long, device=x.device)
        logp_drawn = torch.zeros(M, dtype=torch.float64, device=x.device)
        for s, logp in subs_logprobs(logits, rows, vocab).items():                        # (M_s, V_s)
            k = draw_tokens(logp, token_temperature, generator)                           # (M_s,) columns
            drawn[rows[s]], logp_drawn[rows[s]] = vocab[s][k], logp.gather(1, k[:, None]).squeeze(1).double()
        return drawn, logp_drawn  # row-major over the masked slots of all B rows: the done rows have none

    sure_of = torch.zeros(B, T, dtype=torch.float64, device=x.device)                    # log p of each drawn token
    i = 0
    while (masked := (x == mask_id) & todo).any():                                      # (B, T)
        drawn, logp_drawn = denoise(x, masked, sampler.token_temperature)                 # (M,) one per masked slot
        tokens = torch.full_like(x, mask_id).masked_scatter_(masked, drawn)               # (B, T)
        logp = torch.zeros(B, T, dtype=torch.float64, device=x.device).masked_scatter_(masked, logp_drawn)
        conf = logp + sampler.temperature * max(0.0, 1 - (i + 1) / S) * gumbel((B, T), generator, x.device)
        reveal = torch.zeros_like(masked)
        for s, table in tables.items():
            candidates = masked & (seg == s)                                              # (B, T)
            if s == TEXT and blocks:  # only the row's first block with a masked slot
                candidates &= block == torch.where(candidates, block, T).amin(1, keepdim=True)
            # the table's count, or one per step for what a block left over past the table's end
            n = table[:, i] if i < table.shape[1] else torch.ones_like(table[:, 0])        # (B,)
            sure = None
            if threshold[s]:
                n, sure = n.clamp(min=1), logp.exp() > threshold[s]
            reveal |= choose_reveals(candidates, n, None if by_position[s] else conf, sure)
        x = torch.where(reveal, tokens, x)
        sure_of = torch.where(reveal, logp, sure_of)
        i += 1
    for _ in range(sampler.remask_steps):
        redo = torch.zeros_like(todo)                                                     # (B, T) back to [MASK]
        for s in tables:
            generated = todo & (seg == s)                                                 # (B, T)
            k = (generated.sum(1) * sampler.remask_ratio).ceil().long()                   # (B,) at least one
            redo |= top_n_per_row((-sure_of).masked_fill(~generated, float('-inf')), k) & generated  # k least sure
        drawn, logp_drawn = denoise(x.masked_fill(redo, mask_id), redo, sampler.token_temperature)
        x, sure_of = x.masked_scatter(redo, drawn), sure_of.masked_scatter(redo, logp_drawn)
    return x


@torch.no_grad()
def given_logprob(model, x, segment_ids, legal, at):
    """How likely the model finds each row's tokens at the slots `at` (B, T) bool given the rest of the row: their
    summed log p (B,) from one forward with all of them masked at once, read with SUBS (subs_logprobs); the time input
    is the masked share, as in training. x (B, T) holds no [MASK]. With `at` a row's report, it scores the report
    beside that row's image (training's image -> report rows at t = 1): higher when the image shows what the report
    describes, a check of a generated pair by the model itself."""
    mask_id = model.cfg.mask_id
    B, T = x.shape
    seg = segment_ids.to(x.device).expand(B, T)                                           # (B, T)
    t = at.sum(1) / (seg > 0).sum(1).clamp(min=1)                                         # (B,) masked share
    vocab = segment_vocab(legal.to(x.device), mask_id)
    rows = segment_rows(seg[at])                                                          # segment -> (M_s,)
    logits = model(x.masked_fill(at, mask_id), t, logits_at=at,
                   columns=segment_columns(rows, vocab))                                  # {s: (M_s, V_s)}
    per_slot = subs_logprob_of(logits, rows, vocab, x[at])                                # (M,) log p of x there
    return torch.zeros(B, device=x.device).index_add_(0, at.nonzero()[:, 0], per_slot)   # (B,)

# ----------------------------------------------------------------------------------------------------------------------
#### Loading pretrained LLM weights: a small safetensors reader and the HF -> MeDiM mapping
# ----------------------------------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16}


def safetensors_header(path):
    """A .safetensors file: 8 bytes little-endian header length n, n bytes of JSON {name: {dtype, shape, data_offsets:
    [begin, end] after the header}}, then raw little-endian tensor bytes. Returns ({name: entry}, data start offset)."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0] if size >= 8 else -1
        if not 2 <= n <= size - 8:
            raise ValueError(f"{path}: not a safetensors file (bad header length)")
        header = json.loads(f.read(n))
    header.pop('__metadata__', None)
    for name, e in header.items():
        if e['dtype'] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {e['dtype']}, expected one of {list(SAFETENSORS_DTYPES)}")
        begin, end = e['data_offsets']
        nbytes = math.prod(e['shape']) * SAFETENSORS_DTYPES[e['dtype']].itemsize
        if end - begin != nbytes or 8 + n + end > size:
            raise ValueError(f"{path}: tensor {name} offsets {e['data_offsets']} do not match shape {e['shape']}")
    return header, 8 + n


def read_safetensor(path, entry, data_start):
    """Read ONE tensor (seek + read its bytes), so loading the first 10 layers of a 28-layer model reads only those."""
    (begin, end), dtype = entry['data_offsets'], SAFETENSORS_DTYPES[entry['dtype']]
    if end == begin:
        return torch.empty(entry['shape'], dtype=dtype)
    with open(path, 'rb') as f:
        f.seek(data_start + begin)
        buf = bytearray(f.read(end - begin))  # bytearray: a writable buffer, which torch.frombuffer wants
    return torch.frombuffer(buf, dtype=dtype).reshape(entry['shape'])


def checkpoint_index(hf_dir):
    """{tensor name: (file, entry, data_start)} over model.safetensors, or the shards model.safetensors.index.json names."""
    index_path = os.path.join(hf_dir, 'model.safetensors.index.json')
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)['weight_map'].values()))
    else:
        files = sorted(f for f in os.listdir(hf_dir) if f.endswith('.safetensors'))
    if not files:
        raise FileNotFoundError(f"{hf_dir}: no *.safetensors weights (write them with save_pretrained(...))")
    index = {}
    for name in files:
        path = os.path.join(hf_dir, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{index_path} names {name}, which is missing")
        header, data_start = safetensors_header(path)
        index.update({key: (path, entry, data_start) for key, entry in header.items()})
    return index


HF_FAMILIES = {'LlamaForCausalLM': 'llama', 'Qwen2ForCausalLM': 'qwen2', 'GemmaForCausalLM': 'gemma'}


def config_from_hf(hf, path):
    """Map an HF config.json dict onto MeDiMConfig fields (architecture only); refuse what this file does not implement."""
    arch = (hf.get('architectures') or [None])[0]
    family = HF_FAMILIES.get(arch) or (hf.get('model_type') if hf.get('model_type') in HF_FAMILIES.values() else None)
    if family is None:
        raise ValueError(f"{path}: unsupported architecture {arch!r} (model_type {hf.get('model_type')!r}); "
                         f"supported: {', '.join(HF_FAMILIES)} (Liquid is a Gemma)")
    rope = hf.get('rope_scaling') or hf.get('rope_parameters') or {}
    if rope.get('rope_type', rope.get('type', 'default')) != 'default':
        raise ValueError(f"{path}: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not implemented")
    for key in ('attention_bias', 'mlp_bias', 'use_sliding_window'):
        if hf.get(key):
            raise ValueError(f"{path}: {key}=true is not implemented")
    act = hf.get('hidden_activation') or hf.get('hidden_act')
    if family == 'gemma':  # Gemma's legacy 'gelu' means the tanh approximation (HF falls back to gelu_pytorch_tanh)
        act = {'gelu': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh', None: 'gelu_tanh'}.get(act, act)
    if act not in ('silu', 'gelu_tanh'):
        raise ValueError(f"{path}: activation {act!r} is not implemented (silu or gelu tanh)")
    d, heads = hf['hidden_size'], hf['num_attention_heads']
    return dict(d_model=d, n_layers=hf['num_hidden_layers'], n_heads=heads,
                n_kv_heads=hf.get('num_key_value_heads') or heads, head_dim=hf.get('head_dim') or d // heads,
                d_ff=hf['intermediate_size'], act=act, norm_plus_one=family == 'gemma', embed_scale=family == 'gemma',
                qkv_bias=family == 'qwen2', tie_embeddings=hf.get('tie_word_embeddings', family == 'gemma'),
                rope_theta=float(hf.get('rope_theta') or rope.get('rope_theta') or 10000.0),
                norm_eps=hf.get('rms_norm_eps', 1e-6), vocab_size=hf['vocab_size'])


def grow_vocab(w, new_rows, generator):
    """Resize an embedding / lm_head (V, D) to new_rows: keep the first rows (as HF resize_token_embeddings), draw new
    ones from N(mean, std) of the old rows per dimension, so [MASK], specials and image codes start among the others."""
    w = w.float()
    if new_rows <= w.shape[0]:
        return w[:new_rows]
    mean, std = w.mean(0), w.std(0)                                                   # (D,)
    extra = mean + std * torch.randn(new_rows - w.shape[0], w.shape[1], generator=generator)
    return torch.cat([w, extra])


@torch.no_grad()
def from_pretrained(hf_dir, n_layers=None, new_vocab_size=None, time_cond='adaln', causal=False, seq_len=2048,
                    mask_id=-1, seed=0, abs_pos=False, text_rows=None, random_init=False, next_token_readout=False):
    """A MeDiM from an HF LlamaForCausalLM / Qwen2ForCausalLM / GemmaForCausalLM (Liquid) directory: config.json and
    *.safetensors (one file, or shards + model.safetensors.index.json; F32, BF16 or F16). n_layers: keep the first
    n_layers blocks (MeDiM keeps 10 of Liquid's 28, docs/paper-notes.md "Backbone"). new_vocab_size: room for
    specials, [MASK] and image codes (grow_vocab); text ids must come from this LLM's own tokenizer for its text rows to
    mean anything (the official code mismatches them). time_embedder / adaLN_modulation keep their identity-preserving
    init, so the fp32 result computes exactly the pretrained network (bidirectional unless causal=True) until training
    moves it; so does abs_pos's position embedding, which starts at zero.
    text_rows: a trimmed text vocabulary (tokenizer.trim_text_rows): row i of the embedding (and of an untied lm_head)
    is the LLM's row text_rows[i], and grow_vocab adds the rows after them. random_init: the same architecture with
    MeDiM's fresh init, no weights read (MeDiM Tab. 4 "w/o pretrained MLLM weight"). next_token_readout: read token i
    at position i-1, where the LLM's head predicts it (MeDiMConfig.next_token_readout)."""
    cfg_path = os.path.join(hf_dir, 'config.json')
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path} not found (an HF model directory has config.json + *.safetensors)")
    with open(cfg_path) as f:
        arch = config_from_hf(json.load(f), cfg_path)
    hf_vocab, hf_layers = arch.pop('vocab_size'), arch.pop('n_layers')
    n_layers = n_layers or hf_layers
    if not 1 <= n_layers <= hf_layers:
        raise ValueError(f"from_pretrained: n_layers={n_layers}, but {cfg_path} has {hf_layers} layers")
    if text_rows is not None:
        text_rows = torch.as_tensor(text_rows, dtype=torch.long)
        if len(text_rows) == 0 or text_rows.min() < 0 or text_rows.max() >= hf_vocab:
            raise ValueError(f"from_pretrained: text_rows must lie in [0, {hf_vocab}) ({cfg_path} vocab_size), got "
                             + (f"{text_rows.min()}..{text_rows.max()}" if len(text_rows) else "none"))
    cfg = MeDiMConfig(**arch, n_layers=n_layers, vocab_size=new_vocab_size or hf_vocab, seq_len=seq_len,
                      mask_id=mask_id, causal=causal, time_cond=time_cond, abs_pos=abs_pos,
                      next_token_readout=next_token_readout)
    model = MeDiM(cfg)
    if random_init:
        return model
    index = checkpoint_index(hf_dir)
    generator = torch.Generator().manual_seed(seed)
    ours = model.state_dict()
    new_keys = [k for k in ours if 'time_embedder' in k or 'adaLN_modulation' in k or 'pos_embed' in k]  # no LLM has them
    for key in (k for k in ours if k not in new_keys):
        if key not in index:
            raise ValueError(f"{hf_dir}: checkpoint has no tensor {key!r}")
        path, entry, data_start = index[key]
        w = read_safetensor(path, entry, data_start)
        if key in ('model.embed_tokens.weight', 'lm_head.weight') and w.ndim == 2 and w.shape[1] == cfg.d_model:
            if w.shape[0] != hf_vocab:
                raise ValueError(f"{path}: {key} has {w.shape[0]} rows but config.json says vocab_size {hf_vocab}")
            w = grow_vocab(w if text_rows is None else w[text_rows], cfg.vocab_size, generator)
        if w.shape != ours[key].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(w.shape)}, expected {tuple(ours[key].shape)}")
        ours[key].copy_(w)
    for key, (path, _, _) in index.items():  # strict, like nanoGPT: anything we did not use must be explainable
        layer = re.match(r'model\.layers\.(\d+)\.', key)
        skipped = (layer and int(layer.group(1)) >= n_layers) or (key == 'lm_head.weight' and cfg.tie_embeddings)
        if not (key in ours or skipped or key.endswith('rotary_emb.inv_freq')):
            raise ValueError(f"{path}: unexpected tensor {key!r} (not part of a Llama / Qwen2 / Gemma decoder)")
    return model
