"""The report-first sequence layout (tokenizer.Vocab text_first, train.py --text-first): the same ids and tokens in
another order, found everywhere through segment_ids; saved in vocab.json (old files read as image first), keyed into
the token cache, kept by a resumed run; and a causal model then lets the image read the report."""
import json
import os

import numpy as np
import pytest
import torch

import medim
import sample
import tokenizer as tk
from data.synthetic import SyntheticDataset

REPORTS = ["FINDINGS: The heart is normal in size. No pleural effusion. IMPRESSION: No acute process.",
           "FINDINGS: Moderate cardiomegaly. Small left pleural effusion. IMPRESSION: Cardiomegaly."]


def tiny_tokenizers():
    """The same untrained VQ-VAE (64 px, 8×8 = 64 codes) and BPE in both layouts: {text_first: MedTokenizer}, with
    room for the longest report of the toy pairs used here, so none is cut."""
    torch.manual_seed(0)
    vq = tk.VQVAE(1, f=8, K=16, code_dim=8, ch=[8, 8, 8]).eval()
    vq.quantizer.codebook.normal_()
    reports = [p.report for p in toy_pairs(32) + toy_pairs(8, "train")] + REPORTS
    text = tk.train_bpe(reports, vocab_size=300)
    text_len = tk.text_len_for([len(e.ids) for e in text.encode_batch(reports, add_special_tokens=False)], quantile=1.0)
    return {first: tk.MedTokenizer(vq, text, tk.Vocab(text.get_vocab_size(), 16, 64, text_len, text_first=first), 64, 1)
            for first in (False, True)}


def toy_pairs(n, split="val"):
    data = SyntheticDataset("cxr", split, n=n, image_size=64)
    return [data[i] for i in range(n)]


@pytest.fixture(scope="module")
def toks():
    return tiny_tokenizers()


def tiny_model(vocab, seed=0, **kw):
    """A tiny MeDiM over vocab, its weights moved off their init (AdaLN included) so nothing passes for being zero."""
    torch.manual_seed(seed)
    model = medim.MeDiM(medim.MeDiMConfig(**medim.PRESETS["tiny"], vocab_size=vocab.size, seq_len=vocab.seq_len,
                                          mask_id=vocab.mask_id, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


#### the layout ########################################################################################################

def test_text_first_puts_the_report_slots_before_boi_image_eoi_in_the_same_id_space():
    a, b = tk.Vocab(50, 32, 4, 6), tk.Vocab(50, 32, 4, 6, text_first=True)
    assert b.segment_ids.tolist() == [0, 2, 2, 2, 2, 2, 2, 0, 1, 1, 1, 1, 0]
    assert (b.size, b.seq_len, b.mask_id, b.image_offset, b.boi, b.eoi) == \
        (a.size, a.seq_len, a.mask_id, a.image_offset, a.boi, a.eoi) and torch.equal(a.legal, b.legal)
    seq = b.encode([7, 8, 9], np.array([0, 31, 5, 5]), "path")
    o = b.image_offset
    assert seq.tolist() == [b.domain_id["path"], 7, 8, 9, b.eos, b.pad, b.pad, b.boi, o, o + 31, o + 5, o + 5, b.eoi]
    ids, codes, domain = b.decode(seq)
    assert ids == [7, 8, 9] and codes.tolist() == [0, 31, 5, 5] and domain == "path"
    # each segment holds exactly what the image-first layout holds there
    other = a.encode([7, 8, 9], np.array([0, 31, 5, 5]), "path")
    for s in (medim.IMAGE, medim.TEXT):
        assert np.array_equal(seq[b.segment_ids.numpy() == s], other[a.segment_ids.numpy() == s])
    seq[b.image_slots.start + 2] = b.pad
    with pytest.raises(ValueError, match=f"image slot 2 holds id {b.pad}"):
        b.decode(seq)


def test_pairs_round_trip_through_the_text_first_layout_as_through_the_image_first_one(toks):
    pairs = toy_pairs(6)
    rows = {first: tok.encode_pairs(pairs) for first, tok in toks.items()}                       # (6, T) each
    seg = toks[True].vocab.segment_ids.numpy()
    assert (rows[True][:, seg == medim.IMAGE] - toks[True].vocab.image_offset == toks[True].encode_images(
        [p.image for p in pairs])).all()
    for k, pair in enumerate(pairs):
        report, image, domain = toks[True].decode(rows[True][k])
        assert report == pair.report and domain == "cxr"
        ref = toks[False].decode(rows[False][k])
        assert report == ref[0] and np.array_equal(image, ref[1])


#### files a run directory holds ######################################################################################

def test_vocab_json_records_the_layout_and_an_old_file_without_it_loads_as_image_first(toks, tmp_path):
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    toks[True].save(new)
    toks[False].save(old)
    assert json.load(open(os.path.join(new, "vocab.json")))["text_first"] is True
    assert "text_first" not in json.load(open(os.path.join(old, "vocab.json")))   # image-first files as before
    back = tk.MedTokenizer.load(new).vocab
    assert back.text_first and torch.equal(back.segment_ids, toks[True].vocab.segment_ids)
    assert not tk.MedTokenizer.load(old).vocab.text_first
    meta = json.load(open(os.path.join(new, "vocab.json")))
    meta.pop("text_first")                                                         # a file written before the field
    open(os.path.join(new, "vocab.json"), "w").write(json.dumps(meta))
    assert not tk.MedTokenizer.load(new).vocab.text_first
    meta["text_first"] = "yes"
    open(os.path.join(new, "vocab.json"), "w").write(json.dumps(meta))
    with pytest.raises(ValueError, match="vocab.json is not a valid vocabulary file.*text_first"):
        tk.MedTokenizer.load(new)


def test_the_token_cache_of_one_layout_is_never_read_for_the_other(toks, tmp_path):
    pairs = toy_pairs(4)
    first = np.array(tk.token_cache(toks[False], pairs, str(tmp_path), "train"))
    second = np.array(tk.token_cache(toks[True], pairs, str(tmp_path), "train"))
    assert np.array_equal(second, toks[True].encode_pairs(pairs)) and not np.array_equal(first, second)
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".npy")]) == 1     # the stale one is gone


#### conditioning, sampling, the loss ##################################################################################

def test_condition_builders_mask_the_right_slots_in_the_text_first_layout(toks):
    tok = toks[True]
    v, seg = tok.vocab, tok.vocab.segment_ids.numpy()
    pairs = toy_pairs(2)
    markers = lambda x: x[:, [0, 1 + v.text_len, -1]].tolist()                   # domain, <boi>, <eoi>
    t2i = sample.condition_on_reports(tok, [p.report for p in pairs], ["cxr", "cxr"]).numpy()
    assert (t2i[:, seg == medim.IMAGE] == v.mask_id).all() and (t2i[:, seg != medim.IMAGE] != v.mask_id).all()
    assert np.array_equal(t2i[:, seg == medim.TEXT], tok.encode_pairs(pairs)[:, v.text_slots])
    i2t = sample.condition_on_images(tok, [p.image for p in pairs], ["cxr", "cxr"]).numpy()
    assert (i2t[:, seg == medim.TEXT] == v.mask_id).all() and (i2t[:, seg != medim.TEXT] != v.mask_id).all()
    assert np.array_equal(i2t[:, v.image_slots], tok.encode_pairs(pairs)[:, v.image_slots])
    prompt = "FINDINGS: The heart"
    joint = sample.condition_on_prompt(tok, 2, "path", prompt).numpy()
    ids = tok.encode_text(prompt)
    assert joint[:, v.text_slots.start:v.text_slots.start + len(ids)].tolist() == [ids, ids]
    assert ((joint == v.mask_id) == ((seg > 0) & (np.arange(v.seq_len) >= v.text_slots.start + len(ids)))).all()
    assert markers(t2i) == markers(i2t) == [[v.domain_id["cxr"], v.boi, v.eoi]] * 2
    assert markers(joint) == [[v.domain_id["path"], v.boi, v.eoi]] * 2


@pytest.mark.parametrize("task", ["t2i", "i2t"])
def test_sample_fills_only_the_masked_segment_of_a_text_first_sequence(toks, task):
    tok = toks[True]
    v, seg = tok.vocab, tok.vocab.segment_ids
    pairs = toy_pairs(2)
    x = (sample.condition_on_reports(tok, [p.report for p in pairs], ["cxr"] * 2) if task == "t2i" else
         sample.condition_on_images(tok, [p.image for p in pairs], ["cxr"] * 2))
    out = medim.sample(tiny_model(v), x, seg, v.legal, medim.SamplerConfig(sample_steps=3, text_steps=3),
                       generator=torch.Generator().manual_seed(0))
    masked = x == v.mask_id
    assert masked.any() and torch.equal(out[~masked], x[~masked]) and not (out == v.mask_id).any()
    assert v.legal[seg.expand_as(out)[masked], out[masked]].all()                     # the segment's own ids


def test_diffusion_loss_trains_on_a_text_first_batch(toks):
    tok = toks[True]
    v = tok.vocab
    model = tiny_model(v).train()
    x0 = torch.from_numpy(tok.encode_pairs(toy_pairs(8)))
    loss, stats = medim.diffusion_loss(model, x0, v.segment_ids, v.legal, generator=torch.Generator().manual_seed(0),
                                       cond_frac=0.0)
    loss.backward()
    assert torch.isfinite(loss) and stats["loss_image"] > 0 and stats["loss_text"] > 0
    assert model.model.embed_tokens.weight.grad[v.image_offset:].abs().sum() > 0   # image codes were seen and learned


#### what the ablation relies on #######################################################################################

def moved_logits(model, x, x2, at):
    """Largest change of model's logits at the positions `at` (T,) bool when its input goes from x to x2."""
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        return (model(x, t) - model(x2, t))[:, at].abs().max()


@pytest.mark.parametrize("text_first", [False, True])
def test_a_causal_model_lets_the_image_read_the_report_only_when_the_report_comes_first(toks, text_first):
    v = toks[text_first].vocab
    seg = v.segment_ids
    causal, bidirectional = tiny_model(v, causal=True), tiny_model(v)
    x = torch.from_numpy(toks[text_first].encode_pairs(toy_pairs(2)))
    word, code = x.clone(), x.clone()
    word[:, v.text_slots.start] = (x[:, v.text_slots.start] + 1) % v.n_text              # another first report word
    code[:, v.image_slots.start] = v.image_offset + (x[:, v.image_slots.start] - v.image_offset + 1) % v.K
    image, text = seg == medim.IMAGE, seg == medim.TEXT
    assert moved_logits(bidirectional, x, word, image) > 1e-4 and moved_logits(bidirectional, x, code, text) > 1e-4
    if text_first:  # the image positions read the report; the report no longer sees the image
        assert moved_logits(causal, x, word, image) > 1e-4 and moved_logits(causal, x, code, text) == 0
    else:           # image first: the report is invisible to every image position
        assert moved_logits(causal, x, word, image) == 0 and moved_logits(causal, x, code, text) > 1e-4


#### train.py ##########################################################################################################

RUN = ["--n-train", "32", "--steps", "2", "--batch-size", "4", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
       "--skip-eval", "--no-compile", "--threads", "1", "--ckpt-every", "1000", "--log-every", "1"]


def test_train_lays_copied_tokenizers_out_report_first_and_a_resume_keeps_that_layout(toks, tmp_path, capsys):
    """Tokenizers of an image-first run copied in (as bench/ablations.py does) train a --text-first run: vocab.json,
    config.json and the checkpoint say so and sample.py loads it that way; a resume keeps it and refuses the other."""
    import train
    out = str(tmp_path / "run")
    toks[False].save(out)
    train.main([*RUN, "--text-first", "--out", out])
    assert json.load(open(os.path.join(out, "vocab.json")))["text_first"] is True
    assert json.load(open(os.path.join(out, "config.json")))["train"]["text_first"] is True
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["train_config"]["text_first"] is True
    assert "report first" in open(os.path.join(out, "log.txt")).read()
    _, tok, _, _ = sample.load_run(out)
    assert tok.vocab.text_first and torch.equal(tok.vocab.segment_ids, toks[True].vocab.segment_ids)
    cache = [f for f in os.listdir(os.path.join(out, "cache")) if f.endswith(".npy")]
    cached = np.load(os.path.join(out, "cache", cache[0]))
    assert (cached[:, tok.vocab.segment_ids.numpy() == medim.IMAGE] >= tok.vocab.image_offset).all()
    train.main(["--out", out, "--resume"])                                   # the saved settings: report first
    assert tk.MedTokenizer.load(out).vocab.text_first
    with pytest.raises(SystemExit) as stop:
        train.main(["--out", out, "--resume", "--no-text-first"])
    msg = str(stop.value.code)
    assert os.path.join(out, "vocab.json") in msg and "report first" in msg and "--no-text-first" in msg
