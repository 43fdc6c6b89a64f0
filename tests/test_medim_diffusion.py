"""medim.py masked diffusion: schedule, stratified t, the forward process, SUBS, the loss against a hand computation,
and the recipe knobs (cond_frac, cond_text_share, target powers, loss_weight)."""
import math

import pytest
import torch

import medim
from medim_toy import ToyLayout, logits_for

EPS = 1e-3


class FixedLogits(torch.nn.Module):
    """A stand-in denoiser: returns fixed logits (B, T, V) and records what it was called with."""

    def __init__(self, logits, cfg):
        super().__init__()
        self.logits, self.cfg, self.seen = logits, cfg, []

    def forward(self, x, t=None, key_padding_mask=None, logits_at=None, columns=None):
        self.seen.append((x.clone(), t.clone()))
        return logits_for(self.logits, logits_at, columns)


def test_schedule_is_log_linear():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(medim.mask_prob(t), (1 - EPS) * t)
    assert torch.allclose(1 - torch.exp(-medim.noise_level(t)), medim.mask_prob(t), atol=1e-6)  # 1 - e^-sigma = p


def test_sample_t_puts_one_time_in_each_stratum():
    B = 10
    t = medim.sample_t(B, torch.Generator().manual_seed(0))
    u = (t - EPS) / (1 - EPS)
    assert torch.equal(torch.floor(u * B).long(), torch.arange(B))


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_masked_fraction_follows_t_and_segment_zero_is_never_masked(t):
    lay = ToyLayout(N=1000, L=1000)
    x0 = lay.random_batch(4, torch.Generator().manual_seed(0))
    seg = lay.segment_ids.expand_as(x0)
    p = medim.token_mask_probs(torch.full((4,), t), seg, torch.zeros(4, dtype=torch.long))
    xt = medim.q_xt(x0, p, lay.mask_id, torch.Generator().manual_seed(1))
    masked = xt == lay.mask_id
    assert not masked[seg == 0].any()
    frac = masked[seg > 0].float().mean().item()
    n = int((seg > 0).sum())
    assert abs(frac - (1 - EPS) * t) < 4 * math.sqrt(t * (1 - t) / n)
    assert torch.equal(xt[~masked], x0[~masked])


def test_token_mask_probs_per_task_and_power():
    lay = ToyLayout()
    seg = lay.segment_ids.expand(3, -1)
    t = torch.full((3,), 0.25)
    task = torch.tensor([medim.JOINT, medim.TEXT_GIVEN, medim.IMAGE_GIVEN])
    p = medim.token_mask_probs(t, seg, task, i2t_power=0.5, t2i_power=0.0)
    img, txt = seg[0] == medim.IMAGE, seg[0] == medim.TEXT
    q = lambda v: (1 - EPS) * v
    assert torch.allclose(p[0, img], torch.tensor(q(0.25))) and torch.allclose(p[0, txt], torch.tensor(q(0.25)))
    assert torch.allclose(p[1, img], torch.tensor(q(1.0))) and (p[1, txt] == 0).all()      # t2i: image fully masked
    assert (p[2, img] == 0).all() and torch.allclose(p[2, txt], torch.tensor(q(0.5)))       # i2t: text at t^0.5
    assert (p[:, seg[0] == 0] == 0).all()


def reference_subs(logits, xt, legal_pos, mask_id):
    """MDLM's SUBS over the whole vocabulary (diffusion.py _subs_parameterization) with MeDiM's per-segment vocabulary,
    written out independently: illegal ids and [MASK] at -inf, log-softmax, and an unmasked position copies its token
    (log p = 0 there, -inf elsewhere). logits (B, T, V), xt (B, T), legal_pos (T, V). Returns (B, T, V)."""
    logits = logits.float().masked_fill(~legal_pos, -math.inf)
    logits[..., mask_id] = -math.inf
    logp = logits.log_softmax(-1)
    copy = torch.full_like(logp, -math.inf).scatter_(-1, xt[..., None], 0.0)
    return torch.where((xt != mask_id)[..., None], copy, logp)


def test_subs_at_masked_slots_is_the_full_subs_on_the_legal_ids_and_never_mask():
    lay = ToyLayout()
    g = torch.Generator().manual_seed(0)
    x0 = lay.random_batch(3, g)
    xt = torch.where((torch.rand(x0.shape, generator=g) < 0.5) & (lay.segment_ids > 0), lay.mask_id, x0)
    logits = 3 * torch.randn(3, lay.T, lay.V, generator=g)
    masked = xt == lay.mask_id
    vocab = medim.segment_vocab(lay.legal, lay.mask_id)
    rows = medim.segment_rows(lay.segment_ids.expand_as(xt)[masked])
    got = medim.subs_logprobs(logits[masked], rows, vocab)
    ref = reference_subs(logits, xt, lay.legal[lay.segment_ids], lay.mask_id)[masked]      # (M, V)
    for s in (medim.IMAGE, medim.TEXT):
        assert lay.mask_id not in vocab[s].tolist() and lay.legal[s, vocab[s]].all()        # legal ids only, no [MASK]
        assert len(vocab[s]) == int(lay.legal[s].sum())                                     # ...and all of them
        assert torch.allclose(got[s], ref[rows[s]][:, vocab[s]], atol=1e-6)
        assert torch.allclose(got[s].exp().sum(-1), torch.ones(len(rows[s])))             # all the mass is there
    assert sum(len(r) for r in rows.values()) == int(masked.sum())


def hand_loss(logits, x0, xt, t, lay, weight="elbo"):
    """The MDLM loss written out with Python floats: sum over masked tokens of CE / p_mask, over diffused tokens."""
    total, n_masked, n_diffused = 0.0, 0, 0
    seg = lay.segment_ids.tolist()
    for b in range(x0.shape[0]):
        for i in range(x0.shape[1]):
            if seg[i] == 0:
                continue
            n_diffused += 1
            if xt[b, i] != lay.mask_id:
                continue
            legal = [v for v in range(lay.V) if lay.legal[seg[i], v]]
            z = [logits[b, i, v].item() for v in legal]
            logsumexp = math.log(sum(math.exp(zz) for zz in z))
            nll = logsumexp - logits[b, i, x0[b, i]].item()
            total += nll / ((1 - EPS) * t[b].item()) if weight == "elbo" else nll
            n_masked += 1
    return total / (n_diffused if weight == "elbo" else n_masked)


@pytest.mark.parametrize("weight", ["elbo", "uniform"])
def test_loss_equals_hand_computed_example(weight):
    lay = ToyLayout(n_text=5, K=4, N=3, L=3)
    g = torch.Generator().manual_seed(0)
    x0 = lay.random_batch(2, g)
    logits = torch.randn(2, lay.T, lay.V, generator=g)
    model = FixedLogits(logits, lay.config())
    t = torch.tensor([0.4, 0.8])
    loss, stats = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(3),
                                       cond_frac=0.0, loss_weight=weight, t=t)
    xt, t_in = model.seen[0]
    assert (xt == lay.mask_id).any()
    assert math.isclose(loss.item(), hand_loss(logits, x0, xt, t, lay, weight), rel_tol=1e-5)
    n_img, n_txt = lay.N * 2, lay.L * 2
    if weight == "elbo":  # the text / image parts recombine into the loss
        recombined = (stats["loss_image"] * n_img + stats["loss_text"] * n_txt) / (n_img + n_txt)
        assert math.isclose(recombined.item(), loss.item(), rel_tol=1e-5)


def test_loss_is_the_full_subs_nelbo_and_unmasked_tokens_carry_over():
    """The loss, computed on the legal columns of the masked slots only, equals the full-vocabulary SUBS NELBO, where an
    unmasked token is copied (log p = 0) and so costs nothing."""
    lay = ToyLayout(N=20, L=20)
    g = torch.Generator().manual_seed(0)
    x0 = lay.random_batch(6, g)
    logits = 2 * torch.randn(6, lay.T, lay.V, generator=g)
    model = FixedLogits(logits, lay.config())
    t = torch.rand(6, generator=g) * 0.9 + 0.05
    loss, _ = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=g, cond_frac=0.0, t=t)
    xt = model.seen[0][0]
    masked = xt == lay.mask_id
    logp = reference_subs(logits, xt, lay.legal[lay.segment_ids], lay.mask_id)
    nll = -logp.gather(-1, x0[..., None]).squeeze(-1)                        # (B, T), 0 at unmasked tokens
    assert (nll[~masked] == 0).all() and masked.any()
    want = (nll / ((1 - EPS) * t[:, None])).sum() / (6 * (lay.N + lay.L))    # CE / p_mask per diffused token
    assert torch.allclose(loss, want, rtol=1e-5)


def test_time_input_is_the_masked_fraction_of_diffused_tokens():
    lay = ToyLayout(N=20, L=20)
    x0 = lay.random_batch(8, torch.Generator().manual_seed(0))
    model = FixedLogits(torch.zeros(8, lay.T, lay.V), lay.config())
    medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(1))
    xt, t_in = model.seen[0]
    assert torch.allclose(t_in, (xt == lay.mask_id).float().sum(1) / 40)


def test_cond_frac_gives_the_promised_share_of_clean_modality_rows():
    lay = ToyLayout(N=16, L=16)
    B = 20000
    x0 = lay.random_batch(1, torch.Generator().manual_seed(0)).expand(B, -1)
    model = FixedLogits(torch.zeros(B, lay.T, lay.V), lay.config())
    _, stats = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(1),
                                    cond_frac=0.3, cond_text_share=0.25)
    masked = model.seen[0][0] == lay.mask_id
    img, txt = masked[:, lay.segment_ids == medim.IMAGE], masked[:, lay.segment_ids == medim.TEXT]
    t2i = (~txt.any(1) & img.all(1)).float().mean().item()   # report clean, image fully masked (power 0)
    i2t = (~img.any(1) & txt.all(1)).float().mean().item()
    p_all = (1 - EPS) ** 16  # a fully masked target can miss one token with probability eps per token
    sd = math.sqrt(0.3 / B)
    assert abs(t2i - 0.3 * 0.25 * p_all) < 4 * sd
    assert abs(i2t - 0.3 * 0.75 * p_all) < 4 * sd
    assert abs(stats["frac_text_given"].item() - 0.075) < 4 * sd


def test_target_power_masks_the_target_at_t_to_the_power():
    lay = ToyLayout(N=40, L=400)
    B = 4
    x0 = lay.random_batch(B, torch.Generator().manual_seed(0))
    model = FixedLogits(torch.zeros(B, lay.T, lay.V), lay.config())
    t = torch.full((B,), 0.25)
    medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(1),
                         cond_frac=1.0, cond_text_share=0.0, i2t_power=0.5, t=t)
    masked = model.seen[0][0] == lay.mask_id
    assert not masked[:, lay.segment_ids == medim.IMAGE].any()       # the image is the clean condition
    frac = masked[:, lay.segment_ids == medim.TEXT].float().mean().item()
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / (B * 400))         # 0.25 ** 0.5


def test_loss_is_reproducible_from_the_generator_and_rejects_illegal_tokens():
    lay = ToyLayout()
    torch.manual_seed(0)
    model = medim.MeDiM(lay.config())
    x0 = lay.random_batch(4, torch.Generator().manual_seed(0))
    a, _ = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(5))
    b, _ = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    bad = x0.clone()
    bad[0, 3] = 0  # a text id in an image slot
    with pytest.raises(ValueError, match="illegal"):
        medim.diffusion_loss(model, bad, lay.segment_ids, lay.legal)
    with pytest.raises(ValueError, match="loss_weight"):
        medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, loss_weight="snr")


def test_loss_backpropagates_into_every_trained_weight():
    lay = ToyLayout()
    torch.manual_seed(0)
    model = medim.MeDiM(lay.config())
    x0 = lay.random_batch(8, torch.Generator().manual_seed(0))
    loss, _ = medim.diffusion_loss(model, x0, lay.segment_ids, lay.legal, generator=torch.Generator().manual_seed(1))
    loss.backward()
    for name, p in model.named_parameters():
        # the time MLP only gets gradient once the zero-initialised AdaLN weights have moved
        assert p.grad is not None and (p.grad.abs().sum() > 0 or "time_embedder" in name), name
