"""Judging image-report pairs generated together (eval.joint_metrics): coherence, prevalence, diversity, memorisation."""
import numpy as np
import pytest

import eval as ev
from data.synthetic import CXR_FINDINGS, SyntheticDataset


def test_cohen_kappa_hand_computed():
    # p_o = 3/4; rates 1/2 and 1/4 give p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert ev.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert ev.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert ev.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # independent raters agree only by chance: kappa 0 although they agree on half the items
    assert ev.cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # one class everywhere on both sides: no chance-corrected information, 1 if they agree and 0 if not
    assert ev.cohen_kappa([0, 0, 0], [0, 0, 0]) == 1.0 and ev.cohen_kappa([0, 0, 0], [1, 1, 1]) == 0.0


def test_pair_coherence_names_each_finding_and_rejects_bad_shapes():
    img = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    rep = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    c = ev.pair_coherence(img, rep, ["a", "b"])
    assert c["kappa_per_finding"] == {"a": pytest.approx(1.0), "b": pytest.approx(0.5)}
    assert c["agreement_per_finding"] == {"a": 1.0, "b": 0.75} and c["kappa"] == pytest.approx(0.75)
    assert c["f1_macro"] == pytest.approx((1.0 + 2 / 3) / 2)  # b: image 2 positives, report 1, one shared
    with pytest.raises(ValueError, match="report_labels"):
        ev.pair_coherence(img, rep[:, :1], ["a", "b"])


def test_nearest_image_distance_is_zero_for_copies_and_grows_with_noise():
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(20)]
    assert ev.nearest_image_distance(train[:5], train) == pytest.approx(0.0, abs=1e-3)
    noisy = [np.clip(im.astype(int) + rng.integers(-20, 21, im.shape), 0, 255).astype(np.uint8) for im in train[:5]]
    assert 0.02 < ev.nearest_image_distance(noisy, train) < ev.nearest_image_distance(
        [255 - im for im in train[:5]], train)


@pytest.fixture(scope="module")
def cxr_pairs_and_oracle(cxr_oracle):
    """Real training and test pairs, and the oracle at the small budget (tests/conftest.py, shared)."""
    train, test = SyntheticDataset("cxr", "train", n=600, image_size=64), SyntheticDataset("cxr", "test", n=300,
                                                                                           image_size=64)
    return [train[i] for i in range(len(train))], [test[i] for i in range(len(test))], cxr_oracle.oracle


def test_real_pairs_cohere_and_shuffled_pairs_are_near_chance(cxr_pairs_and_oracle):
    train, test, oracle = cxr_pairs_and_oracle
    reference = ev.real_pair_reference(test, train, oracle, CXR_FINDINGS, "cxr", seed=0)
    m = ev.joint_metrics([p.image for p in test], [p.report for p in test], reference)
    assert m["coherence"] == m["coherence_real"]              # the real pairs passed as "generated" are the ceiling
    assert m["coherence_real"]["kappa"] > 0.95 and m["coherence_real"]["f1_macro"] > 0.95
    assert abs(m["coherence_shuffled"]["kappa"]) < 0.1         # a report read against another study's image
    assert m["coherence_shuffled"]["f1_macro"] < 0.5
    assert m["prevalence_max_gap"] < 0.1 and m["distinct_reports"] > 0.9
    assert m["prevalence_max_gap"] == m["prevalence_max_gap_real"]  # the floor is the same readers on as many real pairs
    assert m["nearest_train_distance"] == pytest.approx(m["nearest_train_distance_real"])


def test_a_collapsed_or_copied_generator_is_caught(cxr_pairs_and_oracle):
    train, test, oracle = cxr_pairs_and_oracle
    normal = next(p for p in train if not any(p.labels.values()))
    reference = ev.real_pair_reference(test, train, oracle, CXR_FINDINGS, "cxr", seed=0)
    m = ev.joint_metrics([normal.image] * 50, [normal.report] * 50, reference)
    assert m["distinct_reports"] == 1 / 50
    assert m["prevalence_max_gap"] > 0.2                      # every finding at 0 against priors of about 0.3
    assert m["prevalence_max_gap_real"] < 0.15                # 50 real test pairs: a sampling gap, much smaller
    first_50 = [np.abs(reference[k][:50].mean(0) - reference["prior"]).max()   # the floor is on the first 50, not all 300
                for k in ("image_labels_real", "report_labels_real")]
    assert m["prevalence_max_gap_real"] == pytest.approx(max(first_50))
    assert m["nearest_train_distance"] == pytest.approx(0.0, abs=1e-3)   # a copy of a training image
    assert m["nearest_train_distance_real"] > 0.01
