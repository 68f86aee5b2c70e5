"""Align the experts of two runs: which expert of B plays the role of each expert of A?

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Expert indices are arbitrary: expert 3 of one run need not be expert 3 of another.  Experts are
therefore aligned first, one to one, by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``), on one of two bases:

- ``rows`` (used whenever both runs were evaluated on the same rows): the co-assignment table
  C[i, j] = rows whose top-1 expert is i in a and j in b; the matching maximizes the rows that
  agree, sum_i C[i, perm[i]].  Two experts serving the same domain are told apart by *which rows*
  they take, so a relabelled copy of a run aligns exactly (agreement 1).
- ``profiles``: each expert's column of P(e | d) (how much each domain uses it), matched on the L1
  distance (or cosine similarity).  Only D numbers describe an expert, so with E > D two experts
  used by the same domain have near-identical columns and their match is a coin toss; use it only
  when per-row routing is not available.

Every alignment reports how ambiguous it is: ``margin`` = how much worse the best matching that
changes any one used pair is (rows for ``rows``, as a fraction of N; L1 distance for
``profiles``), and the experts whose pair can change at no cost (``ambiguous``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from analysis.measures import json_safe
from analysis.validation import check_routing_arrays

COSTS = ("l1", "cosine")


def _profiles(act: Any, name: str, num_domains: int | None = None) -> np.ndarray:
    joint = check_routing_arrays(joint=act, num_domains=num_domains).joint
    total = joint.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        bad = np.flatnonzero(total[:, 0] <= 0).tolist()
        raise ValueError(f"{name} has no routing mass for domains {bad} (all-zero rows)")
    return joint / total


@dataclass
class Alignment:
    """Result of ``align_experts_on_rows`` / ``align_experts_on_profiles``.

    - ``permutation`` [E_a]: b's expert matched to each expert of a (-1: left unmatched).
    - ``basis``: "rows" or "profiles" (see the module docstring).
    - ``margin``: how much the best matching beats the best one that changes a used pair: a
      fraction of the rows (``rows``) or an L1 distance (``profiles``); 0 = ambiguous.  NaN when
      no pair can change (a single expert).
    - ``ambiguous``: a's experts whose partner can change at no cost (sorted).
    - ``agreement``: for ``rows``, the fraction of rows whose top-1 experts agree after the
      alignment, sum_i C[i, perm[i]] / N; ``None`` for ``profiles``.
    """

    permutation: np.ndarray
    basis: str
    margin: float
    ambiguous: list[int]
    agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float, list[int], float]:
    """Min-cost one-to-one matching of a [E_a, E_b] cost; with its margin and ambiguous rows.

    The margin of a matched pair (i, j) is the extra cost of the best matching without it; pairs
    whose row of ``cost`` is constant (an expert of a the criterion cannot tell apart) are left
    out of the margin and the ambiguity.
    """
    rows, cols = linear_sum_assignment(cost)
    best = float(cost[rows, cols].sum())
    perm = np.full(cost.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    forbid = float(np.abs(cost).sum() + 1.0) * 2  # larger than any matching's total cost
    margins: dict[int, float] = {}
    for i, j in zip(rows, cols, strict=True):
        if np.ptp(cost[i]) == 0 or min(cost.shape) < 2:
            continue
        alt = cost.copy()
        alt[i, j] = forbid
        r2, c2 = linear_sum_assignment(alt)
        margins[int(i)] = float(alt[r2, c2].sum()) - best
    tol = 1e-9 * max(1.0, abs(best))
    ambiguous = sorted(i for i, m in margins.items() if m <= tol)
    margin = min(margins.values()) if margins else float("nan")
    return perm, max(margin, 0.0) if margins else margin, ambiguous, best


def align_experts(act_a: Any, act_b: Any, *, cost: str = "l1") -> np.ndarray:
    """Match the experts of b to those of a on their P(e | d) profiles; returns ``perm`` [E_a].

    ``perm[i]`` is the expert of b matched to expert i of a, so ``act_b[:, perm]`` lists b's
    experts in a's order.  act_a [D, E_a], act_b [D, E_b]: P(e | d) (or non-negative counts; rows
    are normalized).  ``cost``: "l1" = sum_d |a[d, i] - b[d, j]| (default) or "cosine" =
    -cos(a[:, i], b[:, j]).  With E_b < E_a, the experts of a left unmatched get -1.  With E > D
    prefer ``align_experts_on_rows`` (see the module docstring); ``align_experts_on_profiles``
    also says how ambiguous this match is.
    """
    return align_experts_on_profiles(act_a, act_b, cost=cost).permutation


def align_experts_on_profiles(act_a: Any, act_b: Any, *, cost: str = "l1") -> Alignment:
    """``align_experts`` with its ambiguity: an ``Alignment`` whose margin is in cost units."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
    a = _profiles(act_a, "act_a")
    b = _profiles(act_b, "act_b", num_domains=a.shape[0])
    if cost == "l1":
        c = np.abs(a[:, :, None] - b[:, None, :]).sum(axis=0)  # [E_a, E_b]
    else:
        na = np.linalg.norm(a, axis=0)[:, None]
        nb = np.linalg.norm(b, axis=0)[None, :]
        c = -(a.T @ b) / np.where(na * nb > 0, na * nb, 1.0)  # [E_a, E_b]
    perm, margin, ambiguous, _ = _assign(c)
    return Alignment(perm, "profiles", margin, ambiguous)


def coassignment(sel_a: Any, sel_b: Any, num_experts: int) -> np.ndarray:
    """[E, E] int64 table C[i, j] = rows whose top-1 expert is i in a and j in b (or, for
    [N, k] selections, row-wise pairs (i in a's k, j in b's k), each row adding k_a x k_b)."""
    xa = check_routing_arrays(expert=sel_a, num_experts=num_experts).expert
    xb = check_routing_arrays(expert=sel_b, num_experts=num_experts).expert
    if xa.shape[0] != xb.shape[0]:
        raise ValueError(f"sel_b has {xb.shape[0]} rows but sel_a has {xa.shape[0]}")
    xa = xa if xa.ndim == 2 else xa[:, None]
    xb = xb if xb.ndim == 2 else xb[:, None]
    e = num_experts
    cell = (xa[:, :, None] * e + xb[:, None, :]).ravel()
    return np.bincount(cell, minlength=e * e).reshape(e, e).astype(np.int64)


def align_experts_on_rows(sel_a: Any, sel_b: Any, num_experts: int) -> Alignment:
    """Match b's experts to a's on the same rows: maximize the rows whose selected experts agree,
    on the ``coassignment`` table.  ``sel_a``, ``sel_b``: [N] top-1 or [N, k] selected experts of
    the same rows in the same order.  Returns an ``Alignment`` whose ``agreement`` is
    sum_i C[i, perm[i]] / (N min(k_a, k_b)) in [0, 1] (for top-1: the fraction of rows whose
    experts agree) and whose ``margin`` is in the same unit.  a's experts that were never
    selected are matched arbitrarily and not counted as ambiguous.
    """
    xa = check_routing_arrays(expert=sel_a, num_experts=num_experts).expert
    xb = check_routing_arrays(expert=sel_b, num_experts=num_experts).expert
    table = coassignment(xa, xb, num_experts)
    perm, margin, ambiguous, best = _assign(-table.astype(np.float64))
    k = min(xa.shape[1] if xa.ndim == 2 else 1, xb.shape[1] if xb.ndim == 2 else 1)
    units = xa.shape[0] * k  # most agreeing (row, expert) pairs any matching can reach
    if units == 0:
        return Alignment(perm, "rows", float("nan"), [], None)
    return Alignment(perm, "rows", margin / units, ambiguous, -best / units)


def aligned_activation(act_b: Any, perm: Any) -> np.ndarray:
    """b's P(e | d) with its experts in a's order: [D, len(perm)] float64.

    act_b [D, E_b]; ``perm`` [E_a] from ``align_experts``: column i of the result is column
    ``perm[i]`` of ``act_b`` (b's expert matched to a's expert i), NaN where ``perm[i]`` is -1
    (a's expert left unmatched).
    """
    b = np.asarray(act_b, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"act_b must be 2-D [domains, experts], got shape {b.shape}")
    p = np.asarray(perm)
    if p.ndim != 1 or (p.size and not np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"perm must be a 1-D integer array, got shape {p.shape} of {p.dtype}")
    p = p.astype(np.int64)
    bad = (p < -1) | (p >= b.shape[1])
    if bad.any():
        raise ValueError(
            f"perm[{int(np.flatnonzero(bad)[0])}] = {int(p[bad][0])} is not an expert of act_b "
            f"(shape {b.shape}) nor -1"
        )
    out = np.full((b.shape[0], p.size), np.nan)
    matched = p >= 0
    out[:, matched] = b[:, p[matched]]
    return out
