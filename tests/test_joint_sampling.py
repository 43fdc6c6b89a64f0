"""Pairs generated together (sample.py's JOINT orders): random-order reveals ignore confidence, alternating redraws
the report from the finished image and then leaves the image to draw from it, and a prompt survives every order."""
import pytest
import torch

import medim
import sample
from medim_toy import ToyLayout, logits_for
from test_medim_sampler import Recorder, random_model, settings  # Recorder: (x, t) of every call

LAY = ToyLayout(N=12, L=10)
IMAGE_AT, TEXT_AT = LAY.segment_ids == medim.IMAGE, LAY.segment_ids == medim.TEXT


class ConfidentAtFirstSlots(torch.nn.Module):
    """A stand-in denoiser, the same logits for every row: sure of one code at the first 3 image slots, unsure
    (flat logits) everywhere else. A most-confident-first sampler reveals those 3 slots first."""

    def __init__(self):
        super().__init__()
        self.cfg = LAY.config()
        self.logits = torch.zeros(LAY.T, LAY.V)
        first = IMAGE_AT.nonzero().squeeze(1)[:3]
        self.logits[first, LAY.image_offset] = 30.0
        self.inputs = []

    def forward(self, x, t=None, key_padding_mask=None, logits_at=None, columns=None):
        self.inputs.append(x.clone())
        return logits_for(self.logits.expand(len(x), -1, -1), logits_at, columns)


def first_revealed_in_sure_slots(temperature):
    """Of the image slots revealed at the first step that reveals any, in 400 report -> image rows, the share that are
    the 3 sure ones (of 12)."""
    model = ConfidentAtFirstSlots()
    x = LAY.random_batch(400, torch.Generator().manual_seed(0))
    x[:, IMAGE_AT] = LAY.mask_id
    medim.sample(model, x, LAY.segment_ids, LAY.legal, medim.SamplerConfig(sample_steps=12, cfg_scale=0,
                 temperature=temperature, token_temperature=1.0), generator=torch.Generator().manual_seed(1))
    revealed = next(r for r in ((xs != LAY.mask_id) & IMAGE_AT for xs in model.inputs) if r.any())   # (B, T)
    assert 1 <= revealed.sum(1).max() <= 3                    # every row the same few slots (one reveal table)
    return (revealed[:, IMAGE_AT.nonzero().squeeze(1)[:3]].sum() / revealed.sum()).item()


def test_random_order_reveals_slots_whatever_their_confidence():
    assert first_revealed_in_sure_slots(temperature=0.0) == 1.0      # most confident first: the sure slots
    assert 0.15 < first_revealed_in_sure_slots(temperature=sample.RANDOM_ORDER) < 0.35   # about 3 / 12


def prompted_pairs(B=4):
    """Joint rows from a 3-token prompt: domain tag and the report's first words given, all else [MASK]."""
    x = LAY.random_batch(B, torch.Generator().manual_seed(0))
    text = TEXT_AT.nonzero().squeeze(1)
    x[:, IMAGE_AT] = LAY.mask_id
    x[:, text[3:]] = LAY.mask_id
    return x


def test_alternating_draws_the_report_from_the_finished_image_and_leaves_the_image_to_draw_from_it():
    model = Recorder(random_model(LAY))
    x = prompted_pairs()
    out = sample.alternating(model, x, LAY.segment_ids, LAY.legal, medim.SamplerConfig(joint_steps=5),
                             torch.Generator().manual_seed(0))
    report_slots = (x == LAY.mask_id) & TEXT_AT
    # the report pass starts from every image code filled and every generated report slot masked again
    restarts = [i for i, (xs, _) in enumerate(model.calls)
                if not (xs[:len(x)][:, IMAGE_AT] == LAY.mask_id).any() and (xs[:len(x)][report_slots] == LAY.mask_id).all()]
    assert restarts and restarts[0] > 0
    assert not (out[report_slots] == LAY.mask_id).any()              # the report is filled ...
    assert (out[:, IMAGE_AT] == LAY.mask_id).all()                    # ... and the image left for report -> image


@pytest.mark.parametrize("order", medim.JOINT_ORDERS)
def test_a_prompt_is_never_changed_by_joint_sampling(order):
    x = prompted_pairs()
    given = x != LAY.mask_id
    sampler = medim.SamplerConfig(joint_order=order, joint_steps=5)
    g = torch.Generator().manual_seed(0)
    first = sample.JOINT[order](random_model(LAY), x, LAY.segment_ids, LAY.legal, sampler, g)
    out = medim.sample(random_model(LAY), first, LAY.segment_ids, LAY.legal, sampler, generator=g)  # as generate does
    assert torch.equal(out[given], x[given]) and not (out == LAY.mask_id).any()


def test_every_joint_order_has_its_sampler_and_others_are_refused():
    assert set(sample.JOINT) == set(medim.JOINT_ORDERS)
    with pytest.raises(ValueError, match="joint_order"):
        medim.SamplerConfig(joint_order="together")
    with pytest.raises(ValueError, match="joint_steps"):
        medim.SamplerConfig(joint_steps=0)


def test_every_way_of_the_joint_orders_bench_is_a_valid_list_of_passes():
    import os
    import sys
    from dataclasses import replace
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import joint_orders
    for way, passes in joint_orders.WAYS.items():
        assert passes, way
        for fill, settings in passes:
            assert fill in (None, "image", "text", "report again", "image again", "image half again") or \
                fill.startswith("image again, best of "), way
            replace(medim.SamplerConfig(), **settings)  # raises on an unknown field or a bad value


def test_given_logprob_is_the_given_slots_under_subs_all_masked_at_once():
    model = random_model(LAY)
    x = LAY.random_batch(3, torch.Generator().manual_seed(0))
    at = TEXT_AT.expand(3, -1).clone()
    at[0] = IMAGE_AT                                                    # row 0 scores its image, rows 1-2 their report
    t = at.sum(1) / (LAY.segment_ids > 0).sum()
    legal_at = LAY.legal[LAY.segment_ids.expand(3, -1)]                                     # (B, T, V)
    legal_at[..., LAY.mask_id] = False
    logits = model(x.masked_fill(at, LAY.mask_id), t).masked_fill(~legal_at, float("-inf"))
    by_hand = (logits.log_softmax(-1).gather(2, x[..., None]).squeeze(2) * at).sum(1)        # (B,)
    assert torch.allclose(medim.given_logprob(model, x, LAY.segment_ids, LAY.legal, at), by_hand, atol=1e-4)


@pytest.mark.parametrize("masked_half", [IMAGE_AT, TEXT_AT])
def test_best_of_keeps_each_rows_draw_its_condition_is_likeliest_beside(masked_half):
    model, sampler = random_model(LAY), settings()               # unguided, sampled tokens: the draws differ
    x = LAY.random_batch(4, torch.Generator().manual_seed(1)).masked_fill(masked_half, LAY.mask_id)
    out = sample.best_of(model, x, LAY.segment_ids, LAY.legal, sampler, torch.Generator().manual_seed(0), 3)
    drawn = medim.sample(model, x.repeat_interleave(3, 0), LAY.segment_ids, LAY.legal, sampler,
                         generator=torch.Generator().manual_seed(0))                     # the same 3 candidates per row
    given = ~masked_half & (LAY.segment_ids > 0)
    score = medim.given_logprob(model, drawn, LAY.segment_ids, LAY.legal, given.expand(12, -1)).view(4, 3)
    assert torch.equal(out, drawn.view(4, 3, -1)[torch.arange(4), score.argmax(1)])
    assert torch.equal(out[:, given], x[:, given]) and not (out == LAY.mask_id).any()
    assert len({tuple(r[masked_half].tolist()) for r in drawn}) > 4                       # the candidates differ
