"""Tests for the Inception Score: eval_image.inception_score, InceptionV3FID.logits, inception_score_folder, eval.py --is.

Oracles: cases of the formula checkable by hand (Salimans et al. 2016), and torch-fidelity 0.4.0 (test-only): its
InceptionV3 feature extractor loaded with the same random weights as ours, and its metric_isc split computation. The
weight file's key names and shapes come from tests/test_eval_image.py, written from the architecture. No real weight
file is needed.
"""
import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.special
import torch
from PIL import Image

import eval as ev
import eval_image as E
from test_eval_image import expected_fid_state_dict_shapes


#### The formula

def test_identical_rows_score_one():
    row = np.random.default_rng(0).standard_normal(1008) * 3
    assert E.inception_score(np.tile(row, (30, 1))) == pytest.approx((1.0, 0.0), abs=1e-12)
    probs = np.tile(scipy.special.softmax(row), (30, 1))
    assert E.inception_score(probs, probabilities=True) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_one_hot_rows_spread_evenly_over_k_classes_score_k():
    # 70 rows, row i certain of class i mod 7: every split of 7 rows sees each class once, p(y) = 1/7, and each
    # KL(one-hot || uniform) = log 7, so every split scores exactly 7
    k, n = 7, 70
    one_hot = np.eye(k)[np.arange(n) % k]
    assert E.inception_score(one_hot, probabilities=True) == pytest.approx((7.0, 0.0), abs=1e-12)
    assert E.inception_score(one_hot, splits=1, probabilities=True) == pytest.approx((7.0, 0.0), abs=1e-12)
    # logits of 50 on the class, 0 elsewhere: softmax is one-hot up to 6·e^-50
    assert E.inception_score(50 * one_hot) == pytest.approx((7.0, 0.0), abs=1e-9)


def test_two_row_case_by_hand():
    # p(y|x) = (1, 0) and (1/2, 1/2): p(y) = (3/4, 1/4); KL = log(4/3) and (log(2/3) + log 2) / 2;
    # IS = exp of their mean = exp((log(4/3) + log(4/3) / 2) / 2) = (4/3) ** (3/4)
    assert E.inception_score([[1.0, 0.0], [0.5, 0.5]], splits=1, probabilities=True)[0] == pytest.approx((4 / 3) ** 0.75,
                                                                                                        abs=1e-12)


def test_probabilities_give_the_score_of_their_logits():
    logits = np.random.default_rng(1).standard_normal((40, 1008)) * 4
    assert E.inception_score(scipy.special.softmax(logits, axis=1), probabilities=True) == pytest.approx(
        E.inception_score(logits), rel=1e-12)


def test_inception_score_input_errors_are_clear():
    with pytest.raises(ValueError, match="N >= splits"):
        E.inception_score(np.zeros((9, 1008)))
    with pytest.raises(ValueError, match="N >= splits"):
        E.inception_score(np.zeros(1008))
    with pytest.raises(ValueError, match="sum to 1"):
        E.inception_score(np.ones((10, 4)), probabilities=True)


#### torch-fidelity, the oracle

@pytest.fixture(scope="module")
def torch_fidelity():
    """torch_fidelity 0.4.0, importable without torchvision.

    Its package __init__ imports every feature extractor and torch_fidelity.utils; those import torchvision, and
    datasets.py subclasses torchvision's CIFAR10 / CIFAR100 / STL10 at import time. Loading just the two module files
    needed would not avoid it: metric_isc imports torch_fidelity.utils. The InceptionV3 extractor and the IS
    computation never call torchvision. It is not installed here (its CUDA wheel would replace the CPU torch), and pip
    installs torch-fidelity with --no-deps (requirements-oracles-nodeps.txt). So for the import only, sys.modules holds
    an empty torchvision whose three import-time names are classes that raise when instantiated: if the code compared
    against ever used torchvision, the test would fail loudly instead of comparing against a stub. A real torchvision,
    where one is installed, is used as it is."""
    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.fail("torch-fidelity 0.4.0, the oracle of tests/test_inception_score.py, is not installed: "
                    "pip install --no-deps -r requirements-oracles-nodeps.txt (--no-deps: never install torchvision)",
                    pytrace=False)
    with pytest.MonkeyPatch.context() as mp:
        if importlib.util.find_spec("torchvision") is None:
            class NotTorchvision:
                def __init__(self, *args, **kwargs):
                    raise RuntimeError("torchvision is not installed; torch-fidelity reached for it")

            names = ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional")
            tv, datasets, transforms, functional = (types.ModuleType(name) for name in names)
            datasets.CIFAR10 = datasets.CIFAR100 = datasets.STL10 = NotTorchvision
            tv.datasets, tv.transforms, transforms.functional = datasets, transforms, functional
            for module in (tv, datasets, transforms, functional):
                mp.setitem(sys.modules, module.__name__, module)
        import torch_fidelity
        import torch_fidelity.metric_isc
    return torch_fidelity


def test_inception_score_matches_torch_fidelity_isc_on_random_logits(torch_fidelity):
    # N = 1003: the 10 splits are uneven (100 or 101 rows), so the split boundaries i·N // 10 are checked too
    logits = np.random.default_rng(2).standard_normal((1003, 1008)) * 3
    isc = torch_fidelity.metric_isc.isc_features_to_metric
    theirs = isc(torch.from_numpy(logits), splits=10, shuffle=False)
    assert E.inception_score(logits) == pytest.approx((theirs["inception_score_mean"], theirs["inception_score_std"]),
                                                      rel=1e-12)
    assert E.inception_score(logits)[0] > 1.5  # a score the logits decide, not the floor of 1
    # torch-fidelity's default shuffles the rows first (RandomState(2020)): the same score of the permuted rows
    theirs = isc(torch.from_numpy(logits), splits=10)
    permuted = logits[np.random.RandomState(2020).permutation(len(logits))]
    assert E.inception_score(permuted) == pytest.approx((theirs["inception_score_mean"], theirs["inception_score_std"]),
                                                        rel=1e-12)


def random_inception_state(seed=0):
    """A state dict with the weight file's 472 keys and values that keep activations O(1) through the 94 convs (He
    scale, BN stats near identity), so the logits differ from image to image. fc keeps logits near ±1 across images: a
    larger fc would put every image's p(y|x) on the class of the images' common pool3 direction, and IS near 1."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in expected_fid_state_dict_shapes().items():
        if key.endswith("conv.weight"):
            state[key] = torch.randn(shape, generator=g) * (2 / np.prod(shape[1:])) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key == "fc.weight":
            state[key] = torch.randn(shape, generator=g) / 2048 ** 0.5
        else:  # BN bias and running mean, fc bias
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def striped_images(n, size=299, seed=0):
    """n uint8 (size, size, 3) images, each a colour, a stripe pattern and noise, so the network sees different inputs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for _ in range(n):
        stripes = np.sin(rng.random() * 12 * (x + y * rng.random()))[..., None]
        im = 0.6 * rng.random(3) + 0.4 * stripes + 0.1 * rng.standard_normal((size, size, 3))
        out.append((255 * np.clip(im, 0, 1)).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / E.FID_WEIGHTS_FILE
    torch.save(random_inception_state(), path)
    return str(path)


@pytest.fixture(scope="module")
def both_logits(torch_fidelity, weights):
    """(ours, theirs unbiased, theirs with bias, fc bias): the logits of both networks, same 8 images, same weights.

    The two feed the network differently: pytorch-fid's path (ours) maps x in [0, 1] to 2x - 1, torch-fidelity maps
    uint8 u to (u - 128) / 128. x = u / 256 gives both networks the same input exactly (powers of 2), and at 299 px
    neither resizes, so the comparison is of the network and its logits alone."""
    u = torch.from_numpy(np.stack(striped_images(8))).permute(0, 3, 1, 2).contiguous()  # (8, 3, 299, 299) uint8
    ours_model = E.load_fid_inception(weights)
    theirs_model = torch_fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased", "logits"],
                                                              feature_extractor_weights_path=weights)
    with torch.no_grad():
        ours = ours_model.logits(u.float() / 256)
        unbiased, biased = theirs_model(u)
    return ours, unbiased, biased, ours_model.fc.bias


def test_logits_match_torch_fidelity_with_identical_random_weights(both_logits):
    ours, unbiased, biased, fc_bias = both_logits
    assert ours.shape == (8, 1008)
    assert ours.std(dim=0).mean() > 0.3  # the images get different logits: the comparison is not of near-constants
    # the same float32 ops in the same order: equal to rounding (bit-identical on this CPU); 1e-5 of the largest logit
    tol = 1e-5 * float(ours.abs().max())
    torch.testing.assert_close(ours, unbiased, rtol=0, atol=tol)
    # our IS logits are theirs without the fc bias ("logits_unbiased", the paper's code), not the biased fc output
    torch.testing.assert_close(ours + fc_bias, biased, rtol=0, atol=tol)
    assert (ours - biased).abs().max() > 100 * tol


def test_inception_score_of_the_network_logits_matches_torch_fidelity(both_logits, torch_fidelity):
    ours, unbiased, _, _ = both_logits
    theirs = torch_fidelity.metric_isc.isc_features_to_metric(unbiased, splits=2, shuffle=False)
    score = E.inception_score(ours.numpy(), splits=2)
    assert score == pytest.approx((theirs["inception_score_mean"], theirs["inception_score_std"]), rel=1e-6)
    assert score[0] > 1.1  # the 2 splits of 4 images each are not trivially 1 (1.147 here)


#### Folders and the command line

def test_inception_score_folder_reads_images_as_the_fid_path(tmp_path, weights):
    images = striped_images(5, seed=3)
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    got = E.inception_score_folder(str(tmp_path), weights, batch_size=2, splits=2)  # batches of 2, 2, 1
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255       # ToTensor, as pytorch-fid
    with torch.no_grad():
        direct = E.load_fid_inception(weights).logits(x).double().numpy()
    # float32 logits of batches of other sizes differ by rounding (~1e-6 of a logit); IS here is 1.04 ± 0.03
    assert got == pytest.approx(E.inception_score(direct, splits=2), abs=1e-5)
    with pytest.raises(ValueError, match="IS over 10 splits needs at least 10 images"):
        E.inception_score_folder(str(tmp_path), weights)


def test_eval_cli_prints_inception_score(tmp_path, weights, capsys):
    # 10 images in 10 splits: one image per split is its own marginal p(y), so the score is exactly 1 ± 0
    for i, im in enumerate(striped_images(10, size=32, seed=4)):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    ev.main(["--is", str(tmp_path), "--inception-weights", weights])
    assert "IS: 1.0000 ± 0.0000 (10 splits)" in capsys.readouterr().out


def test_eval_cli_is_errors_name_the_folder_and_the_weight_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.main(["--is", str(tmp_path / "missing_dir")])
    err = capsys.readouterr().err
    assert "--is: " in err and "missing_dir" in err
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "0.png")
    with pytest.raises(SystemExit, match="^error: .*images: IS over 10 splits needs at least 10 images"):
        ev.main(["--is", str(folder)])
    for i in range(1, 10):
        Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    with pytest.raises(SystemExit) as exit_:
        ev.main(["--is", str(folder), "--inception-weights", str(tmp_path / "nowhere.pth")])
    msg = str(exit_.value)
    assert msg.startswith("error: ") and E.FID_WEIGHTS_FILE in msg and "nowhere.pth" in msg and "--inception-weights" in msg
