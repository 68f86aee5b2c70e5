"""Does each domain get its own experts?  Measures of routing, as stateless functions.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Every function takes a ``RoutingStats`` or raw arrays: ``probs`` [N, E] plus ``domain=`` [N] (and
optionally ``topk_idx=`` or ``selected=``, see ``RoutingStats.update``).  Two kinds of routing:

- ``soft``: the dense gate probabilities, P(e | d) = mean of p(x)_e over the domain's rows;
- ``hard``: the experts actually selected,
  P(e | d) = select_count[d, e] / sum_e' select_count[d, e'].

All information quantities are in nats.  Domains without rows give NaN rows where a per-domain
value is undefined.  The measures live by concept in ``analysis.information`` (mutual information,
entropies) and ``analysis.load`` (activation, load balance, domain similarity); this module gathers
them and builds the one-dict ``summarize``.  Definitions, ranges and ceilings: docs/measures.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.gates import built_in_mi, dead_experts, expert_work
from analysis.information import (
    gating_entropy,
    mi_ceiling,
    mi_ceiling_detail,
    mi_fraction,
    mutual_information,
    mutual_information_from_assignments,
    row_entropy,
    row_entropy_by_domain,
)
from analysis.load import activation, domain_similarity, expert_load, load_balance
from analysis.routing_input import KINDS, names_or_default, routing_stats

__all__ = [
    "KINDS",
    "activation",
    "domain_similarity",
    "expert_load",
    "gating_entropy",
    "json_safe",
    "load_balance",
    "mi_ceiling",
    "mi_ceiling_detail",
    "mi_fraction",
    "mutual_information",
    "mutual_information_from_assignments",
    "row_entropy",
    "row_entropy_by_domain",
    "summarize",
]


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
    gate_kind: str | None = None,
    reach: Any = None,
) -> dict[str, Any]:
    """Every measure above as one JSON-safe dict (plain ints, floats, lists; NaN -> None).

    MI keys: ``mi_soft``/``mi_hard`` (nats), ``mi_*_ceiling`` (the denominator, nats: the largest
    value a routing of this shape reaches when ``mi_*_ceiling_exact``, else the upper bound; see
    ``mi_ceiling``), ``mi_*_bound`` (the closed-form upper bound), ``mi_*_best`` (the best routing
    of this shape found) and ``mi_*_normalized`` (the fraction of the ceiling; None = n/a).
    With ``gate_kind`` (and ``reach`` for a structured gate, see ``analysis.gates``): ``gate_kind``,
    ``work`` (``expert_work``: each expert's share in the notion that fits the gate, its even
    share), ``dead_experts`` in that notion, and for structured gates ``mi_built_in`` (the
    I(D; E) the reach alone implies, ``built_in_mi``) beside the measured ``mi_soft``.
    """
    stats = routing_stats(source, domain, topk_idx, selected, num_domains)
    d_names = names_or_default(domain_names, stats.num_domains, "domain_names", "domain")
    e_names = names_or_default(expert_names, stats.num_experts, "expert_names", "expert")
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
        **_mi_keys(stats),
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
    if gate_kind is not None:
        out["gate_kind"] = gate_kind
        out["work"] = expert_work(stats, gate_kind, reach)
        out["dead_experts"] = dead_experts(stats, gate_kind, reach)
        if reach is not None:
            out["mi_built_in"] = built_in_mi(stats.count, reach, stats.num_experts)
    return json_safe(out)


def _mi_keys(stats: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        mi, ceiling = mutual_information(stats, kind), mi_ceiling_detail(stats, kind)
        out[f"mi_{kind}"] = mi
        out[f"mi_{kind}_ceiling"] = ceiling.value
        out[f"mi_{kind}_bound"] = ceiling.bound
        out[f"mi_{kind}_best"] = ceiling.best
        out[f"mi_{kind}_ceiling_exact"] = ceiling.exact
        out[f"mi_{kind}_normalized"] = mi_fraction(mi, ceiling)
    return out


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
