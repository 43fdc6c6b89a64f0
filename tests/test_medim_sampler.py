"""medim.sample: the arccos reveal schedule, conditioning, CFG in one batched forward with a scale per modality,
legal filling, seeds, left-to-right text."""
import math

import numpy as np
import pytest
import torch

import medim
from medim_toy import ToyLayout


class Recorder(torch.nn.Module):
    """Wraps a model and records every call's input ids and times."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.calls = model, model.cfg, []

    def forward(self, x, t=None, key_padding_mask=None, logits_at=None, columns=None):
        self.calls.append((x.clone(), t.clone()))
        return self.inner(x, t, key_padding_mask, logits_at, columns)


def random_model(lay, seed=0, **kw):
    torch.manual_seed(seed)
    model = medim.MeDiM(lay.config(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def settings(**kw):
    """Unguided, sampled tokens, confidence order, no blocks or threshold: the plainest sampler, plus what a test
    changes."""
    return medim.SamplerConfig(**{"cfg_scale": 0.0, "i2t_cfg_scale": 0.0, "token_temperature": 1.0,
                                  "text_left_to_right": False, "text_block": 0, "threshold": 0.0, **kw})


def masked_copy(x, lay, image=False, text=False, text_from=0):
    x = x.clone()
    if image:
        x[:, lay.segment_ids == medim.IMAGE] = lay.mask_id
    if text:
        x[:, 3 + lay.N + text_from:] = lay.mask_id
    return x


def expected_counts(n, steps, schedule="arccos"):
    """Independent numpy version: share of step i proportional to arccos(1 - (i+1)/S) (or 1), cumulative counts rounded."""
    w = np.arccos(1 - np.arange(1, steps + 1) / steps) if schedule == "arccos" else np.ones(steps)
    done = np.round(n * np.cumsum(w) / w.sum())
    return np.diff(np.concatenate([[0], done])).astype(int)


@pytest.mark.parametrize("schedule", ["arccos", "linear"])
@pytest.mark.parametrize("n, steps", [(36, 8), (7, 4), (100, 16), (5, 5)])
def test_reveal_counts_sum_to_n_and_follow_the_formula(n, steps, schedule):
    counts = medim.reveal_counts(torch.tensor([n, 0]), steps, schedule).numpy()
    assert counts[0].sum() == n and (counts[0] >= 0).all() and (counts[1] == 0).all()
    np.testing.assert_array_equal(counts[0], expected_counts(n, steps, schedule))
    if n >= 4 * steps and schedule == "arccos":
        assert counts[0, 0] < counts[0, -1]  # few tokens early, many late


def test_number_unmasked_per_step_follows_the_schedule_and_time_is_the_masked_fraction():
    lay = ToyLayout(N=36, L=6)
    model = Recorder(random_model(lay))
    x = masked_copy(lay.random_batch(2, torch.Generator().manual_seed(0)), lay, image=True)  # report -> image
    out = medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=8),
                       generator=torch.Generator().manual_seed(1))
    still_masked = [int((xs[0] == lay.mask_id).sum()) for xs, _ in model.calls] + [int((out[0] == lay.mask_id).sum())]
    revealed = -np.diff(still_masked)
    np.testing.assert_array_equal(revealed, expected_counts(36, 8))
    for xs, t in model.calls:
        assert torch.allclose(t, (xs == lay.mask_id).sum(1) / (lay.N + lay.L))


def test_conditioning_never_changes_and_everything_is_filled_with_legal_ids():
    lay = ToyLayout(N=12, L=8)
    model = random_model(lay)
    x0 = lay.random_batch(4, torch.Generator().manual_seed(0))
    x = torch.cat([masked_copy(x0[:1], lay, image=True),            # report -> image
                   masked_copy(x0[1:2], lay, text=True),            # image -> report
                   masked_copy(x0[2:3], lay, image=True, text=True),  # joint pair from the domain tag
                   masked_copy(x0[3:], lay, image=True, text=True, text_from=2)])  # joint pair from a prompt
    for ltr in (False, True):
        out = medim.sample(model, x, lay.segment_ids, lay.legal,
                           settings(sample_steps=5, cfg_scale=2.0, i2t_cfg_scale=2.0, text_left_to_right=ltr),
                           generator=torch.Generator().manual_seed(1))
        todo = x == lay.mask_id
        assert torch.equal(out[~todo], x[~todo])
        assert not (out == lay.mask_id).any()
        assert lay.legal[lay.segment_ids.expand_as(out), out].all()


def test_fully_masked_input_comes_out_fully_filled():
    lay = ToyLayout(N=9, L=7)
    model = random_model(lay)
    x = masked_copy(lay.random_batch(3, torch.Generator().manual_seed(0)), lay, image=True, text=True)
    model = Recorder(model)
    out = medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=3, text_steps=7),
                       generator=torch.Generator().manual_seed(0))
    assert len(model.calls) == 7                                       # the text's 7 steps; the image was done after 3
    assert not (out == lay.mask_id).any()
    assert lay.legal[lay.segment_ids.expand_as(out), out].all()
    assert torch.equal(out[:, :2], x[:, :2])


def test_seeds_reproduce_and_different_seeds_differ():
    lay = ToyLayout(N=12, L=8)
    model = random_model(lay)
    x = masked_copy(lay.random_batch(4, torch.Generator().manual_seed(0)), lay, image=True, text=True)
    run = lambda seed: medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=4),
                                    generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_no_noise_and_argmax_tokens_are_deterministic_without_a_seed():
    lay = ToyLayout(N=12, L=8)
    model = random_model(lay)
    x = masked_copy(lay.random_batch(2, torch.Generator().manual_seed(0)), lay, text=True)
    run = lambda seed: medim.sample(model, x, lay.segment_ids, lay.legal,
                                    settings(sample_steps=4, temperature=0.0, token_temperature=0.0),
                                    generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(2))


def test_cfg_scale_zero_equals_plain_sampling():
    """The guided path with a vanishing scale (uncond rows built, batched, combined) gives plain sampling's tokens, and
    the combination itself is exactly c at w = 0."""
    lay = ToyLayout(N=12, L=8)
    model = random_model(lay)
    x = masked_copy(lay.random_batch(4, torch.Generator().manual_seed(0)), lay, text=True)
    run = lambda scale: medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=4, i2t_cfg_scale=scale),
                                     generator=torch.Generator().manual_seed(7))
    plain = run(0.0)
    assert torch.equal(run(1e-9), plain)
    assert not torch.equal(run(5.0), plain)  # ...and real guidance does change the samples
    t = torch.rand(4)
    x_u = torch.where(x == lay.mask_id, x, lay.mask_id)
    with torch.no_grad():
        assert torch.allclose(medim.guided_logits(model, x, t, x_u, t, torch.zeros(4, lay.T)), model(x, t), atol=1e-5)


def test_cfg_runs_one_batched_forward_per_step_with_the_condition_masked_in_the_uncond_rows():
    lay = ToyLayout(N=12, L=8)
    model = Recorder(random_model(lay))
    x = masked_copy(lay.random_batch(2, torch.Generator().manual_seed(0)), lay, text=True)  # image -> report
    medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=4, i2t_cfg_scale=3.0),
                 generator=torch.Generator().manual_seed(0))
    assert len(model.calls) == 4
    image = lay.segment_ids == medim.IMAGE
    for xs, t in model.calls:
        cond, uncond = xs[:2], xs[2:]
        assert xs.shape[0] == 4
        assert torch.equal(cond[:, image], x[:, image]) and (uncond[:, image] == lay.mask_id).all()
        assert torch.equal(cond[:, ~image], uncond[:, ~image])          # same generated text in both branches
        assert (t[2:] > t[:2]).all()                                    # each branch's own masked fraction


def test_each_modality_is_guided_by_its_own_scale_and_an_unguided_one_runs_no_extra_rows():
    """cfg_scale guides the image slots (report -> image), i2t_cfg_scale the text slots (image -> report)."""
    lay = ToyLayout(N=12, L=8)
    model = Recorder(random_model(lay))
    x0 = lay.random_batch(3, torch.Generator().manual_seed(0))
    for target, own, other in (("image", "cfg_scale", "i2t_cfg_scale"), ("text", "i2t_cfg_scale", "cfg_scale")):
        x = masked_copy(x0, lay, **{target: True})
        def run(**scales):
            model.calls.clear()
            out = medim.sample(model, x, lay.segment_ids, lay.legal, settings(sample_steps=4, **scales),
                               generator=torch.Generator().manual_seed(5))
            return out, {xs.shape[0] for xs, _ in model.calls}
        plain, rows = run()
        assert rows == {3}                                                   # no unconditional rows without guidance
        assert torch.equal(run(**{other: 4.0})[0], plain) and run(**{other: 4.0})[1] == {3}   # the other scale: no effect
        guided, rows = run(**{own: 4.0})
        assert rows == {6} and not torch.equal(guided, plain)


def test_text_left_to_right_reveals_text_slots_in_position_order():
    lay = ToyLayout(N=12, L=8)
    model = Recorder(random_model(lay))
    x = masked_copy(lay.random_batch(2, torch.Generator().manual_seed(0)), lay, text=True)
    out = medim.sample(model, x, lay.segment_ids, lay.legal, settings(text_left_to_right=True),  # text_steps 0: 1/slot
                       generator=torch.Generator().manual_seed(0))
    states = [xs for xs, _ in model.calls] + [out]
    text = lay.segment_ids == medim.TEXT
    for k, xs in enumerate(states):
        revealed = xs[:, text] != lay.mask_id
        assert (revealed.sum(1) == k).all()                             # one text token per step
        assert revealed[:, :k].all()                                    # ...always the leftmost masked one


def test_mask_at_a_never_diffused_position_is_a_clear_error():
    lay = ToyLayout()
    model = random_model(lay)
    x = lay.random_batch(1, torch.Generator().manual_seed(0))
    x[0, 0] = lay.mask_id
    with pytest.raises(ValueError, match="segment 0"):
        medim.sample(model, x, lay.segment_ids, lay.legal)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_draw_tokens_samples_the_tempered_distribution_and_never_a_zero_probability_id(temperature):
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    n = 200_000
    logp = p.log().expand(n, -1)
    drawn = medim.draw_tokens(logp, temperature, torch.Generator().manual_seed(0))
    want = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
    freq = torch.bincount(drawn, minlength=5).double() / n
    assert (freq - want).abs().max() < 4 * math.sqrt(0.25 / n)
    assert freq[4] == 0
    assert torch.equal(medim.draw_tokens(logp[:3], 0.0, None), torch.zeros(3, dtype=torch.long))  # argmax


def test_guided_logits_at_selected_positions_equal_the_full_ones():
    lay = ToyLayout(N=12, L=8)
    model = random_model(lay)
    x = masked_copy(lay.random_batch(3, torch.Generator().manual_seed(0)), lay, text=True)
    x[0, lay.segment_ids == medim.IMAGE] = lay.mask_id  # row 0 a joint row: masked slots of both segments
    x_u = torch.where(lay.segment_ids == medim.IMAGE, lay.mask_id, x)
    t, t_u, w = torch.rand(3), torch.rand(3), torch.tensor([0.0, 1.0, 3.0])[:, None] * torch.rand(lay.T)  # (B, T)
    at = x == lay.mask_id
    with torch.no_grad():
        full = medim.guided_logits(model, x, t, x_u, t_u, w)
        assert torch.allclose(medim.guided_logits(model, x, t, x_u, t_u, w, logits_at=at), full[at], atol=1e-5)
        c, u = model(x, t), model(x_u, t_u)
        assert torch.allclose(full, (1 + w[..., None]) * c - w[..., None] * u, atol=1e-4)
        # with columns: each masked row's guided logits at its own segment's ids only, the same numbers
        rows = medim.segment_rows(lay.segment_ids.expand(3, -1)[at])
        vocab = medim.segment_vocab(lay.legal, lay.mask_id)
        per_segment = medim.guided_logits(model, x, t, x_u, t_u, w, logits_at=at,
                                          columns=medim.segment_columns(rows, vocab))
        assert set(per_segment) == {medim.IMAGE, medim.TEXT} and all(len(rows[s]) > 0 for s in rows)
        for s, l in per_segment.items():
            assert torch.allclose(l, full[at][rows[s]][:, vocab[s]], atol=1e-5)


def test_sampler_settings_refuse_impossible_values_and_read_old_checkpoint_dicts():
    with pytest.raises(ValueError, match="sample_steps"):
        medim.SamplerConfig(sample_steps=0)
    with pytest.raises(ValueError, match="temperature"):
        medim.SamplerConfig(token_temperature=-1.0)
    old_train_config = {"sample_steps": 8, "cfg_scale": 1.5, "i2t_cfg_scale": 0.5, "temperature": 0.5, "steps": 4400,
                        "token_temperature": 1.0, "text_left_to_right": False, "text_steps": 3, "lr": 2e-3}
    got = medim.SamplerConfig.from_dict(old_train_config)
    assert (got.sample_steps, got.cfg_scale, got.i2t_cfg_scale, got.temperature, got.token_temperature,
            got.text_left_to_right, got.text_steps) == (8, 1.5, 0.5, 0.5, 1.0, False, 3)
    assert medim.SamplerConfig.from_dict({}) == medim.SamplerConfig()
