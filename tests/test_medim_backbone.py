"""medim.py backbone: config checks, attention masks, RoPE/attention implementations, time conditioning, precision."""
import math

import pytest
import torch

import medim
from medim_toy import ToyLayout


def make(cfg_kw=None, seed=0, layout=None):
    layout = layout or ToyLayout()
    torch.manual_seed(seed)
    return medim.MeDiM(layout.config(**(cfg_kw or {}))).eval(), layout


def randomize(model, scale=0.2, seed=1):
    """Move every weight (AdaLN included) off its init so no test passes because something is still zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("bad, name", [(dict(time_cond="film"), "time_cond"), (dict(act="relu"), "act"),
                                       (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"), (dict(mask_id=10_000), "mask_id"),
                                       (dict(attn_impl="flash"), "attn_impl")])
def test_config_rejects_bad_values_by_name(bad, name):
    with pytest.raises(ValueError, match=name):
        medim.MeDiMConfig(**bad)


def test_config_fills_derived_sizes():
    cfg = medim.MeDiMConfig(d_model=64, n_heads=4)
    assert (cfg.n_kv_heads, cfg.head_dim) == (4, 16)
    assert medim.MeDiMConfig(**medim.PRESETS["gemma-7b-10L"]).head_dim == 256


@pytest.mark.parametrize("causal", [True, False])
def test_causal_mask_hides_later_tokens_and_bidirectional_does_not(causal):
    model, lay = make(dict(causal=causal))
    randomize(model)
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    x2 = x.clone()
    x2[:, -1] = (x[:, -1] + 1) % lay.V  # change only the last token
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        a, b = model(x, t), model(x2, t)
    earlier = (a[:, :-1] - b[:, :-1]).abs().max()
    if causal:
        assert earlier == 0
    else:
        assert earlier > 1e-4


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask_hides_padded_keys(causal):
    model, lay = make(dict(causal=causal))
    randomize(model)
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    pad = torch.zeros_like(x, dtype=torch.bool)
    pad[:, 4:7] = True  # three keys in the middle are padding
    x2 = x.clone()
    x2[:, 4:7] = (x[:, 4:7] + 3) % lay.V
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        a, b = model(x, t, key_padding_mask=pad), model(x2, t, key_padding_mask=pad)
        c = model(x2, t)
    keep = ~pad[0]
    assert (a[:, keep] - b[:, keep]).abs().max() < 1e-5       # padded keys are invisible to the other tokens
    assert (a[:, keep] - c[:, keep]).abs().max() > 1e-4       # ...and visible without the mask


@pytest.mark.parametrize("kw", [dict(), dict(causal=True), dict(n_heads=4, n_kv_heads=2, d_model=32)])
def test_manual_attention_equals_sdpa(kw):
    sdpa, lay = make(dict(kw, attn_impl="sdpa"))
    randomize(sdpa)
    manual = medim.MeDiM(lay.config(**kw, attn_impl="manual")).eval()
    manual.load_state_dict(sdpa.state_dict())
    x = lay.random_batch(3, torch.Generator().manual_seed(0))
    t = torch.rand(3)
    pad = torch.zeros_like(x, dtype=torch.bool)
    pad[0, -2:] = True
    with torch.no_grad():
        for kpm in (None, pad):
            assert torch.allclose(sdpa(x, t, kpm), manual(x, t, kpm), atol=1e-5)


def test_rope_rotates_pairs_half_apart_like_hf():
    """Independent check of the layout: pair (i, i + hd/2) is rotated by angle pos * theta^(-2i/hd)."""
    hd, T, theta = 8, 5, 100.0
    cos, sin = medim.rope_tables(T, hd, theta)
    x = torch.randn(1, 1, T, hd)
    y = medim.apply_rope(x, cos, sin)
    for pos in range(T):
        for i in range(hd // 2):
            ang = pos * theta ** (-2 * i / hd)
            a, b = x[0, 0, pos, i].item(), x[0, 0, pos, i + hd // 2].item()
            assert math.isclose(y[0, 0, pos, i].item(), a * math.cos(ang) - b * math.sin(ang), abs_tol=1e-5)
            assert math.isclose(y[0, 0, pos, i + hd // 2].item(), b * math.cos(ang) + a * math.sin(ang), abs_tol=1e-5)


def test_rope_tables_are_cached_buffers_not_state():
    model, _ = make()
    assert "rope_cos" not in model.state_dict()
    assert model.rope_cos.shape == (model.cfg.seq_len, model.cfg.head_dim // 2)


def test_time_embedding_is_cos_first_sinusoid_of_sigma():
    emb = medim.TimestepEmbedder(d_model=4, freq_dim=8)
    emb.mlp = torch.nn.Identity()
    t = torch.tensor([0.0, 0.3, 1.0])
    out = emb(t)
    for b, tb in enumerate(t.tolist()):
        sigma = -math.log(1 - (1 - 1e-3) * tb)
        freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
        want = [math.cos(sigma * f) for f in freqs] + [math.sin(sigma * f) for f in freqs]
        assert torch.allclose(out[b], torch.tensor(want), atol=2e-5)


@pytest.mark.parametrize("time_cond", ["adaln", "add"])
def test_fresh_time_conditioning_starts_as_the_plain_network_exactly(time_cond):
    plain, lay = make(dict(time_cond="none"))
    randomize(plain)
    timed = medim.MeDiM(lay.config(time_cond=time_cond)).eval()
    missing, unexpected = timed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("time_embedder" in k or "adaLN_modulation" in k for k in missing)
    x = lay.random_batch(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = plain(x)
        for t in (torch.zeros(3), torch.rand(3), torch.ones(3)):
            assert torch.equal(timed(x, t), ref)


@pytest.mark.parametrize("time_cond", ["adaln", "add"])
def test_time_input_reaches_the_output_once_weights_move(time_cond):
    model, lay = make(dict(time_cond=time_cond))
    randomize(model)
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x, torch.tensor([0.1, 0.1])) - model(x, torch.tensor([0.9, 0.9]))).abs().max() > 1e-4


def test_absolute_positions_start_as_the_rope_only_network_and_then_move_it():
    """abs_pos adds a learned (T, D) table to the token embeddings: zero at init, so a model with it computes exactly the
    RoPE-only network (a pretrained LLM stays itself); it gets gradient from the first step, and once it moves, the same
    token at two positions reads differently through it."""
    plain, lay = make()
    randomize(plain)
    posed = medim.MeDiM(lay.config(abs_pos=True)).eval()
    missing, unexpected = posed.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["model.pos_embed.weight"] and not unexpected
    x, t = lay.random_batch(2, torch.Generator().manual_seed(0)), torch.rand(2)
    assert torch.equal(posed(x, t), plain(x, t))
    posed.train()
    posed(x, t).square().mean().backward()
    assert posed.model.pos_embed.weight.grad[:x.shape[1]].abs().sum(1).gt(0).all()  # every position learns
    with torch.no_grad():
        posed.model.pos_embed.weight.normal_(0, 0.2)
        assert (posed.eval()(x, t) - plain(x, t)).abs().max() > 1e-3


def test_time_cond_none_ignores_t_and_others_require_it():
    model, lay = make(dict(time_cond="none"))
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model(x, torch.rand(2)))
    model, _ = make()
    with pytest.raises(ValueError, match="needs t"):
        model(x)


def test_logits_at_returns_only_the_selected_rows():
    model, lay = make()
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    t = torch.rand(2)
    sel = torch.rand(x.shape) < 0.5
    with torch.no_grad():
        assert torch.allclose(model(x, t, logits_at=sel), model(x, t)[sel], atol=1e-6)
        rows = sel.flatten().nonzero().squeeze(1)  # the same positions as flat indices
        assert torch.equal(model(x, t, logits_at=rows), model(x, t, logits_at=sel))


def test_columns_give_each_segments_rows_their_own_ids_only():
    """forward(columns=...) is the full logits at those rows and ids, without the (M, V) tensor (the loss's path)."""
    model, lay = make()
    x = lay.random_batch(2, torch.Generator().manual_seed(0))
    t, sel = torch.rand(2), torch.rand(x.shape) < 0.5
    rows = medim.segment_rows(lay.segment_ids.expand_as(x)[sel])
    vocab = medim.segment_vocab(lay.legal, lay.mask_id)
    with torch.no_grad():
        full = model(x, t, logits_at=sel)                                                   # (M, V)
        got = model(x, t, logits_at=sel, columns=medim.segment_columns(rows, vocab))
    assert set(got) == {medim.IMAGE, medim.TEXT}
    for s, r in rows.items():
        assert got[s].shape == (len(r), len(vocab[s])) and len(vocab[s]) < lay.V
        assert torch.allclose(got[s], full[r][:, vocab[s]], atol=1e-5)


def test_tied_head_reuses_the_embedding():
    model, _ = make(dict(tie_embeddings=True))
    assert model.lm_head is None and "lm_head.weight" not in model.state_dict()


def test_too_long_sequence_is_a_clear_error():
    model, lay = make()
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, lay.T + 1, dtype=torch.long), torch.rand(1))


def test_bf16_autocast_forward_and_backward_on_cpu():
    model, lay = make(dict(act="gelu_tanh", norm_plus_one=True, embed_scale=True))
    randomize(model, 0.05)
    x = lay.random_batch(4, torch.Generator().manual_seed(0))
    t = torch.rand(4)
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    out.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.model.layers.parameters())
