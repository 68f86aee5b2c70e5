"""Measures that depend on what a gate is: dense, sparse (top-k) or structured (docs/record.md).

Shapes: D = domains, E = experts of the gate, R_d = the experts domain d's gate can reach.

An expert's *work* is measured with the notion that fits its gate: a dense or structured gate mixes
every reachable expert into every row, so an expert's work is its gate weight (an expert with 20 %
of the weight on every row works on every row, even if it is never the largest); a sparse gate
runs only the k selected experts, so an expert's work is its share of the selections.  For a
structured gate (PLE: a domain's gate reaches only its own specific experts and the shared ones),
an expert's share is taken over the rows whose gate can reach it, against the even share those
rows' gates would give it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.stats import RoutingStats

KINDS = ("dense", "sparse", "structured")


def check_gate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"gate kind must be one of {list(KINDS)}, got {kind!r}")
    return kind


def notion(kind: str) -> str:
    """ "soft" (gate weight) for dense and structured gates, "hard" (selections) for sparse."""
    return "hard" if check_gate_kind(kind) == "sparse" else "soft"


def reach_mask(reach: Sequence[Sequence[int]] | None, shape: tuple[int, int]) -> np.ndarray:
    """[D, E] True where domain d's gate can weigh expert e (all True without ``reach``)."""
    d, e = shape
    if reach is None:
        return np.ones((d, e), bool)
    if len(reach) != d:
        raise ValueError(f"reach has {len(reach)} entries for {d} domains")
    mask = np.zeros((d, e), bool)
    for i, r in enumerate(reach):
        idx = np.asarray(list(r), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= e):
            raise ValueError(f"reach of domain {i} names experts outside [0, {e}): {list(r)}")
        mask[i, idx] = True
    return mask


def expert_work(stats: RoutingStats, kind: str, reach: Any = None) -> dict[str, Any]:
    """Each expert's share of the work of the rows that can reach it, and its even share.

    Returns ``{"notion", "share", "fair", "reached_rows"}``: ``notion`` "gate weight" or
    "selections"; ``share`` [E]: for a dense / structured gate the mean gate weight of e over the
    rows whose gate reaches e (sum_d prob_sum[d, e] / sum_{d reaching e} count[d]); for a sparse
    gate the share of those rows' selections that go to e.  For a dense gate, ``share`` is the
    mean gate weight over all rows and sums to 1.  ``fair`` [E]: the share e would get if every
    reaching row spread its work evenly over its reachable experts,
    sum_{d reaching e} count[d] / |R_d| / sum_{d reaching e} count[d] (1/E for an unstructured
    gate).  ``reached_rows`` [E]: rows whose gate can reach e.  NaN where no row reaches e.
    """
    if not isinstance(stats, RoutingStats):
        raise ValueError(f"stats must be a RoutingStats, got {type(stats).__name__}")
    hard = notion(kind) == "hard"
    mask = reach_mask(reach, stats.shape)  # [D, E]
    count = stats.count.astype(np.float64)  # [D]
    reached = (mask * count[:, None]).sum(axis=0)  # [E]
    if hard:
        work = stats.select_count.sum(axis=0).astype(np.float64)  # [E] selections of e
        room = (mask * stats.select_count.sum(axis=1, keepdims=True)).sum(axis=0)  # [E]
    else:
        work = stats.prob_sum.sum(axis=0).astype(np.float64)  # [E] gate weight of e
        room = reached
    size = mask.sum(axis=1).astype(np.float64)  # [D] |R_d|
    even = (mask * (count / np.maximum(size, 1))[:, None]).sum(axis=0)  # [E]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(room > 0, work / room, np.nan)
        fair = np.where(reached > 0, even / reached, np.nan)
    return {
        "notion": "selections" if hard else "gate weight",
        "share": share,
        "fair": fair,
        "reached_rows": reached,
    }


def dead_experts(
    stats: RoutingStats, kind: str, reach: Any = None, dead_fraction: float = 0.01
) -> list[int]:
    """Experts whose ``expert_work`` share is below ``dead_fraction`` x their even share (rows
    that can reach them exist, but give them almost no work)."""
    w = expert_work(stats, kind, reach)
    with np.errstate(invalid="ignore"):
        dead = w["share"] < dead_fraction * w["fair"]
    return [int(i) for i in np.flatnonzero(dead & (w["reached_rows"] > 0))]


def built_in_mi(count: Any, reach: Sequence[Sequence[int]], num_experts: int) -> float:
    """The I(D; E) that a structured gate's reach alone implies, in nats.

    The routing in which every domain's gate spreads its rows evenly over the experts it can
    reach, P(e | d) = 1 / |R_d| for e in R_d, has

        I_built_in = sum_d P(d) sum_{e in R_d} (1 / |R_d|) log((1 / |R_d|) / P(e)),
        P(e) = sum_{d reaching e} P(d) / |R_d|,

    with P(d) the domains' shares of the rows (``count`` [D]).  Any routing under the same reach
    whose domains differ only in which of their reachable experts they favour reads the measured
    I(D; E) against this value: for PLE with s specific experts per domain and sh shared ones,
    I_built_in = s / (s + sh) * H(D).  0 when every domain reaches the same experts.
    """
    c = np.asarray(count, dtype=np.float64)
    mask = reach_mask(reach, (c.shape[0], num_experts))
    total = c.sum()
    if total <= 0:
        return math.nan
    p_d = c / total
    cond = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)  # [D, E] P(e | d)
    joint = p_d[:, None] * cond
    p_e = joint.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(joint > 0, joint * np.log(cond / np.where(p_e > 0, p_e, 1.0)), 0.0)
    return float(max(terms.sum(), 0.0))
