"""The recipe flags of train.py do what they say: presets, explicit flags over presets, sentence order, loader options."""
import pytest

import data
import train


def test_preset_fills_the_fields_you_did_not_set_and_explicit_flags_win():
    smoke = train.parse_args(["--preset", "smoke"])
    for key, value in train.PRESETS["smoke"].items():
        assert getattr(smoke, key) == value, key
    mixed = train.parse_args(["--preset", "smoke", "--steps", "7", "--d-model", "96", "--n-heads", "4"])
    assert (mixed.steps, mixed.d_model, mixed.n_layers) == (7, 96, train.PRESETS["smoke"]["n_layers"])
    assert train.parse_args([]).steps == train.TrainConfig().steps  # the default preset changes nothing
    assert train.parse_args([]).compile and not smoke.compile            # compiled by default; the 2-minute look is not


def test_unknown_preset_and_bad_values_are_refused(capsys):
    for argv in (["--preset", "huge"], ["--steps", "0"], ["--d-model", "100", "--n-heads", "3"], ["--dtype", "fp8"]):
        with pytest.raises(SystemExit):
            train.parse_args(argv)
    assert "--dtype" in capsys.readouterr().err


def test_sentence_order_is_canonical_unless_shuffling_is_asked_for():
    canonical = train.parse_args([])
    shuffled = train.parse_args(["--shuffle-sentences"])
    a = data.load_pairs("synthetic", "train", limit=None, **train.data_options(canonical))
    b = data.load_pairs("synthetic", "train", limit=None, **train.data_options(shuffled))
    reports_a = [a[i].report for i in range(200)]
    reports_b = [b[i].report for i in range(200)]
    assert all(r.startswith("FINDINGS:") for r in reports_a)
    assert sum(x != y for x, y in zip(reports_a, reports_b)) > 50   # same findings, other orders
    assert [a[i].labels for i in range(200)] == [b[i].labels for i in range(200)]


def test_data_options_parse_numbers_booleans_and_refuse_garbage():
    cfg = train.parse_args(["--data-options", "section=both,fallback=true,workers=4"])
    assert train.data_options(cfg) == {"section": "both", "fallback": True, "workers": 4}
    with pytest.raises(SystemExit):
        train.data_options(train.parse_args(["--data-options", "section"]))



def test_each_direction_gets_its_own_guidance_scale():
    from types import SimpleNamespace
    from sample import sampling_settings
    tok = SimpleNamespace(vocab=SimpleNamespace(text_len=24))
    run_cfg = {"cfg_scale": 2.0, "i2t_cfg_scale": 0.5, "sample_steps": 8}
    assert sampling_settings(run_cfg, tok, "t2i")["cfg_scale"] == 2.0
    assert sampling_settings(run_cfg, tok, "i2t")["cfg_scale"] == 0.5
    assert sampling_settings(run_cfg, tok, "joint")["cfg_scale"] == 2.0      # a prompt is amplified like a report
    assert sampling_settings(run_cfg, tok, "i2t", cfg_scale=3.0)["cfg_scale"] == 3.0
    assert sampling_settings({}, tok, "i2t")["cfg_scale"] == 0.0              # runs from before the setting: no guidance
    assert sampling_settings(run_cfg, tok, "i2t")["text_steps"] == 24         # left to right: one slot per step


def test_a_two_domain_evaluation_takes_n_eval_pairs_of_each_domain():
    import eval as ev
    test = data.load_pairs("synthetic,synthetic-path", "test")
    pairs = ev.evaluation_pairs(test, 3)
    assert [p.domain for p in pairs] == ["cxr"] * 3 + ["path"] * 3
    assert [p.uid for p in ev.evaluation_pairs(data.load_pairs("synthetic", "test"), 3)] == [p.uid for p in pairs[:3]]


def test_image_and_position_flags_reach_the_model():
    """--abs-pos / --codebook-embed are on by default (README "How the default recipe was chosen"); --no-… turns each off."""
    import torch
    vocab = type("V", (), dict(size=300, seq_len=40, mask_id=100, image_offset=101))()
    codebook = torch.randn(199, 8, generator=torch.Generator().manual_seed(0))
    log = lambda msg: None
    def build(*flags):
        torch.manual_seed(0)
        return train.build_model(train.parse_args(list(flags)), vocab, log, codebook=codebook)
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
