"""Known answers for the routing measures (activation, load, MI, entropies, load balance, JS).

Each case is a hand-built routing whose value is derived here in closed form, plus cross-checks
against independent implementations (sklearn's mutual_info_score on the hard contingency table,
scipy.stats.entropy, scipy's jensenshannon) and property tests (relabelling the experts changes
nothing but the order).  Definitions: docs/measures.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import mutual_info_score

from analysis.measures import (
    activation,
    domain_similarity,
    expert_load,
    gating_entropy,
    load_balance,
    mi_ceiling,
    mutual_information,
    mutual_information_from_assignments,
    row_entropy,
    summarize,
)
from analysis.stats import RoutingStats
from cesaa.losses import cv_squared

LOG2, LOG3, LOG4 = math.log(2), math.log(3), math.log(4)


def routing(patterns: list[list[tuple[int, ...]]], num_experts: int, rows: int = 12):
    """Rows of domain d cycle through ``patterns[d]`` (each a tuple of the k experts the row
    selects), ``rows`` rows per domain; the gate puts probability 1/k on each selected expert, so
    soft and hard routing agree.  Returns probs [N, E], domain [N], topk [N, k]."""
    probs, domain, topk = [], [], []
    for d, pats in enumerate(patterns):
        for i in range(rows):
            sel = pats[i % len(pats)]
            p = np.zeros(num_experts)
            p[list(sel)] = 1 / len(sel)
            probs.append(p)
            domain.append(d)
            topk.append(sel)
    return np.array(probs), np.array(domain), np.array(topk)


def stats_of(patterns, num_experts, rows=12) -> RoutingStats:
    probs, domain, topk = routing(patterns, num_experts, rows)
    return RoutingStats.from_arrays(probs, domain, len(patterns), topk_idx=topk)


def sklearn_hard_mi(patterns, num_experts, rows=12) -> float:
    """Hard I(D; E) by sklearn: one (domain, expert) label pair per selection."""
    _, domain, topk = routing(patterns, num_experts, rows)
    k = topk.shape[1]
    return mutual_info_score(np.repeat(domain, k), topk.ravel())


ONE_PER_DOMAIN = [[(0,)], [(1,)], [(2,)]]  # D = E = 3, k = 1


# ---- one expert per domain, and a permutation of it ----------------------------------------------


def test_one_expert_per_domain():
    s = stats_of(ONE_PER_DOMAIN, 3)
    for kind in ("soft", "hard"):
        np.testing.assert_allclose(activation(s, kind), np.eye(3))
        np.testing.assert_allclose(expert_load(s, kind), [1 / 3] * 3)
        # I = H(E) - H(E|D) = log 3 - 0; the ceiling min(H(D), log(E/1)) = log 3
        assert mutual_information(s, kind) == pytest.approx(LOG3, rel=1e-6)
        assert mi_ceiling(s, kind) == pytest.approx(LOG3)
        assert mutual_information(s, kind, normalized=True) == pytest.approx(1.0, rel=1e-6)
        js = domain_similarity(s, kind)  # disjoint experts: log 2 off the diagonal
        np.testing.assert_allclose(js, LOG2 * (1 - np.eye(3)), atol=1e-12)
    assert mutual_information(s, "hard") == pytest.approx(sklearn_hard_mi(ONE_PER_DOMAIN, 3))
    ent = gating_entropy(s)
    np.testing.assert_allclose(ent.row_entropy, 0.0, atol=1e-12)  # one-hot gates
    assert ent.loc["overall", "marginal_entropy"] == pytest.approx(LOG3)  # uses all 3 evenly
    np.testing.assert_allclose(ent.marginal_entropy.iloc[1:], 0.0, atol=1e-12)
    assert ent.loc["overall", "marginal_entropy_norm"] == pytest.approx(1.0)
    lb = load_balance(s)
    assert lb["cv"] == 0.0 and lb["soft_cv"] == 0.0 and lb["dead_experts"] == []
    np.testing.assert_allclose(lb["coactivation"], np.eye(3) / 3)  # each row: one expert
    assert lb["top1_margin"] == pytest.approx(1.0)  # 1 - 0 for one-hot gates


def test_a_permutation_moves_columns_and_keeps_every_number():
    perm = (2, 0, 1)  # domain d -> expert perm[d]
    s = stats_of([[(perm[d],)] for d in range(3)], 3)
    expected = np.zeros((3, 3))
    expected[np.arange(3), perm] = 1
    np.testing.assert_allclose(activation(s, "hard"), expected)
    assert mutual_information(s, "hard") == pytest.approx(LOG3, rel=1e-6)
    np.testing.assert_allclose(domain_similarity(s, "soft"), LOG2 * (1 - np.eye(3)), atol=1e-12)


# ---- uniform, and everything on one expert -------------------------------------------------------


def test_uniform_routing_carries_no_information():
    # every gate uniform over 4 experts; hard: rows take experts 0..3 in turn in both domains
    probs, domain, topk = routing([[(0,), (1,), (2,), (3,)]] * 2, 4, rows=8)
    probs = np.full_like(probs, 0.25)
    s = RoutingStats.from_arrays(probs, domain, 2, topk_idx=topk)
    for kind in ("soft", "hard"):
        np.testing.assert_allclose(activation(s, kind), 0.25)
        assert mutual_information(s, kind) == pytest.approx(0.0, abs=1e-6)
        assert mutual_information(s, kind, normalized=True) == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(domain_similarity(s, kind), 0.0, atol=1e-12)
    np.testing.assert_allclose(row_entropy(probs), LOG4)
    ent = gating_entropy(s)
    np.testing.assert_allclose(ent.row_entropy_norm, 1.0)
    lb = load_balance(s)
    assert lb["cv"] == 0.0 and lb["top1_margin"] == 0.0  # two largest gates equal


def test_all_domains_on_one_expert():
    s = stats_of([[(0,)]] * 3, 4)
    np.testing.assert_allclose(expert_load(s, "hard"), [1, 0, 0, 0])
    assert mutual_information(s, "hard") == pytest.approx(0.0, abs=1e-7)
    assert mutual_information(s, "hard", normalized=True) == 0.0
    lb = load_balance(s)
    # counts [N, 0, 0, 0]: mean N/4, population std N sqrt(3)/4, so CV = sqrt(3) = sqrt(E - 1)
    assert lb["cv"] == pytest.approx(math.sqrt(3))
    assert lb["dead_experts"] == [1, 2, 3]
    np.testing.assert_allclose(domain_similarity(s, "hard"), 0.0, atol=1e-12)


# ---- E < D: pairs of domains sharing an expert ---------------------------------------------------


def test_domain_pairs_sharing_experts_with_fewer_experts_than_domains():
    pats = [[(0,)], [(0,)], [(1,)], [(1,)]]  # D = 4, E = 2
    s = stats_of(pats, 2)
    # H(E) = log 2, H(E|D) = 0; ceiling min(H(D) = log 4, log E = log 2) = log 2
    assert mutual_information(s, "hard") == pytest.approx(LOG2, rel=1e-6)
    assert mi_ceiling(s, "hard") == pytest.approx(LOG2)
    assert mutual_information(s, "hard", normalized=True) == pytest.approx(1.0, rel=1e-6)
    assert mutual_information(s, "hard") == pytest.approx(sklearn_hard_mi(pats, 2))
    js = domain_similarity(s, "hard")
    assert js[0, 1] == pytest.approx(0.0) and js[2, 3] == pytest.approx(0.0)
    assert js[0, 2] == pytest.approx(LOG2) and js[1, 3] == pytest.approx(LOG2)


# ---- k = 1..4 distinct experts per row (E = 8 > D = 4) -------------------------------------------


def k_patterns(k: int) -> list[list[tuple[int, ...]]]:
    """Domain d selects experts {2d, ..., 2d + k - 1} mod 8 in every row."""
    return [[tuple((2 * d + j) % 8 for j in range(k))] for d in range(4)]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_k_distinct_experts_per_row_cap_hard_mi_at_log_e_over_k(k):
    pats = k_patterns(k)
    s = stats_of(pats, 8)
    # P(e|d) = 1/k on S_d, P(d) = 1/4, P(e) = c_e / (4k) with c_e = #domains using e:
    # I = sum_{d, e in S_d} 1/(4k) log(4 / c_e)
    c = np.zeros(8)
    for (sel,) in pats:
        c[list(sel)] += 1
    expected = sum(math.log(4 / c[e]) / (4 * k) for (sel,) in pats for e in sel)
    assert {1: LOG4, 2: LOG4, 3: 4 / 3 * LOG2, 4: LOG2}[k] == pytest.approx(expected)
    assert mutual_information(s, "hard") == pytest.approx(expected, rel=1e-6)
    assert mutual_information(s, "hard") == pytest.approx(sklearn_hard_mi(pats, 8))
    # the bound min(H(D), log(E/k)) is reachable except at k = 3, where 12 selections of 1/12
    # spread over 8 experts at best as loads (2,2,2,2,1,1,1,1)/12: H - log 3 = 4/3 log 2, which
    # this routing reaches (it is the best, so it reads 1)
    ceiling = {3: 4 / 3 * LOG2}.get(k, min(LOG4, math.log(8 / k)))
    assert mi_ceiling(s, "hard") == pytest.approx(ceiling)
    assert mutual_information(s, "hard", normalized=True) == pytest.approx(expected / ceiling)
    assert summarize(s)["mi_hard_ceiling"] == pytest.approx(ceiling)
    # from assignments [N, k] the same; a bare joint needs k to know its ceiling
    _, domain, topk = routing(pats, 8)
    assert mutual_information_from_assignments(domain, topk, num_experts=8, normalized=True) == (
        pytest.approx(expected / ceiling, rel=1e-6)
    )
    joint = s.select_count
    assert mutual_information(joint, normalized=True, k=k) == pytest.approx(expected / ceiling)


def test_k4_routing_that_is_as_specialized_as_k_allows_is_normalized_to_one():
    """Regression (issue 9, item 2): E = 8, D = 4, k = 4, each domain on its own 4 experts as far
    as 8 experts allow; the old normalizer min(H(D), log E) = log 4 gave 0.5."""
    s = stats_of(k_patterns(4), 8)
    assert mutual_information(s, "hard") == pytest.approx(LOG2, rel=1e-6)
    assert mutual_information(s, "hard", normalized=True) == pytest.approx(1.0, rel=1e-6)


def test_coactivation_for_k2():
    s = stats_of(k_patterns(2), 8)
    co = load_balance(s)["coactivation"]
    expected = np.zeros((8, 8))
    for d in range(4):
        expected[np.ix_([2 * d, 2 * d + 1], [2 * d, 2 * d + 1])] = 1 / 4  # a quarter of the rows
    np.testing.assert_allclose(co, expected)


# ---- dead experts and one definition of CV^2 -----------------------------------------------------


def test_dead_experts_and_cv():
    s = stats_of([[(0,), (1,)], [(2,), (3,)]], 6, rows=10)  # experts 4, 5 never selected
    lb = load_balance(s)
    assert lb["dead_experts"] == [4, 5]
    # counts [5, 5, 5, 5, 0, 0]: mean 10/3, population variance 50/9, CV^2 = 1/2
    assert lb["cv"] == pytest.approx(math.sqrt(0.5))
    counts = torch.tensor([5.0, 5, 5, 5, 0, 0])
    # regression (issue 9, item 10): the balance loss used the sample variance (CV^2 = 0.6)
    assert cv_squared(counts).item() == pytest.approx(0.5)
    assert cv_squared(counts).item() == pytest.approx(lb["cv"] ** 2, rel=1e-6)


def test_top1_margin_known_value():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    s = RoutingStats.from_arrays(probs, [0, 1], 2)
    lb = load_balance(s)
    assert lb["top1_margin"] == pytest.approx((0.5 + 0.0) / 2)
    np.testing.assert_allclose(lb["top1_margin_per_domain"], [0.5, 0.0])


# ---- independent implementations -----------------------------------------------------------------


def random_routing(seed: int, n: int = 300, d: int = 3, e: int = 5, k: int = 2):
    rng = np.random.default_rng(seed)
    domain = rng.integers(0, d, n)
    logits = rng.normal(size=(n, e)) + 2.0 * (np.arange(e)[None, :] % d == domain[:, None])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    topk = np.argsort(-probs, axis=1)[:, :k]
    return probs, domain, topk


@pytest.mark.parametrize("seed", range(3))
def test_cross_checks_with_sklearn_and_scipy(seed):
    probs, domain, topk = random_routing(seed)
    s = RoutingStats.from_arrays(probs, domain, 3, topk_idx=topk)
    k = topk.shape[1]
    assert mutual_information(s, "hard") == pytest.approx(
        mutual_info_score(np.repeat(domain, k), topk.ravel()), rel=1e-5
    )
    np.testing.assert_allclose(row_entropy(probs), scipy_entropy(probs, axis=1), rtol=1e-10)
    ent = gating_entropy(s)
    for d in range(3):
        rows = probs[domain == d]
        assert ent.loc[f"domain_{d}", "row_entropy"] == pytest.approx(
            scipy_entropy(rows, axis=1).mean()
        )
        assert ent.loc[f"domain_{d}", "marginal_entropy"] == pytest.approx(
            scipy_entropy(rows.mean(axis=0))
        )
    act = activation(s, "soft")
    js = domain_similarity(s, "soft")
    for a in range(3):
        for b in range(3):
            assert js[a, b] == pytest.approx(jensenshannon(act[a], act[b]) ** 2, abs=1e-10)
    # soft MI from its definition sum P(d, e) log(P(d, e) / (P(d) P(e)))
    joint = s.prob_sum / s.prob_sum.sum()
    pd_, pe = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    assert mutual_information(s, "soft") == pytest.approx(
        float(np.sum(joint * np.log(joint / (pd_ * pe)))), rel=1e-5
    )


# ---- properties ----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3))
def test_relabelling_experts_permutes_columns_and_keeps_every_summary(seed, k):
    probs, domain, topk = random_routing(seed, n=120, d=3, e=5, k=k)
    perm = np.random.default_rng(seed + 1).permutation(5)  # new label of old expert e: perm[e]
    inv = np.argsort(perm)
    a = RoutingStats.from_arrays(probs, domain, 3, topk_idx=topk)
    b = RoutingStats.from_arrays(probs[:, inv], domain, 3, topk_idx=perm[topk])
    for kind in ("soft", "hard"):
        np.testing.assert_allclose(activation(b, kind), activation(a, kind)[:, inv])
        for norm in (False, True):
            assert mutual_information(b, kind, norm) == pytest.approx(
                mutual_information(a, kind, norm), rel=1e-5, abs=1e-7
            )
        assert mi_ceiling(b, kind) == pytest.approx(mi_ceiling(a, kind))
        np.testing.assert_allclose(domain_similarity(b, kind), domain_similarity(a, kind))
    la, lb = load_balance(a), load_balance(b)
    assert lb["cv"] == pytest.approx(la["cv"]) and lb["soft_cv"] == pytest.approx(la["soft_cv"])
    assert sorted(perm[la["dead_experts"]].tolist()) == lb["dead_experts"]
    assert lb["top1_margin"] == pytest.approx(la["top1_margin"])
    np.testing.assert_allclose(lb["coactivation"], la["coactivation"][np.ix_(inv, inv)])
    np.testing.assert_allclose(gating_entropy(b).to_numpy(), gating_entropy(a).to_numpy())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4))
def test_hard_mi_never_exceeds_its_k_ceiling(seed, k):
    probs, domain, topk = random_routing(seed, n=80, d=4, e=6, k=k)
    s = RoutingStats.from_arrays(probs, domain, 4, topk_idx=topk)
    assert mutual_information(s, "hard") <= mi_ceiling(s, "hard") + 1e-6
    assert mi_ceiling(s, "hard") <= math.log(6 / k) + 1e-12
