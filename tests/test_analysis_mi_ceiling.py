"""The denominator of the normalized I(D; E): the largest value a routing of shape (E, k, P(d))
reaches (analysis.mi_ceiling), pinned by hand-derived cases and by brute force over every routing
of a small shape."""

from __future__ import annotations

import math
from itertools import combinations, product

import numpy as np
import pytest

from analysis.measures import (
    mi_ceiling,
    mi_ceiling_detail,
    mutual_information,
    mutual_information_from_assignments,
    summarize,
)
from analysis.mi_ceiling import best_routing_mi
from analysis.stats import RoutingStats


def _stats(patterns: list[tuple[int, ...]], num_experts: int, rows: int = 12) -> RoutingStats:
    """Domain d: ``rows`` rows, each selecting the experts ``patterns[d]`` with gate 1/k each."""
    probs, domain, topk = [], [], []
    for d, sel in enumerate(patterns):
        for _ in range(rows):
            p = np.zeros(num_experts)
            p[list(sel)] = 1 / len(sel)
            probs.append(p)
            domain.append(d)
            topk.append(sel)
    return RoutingStats.from_arrays(
        np.array(probs), np.array(domain), len(patterns), topk_idx=np.array(topk)
    )


def _mi_of_joint(joint: np.ndarray) -> float:
    """I(D; E) of a joint [D, E] straight from the definition (float64)."""
    m = joint / joint.sum()
    outer = m.sum(1, keepdims=True) * m.sum(0, keepdims=True)
    nz = m > 0
    return float((m[nz] * np.log(m[nz] / outer[nz])).sum())


def test_best_routing_at_three_domains_four_experts_k2_reads_one():
    # d0 -> {0, 1}, d1 -> {2, 3}, d2 -> {0, 2}: loads (2, 1, 2, 1) / 6, the most even 6 halves of
    # thirds can be over 4 experts; I = H(load) - log 2 = 2/3 log 3 + 1/3 log 6 - log 2
    s = _stats([(0, 1), (2, 3), (0, 2)], 4)
    best = 2 / 3 * math.log(3) + 1 / 3 * math.log(6) - math.log(2)
    assert mutual_information(s, "hard") == pytest.approx(best, rel=1e-6)
    detail = mi_ceiling_detail(s, "hard")
    assert detail.exact and detail.value == pytest.approx(best)
    assert detail.bound == pytest.approx(math.log(2))  # min(H(D), log(E/k)): not reachable
    assert mi_ceiling(s, "hard") == pytest.approx(best)
    assert mutual_information(s, "hard", normalized=True) == pytest.approx(1.0, rel=1e-6)
    out = summarize(s)
    assert out["mi_hard_normalized"] == pytest.approx(1.0, rel=1e-6)
    assert out["mi_hard_bound"] == pytest.approx(math.log(2)) and out["mi_hard_ceiling_exact"]


@pytest.mark.parametrize(
    ("p_d", "e", "k"),
    [
        ([1, 1, 1], 4, 2),
        ([5, 3, 2], 2, 1),  # E < D with unequal domains
        ([4, 3, 2, 1], 3, 1),
        ([3, 1, 1], 5, 2),  # k D > E
        ([2, 2, 1, 1], 5, 3),
        ([1, 1], 3, 2),
        ([0.7, 0.2, 0.1], 4, 3),
    ],
)
def test_best_routing_mi_is_the_maximum_over_every_routing(p_d, e, k):
    """Brute force: every domain on its own k-subset (the corners of its capped simplex, where the
    convex I(D; E) peaks), every combination, I from the definition."""
    p = np.asarray(p_d, float) / np.sum(p_d)
    best = 0.0
    for subsets in product(list(combinations(range(e), k)), repeat=len(p)):
        joint = np.zeros((len(p), e))
        for d, sub in enumerate(subsets):
            joint[d, list(sub)] = p[d] / k
        best = max(best, _mi_of_joint(joint))
    got = best_routing_mi(p, e, k)
    assert got.exact and got.value == pytest.approx(best, abs=1e-9)
    assert got.value <= got.bound + 1e-12


def test_ceiling_zero_reads_not_applicable():
    # k = E: every row selects both experts, nothing about the domain can show
    s = _stats([(0, 1), (0, 1)], 2)
    assert mi_ceiling(s, "hard") == 0.0
    assert math.isnan(mutual_information(s, "hard", normalized=True))
    assert summarize(s)["mi_hard_normalized"] is None  # "n/a" on every page
    one = _stats([(0,)], 3)  # one domain
    assert math.isnan(mutual_information(one, "soft", normalized=True))


def test_the_number_of_experts_comes_from_the_model_not_the_largest_index():
    # D = 4 balanced, k = 2 on experts 0..3 of a model with E = 8: ceiling min(log 4, log 4)
    domain = np.repeat(np.arange(4), 6)
    topk = np.array([[d, (d + 1) % 4] for d in domain])
    with pytest.raises(ValueError, match="num_experts"):
        mutual_information_from_assignments(domain, topk, normalized=True)
    mi = mutual_information_from_assignments(domain, topk, num_experts=8)
    got = mutual_information_from_assignments(domain, topk, num_experts=8, normalized=True)
    assert got == pytest.approx(mi / math.log(4), rel=1e-6)


def test_a_structured_gates_fraction_says_how_much_of_its_mi_is_built_in():
    """PLE-like: two domains, each reaching its own expert and the shared expert 2, half each.
    The ceiling is that of a free gate, so the note must say the structure builds part of I in:
    here all of it, I = sum_d P(d) sum_e P(e|d) log(P(e|d) / P(e)) = 0.5 log 2 (P(e) = 1/4, 1/4,
    1/2), which the note gives in nats.  A sparse gate's note says nothing of the kind."""
    from analysis.information import ceiling_note

    s = _stats([(0, 2), (1, 2)], 3)
    structured = summarize(s, gate_kind="structured", reach=[[0, 2], [1, 2]])
    assert structured["mi_built_in"] == pytest.approx(0.5 * math.log(2))
    for kind in ("soft", "hard"):
        note = ceiling_note(structured, kind)
        assert "structured gate" in note and f"{0.5 * math.log(2):.4f} nats" in note
        assert "built in" in note
    sparse = summarize(s, gate_kind="sparse")
    assert "built in" not in ceiling_note(sparse, "hard")
