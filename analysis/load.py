"""Which experts each domain uses and how evenly: activation P(e | d), load P(e), load balance
(CV, dead experts, co-activation, top-1 margin) and Jensen-Shannon divergence between domains.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.  Each function
takes a ``RoutingStats`` or raw ``probs`` [N, E] with ``domain=`` [N] (see ``analysis.measures``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.routing_input import joint_of, normalize_rows, routing_stats

# ---- activation and load -------------------------------------------------------------------------


def activation(
    source: Any,
    kind: str = "soft",
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> np.ndarray:
    """P(e | d) as a [D, E] array whose rows sum to 1 (NaN rows for domains without rows).

    soft: prob_sum[d] / count[d] (mean gate probability);
    hard: select_count[d] / select_count[d].sum() (each row selects k experts, so this is the share
    of the domain's selections going to e).
    """
    stats = routing_stats(source, domain, topk_idx, selected, num_domains)
    return normalize_rows(joint_of(stats, kind))


def expert_load(
    source: Any,
    kind: str = "soft",
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> np.ndarray:
    """Marginal P(e) over all rows as an [E] array summing to 1 (NaN when there are no rows)."""
    stats = routing_stats(source, domain, topk_idx, selected, num_domains)
    return normalize_rows(joint_of(stats, kind).sum(axis=0))


# ---- load balance --------------------------------------------------------------------------------


def load_balance(
    source: Any,
    dead_fraction: float = 0.01,
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> dict[str, Any]:
    """How evenly the selections spread over the experts.

    Returns a dict:

    - ``load``: [E] hard load share_e = selections of e / all selections (sums to 1).
    - ``cv``: coefficient of variation std/mean of the per-expert selection counts (population std,
      ddof=0), in [0, sqrt(E - 1)]: 0 = perfectly balanced, sqrt(E - 1) = one expert takes all.
      ``soft_cv``: the same for the soft load (sum of gate probabilities).
    - ``dead_experts``: indices e with share_e < dead_fraction * (1 / E) (less than 1% of their
      uniform share by default); ``dead_threshold``: that share.
    - ``coactivation``: [E, E] fraction of rows in which e and e' were both selected (diagonal:
      fraction of rows selecting e).
    - ``top1_margin``: mean over rows of (largest - second largest gate probability), in [0, 1];
      ``top1_margin_per_domain``: [D] (NaN for domains without rows).

    NaN / empty lists when there are no rows.
    """
    if not 0 <= dead_fraction <= 1:
        raise ValueError(f"dead_fraction must be in [0, 1], got {dead_fraction}")
    stats = routing_stats(source, domain, topk_idx, selected, num_domains)
    e = stats.num_experts
    counts = stats.select_count.sum(axis=0).astype(np.float64)
    share = normalize_rows(counts)
    threshold = dead_fraction / e
    rows = stats.rows
    with np.errstate(invalid="ignore", divide="ignore"):
        margin_d = stats.top1_margin_sum / np.where(stats.count > 0, stats.count, np.nan)
    return {
        "load": share,
        "cv": _cv(counts),
        "soft_cv": _cv(stats.prob_sum.sum(axis=0)),
        "dead_experts": [int(i) for i in np.flatnonzero(share < threshold)] if counts.sum() else [],
        "dead_threshold": threshold,
        "coactivation": stats.coact / rows if rows else np.full((e, e), np.nan),
        "top1_margin": float(stats.top1_margin_sum.sum() / rows) if rows else math.nan,
        "top1_margin_per_domain": margin_d,
    }


def _cv(x: np.ndarray) -> float:
    mean = float(np.mean(x))
    return float(np.std(x) / mean) if mean > 0 else math.nan


# ---- domain similarity ---------------------------------------------------------------------------


def domain_similarity(
    source: Any,
    kind: str = "soft",
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> np.ndarray:
    """Pairwise Jensen-Shannon divergence between the domains' P(e | d), a symmetric [D, D] array.

    JS(P, Q) = KL(P || M)/2 + KL(Q || M)/2 with M = (P + Q)/2, in nats, in [0, log 2]: 0 = the two
    domains are routed identically, log 2 = to disjoint experts.  NaN for a domain without rows.
    (``scipy.spatial.distance.jensenshannon`` returns the square root of this.)
    """
    p = activation(
        source, kind, domain=domain, topk_idx=topk_idx, selected=selected, num_domains=num_domains
    )
    a, b = p[:, None, :], p[None, :, :]  # [D, 1, E], [1, D, E]
    m = (a + b) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_a = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        kl_b = np.where(b > 0, b * np.log(np.where(b > 0, b, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
    js = 0.5 * kl_a.sum(axis=-1) + 0.5 * kl_b.sum(axis=-1)
    js = np.clip(js, 0.0, math.log(2))
    missing = np.isnan(p).any(axis=1)
    js[missing, :] = np.nan
    js[:, missing] = np.nan
    return js
