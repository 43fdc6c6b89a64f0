"""tokenizer.py: VQ math against hand-computed steps, the vocabulary layout, round trips, the token cache, checkpoint errors,
and a small-scale quality check (a tiny VQ-VAE must learn to reconstruct toy chest X-rays)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import tokenizer as tk
from data.common import Pair
from data.synthetic import SyntheticDataset

REPORTS = ["FINDINGS: The heart is normal in size. No pleural effusion. IMPRESSION: No acute process.",
           "FINDINGS: Moderate cardiomegaly. Small left pleural effusion. IMPRESSION: Cardiomegaly.",
           "A single well-formed gland lined by cuboidal cells. Mitoses are easily found."]


def tiny_tokenizer(K=16, channels=1, text_len=24, seed=0):
    """An untrained but complete MedTokenizer for 64-px images: 8×8 = 64 codes, a BPE on three reports."""
    torch.manual_seed(seed)
    vq = tk.VQVAE(channels, f=8, K=K, code_dim=8, ch=[8, 8, 8]).eval()
    vq.quantizer.codebook.normal_()
    text = tk.train_bpe(REPORTS * 4, vocab_size=300)
    vocab = tk.Vocab(text.get_vocab_size(), K, 64, text_len)
    return tk.MedTokenizer(vq, text, vocab, 64, channels)


def toy_pairs(n, domain="cxr", split="val"):
    return [SyntheticDataset(domain, split, n=n)[i] for i in range(n)]


#### text and vocabulary ###############################################################################################

def test_bpe_round_trip_is_lossless_also_on_unseen_text():
    text = tk.train_bpe(REPORTS * 4, vocab_size=400)
    for s in REPORTS + ["Unseen: ÉPANCHEMENT 3.5 cm, naïve tokens → ok!", "  double  spaces\nand a newline "]:
        ids = text.encode(s, add_special_tokens=False).ids
        assert text.decode(ids) == s
    assert len(text.encode(REPORTS[0]).ids) < len(REPORTS[0].encode()) / 2  # it did learn merges


def test_bpe_training_is_deterministic():
    assert tk.train_bpe(REPORTS * 4, 300).to_str() == tk.train_bpe(REPORTS * 4, 300).to_str()


def test_vocab_id_layout_matches_the_contract():
    v = tk.Vocab(n_text=100, K=16, n_image_tokens=4, text_len=5)
    assert (v.boi, v.eoi, v.eos, v.pad) == (100, 101, 102, 103)
    assert v.domain_id == {"cxr": 104, "path": 105} and v.mask_id == 106
    assert v.image_offset == 107 and v.size == 107 + 16 and v.seq_len == 4 + 5 + 3
    assert v.segment_ids.tolist() == [0, 0, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2]


def test_legal_masks_are_disjoint_and_cover_all_but_mask():
    v = tk.Vocab(n_text=50, K=32, n_image_tokens=4, text_len=6)
    assert v.legal.shape == (3, v.size) and v.legal.dtype == torch.bool
    assert not (v.legal[1] & v.legal[2]).any()
    never_generated = torch.zeros(v.size, dtype=torch.bool)
    never_generated[[v.boi, v.eoi, *v.domain_id.values()]] = True
    union = v.legal[1] | v.legal[2] | never_generated
    assert union.sum() == v.size - 1 and not union[v.mask_id]
    assert v.legal[0].sum() == v.size - 1 and not v.legal[:, v.mask_id].any()
    assert v.legal[1].nonzero().flatten().tolist() == list(range(v.image_offset, v.size))
    assert v.legal[2].nonzero().flatten().tolist() == list(range(50)) + [v.eos, v.pad]


def test_encode_decode_round_trip_and_positions_follow_segment_ids():
    v = tk.Vocab(n_text=50, K=32, n_image_tokens=4, text_len=6)
    seq = v.encode([7, 8, 9], np.array([0, 31, 5, 5]), "path")
    assert seq.dtype == np.int64 and seq.tolist() == [v.domain_id["path"], v.boi, v.image_offset, v.image_offset + 31,
                                                      v.image_offset + 5, v.image_offset + 5, v.eoi,
                                                      7, 8, 9, v.eos, v.pad, v.pad]
    seg = v.segment_ids.numpy()
    assert v.legal[1, seq[seg == 1]].all() and v.legal[2, seq[seg == 2]].all()
    ids, codes, domain = v.decode(seq)
    assert ids == [7, 8, 9] and codes.tolist() == [0, 31, 5, 5] and domain == "path"


def test_long_reports_are_truncated_and_counted():
    v = tk.Vocab(n_text=50, K=8, n_image_tokens=1, text_len=4)
    exact = v.encode([1, 2, 3], [0], "cxr")          # L − 1 ids fit exactly: not a truncation
    assert v.n_truncated == 0 and exact[-4:].tolist() == [1, 2, 3, v.eos]
    cut = v.encode([1, 2, 3, 4, 5], [0], "cxr")
    assert v.n_truncated == 1 and cut[-4:].tolist() == [1, 2, 3, v.eos]
    assert v.decode(cut)[0] == [1, 2, 3]


def test_vocab_rejects_bad_input_with_clear_errors():
    v = tk.Vocab(n_text=50, K=8, n_image_tokens=2, text_len=4)
    with pytest.raises(ValueError, match="domain"):
        v.encode([1], [0, 1], "mri")
    with pytest.raises(ValueError, match="2 image codes"):
        v.encode([1], [0, 1, 2], "cxr")
    with pytest.raises(ValueError, match="image codes"):
        v.encode([1], [0, 8], "cxr")
    with pytest.raises(ValueError, match="text ids"):
        v.encode([50], [0, 1], "cxr")
    seq = v.encode([1], [0, 1], "cxr")
    seq[2] = v.mask_id
    with pytest.raises(ValueError, match="image slot 0"):
        v.decode(seq)


def test_text_len_is_sized_from_report_lengths():
    assert tk.text_len_for([5, 10, 13]) == 16                      # 13 + <eos> = 14 → 16
    assert tk.text_len_for([5, 10, 15]) == 16                      # 15 + 1 fits exactly
    assert tk.text_len_for(list(range(100)) + [1000], quantile=0.99) == 104
    assert tk.text_len_for([1000], max_len=256) == 256


#### VQ math ###########################################################################################################

def test_ema_update_matches_a_hand_computed_step():
    q = tk.Quantizer(K=2, dim=2, decay=0.9, eps=1e-5)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0], [9.0, 11.0]])
    codes = q.nearest(z)
    assert codes.tolist() == [0, 0, 1]
    q.ema_update(z, codes)
    # counts 0.9·0 + 0.1·(2, 1); sums 0.1·((1, 3), (9, 11)); Laplace: (c + ε)/(Σc + Kε)·Σc with Σc = 0.3
    assert torch.allclose(q.ema_count, torch.tensor([0.2, 0.1]))
    assert torch.allclose(q.ema_sum, torch.tensor([[0.1, 0.3], [0.9, 1.1]]))
    smoothed = (torch.tensor([0.2, 0.1]) + 1e-5) / (0.3 + 2e-5) * 0.3
    assert torch.allclose(q.codebook, torch.tensor([[0.1, 0.3], [0.9, 1.1]]) / smoothed[:, None])
    assert torch.allclose(q.codebook, torch.tensor([[0.5, 1.5], [9.0, 11.0]]), atol=1e-3)  # the assigned means
    # a second step: the EMA keeps weight 0.9 on the past
    q.ema_update(z[:1], torch.tensor([0]))
    assert torch.allclose(q.ema_count, torch.tensor([0.9 * 0.2 + 0.1, 0.9 * 0.1]))


def test_straight_through_gradient_is_identity():
    q = tk.Quantizer(K=4, dim=3, beta=0.25).eval()
    q.codebook.normal_()
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, commit, codes = q(z)
    assert torch.allclose(z_q.detach(), q.codebook[codes].permute(0, 3, 1, 2))       # forward: the codes' vectors
    w = torch.randn_like(z_q)
    (z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)                                                # backward: copied unchanged
    z.grad = None
    commit.backward()                                                               # β‖z − sg(e)‖²: pulls z to e
    assert torch.allclose(z.grad, 0.25 * 2 * (z - z_q).detach() / z.numel())


def test_kmeans_init_and_dead_code_restart_revive_unused_codes():
    torch.manual_seed(0)
    q = tk.Quantizer(K=8, dim=2, dead_threshold=0.5).train()
    z = torch.cat([torch.randn(64, 2) * 0.1 + c for c in torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])])
    q(z.T.reshape(1, 2, 12, 16))                     # first batch: k-means init, EMA step, restarts
    assert q.n_updates.item() == 1
    # now kill 5 codes by moving them far away: nothing can pick them
    q.codebook[3:] = 1e3
    q.ema_count[3:] = 0
    q.ema_sum[3:] = 0
    used_before = q.nearest(z).unique().numel()
    assert used_before <= 3
    n = q.restart_dead_codes(z)
    assert n >= 5
    for code in q.codebook[3:]:                      # each revived code is one of the batch vectors
        assert (z - code).abs().sum(1).min() < 1e-6
    assert q.nearest(z).unique().numel() > used_before


def test_psnr_matches_the_formula_over_all_pixels_of_mixed_shapes():
    a = [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8)]
    b = [np.full((4, 4), 1, np.uint8), np.full((4, 4, 3), 3, np.uint8)]
    mse = (16 * 1 ** 2 + 48 * 3 ** 2) / 64                                    # 7.0 over the 64 pixel values
    assert tk.psnr_db(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse))


def test_training_is_deterministic_from_the_seed():
    images = np.stack([p.image for p in toy_pairs(16)])
    a = tk.train_vqvae(images, 1, K=16, steps=3, batch_size=4, seed=3, code_dim=8, ch=[8, 8, 8]).state_dict()
    b = tk.train_vqvae(images, 1, K=16, steps=3, batch_size=4, seed=3, code_dim=8, ch=[8, 8, 8]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_small_vqvae_learns_to_reconstruct_toy_cxr_and_uses_its_codebook():
    """Quality at small scale: 300 steps (~7 s on one core) of a K=64 VQ-VAE on 32-px toy CXR (f=4: 8×8 codes) must beat
    24 dB on held-out images (measured 25.8; untrained ~10 dB; the full-size default reaches ~33 dB at 64 px) and use
    most of its codes."""
    train = np.stack([p.image for p in SyntheticDataset("cxr", "train", n=800, image_size=32)])
    test = [p.image for p in SyntheticDataset("cxr", "test", n=100, image_size=32)]
    vq = tk.train_vqvae(train, 1, K=64, f=4, steps=300, batch_size=16, seed=0)
    tok = tk.MedTokenizer(vq, tk.train_bpe(REPORTS, 300), tk.Vocab(300, 64, 64, 8), 32, 1)
    codes = tok.encode_images(test)
    assert tk.psnr_db(tok.decode_codes(codes), test) > 24.0
    assert len(np.unique(codes)) >= 55              # 57 measured; 48 with dead-code restarts switched off


#### MedTokenizer: pairs, channels, saving and loading ###################################################################

def test_pair_to_sequence_to_pair_round_trip():
    tok = tiny_tokenizer(text_len=512)                  # a BPE fit on three reports spells toy reports in many ids
    pairs = toy_pairs(3)
    seqs = tok.encode_pairs(pairs)
    assert tok.vocab.n_truncated == 0
    assert seqs.shape == (3, tok.vocab.seq_len) and np.array_equal(seqs[1], tok.encode_pair(pairs[1]))
    for p, seq in zip(pairs, seqs):
        report, image, domain = tok.decode(seq)
        assert report == p.report and domain == "cxr"
        # the image comes back as the VQ-VAE reconstruction of the original
        assert np.array_equal(image, tok.decode_codes(tok.encode_images([p.image]))[0])
        assert image.dtype == np.uint8 and image.shape == (64, 64)


def test_three_channel_tokenizer_takes_gray_and_rgb_and_one_channel_rejects_rgb():
    """A mixed CXR + pathology run: gray is replicated to 3 channels, and the held-out stats cover both domains."""
    tok3 = tiny_tokenizer(channels=3)
    gray, rgb = toy_pairs(1)[0], toy_pairs(1, "path")[0]
    seqs = tok3.encode_pairs([gray, rgb])
    assert [tok3.decode(s)[2] for s in seqs] == ["cxr", "path"] and tok3.decode(seqs[0])[1].shape == (64, 64, 3)
    stats = tk.reconstruction_stats(tok3, [gray, rgb])
    assert {"psnr_db", "psnr_db_cxr", "psnr_db_path", "codebook_usage", "findings_agreement"} <= set(stats)
    with pytest.raises(ValueError, match="RGB"):
        tiny_tokenizer(channels=1).encode_pairs([rgb])
    with pytest.raises(ValueError, match="64"):
        tok3.encode_images([np.zeros((32, 32), np.uint8)])


def test_save_load_round_trip(tmp_path):
    tok = tiny_tokenizer()
    tok.stats = {"psnr_db": 30.0}
    tok.save(tmp_path)
    assert tk.MedTokenizer.exists(tmp_path)
    back = tk.MedTokenizer.load(tmp_path)
    pairs = toy_pairs(2)
    assert np.array_equal(back.encode_pairs(pairs), tok.encode_pairs(pairs))
    assert back.stats == {"psnr_db": 30.0} and back.vocab.to_dict() == tok.vocab.to_dict()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_missing_corrupt_or_mismatched_files_give_errors_naming_the_file(tmp_path):
    tiny_tokenizer().save(tmp_path)
    vq_path, text_path, vocab_path = (str(tmp_path / f) for f in tk.FILES)
    os.rename(vq_path, vq_path + ".bak")
    with pytest.raises(FileNotFoundError, match="vqvae.pt"):
        tk.MedTokenizer.load(tmp_path)
    with open(vq_path, "wb") as fh:
        fh.write(b"not a checkpoint")
    with pytest.raises(ValueError, match="vqvae.pt.*not a readable"):
        tk.MedTokenizer.load(tmp_path)
    # a checkpoint of another shape: K = 32 codes where vocab.json says 16
    torch.save({"config": tiny_tokenizer(K=32).vqvae.config, "state_dict": tiny_tokenizer(K=32).vqvae.state_dict()},
               vq_path)
    with pytest.raises(ValueError, match="codebook size K of .*vqvae.pt is 32 but .*vocab.json says 16"):
        tk.MedTokenizer.load(tmp_path)
    # weights that do not fit the config stored with them
    ck = torch.load(vq_path + ".bak", weights_only=True)
    ck["state_dict"]["quantizer.codebook"] = torch.zeros(16, 9)
    torch.save(ck, vq_path)
    with pytest.raises(ValueError, match="vqvae.pt: the weights do not fit"):
        tk.MedTokenizer.load(tmp_path)
    os.replace(vq_path + ".bak", vq_path)
    tk.MedTokenizer.load(tmp_path)  # intact again
    with open(text_path, "w") as fh:
        fh.write("{ broken json")
    with pytest.raises(ValueError, match="tokenizer.json is not a valid"):
        tk.MedTokenizer.load(tmp_path)
    tiny_tokenizer().save(tmp_path)
    with open(vocab_path, "w") as fh:
        json.dump({"n_text": 1}, fh)
    with pytest.raises(ValueError, match="vocab.json is not a valid"):
        tk.MedTokenizer.load(tmp_path)


#### token cache #######################################################################################################

def test_token_cache_hits_and_is_invalidated_when_the_tokenizer_changes(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    pairs = toy_pairs(6)
    first = tk.token_cache(tok, pairs, tmp_path, "val")
    assert isinstance(first, np.memmap) and first.dtype == np.uint16
    assert np.array_equal(first, tok.encode_pairs(pairs))
    # a hit reads the file and encodes nothing
    monkeypatch.setattr(tk.MedTokenizer, "encode_pairs", lambda *a, **k: pytest.fail("re-encoded on a cache hit"))
    assert np.array_equal(tk.token_cache(tok, pairs, tmp_path, "val"), first)
    monkeypatch.undo()
    # a changed codebook (what retraining does) must give fresh tokens, and the stale file goes away
    with torch.no_grad():
        tok.vqvae.quantizer.codebook.copy_(tok.vqvae.quantizer.codebook.flip(0))
    second = tk.token_cache(tok, pairs, tmp_path, "val")
    assert np.array_equal(second, tok.encode_pairs(pairs)) and not np.array_equal(second, first)
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".npy")]) == 1
    # other data (another split) gets its own entry
    tk.token_cache(tok, toy_pairs(6, split="test"), tmp_path, "test")
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".npy")]) == 2


def test_token_cache_counts_truncated_reports_on_a_miss_and_on_a_hit(tmp_path):
    tok = tiny_tokenizer(text_len=8)                                  # synthetic reports are ~30 ids: all get cut
    pairs = toy_pairs(4) + [Pair(np.zeros((64, 64), np.uint8), "No effusion.", "cxr", uid="short")]
    tk.token_cache(tok, pairs, tmp_path, "val")
    assert tok.vocab.n_truncated == 4
    tk.token_cache(tok, pairs, tmp_path, "val")
    assert tok.vocab.n_truncated == 8


#### the command line, end to end ######################################################################################

def test_cli_trains_saves_and_reports_quality(tmp_path):
    """`python tokenizer.py --data synthetic --out DIR` at toy scale: the three files, a loadable tokenizer, the stats."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "tokenizer.py", "--data", "synthetic", "--out", str(tmp_path), "--limit", "120",
                          "--steps", "20", "--K", "32"], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "psnr_db" in out.stdout and "codebook_usage" in out.stdout
    tok = tk.MedTokenizer.load(tmp_path)
    assert tok.vocab.K == 32 and tok.vocab.n_image_tokens == 64 and tok.channels == 1
    assert set(tok.stats) >= {"psnr_db", "codebook_usage", "codebook_perplexity", "findings_agreement"}
    pair = SyntheticDataset("cxr", "test", n=1)[0]
    assert tok.decode(tok.encode_pair(pair))[0] == pair.report          # the report fits: L was sized from the data
