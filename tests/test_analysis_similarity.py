from __future__ import annotations

import numpy as np
import pytest

from analysis.similarity import (
    cluster_order,
    expert_similarity,
    linear_cka,
    routing_overlap,
    similarity_order,
)


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA through centred Gram matrices (the kernel form, independent of the feature form)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def test_cka_is_one_under_rotation_and_scale_and_matches_the_kernel_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)
    y = rng.normal(size=(50, 4))
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y))
    assert linear_cka(x, y) < 0.5


def test_cka_hand_case():
    # x = (1,-1,1,-1), y = (1,1,-1,-1): orthogonal centred vectors -> 0; y vs itself -> 1
    x = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    y = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert linear_cka(x, y) == pytest.approx(0.0)
    z = np.hstack(
        [x, y]
    )  # 2-D; CKA(x, [x, y]) = ||x^T x||^2 / (||x^T x|| ||Z^T Z||) = 16/(4*4*sqrt2)
    assert linear_cka(x, z) == pytest.approx(16 / (4 * np.sqrt(32)))


def test_expert_similarity_matrix():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(80, 5))
    b = rng.normal(size=(80, 5))
    out = np.stack([a, 2 * a, b, -a], axis=1)  # [n, 4, H]
    cka = expert_similarity(out, "cka")
    assert cka.shape == (4, 4)
    np.testing.assert_allclose(np.diag(cka), 1.0)
    assert cka[0, 1] == pytest.approx(1.0) and cka[0, 3] == pytest.approx(1.0)
    assert cka[0, 2] == pytest.approx(_hsic_cka(a, b))
    cos = expert_similarity(out, "cosine")
    assert cos[0, 1] == pytest.approx(1.0) and cos[0, 3] == pytest.approx(-1.0)
    ac, bc = a - a.mean(0), b - b.mean(0)
    assert cos[0, 2] == pytest.approx((ac * bc).sum() / np.linalg.norm(ac) / np.linalg.norm(bc))
    with pytest.raises(ValueError, match="method"):
        expert_similarity(out, "pearson")
    with pytest.raises(ValueError, match="3-D"):
        expert_similarity(a, "cka")


def test_routing_overlap_hand_case():
    topk = np.array([[0, 1], [0, 1], [0, 2], [3, 2]])
    ov = routing_overlap(topk, 5)
    assert ov[0, 1] == pytest.approx(2 / 3)  # rows {0,1} vs {0,1,2}
    assert ov[0, 3] == pytest.approx(0.0)
    assert ov[2, 3] == pytest.approx(1 / 2)  # {2,3} vs {3}
    assert ov[0, 0] == 1.0 and np.isnan(ov[4, 4])


def test_cluster_order_groups_similar_profiles():
    # domains 0, 2, 4 use experts 0-1; domains 1, 3 use experts 2-3
    a, b = [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]
    profiles = np.array([a, b, a, b, a]) + np.arange(5)[:, None] * 1e-3
    order = cluster_order(profiles).tolist()
    assert sorted(order) == [0, 1, 2, 3, 4]
    pos = {d: i for i, d in enumerate(order)}
    group_a = sorted(pos[d] for d in (0, 2, 4))
    assert group_a in ([0, 1, 2], [2, 3, 4])  # contiguous blocks
    sim = np.corrcoef(profiles)
    assert sorted(similarity_order(sim).tolist()) == [0, 1, 2, 3, 4]
    assert cluster_order(profiles[:2]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        cluster_order(np.array([[np.nan, 1.0]] * 3))
