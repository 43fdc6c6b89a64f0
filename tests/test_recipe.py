"""The recipe flags of train.py do what they say: presets (the paper's among them), explicit flags over presets, the
sampler's flags, sentence order, loader options."""
import contextlib
import inspect
import io
from dataclasses import asdict

import pytest

import data
import medim
import train


def parse(argv):
    return train.parse_args(argv)[0]


def test_preset_fills_the_fields_you_did_not_set_and_explicit_flags_win():
    smoke = parse(["--preset", "smoke"])
    for key, value in train.PRESETS["smoke"].items():
        assert getattr(smoke, key) == value, key
    mixed = parse(["--preset", "smoke", "--steps", "7", "--d-model", "96", "--n-heads", "4"])
    assert (mixed.steps, mixed.d_model, mixed.n_layers) == (7, 96, train.PRESETS["smoke"]["n_layers"])
    assert parse([]).steps == train.TrainConfig().steps  # the default preset changes nothing
    assert parse([]).compile and not smoke.compile            # compiled by default; the 2-minute look is not


def test_real256_preset_gives_256_image_tokens_and_vq_f_must_divide_the_image_size(capsys):
    cfg = parse(["--preset", "real256"])
    assert (cfg.image_size // cfg.vq_f) ** 2 == 256 and cfg.codebook_size == 1024
    with pytest.raises(SystemExit):
        parse(["--image-size", "64", "--vq-f", "24"])
    assert "--vq-f" in capsys.readouterr().err


def test_paper_preset_sets_the_papers_recipe_and_medims_loss_defaults_are_that_recipe():
    cfg, sampler = train.parse_args(["--preset", "paper", "--cfg-scale", "3"])
    chosen = {**asdict(cfg), **asdict(sampler)}
    for key, value in train.PAPER.items():
        if key != "cfg_scale":
            assert chosen[key] == value, key
    assert sampler.cfg_scale == 3.0                                          # an explicit flag still wins
    ours = {**asdict(train.TrainConfig()), **asdict(medim.SamplerConfig())}
    assert all(ours[key] != value for key, value in train.PAPER.items())     # PAPER lists deviations only
    loss_defaults = {k: p.default for k, p in inspect.signature(medim.diffusion_loss).parameters.items()
                     if k in train.PAPER}
    assert loss_defaults == {k: train.PAPER[k] for k in loss_defaults} and len(loss_defaults) == 5


def test_sampler_flags_fill_the_sampler_settings_and_bad_ones_are_refused(capsys):
    cfg, sampler = train.parse_args(["--cfg-scale", "1.5", "--i2t-cfg-scale", "0", "--no-text-left-to-right",
                                     "--sample-steps", "8"])
    assert (sampler.cfg_scale, sampler.i2t_cfg_scale, sampler.text_left_to_right, sampler.sample_steps) == \
        (1.5, 0.0, False, 8)
    assert train.parse_args([])[1] == medim.SamplerConfig()                  # defaults live in the dataclass only
    with pytest.raises(SystemExit):
        train.parse_args(["--sample-steps", "0"])
    assert "sample_steps" in capsys.readouterr().err


def test_help_shows_each_default_once():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(out.getvalue().split())
    assert "default 'synthetic'" in text and "default 2.0" in text and "(default:" not in text


def test_unknown_preset_and_bad_values_are_refused(capsys):
    for argv in (["--preset", "huge"], ["--steps", "0"], ["--d-model", "100", "--n-heads", "3"], ["--dtype", "fp8"]):
        with pytest.raises(SystemExit):
            train.parse_args(argv)
    assert "--dtype" in capsys.readouterr().err


def test_sentence_order_is_canonical_unless_shuffling_is_asked_for():
    canonical = parse([])
    shuffled = parse(["--shuffle-sentences"])
    a = data.load_pairs("synthetic", "train", limit=None, **train.data_options(canonical))
    b = data.load_pairs("synthetic", "train", limit=None, **train.data_options(shuffled))
    reports_a = [a[i].report for i in range(200)]
    reports_b = [b[i].report for i in range(200)]
    assert all(r.startswith("FINDINGS:") for r in reports_a)
    assert sum(x != y for x, y in zip(reports_a, reports_b)) > 50   # same findings, other orders
    assert [a[i].labels for i in range(200)] == [b[i].labels for i in range(200)]


def test_data_options_parse_numbers_booleans_and_refuse_garbage():
    cfg = parse(["--data-options", "section=both,fallback=true,workers=4"])
    assert train.data_options(cfg) == {"section": "both", "fallback": True, "workers": 4}
    assert data.parse_options("a=1,b=False,,c= x") == {"a": 1, "b": False, "c": "x"}
    with pytest.raises(SystemExit):
        train.data_options(parse(["--data-options", "section"]))
    with pytest.raises(ValueError, match="key=value"):
        data.parse_options("section")


def test_a_two_domain_evaluation_takes_n_eval_pairs_of_each_domain():
    import eval as ev
    test = data.load_pairs("synthetic,synthetic-path", "test")
    pairs = ev.evaluation_pairs(test, 3)
    assert [p.domain for p in pairs] == ["cxr"] * 3 + ["path"] * 3
    assert [p.uid for p in ev.evaluation_pairs(data.load_pairs("synthetic", "test"), 3)] == [p.uid for p in pairs[:3]]


def test_image_and_position_flags_reach_the_model():
    """--abs-pos / --codebook-embed are on by default (docs/experiments.md); --no-… turns each off."""
    import torch
    vocab = type("V", (), dict(size=300, seq_len=40, mask_id=100, image_offset=101))()
    codebook = torch.randn(199, 8, generator=torch.Generator().manual_seed(0))
    log = lambda msg: None
    def build(*flags):
        torch.manual_seed(0)
        return train.build_model(parse(list(flags)), vocab, log, codebook=codebook)
    default, random_rows = build(), build("--no-codebook-embed")
    assert default.cfg.abs_pos and not build("--no-abs-pos").cfg.abs_pos
    text_rows, image_rows = slice(0, 101), slice(101, 300)
    e_default, e_random = default.model.embed_tokens.weight.detach(), random_rows.model.embed_tokens.weight.detach()
    assert torch.equal(e_default[text_rows], e_random[text_rows])
    assert not torch.equal(e_default[image_rows], e_random[image_rows])   # the codebook init replaced the random rows


def test_codebook_initialised_image_embeddings_follow_the_codebook():
    """Image-code rows become codebook @ random projection at the rows' old scale: codes that look alike get embeddings
    that point alike (inner products kept, Johnson–Lindenstrauss), equal codes get equal rows, text rows stay."""
    import torch
    from medim import MeDiM, MeDiMConfig
    K, c, offset = 64, 8, 40
    model = MeDiM(MeDiMConfig(vocab_size=offset + K, seq_len=16, d_model=128))
    before = model.model.embed_tokens.weight.detach().clone()
    codebook = torch.randn(K, c, generator=torch.Generator().manual_seed(0))
    codebook[1] = codebook[0]
    train.init_image_embeddings(model, codebook, offset, seed=0)
    rows = model.model.embed_tokens.weight.detach()
    assert torch.equal(rows[:offset], before[:offset])
    assert torch.equal(rows[offset], rows[offset + 1])
    assert abs(rows[offset:].std() / before[offset:].std() - 1) < 1e-4
    centred = codebook - codebook.mean(0)
    gram_code = (centred @ centred.T).flatten()
    gram_emb = (rows[offset:] @ rows[offset:].T).flatten()
    assert torch.corrcoef(torch.stack([gram_code, gram_emb]))[0, 1] > 0.9
    fresh = MeDiM(MeDiMConfig(vocab_size=offset + K, seq_len=16, d_model=128)).model.embed_tokens.weight.detach()
    assert torch.corrcoef(torch.stack([gram_code, (fresh[offset:] @ fresh[offset:].T).flatten()]))[0, 1] < 0.5
