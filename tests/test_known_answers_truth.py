"""Known answers for planted-truth recovery (and its ceilings), expert alignment and the alarms.

Hand-built routings with values derived here; scipy's linear_sum_assignment as the independent
matcher; hypothesis for "invariant where it should be, sensitive where it must be".  Definitions:
docs/measures.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from analysis.alarms import health_alarms
from analysis.compare import align_experts, align_experts_on_rows, coassignment, compare
from analysis.stats import RoutingStats
from analysis.truth import overlap_score_ceiling, truth_recovery

# 3 domains, shared mechanism 0, two specific mechanisms each (the synthetic default layout)
TRUTH3 = {
    "domain_mechanism": [[1, 1, 0, 0, 1, 0, 0], [1, 0, 0, 1, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0]],
    "shared_mechanism": 0,
}
# 4 domains, two specific mechanisms each: K' = 8
TRUTH4 = {"domain_mechanism": np.c_[np.ones(4), np.repeat(np.eye(4), 2, axis=1)].astype(int)}
TRUTH4["shared_mechanism"] = 0


def f(o: float) -> float:
    """Weighted Jaccard of two distributions sharing mass o: o / (2 - o)."""
    return o / (2 - o)


# ---- recovery ------------------------------------------------------------------------------------


def test_wrong_domain_sets_do_not_score_one():
    """Regression (issue 9, item 1): every expert serves two domains where each mechanism has
    one; ARI = NMI = 1 said 'perfect'.  Each mechanism's best expert has Jaccard |{d}| / |{d, d'}|
    = 1/2 and none matches exactly."""
    act = np.array(
        [[0.3, 0.3, 0, 0, 0.2, 0.2], [0.2, 0.2, 0.3, 0.3, 0, 0], [0, 0, 0.2, 0.2, 0.3, 0.3]]
    )
    res = truth_recovery(act, TRUTH3)
    assert res.set_jaccard == pytest.approx(0.5)
    assert res.exact_match == 0.0
    assert all(m["jaccard"] == pytest.approx(0.5) for m in res.matching)
    # overlap score: each pair of domains shares 0.4 of 1.6 -> L = 1/4, score = 1 - 1/4
    assert res.score == pytest.approx(0.75)
    assert not hasattr(res, "ari") and not hasattr(res, "nmi")


def test_mirror_routing_and_its_permutations_score_one():
    mirror = np.zeros((3, 6))
    for d in range(3):
        mirror[d, 2 * d : 2 * d + 2] = 0.5
    for perm in itertools.islice(itertools.permutations(range(6)), 0, 720, 97):
        res = truth_recovery(mirror[:, list(perm)], TRUTH3)
        assert (res.score, res.set_jaccard, res.exact_match) == (1.0, 1.0, 1.0)


def test_overlap_score_ceiling_closed_forms():
    assert overlap_score_ceiling(4, 8, 1) == 1.0  # E >= k D: disjoint supports possible
    assert overlap_score_ceiling(4, 8, 2) == 1.0
    # E = 8, D = 4, k = 4: each expert holds 4/8 of the domains' mass in shares <= 1/4, so at
    # least two domains at 1/4 each: overlap 1/4 per expert, O* = 2 over 6 pairs, mean 1/3
    assert overlap_score_ceiling(4, 8, 4) == pytest.approx(1 - f(1 / 3))
    assert overlap_score_ceiling(4, 8, 4) == pytest.approx(0.8)
    # soft (k = 1) with E = 2 < D = 4: each expert holds mass 2 -> O* = 2, mean 1/3
    assert overlap_score_ceiling(4, 2, 1) == pytest.approx(0.8)
    # one concrete E = 8, k = 4 routing stays under it: domains on {0-3}, {4-7}, {0,1,4,5},
    # {2,3,6,7}: four pairs share 2 experts (L = 2/6), two share none -> score 1 - 2/9
    sets = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 4, 5], [2, 3, 6, 7]]
    act = np.zeros((4, 8))
    for d, s in enumerate(sets):
        act[d, s] = 0.25
    res = truth_recovery(act, TRUTH4, k=4)
    assert res.score == pytest.approx(1 - 2 / 9)
    assert res.score_ceiling == pytest.approx(0.8)
    assert res.score_fraction == pytest.approx((1 - 2 / 9) / 0.8)


def construction_rows(k: int = 4):
    """Hard rows reaching the identity ceiling at E = 8, D = 4, k = 4: domain d's rows select its
    two own experts {2d, 2d+1} plus one of three disjoint pairs of the other six, in turn:
    P(e|d) = 1/4 on its own, 1/12 on each other expert, so each expert's profile is
    [1/2, 1/6, 1/6, 1/6] (own domain first) and serves exactly its domain."""
    probs, domain, topk = [], [], []
    for d in range(4):
        others = [e for e in range(8) if e // 2 != d]
        pairs = [others[0:2], others[2:4], others[4:6]]
        for i in range(12):
            sel = [2 * d, 2 * d + 1, *pairs[i % 3]]
            p = np.zeros(8)
            p[sel] = 0.25
            probs.append(p)
            domain.append(d)
            topk.append(sel)
    return np.array(probs), np.array(domain), np.array(topk)


def test_identity_ceiling_is_reached_at_k4():
    probs, domain, topk = construction_rows()
    stats = RoutingStats.from_arrays(probs, domain, 4, topk_idx=topk)
    res = truth_recovery(stats, TRUTH4, kind="hard")
    assert res.details["experts_per_row"] == 4.0
    assert res.set_jaccard == 1.0 and res.exact_match == 1.0
    assert res.set_jaccard_ceiling == 1.0  # min(E, K') / K' = 8 / 8
    # its overlap: each pair shares 1/12 on all 8 experts: o = 2/3, L = 1/2; ceiling 0.8
    assert res.score == pytest.approx(1 - f(2 / 3))
    assert res.score_ceiling == pytest.approx(0.8)
    assert res.score <= res.score_ceiling


def test_identity_ceiling_with_fewer_experts_than_mechanisms():
    res = truth_recovery(np.eye(3), TRUTH3)  # E = 3 experts for K' = 6 mechanisms
    assert res.set_jaccard_ceiling == pytest.approx(3 / 6)
    assert res.set_jaccard_fraction == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(list(range(6))), shift=st.integers(1, 2))
def test_recovery_is_blind_to_expert_labels_but_not_to_domain_sets(perm, shift):
    mirror = np.zeros((3, 6))
    for d in range(3):
        mirror[d, 2 * d : 2 * d + 2] = 0.5
    base = truth_recovery(mirror, TRUTH3)
    moved = truth_recovery(mirror[:, perm], TRUTH3)
    assert (moved.score, moved.set_jaccard, moved.exact_match) == (
        base.score, base.set_jaccard, base.exact_match
    )  # fmt: skip
    # each expert now also serves domain d + shift: every domain set is wrong
    wrong = 0.6 * mirror + 0.4 * np.roll(mirror, shift, axis=0)
    res = truth_recovery(wrong[:, perm], TRUTH3)
    assert res.exact_match == 0.0
    assert res.set_jaccard == pytest.approx(0.5)
    assert res.score < 1


# ---- alignment -----------------------------------------------------------------------------------


def two_runs(seed: int = 0):
    """E = 8, D = 3: domain 0 spreads its rows over experts 0-1, domain 1 over 2-4, domain 2 over
    5-7, so experts of one domain have identical P(e|d) columns; b is a relabelled copy of a."""
    rng = np.random.default_rng(seed)
    domain = np.repeat(np.arange(3), 120)
    groups = [[0, 1], [2, 3, 4], [5, 6, 7]]
    top1 = np.array([groups[d][i % len(groups[d])] for i, d in enumerate(domain)])
    probs = np.full((len(domain), 8), 0.02)
    probs[np.arange(len(domain)), top1] = 0.86
    perm = rng.permutation(8)  # b's label of a's expert e: perm[e]
    inv = np.argsort(perm)
    a = RoutingStats.from_arrays(probs, domain, 3, topk_idx=top1[:, None])
    b = RoutingStats.from_arrays(probs[:, inv], domain, 3, topk_idx=perm[top1][:, None])
    return a, b, top1, perm[top1], perm


@pytest.mark.parametrize("seed", range(4))
def test_relabelled_copy_aligns_exactly_on_rows(seed):
    """Regression (issue 9, item 5): compare matched experts on P(e|d) columns, where experts of
    the same domain tie, so a relabelled copy could show agreement < 1."""
    a, b, sel_a, sel_b, perm = two_runs(seed)
    res = compare(a, b, sel_a, sel_b)
    assert res.alignment == "rows"
    assert res.routing_agreement == 1.0
    np.testing.assert_array_equal(res.permutation, perm)
    np.testing.assert_allclose(res.aligned_diff, 0.0, atol=1e-12)
    assert res.ambiguous_experts == [] and res.alignment_margin > 0
    # the P(e|d) profiles cannot tell experts of one domain apart: the profile match says so
    prof = compare(a, b)
    assert prof.alignment == "profiles" and prof.alignment_margin == pytest.approx(0.0)
    assert set(prof.ambiguous_experts) == set(range(8))


def test_the_profile_match_is_a_coin_toss_for_some_relabelling():
    hits = []
    for seed in range(8):
        a, b, sel_a, sel_b, _ = two_runs(seed)
        from analysis.measures import activation

        p = align_experts(activation(a, "soft"), activation(b, "soft"))
        hits.append(float(np.mean(p[sel_a] == sel_b)))
    assert min(hits) < 1.0  # what compare reported before it aligned on rows


def test_row_alignment_matches_scipy_on_an_independent_table():
    rng = np.random.default_rng(3)
    sel_a = rng.integers(0, 6, 500)
    noise = rng.random(500) < 0.3
    perm = rng.permutation(6)
    sel_b = np.where(noise, rng.integers(0, 6, 500), perm[sel_a])
    table = np.zeros((6, 6))
    np.add.at(table, (sel_a, sel_b), 1)
    np.testing.assert_array_equal(coassignment(sel_a, sel_b, 6), table)
    r, c = linear_sum_assignment(-table)
    al = align_experts_on_rows(sel_a, sel_b, 6)
    assert al.agreement == pytest.approx(table[r, c].sum() / 500)
    assert al.agreement == pytest.approx(np.mean(al.permutation[sel_a] == sel_b))
    np.testing.assert_array_equal(al.permutation, perm)


def test_top_k_alignment_and_ambiguity():
    sel_a = np.array([[0, 1], [2, 3], [0, 1], [2, 3]])
    sel_b = np.array([[3, 2], [1, 0], [3, 2], [1, 0]])
    al = align_experts_on_rows(sel_a, sel_b, 4)
    # pairs always co-occur, so 0 <-> 2 or 3 is a tie: agreement 1 whichever, flagged ambiguous
    assert al.agreement == pytest.approx(1.0)
    assert al.ambiguous == [0, 1, 2, 3] and al.margin == pytest.approx(0.0)


# ---- alarms --------------------------------------------------------------------------------------

NAMES = ["a", "b", "c"]
METRICS = {"auc": 0.75, **{f"auc/{n}": 0.75 for n in NAMES}}


def k2_stats(pairs: list[tuple[int, int]], e: int = 6, rows: int = 20) -> RoutingStats:
    domain = np.repeat(np.arange(len(pairs)), rows)
    topk = np.array([pairs[d] for d in domain])
    probs = np.full((len(domain), e), 0.1 / (e - 2))
    probs[np.arange(len(domain))[:, None], topk] = 0.45
    return RoutingStats.from_arrays(probs, domain, len(pairs), topk_idx=topk)


def codes(stats, alpha=0.01, metrics=METRICS, std=None):
    return [a.code for a in health_alarms(stats, metrics, NAMES, alpha=alpha,
                                          predictions_std_per_domain=std)]  # fmt: skip


def test_alarms_fire_on_their_bad_case_and_stay_silent_on_healthy_routing():
    healthy = k2_stats([(0, 1), (2, 3), (4, 5)])  # each domain on its own two experts
    assert codes(healthy, std=[0.1, 0.1, 0.1]) == []
    assert codes(healthy, alpha=0.0) == []
    # one expert in every row of every domain: q = 1 > 0.9
    assert "gate_collapse" in codes(k2_stats([(0, 1), (0, 3), (0, 5)]))
    # domains b and c on the same experts: JS 0 (only when alpha > 0 asked for specialization)
    alike = k2_stats([(0, 1), (2, 3), (2, 3)])
    assert "domains_indistinguishable" in codes(alike)
    assert "domains_indistinguishable" not in codes(alike, alpha=0.0)
    assert "dead_expert" in codes(alike)  # experts 4, 5 never selected
    # every domain routed alike with alpha > 0: I(D;E) = 0
    blind = k2_stats([(0, 1), (0, 1), (0, 1)])
    assert "mi_near_zero" in codes(blind)
    assert "domain_auc_chance" in codes(healthy, metrics={**METRICS, "auc/b": 0.5})
    assert "constant_predictions" in codes(healthy, std=[0.1, 0.0, 0.1])


DEFAULT = Path(__file__).resolve().parents[1] / "checkpoints" / "cesaa"


@pytest.mark.skipif(not (DEFAULT / "meta.json").exists(), reason="shipped checkpoints not built")
def test_shipped_default_checkpoint_has_no_gate_collapse_alarm():
    """Regression (issue 9, item 6): the default CESAA model routes domain_0 decisively to one
    expert (99.7% of its soft mass), which the old gate-collapse check took for a collapse."""
    from analysis.collect import collect
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data

    ck = load_checkpoint(DEFAULT)
    desc = ck.meta["data"]["description"]
    data = load_data(desc["source"], split=desc.get("split", "random"),
                     seed=int(desc.get("seed", 0)), encoders=ck.encoders)  # fmt: skip
    col = collect(ck.model, data.test, num_domains=ck.spec.num_domains)
    names = list(ck.domain_names)
    found = health_alarms(col.stats, {}, names, alpha=float(ck.model_config.alpha))
    assert not {"gate_collapse", "dead_expert", "mi_near_zero"} & {a.code for a in found}


def test_a_model_and_its_relabelled_copy_align_with_agreement_one():
    """E = 8, D = 3: a (randomly initialized) CESAA model's routing on real rows, and the same
    routing with its experts relabelled, as a relabelled checkpoint would produce it."""
    import dataclasses

    import torch

    from analysis.collect import collect
    from cesaa.data import load_data
    from cesaa.models.registry import build_model, default_config

    torch.manual_seed(0)
    data = load_data("synthetic:rows=3000,domains=3,seed=0")
    model = build_model(default_config("cesaa", num_experts=8, top_k=2), data.spec).eval()
    col = collect(model, data.test, num_domains=3)
    perm = np.random.default_rng(0).permutation(8)  # new label of old expert e: perm[e]
    inv = np.argsort(perm)
    s = col.stats
    relabelled = dataclasses.replace(
        s,
        prob_sum=s.prob_sum[:, inv],
        select_count=s.select_count[:, inv],
        coact=s.coact[np.ix_(inv, inv)],
    )
    res = compare(s, relabelled, col.top1, perm[col.top1])
    assert res.alignment == "rows" and res.routing_agreement == 1.0
    np.testing.assert_array_equal(res.permutation[np.unique(col.top1)], perm[np.unique(col.top1)])
    np.testing.assert_allclose(res.tv_distance, 0.0, atol=1e-12)
