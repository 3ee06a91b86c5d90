"""Image metrics: FID, KID, precision/recall, Inception Score, class accuracy, on small arrays with
known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genloop.errors import InvalidInput
from genloop.evaluation.image import (
    class_accuracy,
    fid_from_features,
    inception_score,
    kid_from_features,
    precision_recall,
    trace_sqrt_product,
)


def gaussian_with_exact_moments(rng, n: int, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """n samples whose sample mean is exactly ``mean`` and sample covariance (ddof=1) exactly
    diag(``var``): whiten random draws, then colour them."""
    z = rng.standard_normal((n, mean.size))
    z -= z.mean(axis=0)
    w, v = np.linalg.eigh(np.cov(z, rowvar=False))
    z = z @ v / np.sqrt(w) @ v.T  # sample covariance now the identity
    return mean + z * np.sqrt(var)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.2, 3.0, size=8), rng.uniform(0.2, 3.0, size=8)
    x = gaussian_with_exact_moments(rng, 500, m1, v1)
    y = gaussian_with_exact_moments(rng, 300, m2, v2)
    expected = ((m1 - m2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-9)
    assert fid_from_features(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        expected, rel=1e-4
    )


def test_trace_sqrt_agrees_with_eigenvalues_of_the_product_for_non_commuting_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T + 0.1 * np.eye(6)
    # S1 S2 is similar to a PSD matrix: its eigenvalues are real and non-negative
    reference = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-8)
    # rank-deficient S1 (more dimensions than samples, as with few samples): still finite, still right
    s1 = a[:, :2] @ a[:, :2].T
    reference = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), m=st.integers(2, 40), d=st.integers(1, 12))
def test_fid_is_symmetric_non_negative_and_translation_invariant(seed, n, m, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 5)
    y = rng.standard_normal((m, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    fxy, fyx = fid_from_features(x, y), fid_from_features(y, x)
    assert fxy >= 0
    assert fxy == pytest.approx(fyx, rel=1e-6, abs=1e-6)
    shift = rng.normal(size=d) * 10
    assert fid_from_features(x + shift, y + shift) == pytest.approx(fxy, rel=1e-6, abs=1e-6)


def test_fid_grows_with_the_mean_shift():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((400, 4)), rng.standard_normal((400, 4))
    values = [fid_from_features(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    assert values[0] < 0.2 < values[-1]


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((600, 8)), rng.standard_normal((600, 8))
    mean, std = kid_from_features(x, y, subsets=20, subset_size=200)
    assert std > 0
    assert abs(mean) < 3 * std
    shifted_mean, shifted_std = kid_from_features(x, y + 1.0, subsets=20, subset_size=200)
    assert shifted_mean > 10 * max(shifted_std, std)
    assert shifted_mean > 0.1


def test_kid_is_seeded_and_caps_the_subset_size():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((30, 4)) + 0.5
    a = kid_from_features(x, y, subsets=5, subset_size=1000, seed=1)
    assert a == kid_from_features(x, y, subsets=5, subset_size=1000, seed=1)
    assert a != kid_from_features(x, y, subsets=5, subset_size=1000, seed=2)
    # one subset of the whole smaller set against all of the larger one: the plain unbiased MMD²
    full_x = kid_from_features(x[:30], y, subsets=3, subset_size=30)
    assert full_x[1] == pytest.approx(0.0, abs=1e-12)


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(6).standard_normal((300, 5))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((200, 5)), rng.standard_normal((200, 5)) + 50.0
    assert precision_recall(x, y, k=3) == (0.0, 0.0)


def test_fake_covering_one_mode_has_high_precision_and_low_recall():
    rng = np.random.default_rng(8)
    modes = np.array([[-10.0, 0, 0], [10.0, 0, 0]])
    real = modes[rng.integers(0, 2, 1000)] + rng.standard_normal((1000, 3))
    fake = modes[0] + rng.standard_normal((500, 3))
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.9
    assert 0.3 < recall < 0.6  # about half the real samples sit in the missing mode


def test_precision_recall_batches_give_the_same_answer_as_one_block():
    from genloop.evaluation.image import knn_radii, manifold_coverage

    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((230, 4)), rng.standard_normal((170, 4)) * 1.3
    radii = knn_radii(x, 3, batch_size=1000)
    assert np.allclose(radii, knn_radii(x, 3, batch_size=17), rtol=1e-12)
    assert manifold_coverage(x, radii, y, batch_size=1000) == manifold_coverage(x, radii, y, batch_size=13)
    # the radius is the distance to the 3rd nearest *other* point, checked by brute force
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.allclose(radii, np.sort(d, axis=1)[:, 2])


def test_inception_score_bounds():
    k, n = 10, 200
    same = np.tile(np.full(k, 1.0 / k), (n, 1))
    assert inception_score(same, splits=4) == pytest.approx((1.0, 0.0))
    one_class = np.tile(np.eye(k)[3], (n, 1))
    assert inception_score(one_class, splits=4)[0] == pytest.approx(1.0)
    confident_even = np.eye(k)[np.arange(n) % k]  # every split holds each class equally often
    mean, std = inception_score(confident_even, splits=4)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 12), splits=st.integers(1, 4))
def test_inception_score_lies_between_one_and_k(seed, k, splits):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(40, k)) * rng.uniform(0.1, 10)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    mean, _ = inception_score(probs, splits=splits)
    assert 1.0 - 1e-9 <= mean <= k + 1e-9


def test_inception_score_refuses_non_probabilities():
    with pytest.raises(InvalidInput, match="probability"):
        inception_score(np.random.default_rng(0).normal(size=(20, 3)), splits=2)


def test_class_accuracy_from_ids_and_scores():
    requested = torch.tensor([0, 1, 2, 1])
    assert class_accuracy(torch.tensor([0, 1, 0, 1]), requested) == 0.75
    scores = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0, 0.1, 0.9], [0.5, 0.2, 0.3]])
    assert class_accuracy(scores, requested) == 0.75
    with pytest.raises(InvalidInput, match="class accuracy"):
        class_accuracy(np.array([0, 1]), requested)


def test_bad_shapes_are_refused_with_a_named_field():
    x = np.zeros((10, 4))
    with pytest.raises(InvalidInput, match="differ in width"):
        fid_from_features(x, np.zeros((10, 5)))
    with pytest.raises(InvalidInput, match="fake features"):
        kid_from_features(x, np.zeros(10))
    with pytest.raises(InvalidInput, match="k=5"):
        precision_recall(x, x[:5], k=5)
    with pytest.raises(InvalidInput, match="NaN"):
        fid_from_features(x, np.full((10, 4), np.nan))
