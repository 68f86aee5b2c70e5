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

from analysis.mi_ceiling import MICeiling, mi_ceiling_of
from analysis.routing_input import (
    KINDS,
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
    k: Any = None,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> float:
    """I(D; E) = sum_{d,e} M[d,e] log(M[d,e] / (P(d) P(e))) in nats, 0 <= I <= ``mi_ceiling``.

    ``source``: a ``RoutingStats`` (joint M = prob_sum for soft, select_count for hard), a joint
    [D, E] of non-negative counts or probabilities (when ``domain`` is None; ``kind`` is then
    ignored), or raw probs [N, E] with ``domain=``.  Computed by
    ``cesaa.losses.mutual_information``, the function behind the training loss L_MI = -I (it works
    in float32, so expect ~1e-7 relative error).  For k = 1 the hard joint is the contingency table
    of (domain, selected expert), so hard I equals ``sklearn.metrics.mutual_info_score``.

    normalized: I / ``mi_ceiling`` in [0, 1], the fraction of the largest I(D; E) a routing of
    this shape (E, k, P(d)) can reach, so the best routing reads 1 (where that largest value is
    only bounded, the fraction of the upper bound; see ``mi_ceiling``); NaN ("n/a") when nothing
    can be reached (one domain, one expert, or k = E), where 0 would read "ignores the domain".
    ``k``: experts per row of a bare joint (a number or one per domain; default 1); ignored for
    a ``RoutingStats`` or raw probs, whose hard k is read from the selections.
    """
    joint, k_d = _joint_and_k(source, kind, k, domain, topk_idx, selected, num_domains)
    mi = _mi(joint)
    return mi_fraction(mi, _ceiling(joint, k_d)) if normalized else mi


def mi_ceiling(
    source: Any,
    kind: str = "soft",
    *,
    k: Any = None,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> float:
    """The largest I(D; E) a routing of this shape can reach, in nats (arguments as
    ``mutual_information``; ``mi_ceiling_detail`` says whether it is exact).

    I(D; E) = H(D) - H(D | E) <= H(D), and I(D; E) = H(E) - H(E | D) <= log E - H(E | D).  A row
    that selects k distinct experts gives each at most 1/k of its selections, so P(e | d) <= 1/k_d
    (k_d: the domain's mean number of selections per row) and H(E | d) >= log k_d.  Hence the
    upper bound

        bound = min(H(D), log E - sum_d P(d) log k_d)  =  min(H(D), log(E / k)) for a fixed k,

    with P(d) the joint's domain marginal (for hard routing: the domain's share of the
    selections) and E the joint's columns (the model's experts, used or not).  Soft routing
    (dense gate probabilities) has no such floor (k = 1).  The bound is not always reachable
    (D = 3 balanced, E = 4, k = 2: the best routing reaches 0.6365 nats of log 2);
    ``analysis.mi_ceiling.best_routing_mi`` finds the reachable maximum, which is returned when
    it is known exactly, else the bound.  Example: E = 8, D = 4 balanced, k = 4 gives log 2.
    """
    return mi_ceiling_detail(
        source,
        kind,
        k=k,
        domain=domain,
        topk_idx=topk_idx,
        selected=selected,
        num_domains=num_domains,
    ).value


def mi_ceiling_detail(
    source: Any,
    kind: str = "soft",
    *,
    k: Any = None,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> MICeiling:
    """``mi_ceiling`` with its parts: ``value`` (the denominator), ``bound`` (the closed form),
    ``best`` (the best routing of this shape found) and ``exact`` (``value`` is reachable)."""
    joint, k_d = _joint_and_k(source, kind, k, domain, topk_idx, selected, num_domains)
    return _ceiling(joint, k_d)


def _joint_and_k(
    source: Any,
    kind: str,
    k: Any,
    domain: Any,
    topk_idx: Any,
    selected: Any,
    num_domains: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The joint [D, E] and the experts per row of each domain [D] (>= 1)."""
    check_kind(kind)
    if isinstance(source, RoutingStats) or domain is not None:
        stats = routing_stats(source, domain, topk_idx, selected, num_domains)
        joint = joint_of(stats, kind)
        k_d = np.ones(stats.num_domains)
        if kind == "hard":
            with np.errstate(invalid="ignore", divide="ignore"):
                per_row = stats.select_count.sum(axis=1) / stats.count
            k_d = np.where(stats.count > 0, np.maximum(per_row, 1.0), 1.0)
        return joint, k_d
    joint = check_routing_arrays(joint=source, num_domains=num_domains).joint
    return joint, _check_k(k, joint.shape)


def _check_k(k: Any, shape: tuple[int, int]) -> np.ndarray:
    d, e = shape
    if k is None:
        return np.ones(d)
    arr = np.asarray(k, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(d, float(arr))
    if arr.shape != (d,):
        raise ValueError(f"k must be a number or one per domain ({d},), got shape {arr.shape}")
    if not np.all((arr >= 1) & (arr <= e)):
        raise ValueError(f"k must be in [1, E={e}] experts per row, got {arr.tolist()}")
    return arr


def _mi(joint: np.ndarray) -> float:
    return float(losses.mutual_information(torch.from_numpy(np.asarray(joint, np.float64))).item())


def _ceiling(joint: np.ndarray, k_d: np.ndarray) -> MICeiling:
    total = joint.sum()
    if total <= 0:
        return MICeiling(0.0, 0.0, 0.0, True)
    return mi_ceiling_of(joint.sum(axis=1) / total, joint.shape[1], k_d)


def mi_fraction(value: float, ceiling: MICeiling) -> float:
    """``value`` / ``ceiling.value`` clipped to [0, 1]; NaN where the bound is 0."""
    if ceiling.bound <= 1e-12:
        return float("nan")  # nothing reachable: "n/a", not 0 ("routing ignores the domain")
    return float(min(max(value / ceiling.value, 0.0), 1.0))


def mutual_information_from_assignments(
    domain: Any,
    expert: Any,
    *,
    num_domains: int | None = None,
    num_experts: int | None = None,
    normalized: bool = False,
) -> float:
    """Hard I(D; E) from assignments: domain [N] and expert [N] (top-1) or [N, k] (every selection
    counts once, k distinct experts per row).  Nats; see ``mutual_information`` for bounds and
    ``normalized`` (here by the ceiling at this E and k; it needs ``num_experts``).
    """
    if normalized and num_experts is None:
        raise ValueError(
            "normalized=True needs num_experts (the model's E, used or not): the ceiling "
            "depends on it, and the largest expert index seen may be smaller"
        )
    a = check_routing_arrays(
        domain=domain, expert=expert, num_domains=num_domains, num_experts=num_experts
    )
    d = a.num_domains or 1
    e = a.num_experts or (int(a.expert.max()) + 1 if a.expert.size else 1)
    ex = a.expert if a.expert.ndim == 2 else a.expert[:, None]
    cell = (a.domain[:, None] * e + ex).ravel()
    joint = np.bincount(cell, minlength=d * e).reshape(d, e).astype(np.float64)
    mi = _mi(joint)
    return mi_fraction(mi, _ceiling(joint, np.full(d, float(ex.shape[1])))) if normalized else mi


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


def ceiling_note(summary: dict[str, Any], kind: str) -> str:
    """What the ``kind`` MI fraction of a ``summarize`` dict is a fraction of, in words.

    The ceiling is that of a gate free to weigh every expert; for a structured gate (each domain
    reaches only some experts, as PLE's) the note adds how much of I(D; E) the structure alone
    builds in (``mi_built_in``), which a high fraction partly is."""
    ceiling, bound = summary[f"mi_{kind}_ceiling"], summary.get(f"mi_{kind}_bound")
    if summary[f"mi_{kind}_normalized"] is None or not ceiling:
        return "n/a: a routing of this shape cannot tell domains apart (one domain, or k = E)"
    if summary.get(f"mi_{kind}_ceiling_exact"):
        gap = "" if bound is None or ceiling >= bound - 1e-9 else f", below the bound {bound:.4f}"
        note = f"of {ceiling:.4f} nats, the most a routing of this shape reaches (1 = best){gap}"
    else:
        best = summary.get(f"mi_{kind}_best")
        found = f"; the best routing found reads {best / ceiling:.4f}" if best else ""
        note = f"of the upper bound {ceiling:.4f} nats (perhaps not reachable){found}"
    if summary.get("gate_kind") == "structured" and summary.get("mi_built_in") is not None:
        note += (
            f"; a gate free to reach every expert: this structured gate's domains reach only "
            f"some experts, so {summary['mi_built_in']:.4f} nats of I(D; E) are built in by that "
            "structure, not learned"
        )
    return note


def mi_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The MI rows of a ``summarize`` dict as a table: index soft / hard; columns ``nats`` (raw
    I(D; E)), ``ceiling`` (nats, see ``mi_ceiling``), ``fraction`` (of the ceiling; NaN = n/a),
    ``bound`` (the closed-form upper bound, nats), ``best found`` (nats) and ``ceiling is``
    ("reachable": the best routing of this shape reads 1; "upper bound": it may read less)."""
    missing = [
        f"mi_{kind}{suffix}"
        for kind in KINDS
        for suffix in ("", "_ceiling", "_normalized")
        if f"mi_{kind}{suffix}" not in summary
    ]
    if missing:
        raise ValueError(f"summary lacks {missing}: pass analysis.measures.summarize(...)")
    return pd.DataFrame(
        {
            "nats": [summary[f"mi_{kind}"] for kind in KINDS],
            "ceiling": [summary[f"mi_{kind}_ceiling"] for kind in KINDS],
            "fraction": [summary[f"mi_{kind}_normalized"] for kind in KINDS],
            "bound": [summary.get(f"mi_{kind}_bound") for kind in KINDS],
            "best found": [summary.get(f"mi_{kind}_best") for kind in KINDS],
        },
        index=pd.Index(list(KINDS), name="routing"),
        dtype=float,
    ).assign(
        **{
            "ceiling is": [
                "reachable" if summary.get(f"mi_{kind}_ceiling_exact") else "upper bound"
                for kind in KINDS
            ]
        }
    )
