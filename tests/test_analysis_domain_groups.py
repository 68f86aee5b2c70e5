"""Planted groups of domains recovered from routing (analysis.domain_groups): hand-built P(e|d)
with the adjusted Rand index worked out by hand from its contingency table."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.domain_groups import group_recovery

GROUPS = [0, 1, 2, 0, 1, 2]  # domain d in group d % 3, as the generator plants them


def _routing(expert_sets: list[tuple[int, ...]], e: int = 6, seed: int = 0) -> np.ndarray:
    """P(e|d): each domain spreads its mass over its experts, with a little per-domain noise."""
    rng = np.random.default_rng(seed)
    p = np.full((len(expert_sets), e), 0.002)
    for d, experts in enumerate(expert_sets):
        p[d, list(experts)] = 1.0 + 0.1 * rng.random(len(experts))
    return p / p.sum(axis=1, keepdims=True)


def test_each_group_on_its_own_experts_is_recovered_exactly() -> None:
    sets = [(2 * g, 2 * g + 1) for g in GROUPS]  # group g routes to experts 2g, 2g+1
    rec = group_recovery(_routing(sets), GROUPS)
    assert rec.ari == pytest.approx(1.0) and rec.nmi == pytest.approx(1.0)
    assert rec.clusters == [0, 1, 2, 0, 1, 2] and rec.num_groups == 3
    # numbering the experts otherwise changes nothing
    perm = np.random.default_rng(1).permutation(6)
    assert group_recovery(_routing(sets)[:, perm], GROUPS).ari == pytest.approx(1.0)


def test_a_domain_routed_with_another_group_lowers_the_score_by_its_closed_form() -> None:
    # domain 5 (group 2) routes like group 1: clusters {0, 3}, {1, 4, 5}, {2}
    sets = [(0, 1), (2, 3), (4, 5), (0, 1), (2, 3), (2, 3)]
    rec = group_recovery(_routing(sets), GROUPS)
    assert rec.clusters == [0, 1, 2, 0, 1, 1]
    # ARI by hand: pairs within a planted group: 3; within a cluster: 1 + 3 = 4; within both: 2
    # (0-3 and 1-4); n = 6 -> 15 pairs; expected index 3 * 4 / 15 = 0.8
    assert rec.ari == pytest.approx((2 - 0.8) / ((3 + 4) / 2 - 0.8))


def test_domain_blind_routing_recovers_nothing_and_bad_input_is_named() -> None:
    blind = np.tile([0.5, 0.5, 0, 0, 0, 0], (6, 1))  # every domain on experts 0 and 1
    assert group_recovery(blind, GROUPS).ari <= 0.0
    with pytest.raises(ValueError, match="5 planted groups given for 6 domains"):
        group_recovery(blind, GROUPS[:5])
    with pytest.raises(ValueError, match="need 2 <= groups < domains"):
        group_recovery(blind, [0] * 6)
    with pytest.raises(ValueError, match=r"no mass for domains \[1\]"):
        group_recovery(np.vstack([blind[:1], np.zeros((1, 6)), blind[2:]]), GROUPS)
