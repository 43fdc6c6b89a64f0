"""Tests for eval_image.py (Fréchet distance, the FID Inception-v3, the oracle classifier) and eval.py's label metrics.

Oracles: closed-form Gaussian cases and golden numbers from pytorch-fid's formula (docs/metrics.md "Golden numbers"), the
FID weight file's key names and shapes written out here from the architecture (docs/metrics.md "The FID Inception
network", "Inception weights"; pytorch-fid inception.py / torchvision Inception3), hand-computed confusion counts. No weight file is needed (none can be downloaded here).
"""
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as ev
import eval_image as E
from data.synthetic import CXR_FINDINGS, SyntheticDataset


#### Fréchet distance

def golden_features():
    # docs/metrics.md "Golden numbers": one rng feeds both the full-rank and the rank-deficient case, in this order
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 16))
    b = rng.standard_normal((500, 16)) * np.linspace(0.5, 1.5, 16) + 0.5
    c = rng.standard_normal((10, 16))
    d = rng.standard_normal((10, 16)) + 0.1
    return a, b, c, d


def test_frechet_of_identical_statistics_is_zero():
    a, _, _, _ = golden_features()
    mu, sigma = E.stats(a)
    assert abs(E.frechet_distance(mu, sigma, mu, sigma)) < 1e-10


def test_frechet_matches_closed_form_gaussians():
    # N(0, I) vs N(1, 4I) in 8-d: |mu1-mu2|² + tr(I) + tr(4I) - 2 tr(2I) = 8 + 8 + 32 - 32 = 16
    assert E.frechet_distance(np.zeros(8), np.eye(8), np.ones(8), 4 * np.eye(8)) == pytest.approx(16.0, abs=1e-10)
    # diagonal covariances: sum (sqrt(s1) - sqrt(s2))² closed form
    s1, s2 = np.array([1.0, 2.0, 9.0]), np.array([4.0, 0.5, 1.0])
    expected = 1.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = E.frechet_distance(np.zeros(3), np.diag(s1), np.array([1.0, 0, 0]), np.diag(s2))
    assert got == pytest.approx(expected, abs=1e-10)


def test_frechet_matches_golden_numbers_including_rank_deficient():
    a, b, c, d = golden_features()
    assert a[0, :3] == pytest.approx([0.12573, -0.132105, 0.640423], abs=1e-6)  # same rng stream as the spec
    assert E.frechet_distance(*E.stats(a), *E.stats(b)) == pytest.approx(6.002234, abs=1e-6)
    assert E.frechet_distance(*E.stats(c), *E.stats(d)) == pytest.approx(13.938145, abs=1e-6)  # N=10 < D=16


def test_frechet_safeguards_eps_retry_and_imaginary_check(monkeypatch, capsys):
    # sqrtm of a product of two covariances is non-finite only through round-off, so fake one failure: the function must
    # retry with eps·I added to both covariances (pytorch-fid's fallback) and use that result
    real_sqrtm, calls = E.scipy.linalg.sqrtm, []

    def flaky_sqrtm(m):
        calls.append(m.copy())
        return np.full_like(m, np.inf) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(E.scipy.linalg, "sqrtm", flaky_sqrtm)
    got = E.frechet_distance(np.zeros(8), np.eye(8), np.ones(8), 4 * np.eye(8), eps=0.01)
    assert len(calls) == 2 and np.allclose(calls[1], (1.01 * np.eye(8)) @ (4.01 * np.eye(8)))
    assert got == pytest.approx(8 + 8 + 32 - 2 * 8 * np.sqrt(1.01 * 4.01))  # traces stay un-offset, as pytorch-fid
    assert "not finite" in capsys.readouterr().out
    # a complex square root is accepted only with a ~0 imaginary diagonal (atol 1e-3)
    monkeypatch.setattr(E.scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-4j)
    assert E.frechet_distance(np.zeros(8), np.eye(8), np.ones(8), 4 * np.eye(8)) == pytest.approx(16.0)
    monkeypatch.setattr(E.scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-2j)
    with pytest.raises(ValueError, match="imaginary"):
        E.frechet_distance(np.zeros(8), np.eye(8), np.ones(8), 4 * np.eye(8))


def test_frechet_input_errors_are_clear():
    with pytest.raises(ValueError, match="shapes"):
        E.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        E.stats(np.zeros((1, 5)))


#### FID Inception-v3

def expected_fid_state_dict_shapes():
    """The 472 tensors of pt_inception-2015-12-05-6726825d.pth: torchvision Inception3 names (num_classes 1008,
    no AuxLogits) with pytorch-fid's blocks. Written from the architecture, not from eval_image.py."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]

    def block(prefix, rows):
        convs.extend((f"{prefix}.{name}", cin, cout, kh, kw) for name, cin, cout, kh, kw in rows)

    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):  # A
        block(name, [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
                     ("branch3x3dbl_1", cin, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
                     ("branch3x3dbl_3", 96, 96, 3, 3), ("branch_pool", cin, pool, 1, 1)])
    block("Mixed_6a", [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),  # B
                       ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)])
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):  # C
        block(name, [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
                     ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1, 1),
                     ("branch7x7dbl_2", c7, c7, 7, 1), ("branch7x7dbl_3", c7, c7, 1, 7),
                     ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)])
    block("Mixed_7a", [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),  # D
                       ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                       ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)])
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):  # E
        block(name, [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1), ("branch3x3_2a", 384, 384, 1, 3),
                     ("branch3x3_2b", 384, 384, 3, 1), ("branch3x3dbl_1", cin, 448, 1, 1),
                     ("branch3x3dbl_2", 448, 384, 3, 3), ("branch3x3dbl_3a", 384, 384, 1, 3),
                     ("branch3x3dbl_3b", 384, 384, 3, 1), ("branch_pool", cin, 192, 1, 1)])
    assert len(convs) == 94  # 5 stem + 3x7 A + 4 B + 4x10 C + 6 D + 2x9 E
    shapes = {}
    for name, cin, cout, kh, kw in convs:
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{t}"] = (cout,)
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return E.InceptionV3FID()


def test_inception_state_dict_has_the_fid_weight_files_exact_keys_and_shapes(inception):
    expected = expected_fid_state_dict_shapes()
    ours = {k: tuple(v.shape) for k, v in inception.state_dict().items()}
    assert len(expected) == 472
    assert sorted(ours) == sorted(expected)
    assert ours == expected


def test_inception_loads_a_file_with_the_fid_key_names(tmp_path, inception):
    # a fake weight file built from the spec's key list (random values), plus num_batches_tracked entries that
    # older/newer torch versions may or may not have written: it must load strictly and the values must arrive
    g = torch.Generator().manual_seed(1)
    state = {k: torch.rand(s, generator=g) + 0.5 for k, s in expected_fid_state_dict_shapes().items()}
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / E.FID_WEIGHTS_FILE
    torch.save(state, path)
    model = E.load_fid_inception(str(path))
    assert torch.equal(model.Mixed_7c.branch3x3dbl_3b.conv.weight, state["Mixed_7c.branch3x3dbl_3b.conv.weight"])
    assert torch.equal(model.Mixed_5b.branch_pool.bn.running_var, state["Mixed_5b.branch_pool.bn.running_var"])
    del state["fc.bias"]
    state["fc.bias_renamed"] = torch.zeros(1008)
    torch.save(state, path)
    with pytest.raises(ValueError, match="fc.bias"):
        E.load_fid_inception(str(path))


def test_missing_fid_weights_error_names_file_url_and_flag(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        E.load_fid_inception(str(tmp_path / "nowhere.pth"))
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "--inception-weights" in msg
    assert ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth") in msg
    with pytest.raises(FileNotFoundError):
        E.fid_folders(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "nowhere.pth"))


def test_inception_outputs_2048_features_deterministically(inception):
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y1, y2 = inception(x), inception(x)
    assert y1.shape == (2, 2048) and torch.isfinite(y1).all()
    assert torch.equal(y1, y2)
    # the per-image resize in inception_features is the model's own: same features for uint8 input
    imgs = [(x[i] * 255).round().byte().permute(1, 2, 0).numpy() for i in range(2)]
    feats = E.inception_features(inception, imgs, batch_size=1)
    with torch.no_grad():
        direct = inception(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255).double().numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=1e-5)


def test_tf_avg_pool_ignores_padding_and_mixed_7c_uses_max_pool(inception):
    x = torch.full((1, 2, 5, 5), 3.0)
    assert torch.equal(E.tf_avg_pool(x), x)  # borders stay 3 (torchvision's count_include_pad=True gives 4/3 at corners)
    assert not torch.equal(F.avg_pool2d(x, 3, 1, 1), x)
    # pool branch of an E block: a single bright pixel survives a max pool unchanged, an avg pool divides it by 9
    assert inception.Mixed_7c.max_pool and not inception.Mixed_7b.max_pool
    spike = torch.zeros(1, 2048, 8, 8)
    spike[0, :, 4, 4] = 9.0
    seen = {}
    inception.Mixed_7c.branch_pool.register_forward_hook(lambda m, i, o: seen.setdefault("7c", i[0].clone()))
    inception.Mixed_7b.branch_pool.register_forward_hook(lambda m, i, o: seen.setdefault("7b", i[0].clone()))
    with torch.no_grad():
        inception.Mixed_7c(spike)
        inception.Mixed_7b(spike[:, :1280])
    inception.Mixed_7c.branch_pool._forward_hooks.clear()
    inception.Mixed_7b.branch_pool._forward_hooks.clear()
    assert seen["7c"][0, 0, 3:6, 3:6].eq(9.0).all()
    assert seen["7b"][0, 0, 4, 4] == pytest.approx(1.0)
    # the A and C blocks' pool branches see a constant input as the same constant, borders included
    for block, shape in ((inception.Mixed_5b, (1, 192, 35, 35)), (inception.Mixed_6b, (1, 768, 17, 17))):
        handle = block.branch_pool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool", i[0].clone()))
        with torch.no_grad():
            block(torch.full(shape, 2.0))
        handle.remove()
        assert torch.equal(seen["pool"], torch.full(shape, 2.0))


def test_fid_folder_listing_matches_pytorch_fid_rules(tmp_path):
    from PIL import Image
    for name in ("b.png", "a.jpg", "c.PNG", "notes.txt"):
        Image.new("L", (8, 8)).save(tmp_path / name, format="PNG") if name != "notes.txt" else (tmp_path / name).write_text("x")
    assert [os.path.basename(f) for f in E.image_files(str(tmp_path))] == ["a.jpg", "b.png"]  # upper-case ignored
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "d16.png")  # a 16-bit PNG is scaled, not saturated
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "e16.png")
    assert E.read_rgb(str(tmp_path / "e16.png"))[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        E.image_files(str(tmp_path / "missing_dir"))


#### Label metrics and baselines

NAMES = ["a", "b", "c"]
TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_label_metrics_hand_computed_example():
    m = ev.label_metrics(PRED, TRUE, NAMES)
    # a: tp 1 fp 1 fn 1 tn 1 -> P 1/2, R 1/2, F1 1/2, acc 2/4
    assert m["per_finding"]["a"] == pytest.approx({"f1": 0.5, "precision": 0.5, "recall": 0.5, "acc": 0.5, "support": 2})
    # b: tp 2 fp 1 fn 0 tn 1 -> P 2/3, R 1, F1 4/5, acc 3/4
    assert m["per_finding"]["b"] == pytest.approx({"f1": 0.8, "precision": 2 / 3, "recall": 1.0, "acc": 0.75, "support": 2})
    # c: never present, never predicted -> 0/0 everywhere is 0 (sklearn zero_division=0), acc 1
    assert m["per_finding"]["c"] == pytest.approx({"f1": 0.0, "precision": 0.0, "recall": 0.0, "acc": 1.0, "support": 0})
    assert m["acc"] == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["exact_match"] == pytest.approx(1 / 4)  # only row 3
    with pytest.raises(ValueError, match="pred"):
        ev.label_metrics(PRED * 2, TRUE, NAMES)
    with pytest.raises(ValueError):
        ev.label_metrics(PRED, TRUE, NAMES[:2])


def test_trivial_baselines_hand_computed():
    base = ev.trivial_baselines(TRUE, train_prior=[0.75, 0.25, 0.0], names=NAMES)
    assert base["all_negative"]["acc"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert base["all_negative"]["f1_macro"] == 0.0
    # majority under the prior: predict a=1, b=0, c=0 -> a: tp 2 fp 2 -> F1 2/3
    assert base["majority"]["per_finding"]["a"]["f1"] == pytest.approx(2 / 3)
    assert base["majority"]["acc"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # prior sampling, expected counts for a (p .75, 2 pos 2 neg): tp 1.5 fp 1.5 fn .5 tn .5 -> acc .5, F1 3/5
    a = base["prior_sampling"]["per_finding"]["a"]
    assert a["acc"] == pytest.approx(0.5) and a["f1"] == pytest.approx(0.6)
    # E[exact match] = mean over rows of prod P(right): rows (1,0,0):.75*.75, (1,1,0):.75*.25, (0,1,0):.25*.25, 0s:.25*.75
    assert base["prior_sampling"]["exact_match"] == pytest.approx((0.5625 + 0.1875 + 0.0625 + 0.1875) / 4)
    # the Monte-Carlo mean of prior sampling agrees with the expected counts
    rng = np.random.default_rng(0)
    draws = [ev.label_metrics(rng.random((4000, 3)) < [0.75, 0.25, 0.0], np.tile(TRUE, (1000, 1)), NAMES)["acc"]
             for _ in range(5)]
    assert np.mean(draws) == pytest.approx(base["prior_sampling"]["acc"], abs=0.01)


#### Oracle classifier

# cxr_oracle (tests/conftest.py): the oracle at the small budget, shared with tests/test_joint.py


@pytest.fixture(scope="module")
def cxr_test_set():
    test = SyntheticDataset("cxr", "test", n=400, image_size=64)
    pairs = [test[i] for i in range(len(test))]
    return [p.image for p in pairs], E.pair_labels(pairs, CXR_FINDINGS)


def test_oracle_beats_95_percent_per_finding_on_heldout_toy_cxr(cxr_oracle, cxr_test_set):
    oracle, cpu_seconds = cxr_oracle.oracle, cxr_oracle.cpu_seconds
    images, true = cxr_test_set
    m = ev.label_metrics(oracle.predict(images), true, CXR_FINDINGS)
    assert min(f["acc"] for f in m["per_finding"].values()) >= 0.95, m["per_finding"]
    assert min(oracle.heldout_acc.values()) >= 0.95, oracle.heldout_acc
    assert cpu_seconds < 30, cpu_seconds
    # it beats every trivial baseline by a wide margin (the oracle is only useful if it actually reads the image)
    base = ev.trivial_baselines(true, names=CXR_FINDINGS)
    assert m["f1_macro"] > 0.9 > max(b["f1_macro"] for b in base.values())


def test_oracle_is_cached_in_run_dir_and_reads_gray_as_rgb(cxr_oracle, cxr_test_set, tmp_path, capsys):
    oracle, run_dir = cxr_oracle.oracle, str(tmp_path / "run")
    shutil.copytree(cxr_oracle.run_dir, run_dir)  # the shared cache stays as it is for the other tests
    images, _ = cxr_test_set
    again = E.train_oracle(SyntheticDataset("cxr", "train", image_size=64), CXR_FINDINGS, run_dir=run_dir,
                           **cxr_oracle.budget)
    assert "loaded" in capsys.readouterr().out
    assert np.array_equal(again.predict(images[:64]), oracle.predict(images[:64]))
    assert np.array_equal(again.features(images[:64]), oracle.features(images[:64]))
    # other findings: not reused (retrained on a tiny budget here)
    other = E.train_oracle(SyntheticDataset("cxr", "train", image_size=64), CXR_FINDINGS[:2], run_dir=run_dir,
                           steps=2, n_images=40, n_heldout=20)
    assert other.findings == CXR_FINDINGS[:2] and "other findings" in capsys.readouterr().out
    # 3-channel input (a mixed-domain tokenizer's gray->RGB output) reads the same as gray
    rgb = [np.repeat(im[..., None], 3, axis=2) for im in images[:64]]
    assert np.array_equal(oracle.predict(rgb), oracle.predict(images[:64]))
    with pytest.raises(ValueError, match="64px"):
        oracle.predict([np.zeros((32, 32), np.uint8)])


def test_fd_oracle_real_floor_is_small_next_to_a_shifted_set(cxr_oracle, cxr_test_set):
    oracle = cxr_oracle.oracle
    images, _ = cxr_test_set
    assert oracle.features(images).shape == (400, 2 * oracle.width)
    floor = E.fd_oracle_floor(oracle, images)
    shifted = [np.clip(im.astype(int) + 60, 0, 255).astype(np.uint8) for im in images[200:]]
    assert 0 <= floor < E.fd_oracle(oracle, images[:200], shifted) / 10
    assert E.fd_oracle(oracle, images[:200], images[:200]) == pytest.approx(0.0, abs=1e-6)
