"""medim.sample's faster decoders (SamplerConfig.threshold, text_block, remask_steps): defaults bit-identical to the
sampler they extend, every masked slot revealed once, fewer forwards with a confidence threshold, blocks, remasking
that only touches generated tokens, rows of different lengths, legal ids, seeds, and the flags that expose them."""
import math

import pytest
import torch

import medim
from medim_toy import ToyLayout

LAY = ToyLayout(N=12, L=10)
TEXT_AT = LAY.segment_ids == medim.TEXT


class Recorder(torch.nn.Module):
    """Wraps a model and records every call's input ids."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.calls = model, model.cfg, []

    def forward(self, x, t=None, key_padding_mask=None, logits_at=None, columns=None):
        self.calls.append(x.clone())
        return self.inner(x, t, key_padding_mask, logits_at, columns)


def random_model(seed=0, peaked=1.0):
    """A tiny random MeDiM; peaked > 1 scales its output layer, so its distributions are sharp (a confident model)."""
    torch.manual_seed(seed)
    model = medim.MeDiM(LAY.config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.lm_head.weight.mul_(peaked)
    return model


def mixed_batch(seed=0):
    """Rows of every task with different numbers of masked slots, each with its own condition: image -> report (the
    whole report, then after a 2- and a 5-token prompt), report -> image, and a joint pair from a 3-token prompt."""
    x = LAY.random_batch(5, torch.Generator().manual_seed(seed))
    image, text = LAY.segment_ids == medim.IMAGE, TEXT_AT.nonzero().squeeze(1)
    x[0, text] = x[1, text[2:]] = x[2, text[5:]] = LAY.mask_id
    x[3, image] = LAY.mask_id
    x[4, image] = x[4, text[3:]] = LAY.mask_id
    x[4, text[:3]] = torch.tensor([0, 1, 2])  # a prompt no other row has, so each row's condition is its own
    return x


def i2t_batch(B=3, seed=0):
    x = LAY.random_batch(B, torch.Generator().manual_seed(seed))
    x[:, TEXT_AT] = LAY.mask_id
    return x


# the sampler the options extend: one text slot per step, left to right (the default decoder adds blocks and threshold)
ONE_SLOT_PER_STEP = dict(text_block=0, threshold=0.0)


def run(model, x, seed=1, **settings):
    return medim.sample(model, x, LAY.segment_ids, LAY.legal, medim.SamplerConfig(**{**ONE_SLOT_PER_STEP, **settings}),
                        generator=torch.Generator().manual_seed(seed))


def histories(calls, x, out):
    """For each row of x, the states it went through: its row in each recorded forward (found by its condition, which
    never changes; the unconditional CFG rows have it masked and match no row), then the output."""
    given = x != LAY.mask_id
    hist = [[] for _ in x]
    for xs in calls:
        for row in xs:
            match = [b for b in range(len(x)) if torch.equal(row[given[b]], x[b][given[b]])]
            assert len(match) <= 1
            if match:
                hist[match[0]].append(row)
    return [h + [o] for h, o in zip(hist, out)]


OPTIONS = [dict(threshold=0.3, image_threshold=0.3), dict(threshold=0.3, text_left_to_right=False), dict(text_block=4),
           dict(text_block=3, threshold=0.3, image_threshold=0.3), dict(image_threshold=0.3),
           dict(threshold=0.2, image_threshold=0.2, sample_steps=4, text_steps=3), dict(text_block=4, text_steps=4)]


@torch.no_grad()
def reference_sample(model, x, segment_ids, legal, sampler=None, *, generator=None):
    """medim.sample before the faster decoders were added, verbatim but for this docstring."""
    sampler = sampler or medim.SamplerConfig()
    mask_id = model.cfg.mask_id
    if mask_id < 0:
        raise ValueError("sample: model.cfg.mask_id is not set (use tokenizer Vocab.mask_id)")
    x = x.clone()
    B, T = x.shape
    seg = segment_ids.to(x.device).expand(B, T)                                          # (B, T)
    todo = x == mask_id                                                                   # (B, T) to generate
    if (todo & (seg == 0)).any():
        raise ValueError("sample: [MASK] at a never-diffused position (segment 0: domain tag, <boi>, <eoi>)")
    cond = (seg > 0) & ~todo                                  # the condition: never changes; masked in the uncond rows
    vocab = medim.segment_vocab(legal.to(x.device), mask_id)                                   # segment -> legal ids
    n_diffused = (seg > 0).sum(1).clamp(min=1)                                            # (B,)
    tables = {}                                                                           # segment -> (B, S_seg)
    for s in (medim.IMAGE, medim.TEXT):
        n = (todo & (seg == s)).sum(1)                                                    # (B,)
        if n.max() > 0:
            ltr = s == medim.TEXT and sampler.text_left_to_right
            s_steps = sampler.sample_steps
            if s == medim.TEXT and sampler.text_steps:
                s_steps = sampler.text_steps
            elif ltr:
                s_steps = int(n.max())                                                    # one slot per step
            tables[s] = medim.reveal_counts(n, max(1, min(s_steps, int(n.max()))), 'linear' if ltr else 'arccos')
    S = max((tab.shape[1] for tab in tables.values()), default=0)
    positions = torch.arange(T, device=x.device, dtype=torch.float64).expand(B, T)
    scale = {medim.IMAGE: sampler.cfg_scale, medim.TEXT: sampler.i2t_cfg_scale}
    use_cfg = bool(cond.any()) and any(scale[s] != 0 for s in tables)
    scale_at = torch.where(seg == medim.IMAGE, scale[medim.IMAGE], scale[medim.TEXT])                      # (B, T)

    def denoise(x, masked, token_temperature):
        """One denoiser call (guided when CFG is on), then a token drawn at every masked slot from SUBS there
        (medim.subs_logprobs). Returns the ids and their log-probs, (M,) each."""
        t = masked.sum(1) / n_diffused
        rows = medim.segment_rows(seg[masked])                                                  # segment -> (M_s,)
        if not use_cfg:
            logits = model(x, t, logits_at=masked)                                        # (M, V)
        else:
            x_u = torch.where(cond, mask_id, x)
            t_u = (x_u == mask_id).sum(1) / n_diffused
            remaining = (masked & todo).sum(1) / todo.sum(1).clamp(min=1)                # 1 at the start, 0 at the end
            w = (1 - remaining)[:, None] * scale_at                                       # (B, T)
            logits = medim.guided_logits(model, x, t, x_u, t_u, w, logits_at=masked)            # (M, V)
        drawn = torch.zeros(len(logits), dtype=torch.long, device=x.device)
        logp_drawn = torch.zeros(len(logits), dtype=torch.float64, device=x.device)
        for s, logp in medim.subs_logprobs(logits, rows, vocab).items():                        # (M_s, V_s)
            k = medim.draw_tokens(logp, token_temperature, generator)                           # (M_s,) columns
            drawn[rows[s]], logp_drawn[rows[s]] = vocab[s][k], logp.gather(1, k[:, None]).squeeze(1).double()
        return drawn, logp_drawn

    for i in range(S):
        masked = x == mask_id                                                             # (B, T)
        drawn, logp_drawn = denoise(x, masked, sampler.token_temperature)                 # (M,) one per masked slot
        tokens = torch.full_like(x, mask_id).masked_scatter_(masked, drawn)               # (B, T)
        conf = torch.zeros(B, T, dtype=torch.float64, device=x.device).masked_scatter_(masked, logp_drawn)
        conf = conf + sampler.temperature * (1 - (i + 1) / S) * medim.gumbel((B, T), generator, x.device)
        reveal = torch.zeros_like(masked)
        for s, table in tables.items():
            if i >= table.shape[1]:
                continue
            candidates = masked & (seg == s)
            ltr = s == medim.TEXT and sampler.text_left_to_right
            score = -positions if ltr else conf  # leftmost first, or most confident
            reveal |= medim.top_n_per_row(score.masked_fill(~candidates, float('-inf')), table[:, i]) & candidates
        x = torch.where(reveal, tokens, x)
    masked = x == mask_id
    if masked.any():  # a guard (the count tables reveal everything): argmax-fill leftovers, the official noise removal
        x = x.masked_scatter(masked, denoise(x, masked, 0.0)[0])
    return x


@pytest.mark.parametrize("settings", [dict(), dict(token_temperature=1.0), dict(text_left_to_right=False),
                                      dict(cfg_scale=0.0, i2t_cfg_scale=0.0, text_steps=3, sample_steps=5)])
def test_default_decoders_reproduce_the_previous_sampler_bit_for_bit(settings):
    model = random_model()
    for x in (mixed_batch(), i2t_batch()):
        sampler = medim.SamplerConfig(**{**ONE_SLOT_PER_STEP, **settings})
        want = reference_sample(model, x, LAY.segment_ids, LAY.legal, sampler,
                                generator=torch.Generator().manual_seed(4))
        assert torch.equal(run(model, x, seed=4, **settings), want)


@pytest.mark.parametrize("token_temperature", [0.0, 1.0])
def test_text_block_of_one_is_left_to_right_decoding(token_temperature):
    model = random_model()
    for x in (mixed_batch(), i2t_batch()):
        ltr = reference_sample(model, x, LAY.segment_ids, LAY.legal,
                               medim.SamplerConfig(token_temperature=token_temperature),
                               generator=torch.Generator().manual_seed(2))
        for left_to_right in (True, False):  # blocks decide the order, whatever text_left_to_right says
            blocks = run(model, x, seed=2, text_block=1, text_left_to_right=left_to_right,
                         token_temperature=token_temperature)
            assert torch.equal(blocks, ltr)


@pytest.mark.parametrize("settings", OPTIONS, ids=str)
def test_every_masked_slot_is_revealed_exactly_once_and_rows_of_any_length_finish(settings):
    model = Recorder(random_model())
    x = mixed_batch()
    out = run(model, x, **settings)
    todo = x == LAY.mask_id
    for b, states in enumerate(histories(model.calls, x, out)):
        assert len(states) >= 2  # the row took part in at least one forward
        for before, after in zip(states, states[1:]):
            written = (before != after)
            assert (before[written] == LAY.mask_id).all()           # only masks are written
            if "threshold" in settings and "image_threshold" in settings:  # at least one per step (else a short row
                #   may wait: its table has 0 there)
                assert written.any()
        assert torch.equal(out[b][~todo[b]], x[b][~todo[b]])
    assert not (out == LAY.mask_id).any()


@pytest.mark.parametrize("settings", OPTIONS + [dict(remask_steps=2, remask_ratio=0.3),
                                                dict(remask_steps=1, threshold=0.3, text_block=4)], ids=str)
def test_every_option_fills_only_legal_ids_and_keeps_the_condition(settings):
    model = random_model()
    x = mixed_batch()
    for cfg in (0.0, 2.0):
        out = run(model, x, cfg_scale=cfg, i2t_cfg_scale=cfg, token_temperature=1.0, **settings)
        todo = x == LAY.mask_id
        assert torch.equal(out[~todo], x[~todo])
        assert not (out == LAY.mask_id).any()
        assert LAY.legal[LAY.segment_ids.expand_as(out), out].all()


def test_threshold_one_reveals_one_token_per_step_and_equals_left_to_right():
    model = Recorder(random_model(peaked=20.0))
    x = i2t_batch()
    out = run(model, x, threshold=1.0)
    assert len(model.calls) == LAY.L                                 # one forward per text slot
    for k, xs in enumerate(model.calls):
        assert ((xs[:3, TEXT_AT] != LAY.mask_id).sum(1) == k).all()  # (the CFG forward holds 3 + 3 rows)
    assert torch.equal(out, run(random_model(peaked=20.0), x))


def test_threshold_needs_fewer_forwards_on_a_confident_model():
    x = i2t_batch()
    for peaked in (2.0, 5.0):
        model = Recorder(random_model(peaked=peaked))
        out = run(model, x, threshold=0.9)
        assert len(model.calls) < LAY.L                                  # one per slot without the threshold
        assert torch.equal(out, run(model.inner, x))                      # a sure model: the same report, faster


def test_threshold_is_per_modality_threshold_for_reports_image_threshold_for_images():
    model = Recorder(random_model(peaked=5.0))
    t2i = LAY.random_batch(3, torch.Generator().manual_seed(0))
    t2i[:, LAY.segment_ids == medim.IMAGE] = LAY.mask_id
    plain = run(model, t2i)
    n_plain, model.calls = len(model.calls), []
    assert torch.equal(run(model, t2i, threshold=0.9), plain)              # no text slot to fill: nothing changes
    assert torch.equal(run(model, i2t_batch(), image_threshold=0.9), run(model, i2t_batch()))
    model.calls = []
    run(model, t2i, image_threshold=0.9)
    assert len(model.calls) < n_plain                                      # a sure model: fewer image steps


def test_threshold_reveals_at_least_one_slot_per_step_and_done_rows_leave_the_batch():
    model = Recorder(random_model())
    x = mixed_batch()
    out = run(model, x, threshold=0.6, image_threshold=0.6, cfg_scale=0.0, i2t_cfg_scale=0.0)
    for states in histories(model.calls, x, out):
        for before, after in zip(states, states[1:]):
            assert ((before == LAY.mask_id) & (after != LAY.mask_id)).sum() >= 1
    rows = [len(xs) for xs in model.calls]
    assert rows == sorted(rows, reverse=True) and rows[-1] < rows[0]


def test_threshold_left_to_right_reveals_a_prefix_of_the_report():
    model = Recorder(random_model())                                     # p of its tokens: 0.4 to 0.7
    x = i2t_batch(4)
    out = run(model, x, threshold=0.6, cfg_scale=0.0, i2t_cfg_scale=0.0)
    assert len(model.calls) < LAY.L                                      # the threshold did reveal runs
    for states in histories(model.calls, x, out):
        for state in states:
            revealed = (state[TEXT_AT] != LAY.mask_id).long()
            assert (revealed.diff() <= 0).all()                          # 1 1 1 0 0: no word after a hole


def test_text_blocks_are_filled_left_to_right_and_by_confidence_inside():
    model = Recorder(random_model())
    x = mixed_batch()
    out = run(model, x, text_block=3)
    todo_text = (x == LAY.mask_id) & TEXT_AT
    out_of_order = 0
    for b, states in enumerate(histories(model.calls, x, out)):
        slots = todo_text[b].nonzero().squeeze(1)                    # this row's slots to fill, left to right
        block = torch.arange(len(slots)) // 3
        for before, after in zip(states, states[1:]):
            new = (before[slots] == LAY.mask_id) & (after[slots] != LAY.mask_id)
            if new.any():
                current = block[before[slots] == LAY.mask_id].min()
                assert (block[new] == current).all()                 # only the first unfinished block
                out_of_order += int(new.nonzero().min() > (before[slots] == LAY.mask_id).nonzero().min())
    assert out_of_order > 0                                          # inside a block, not simply leftmost first


def test_remasking_only_touches_generated_tokens_and_ends_with_no_mask():
    model = Recorder(random_model())
    x = mixed_batch()
    plain = Recorder(random_model())
    run(plain, x, cfg_scale=0.0, i2t_cfg_scale=0.0)
    out = run(model, x, remask_steps=3, remask_ratio=0.25, cfg_scale=0.0, i2t_cfg_scale=0.0)
    assert len(model.calls) == len(plain.calls) + 3
    todo = x == LAY.mask_id
    for xs in model.calls[-3:]:                                     # the remask steps: every row, generated slots only
        assert len(xs) == len(x) and torch.equal(xs[~todo], x[~todo])
        for s in (medim.IMAGE, medim.TEXT):
            generated = todo & (LAY.segment_ids == s)
            masked = (xs == LAY.mask_id) & generated
            assert torch.equal(masked.sum(1), (generated.sum(1) * 0.25).ceil().long())
    assert torch.equal(out[~todo], x[~todo]) and not (out == LAY.mask_id).any()
    assert LAY.legal[LAY.segment_ids.expand_as(out), out].all()


def test_remasking_puts_back_the_least_sure_tokens():
    """The slots remasked are those whose tokens had the lowest probability when drawn, read off an independent
    forward of the model on the state each one was revealed from."""
    model, unguided = Recorder(random_model()), dict(cfg_scale=0.0, i2t_cfg_scale=0.0)
    x = i2t_batch(1)
    decoded = run(model.inner, x, **unguided)                        # the state the remask step starts from
    run(model, x, remask_steps=1, remask_ratio=0.3, **unguided)
    *steps, redo_state = model.calls
    vocab = medim.segment_vocab(LAY.legal, LAY.mask_id)[medim.TEXT]
    p_drawn = {}
    for before, after in zip(steps, steps[1:] + [decoded]):          # one text slot per step
        j = ((before[0] == LAY.mask_id) & (after[0] != LAY.mask_id)).nonzero().item()
        with torch.no_grad():
            logp = model.inner(before, (before == LAY.mask_id).sum(1) / (LAY.N + LAY.L))[0, j, vocab].log_softmax(-1)
        p_drawn[j] = logp[(vocab == after[0, j]).nonzero().item()].item()
    remasked = (redo_state[0] == LAY.mask_id).nonzero().squeeze(1).tolist()
    assert len(remasked) == math.ceil(0.3 * LAY.L) and set(remasked) <= set(p_drawn)
    kept = [j for j in p_drawn if j not in remasked]
    assert max(p_drawn[j] for j in remasked) <= min(p_drawn[j] for j in kept) + 1e-6


@pytest.mark.parametrize("settings", OPTIONS + [dict(remask_steps=2)], ids=str)
def test_same_seed_same_samples_and_another_seed_differs(settings):
    model = random_model()
    x = mixed_batch()
    a, b = (run(model, x, seed=3, token_temperature=1.0, **settings) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, run(model, x, seed=4, token_temperature=1.0, **settings))


def test_new_settings_refuse_impossible_values_and_old_checkpoints_get_todays_sampler():
    for bad in (dict(threshold=1.5), dict(threshold=-0.1), dict(image_threshold=2.0), dict(text_block=-1), dict(remask_steps=-1),
                dict(remask_ratio=0.0), dict(remask_ratio=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            medim.SamplerConfig(**bad)
    old = medim.SamplerConfig.from_dict({"sample_steps": 8, "text_left_to_right": True, "cfg_scale": 1.0})
    today = medim.SamplerConfig()
    assert (old.threshold, old.text_block, old.remask_steps) == (today.threshold, today.text_block, today.remask_steps)


def test_every_new_setting_is_a_flag_of_sample_py_and_train_py():
    import argparse

    import sample
    import train
    p = argparse.ArgumentParser()
    sample.add_sampler_flags(p)
    args = p.parse_args(["--threshold", "0.7", "--text-block", "8", "--remask-steps", "2", "--remask-ratio", "0.2"])
    got = sample.sampler_from_flags(medim.SamplerConfig(), args)
    assert (got.threshold, got.text_block, got.remask_steps, got.remask_ratio) == (0.7, 8, 2, 0.2)
    _, sampler = train.parse_args(["--threshold", "0.9", "--text-block", "16", "--out", "/nonexistent/run"])
    assert (sampler.threshold, sampler.text_block) == (0.9, 16)


def test_bench_settings_are_valid_samplers_and_rows_already_measured_are_skipped(tmp_path, monkeypatch):
    import json
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import sampler as bench
    for changes in bench.SETTINGS.values():
        medim.SamplerConfig(**changes)
    measured = []

    def fake_measure(model, tok, base, run, run_dir, pairs, train_pairs, setting, device):
        measured.append(setting)
        fwd = {"today": 64, "threshold-0.9": 20}[setting]
        return dict(setting=setting, n_pairs=4, i2t_f1=0.5, bleu4=0.1, t2i_f1=0.4, fd_oracle=3.0, i2t_forwards=fwd,
                    i2t_per_sample=fwd / 2, i2t_s=fwd / 10, t2i_forwards=16, t2i_per_sample=16.0, t2i_s=1.6)

    monkeypatch.setattr(bench, "load_run", lambda run_dir, device: (None, None, medim.SamplerConfig(), {
        "data": "synthetic", "data_dir": "", "image_size": 32, "seed": 0}))
    monkeypatch.setattr(bench, "evaluation_data", lambda *a, **kw: ([], {}))
    monkeypatch.setattr(bench, "generate", lambda *a, **kw: [])
    monkeypatch.setattr(bench, "condition_on_images", lambda *a: None)
    monkeypatch.setattr(bench, "measure", fake_measure)
    argv = ["--runs", str(tmp_path / "run_a"), "--out", str(tmp_path / "out"), "--settings", "today,threshold-0.9"]
    os.makedirs(tmp_path / "out" / "rows")
    with open(tmp_path / "out" / "rows" / "run_a__today.json", "w") as f:  # measured by an earlier, interrupted call
        json.dump(fake_measure(*[None] * 7, "today", None), f)
    measured.clear()
    rows = bench.main(argv)
    assert measured == ["threshold-0.9"]
    assert [r["setting"] for r in rows["run_a"]] == ["today", "threshold-0.9"]
    table = (tmp_path / "out" / "sampler.md").read_text()
    assert "| threshold-0.9 |" in table and "20 (10.0)" in table and "(3.20x)" in table  # 6.4 s / 2.0 s
    assert (tmp_path / "out" / "sampler.png").stat().st_size > 0
    bench.main(argv)
    assert measured == ["threshold-0.9"]                                       # nothing left to measure


def test_bench_mean_table_averages_runs_and_compares_with_todays_decoder_on_the_same_runs():
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import sampler as bench
    row = lambda setting, f1, fwd: dict(setting=setting, i2t_f1=f1, bleu4=0.3, i2t_per_sample=fwd, t2i_f1=0.9,
                                        fd_oracle=20.0, t2i_per_sample=16.0)
    rows = {"a": [row("today", 0.80, 64.0), row("fast", 0.82, 16.0), row("broken", 0.0, 4.0)],
            "b": [row("today", 0.90, 64.0), row("fast", 0.86, 8.0)], "c": [row("fast", 0.10, 1.0)]}  # c: no today
    lines = {line.split("|")[1].strip(): line for line in bench.mean_table(rows) if line.startswith("| ")}
    assert "| fast | 2 | 0.840 (-0.010) |" in lines["fast"] and "| 12.0 (0.19x) |" in lines["fast"]
    assert "| today | 2 | 0.850 (+0.000) |" in lines["today"]
    assert "| broken | 1 | 0.000 (-0.800) |" in lines["broken"]                  # a measured 0 is not "missing"
