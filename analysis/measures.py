"""Does each domain get its own experts?  Measures of routing, as stateless functions.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Every function takes a ``RoutingStats`` or raw arrays: ``probs`` [N, E] plus ``domain=`` [N] (and
optionally ``topk_idx=`` or ``selected=``, see ``RoutingStats.update``).  Two kinds of routing:

- ``soft``: the dense gate probabilities, P(e | d) = mean of p(x)_e over the domain's rows;
- ``hard``: the experts actually selected,
  P(e | d) = select_count[d, e] / sum_e' select_count[d, e'].

All information quantities are in nats.  Domains without rows give NaN rows where a per-domain
value is undefined.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays
from cesaa import losses

KINDS = ("soft", "hard")


def _stats(
    source: Any,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> RoutingStats:
    if isinstance(source, RoutingStats):
        if domain is not None or topk_idx is not None or selected is not None:
            raise ValueError("domain/topk_idx/selected go with raw probs, not with a RoutingStats")
        return source
    if domain is None:
        raise ValueError("raw probs need domain= (one domain index per row)")
    return RoutingStats.from_arrays(
        source, domain, num_domains, topk_idx=topk_idx, selected=selected
    )


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _normalize_rows(m: np.ndarray) -> np.ndarray:
    total = m.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, m / np.where(total > 0, total, 1.0), np.nan)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """-sum p log p along ``axis`` (nats; 0 log 0 = 0; NaN stays NaN)."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=axis)


def _joint(stats: RoutingStats, kind: str) -> np.ndarray:
    return stats.prob_sum if _kind(kind) == "soft" else stats.select_count.astype(np.float64)


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
    stats = _stats(source, domain, topk_idx, selected, num_domains)
    return _normalize_rows(_joint(stats, kind))


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
    stats = _stats(source, domain, topk_idx, selected, num_domains)
    return _normalize_rows(_joint(stats, kind).sum(axis=0))


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
    _kind(kind)
    if isinstance(source, RoutingStats) or domain is not None:
        joint = _joint(_stats(source, domain, topk_idx, selected, num_domains), kind)
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
    h_d = float(_entropy(joint.sum(axis=1) / total))
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
    return _entropy(check_routing_arrays(probs).probs)


def row_entropy_by_domain(probs: Any, domain: Any) -> dict[str, Any]:
    """Per-row gate entropies of a row sample with their domains, for a per-domain distribution.

    probs [N, E], domain [N].  Returns ``{"values": [N] H(p(x)) in nats, "domain": [N] int64,
    "max": log E}``; ``max`` is the entropy of a uniform gate, the upper bound of every value.
    """
    arrays = check_routing_arrays(probs, domain)
    return {
        "values": _entropy(arrays.probs),
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
    stats = _stats(source, domain, topk_idx, selected, num_domains)
    names = _names(domain_names, stats.num_domains, "domain_names", "domain")
    log_e = math.log(stats.num_experts)
    counts = np.r_[stats.rows, stats.count].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_h = np.r_[stats.entropy_sum.sum(), stats.entropy_sum] / np.where(
            counts > 0, counts, np.nan
        )
    marg = _normalize_rows(np.vstack([stats.prob_sum.sum(axis=0), stats.prob_sum]))
    marg_h = _entropy(marg)
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
    stats = _stats(source, domain, topk_idx, selected, num_domains)
    e = stats.num_experts
    counts = stats.select_count.sum(axis=0).astype(np.float64)
    share = _normalize_rows(counts)
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


# ---- summary -------------------------------------------------------------------------------------


def summarize(
    source: Any,
    domain_names: list[str] | None = None,
    expert_names: list[str] | None = None,
    *,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> dict[str, Any]:
    """Every measure above as one JSON-safe dict (plain ints, floats, lists; NaN -> None)."""
    stats = _stats(source, domain, topk_idx, selected, num_domains)
    d_names = _names(domain_names, stats.num_domains, "domain_names", "domain")
    e_names = _names(expert_names, stats.num_experts, "expert_names", "expert")
    ent = gating_entropy(stats, d_names)
    lb = load_balance(stats)
    with np.errstate(invalid="ignore", divide="ignore"):
        labeled = np.where(stats.labeled_count > 0, stats.labeled_count, np.nan)
        pos_rate = stats.label_sum / labeled
        mean_pred = stats.pred_sum / labeled
        mean_k = stats.select_count.sum() / stats.rows if stats.rows else math.nan
    out = {
        "num_domains": stats.num_domains,
        "num_experts": stats.num_experts,
        "domain_names": d_names,
        "expert_names": e_names,
        "rows": stats.rows,
        "rows_per_domain": stats.count,
        "mean_selected_per_row": mean_k,
        "mi_soft": mutual_information(stats, "soft"),
        "mi_hard": mutual_information(stats, "hard"),
        "mi_soft_normalized": mutual_information(stats, "soft", normalized=True),
        "mi_hard_normalized": mutual_information(stats, "hard", normalized=True),
        "activation_soft": activation(stats, "soft"),
        "activation_hard": activation(stats, "hard"),
        "load_soft": expert_load(stats, "soft"),
        "load_hard": expert_load(stats, "hard"),
        "entropy": {str(k): v for k, v in ent.to_dict(orient="index").items()},
        "load_balance": lb,
        "domain_similarity_soft": domain_similarity(stats, "soft"),
        "domain_similarity_hard": domain_similarity(stats, "hard"),
        "pos_rate_per_domain": pos_rate,
        "mean_pred_per_domain": mean_pred,
    }
    return json_safe(out)


def _names(names: list[str] | None, n: int, arg: str, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}_{i}" for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{arg} has {len(names)} names but there are {n} {prefix}s")
    return names


def json_safe(x: Any) -> Any:
    """Plain JSON values: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists,
    paths -> strings (for ``to_dict``/``to_json`` of every analysis result)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x
