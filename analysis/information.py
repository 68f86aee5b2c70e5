"""How much the routing tells about the domain: mutual information I(D; E) and gate entropies.

All quantities in nats.  Each function takes a ``RoutingStats`` or raw ``probs`` [N, E] with
``domain=`` [N] (see ``analysis.measures``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.routing_input import (
    check_kind,
    entropy,
    joint_of,
    names_or_default,
    normalize_rows,
    routing_stats,
)
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays
from cesaa import losses

# ---- mutual information --------------------------------------------------------------------------


def mutual_information(
    source: Any,
    kind: str = "soft",
    normalized: bool = False,
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> float:
    """I(D; E) = sum_{d,e} M[d,e] log(M[d,e] / (P(d) P(e))) in nats, 0 <= I <= min(log D, log E).

    ``source``: a ``RoutingStats`` (joint M = prob_sum for soft, select_count for hard), a joint
    [D, E] of non-negative counts or probabilities (when ``domain`` is None; ``kind`` is then
    ignored), or raw probs [N, E] with ``domain=``.  Computed by
    ``cesaa.losses.mutual_information``, the function behind the training loss L_MI = -I (it works
    in float32, so expect ~1e-7 relative error).  For k = 1 the hard joint is the contingency table
    of (domain, selected expert), so hard I equals ``sklearn.metrics.mutual_info_score``.

    normalized: I / min(H(D), log E) in [0, 1], with H(D) the entropy of the joint's domain
    marginal; 0 when that denominator is 0 (a single domain or a single expert).
    """
    check_kind(kind)
    if isinstance(source, RoutingStats) or domain is not None:
        joint = joint_of(routing_stats(source, domain, topk_idx, selected, num_domains), kind)
    else:
        joint = check_routing_arrays(joint=source, num_domains=num_domains).joint
    return _mi(joint, normalized)


def _mi(joint: np.ndarray, normalized: bool) -> float:
    mi = float(losses.mutual_information(torch.from_numpy(np.asarray(joint, np.float64))).item())
    if not normalized:
        return mi
    total = joint.sum()
    if total <= 0:
        return 0.0
    h_d = float(entropy(joint.sum(axis=1) / total))
    denom = min(h_d, math.log(joint.shape[1]))
    if denom <= 1e-12:
        return 0.0
    return float(min(max(mi / denom, 0.0), 1.0))


def mutual_information_from_assignments(
    domain: Any,
    expert: Any,
    *,
    num_domains: int | None = None,
    num_experts: int | None = None,
    normalized: bool = False,
) -> float:
    """Hard I(D; E) from assignments: domain [N] and expert [N] (top-1) or [N, k] (every selection
    counts once).  Nats; see ``mutual_information`` for bounds and ``normalized``.
    """
    a = check_routing_arrays(
        domain=domain, expert=expert, num_domains=num_domains, num_experts=num_experts
    )
    d = a.num_domains or 1
    e = a.num_experts or (int(a.expert.max()) + 1 if a.expert.size else 1)
    ex = a.expert if a.expert.ndim == 2 else a.expert[:, None]
    cell = (a.domain[:, None] * e + ex).ravel()
    joint = np.bincount(cell, minlength=d * e).reshape(d, e).astype(np.float64)
    return _mi(joint, normalized)


# ---- entropy -------------------------------------------------------------------------------------


def row_entropy(probs: Any) -> np.ndarray:
    """Per-row gate entropy H(p(x)) = -sum_e p_e log p_e, [N] in nats, in [0, log E]."""
    return entropy(check_routing_arrays(probs).probs)


def row_entropy_by_domain(probs: Any, domain: Any) -> dict[str, Any]:
    """Per-row gate entropies of a row sample with their domains, for a per-domain distribution.

    probs [N, E], domain [N].  Returns ``{"values": [N] H(p(x)) in nats, "domain": [N] int64,
    "max": log E}``; ``max`` is the entropy of a uniform gate, the upper bound of every value.
    """
    arrays = check_routing_arrays(probs, domain)
    return {
        "values": entropy(arrays.probs),
        "domain": arrays.domain,
        "max": math.log(arrays.probs.shape[1]),
    }


def gating_entropy(
    source: Any,
    domain_names: list[str] | None = None,
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> pd.DataFrame:
    """Gate entropies overall and per domain (rows "overall", then each domain).

    Columns: ``rows``; ``row_entropy`` = mean over rows of H(p(x)) (how undecided a single gate
    is); ``marginal_entropy`` = H(mean of p(x)) (how many experts the rows use between them, soft);
    both in nats in [0, log E], and ``*_norm`` = divided by log E, in [0, 1] (0 when E = 1).
    Uniform gates give 1 for both; one-hot gates give row 0 and marginal 0 (if always the same
    expert).  NaN for domains without rows.
    """
    stats = routing_stats(source, domain, topk_idx, selected, num_domains)
    names = names_or_default(domain_names, stats.num_domains, "domain_names", "domain")
    log_e = math.log(stats.num_experts)
    counts = np.r_[stats.rows, stats.count].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_h = np.r_[stats.entropy_sum.sum(), stats.entropy_sum] / np.where(
            counts > 0, counts, np.nan
        )
    marg = normalize_rows(np.vstack([stats.prob_sum.sum(axis=0), stats.prob_sum]))
    marg_h = entropy(marg)
    norm = (lambda h: h / log_e) if log_e > 0 else (lambda h: np.where(np.isnan(h), np.nan, 0.0))
    return pd.DataFrame(
        {
            "rows": counts.astype(np.int64),
            "row_entropy": row_h,
            "row_entropy_norm": norm(row_h),
            "marginal_entropy": marg_h,
            "marginal_entropy_norm": norm(marg_h),
        },
        index=pd.Index(["overall", *names], name="domain"),
    )
