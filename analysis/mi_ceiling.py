"""The largest I(D; E) a routing of a given shape can reach: E experts, k distinct experts per row,
domain shares P(d).  The denominator of the normalized mutual information (docs/measures.md).

Why a search and not a formula: I(D; E) is convex in each domain's expert distribution P(. | d),
and with k distinct experts per row P(. | d) ranges over the capped simplex {p : sum p = 1,
0 <= p_e <= 1/k}, whose corners are "uniform on k experts".  So the maximum sits where every
domain spreads its selections evenly over a set S_d of k experts, and there

    I(D; E) = H(E) - H(E | D) = H(load) - log k,     load_e = sum_{d : e in S_d} P(d) / k.

The best routing makes the expert loads as even as the domain shares allow.  The closed form
``bound = min(H(D), log E - log k)`` is reached only when the loads can be made exactly even (or
the domains kept apart); at D = 3 balanced domains, E = 4, k = 2 the best routing reaches
H((2, 2, 1, 1) / 6) - log 2 = 0.6365 nats, 92% of the bound log 2.

``best_routing_mi`` tries the even spread first (greedy: largest domain to the k least loaded
experts), which reaches the bound in the common balanced cases; otherwise it searches every
assignment of k-subsets exactly (up to relabelling the experts) while that search stays small, and
else reports the greedy value as a lower end with ``exact`` False.  Soft routing (dense gate
probabilities) is the k = 1 case: its conditionals range over the whole simplex.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

SEARCH_LIMIT = 200_000  # states x subsets x domains the exact search may visit
TOL = 1e-9


@dataclass(frozen=True)
class MICeiling:
    """``value``: the denominator of the normalized MI (nats): the largest I(D; E) reachable when
    ``exact``, else the upper ``bound``.  ``best``: I(D; E) of the best routing of this shape
    found (reachable; NaN when not searched).  ``bound``: min(H(D), log E - sum_d P(d) log k_d)."""

    value: float
    bound: float
    best: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def upper_bound(p_d: Any, num_experts: int, k_d: Any = 1) -> float:
    """min(H(D), log E - sum_d P(d) log k_d), nats: H(E | d) >= log k_d when a row takes k_d
    distinct experts (each gets at most 1/k_d of the domain's selections)."""
    p = _shares(p_d)
    k = np.broadcast_to(np.asarray(k_d, dtype=np.float64), p.shape)
    if p.size == 0:
        return 0.0
    floor = float(np.sum(p * np.log(k)))
    return max(0.0, min(_entropy(p), math.log(num_experts) - floor))


def _shares(p_d: Any) -> np.ndarray:
    p = np.asarray(p_d, dtype=np.float64).ravel()
    if p.size and (not np.all(np.isfinite(p)) or np.any(p < 0)):
        raise ValueError(f"p_d must be finite shares >= 0, got {p.tolist()}")
    total = p.sum()
    return p / total if total > 0 else p


def _greedy(p: np.ndarray, e: int, k: int) -> np.ndarray:
    load = np.zeros(e)
    for w in sorted(p, reverse=True):
        idx = np.argsort(load, kind="stable")[:k]
        load[idx] += w / k
    return load


def _search(p: np.ndarray, e: int, k: int) -> np.ndarray | None:
    """The most even reachable load vector (highest entropy) by an exhaustive search over sorted
    load multisets; None when the search would exceed ``SEARCH_LIMIT``."""
    subsets = list(combinations(range(e), k))
    states: dict[tuple, np.ndarray] = {(0.0,) * e: np.zeros(e)}
    for w in sorted(p, reverse=True):
        if len(states) * len(subsets) > SEARCH_LIMIT // max(len(p), 1):
            return None
        nxt: dict[tuple, np.ndarray] = {}
        for load in states.values():
            for s in subsets:
                new = load.copy()
                new[list(s)] += w / k
                new.sort()
                nxt.setdefault(tuple(np.round(new, 12)), new)
        states = nxt
    return max(states.values(), key=_entropy)


def best_routing_mi(p_d: Any, num_experts: int, k: int = 1) -> MICeiling:
    """The largest I(D; E) (nats) a routing with ``num_experts`` experts, ``k`` distinct experts
    per row and domain shares ``p_d`` [D] can reach (see the module doc)."""
    e, k = int(num_experts), int(k)
    if e < 1:
        raise ValueError(f"num_experts={num_experts} must be >= 1")
    if not 1 <= k <= e:
        raise ValueError(f"k={k} must be in [1, num_experts={e}]")
    p = _shares(p_d)
    p = p[p > 0]
    bound = upper_bound(p, e, k)
    if bound <= TOL:
        return MICeiling(0.0, 0.0, 0.0, True)
    greedy = _entropy(_greedy(p, e, k)) - math.log(k)
    if greedy >= bound - TOL:
        return MICeiling(bound, bound, bound, True)
    load = _search(p, e, k)
    if load is None:
        return MICeiling(bound, bound, max(greedy, 0.0), False)
    best = max(_entropy(load) - math.log(k), greedy)
    return MICeiling(best, bound, best, True)


def mi_ceiling_of(p_d: Any, num_experts: int, k_d: Any = 1) -> MICeiling:
    """``best_routing_mi`` when every domain takes the same whole number of experts per row;
    otherwise (a mean k that varies or is fractional) only the upper bound is known."""
    p = _shares(p_d)
    k = np.broadcast_to(np.asarray(k_d, dtype=np.float64), p.shape)
    used = k[p > 0]
    if used.size and np.allclose(used, used[0]) and abs(used[0] - round(used[0])) < 1e-9:
        return best_routing_mi(p, num_experts, int(round(used[0])))
    bound = upper_bound(p, num_experts, k)
    return MICeiling(bound, bound, float("nan"), bound <= TOL)
