"""Causal tests of routing: re-route a trained model at inference and measure what changes.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row, S = shared
experts.

- ``knockout_importance``: knock out each expert (its gate mass renormalized over the others) and
  the shared experts, and report per-domain AUC and logloss against the unmodified model — the
  expert-importance matrix.  A large drop in domain d's AUC when expert e is knocked out means d
  relies on e.
- ``k_curve``: re-route a gated model with every k and report per-domain AUC against the experts
  active per row (k selected + S always-on shared): the accuracy / compute curve.  A k override
  changes only which experts mix (their weights renormalized to sum to 1, for every k including
  k = 1), the same rule for CESAA, sparse MoE, MMoE and PLE, so curves compare across models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch import nn

from analysis.capabilities import expert_names, not_applicable, routing_capabilities
from analysis.validation import check_routing_arrays
from cesaa.data.table import EncodedTable
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride
from cesaa.train import predict

KNOCKOUT_COLUMNS = ["target", "domain", "auc", "logloss", "delta_auc", "delta_logloss"]
K_CURVE_COLUMNS = ["k", "domain", "auc", "logloss", "active_experts"]


def _check(model: Any, table: Any, domain_names: Any, batch_size: Any) -> tuple[str, ...]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(table, EncodedTable):
        raise ValueError(f"table must be an EncodedTable, got {type(table).__name__}")
    if isinstance(domain_names, str) or not isinstance(domain_names, Sequence):
        raise ValueError(f"domain_names must be a list of names, got {domain_names!r}")
    names = tuple(str(n) for n in domain_names)
    if not names:
        raise ValueError("domain_names must name at least one domain")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(table) == 0:
        raise ValueError("table has no rows")
    check_routing_arrays(domain=table.domain, num_domains=len(names))
    return names


def _scores(
    model: nn.Module,
    table: EncodedTable,
    names: tuple[str, ...],
    batch_size: int,
    routing: RoutingOverride | None,
) -> dict[str, tuple[float, float]]:
    """{"overall" or domain name: (auc, logloss)} of the model under ``routing``."""
    p = predict(model, table, batch_size, routing)
    m = evaluate_predictions(table.label.numpy(), p, table.domain.numpy(), domain_names=names)
    out = {"overall": (m["auc"], m["logloss"])}
    out.update({d: (m[f"auc/{d}"], m[f"logloss/{d}"]) for d in names})
    return out


def knockout_importance(
    model: nn.Module,
    table: EncodedTable,
    domain_names: Sequence[str],
    *,
    batch_size: int = 8192,
) -> pd.DataFrame:
    """The expert-importance matrix in long format, one row per (target, domain).

    Targets: one per expert index, named by ``analysis.capabilities.expert_names`` (``"expert 0"``
    .. ``"expert E-1"``; PLE's global experts ``"expert i (<domain> only)"`` / ``"expert i
    (shared)"``), each ``RoutingOverride(knocked_out=(e,))``: e is never selected and its gate mass
    is renormalized over the other experts of the gates that hold it (a top-k model with k = E drops
    to k = E - 1; a PLE domain-specific expert changes only its domain's rows); then ``"shared"``
    (``use_shared=False``) when the model has shared experts.
    Domains: ``"overall"``, then each name.  Columns: ``target``, ``domain``, ``auc``, ``logloss``
    (of the knocked-out model), ``delta_auc`` = auc - auc of the unmodified model (negative = the
    target mattered), ``delta_logloss`` = logloss - its unmodified value (positive = it mattered).
    ``df.pivot(index="target", columns="domain", values="delta_auc")`` gives the matrix.

    Raises ``ValueError`` (the line of ``analysis.capabilities.not_applicable``) for a model
    without a gate (nothing to knock out) or with one expert under each row's gate.
    """
    names = _check(model, table, domain_names, batch_size)
    caps = routing_capabilities(model)
    reason = not_applicable(caps, "knockout")
    if reason:
        raise ValueError(f"knockout_importance: {reason}")
    e = caps["num_experts"]
    base = _scores(model, table, names, batch_size, None)
    targets: list[tuple[str, RoutingOverride]] = []
    k = caps["top_k"]
    for i, target in enumerate(expert_names(caps, names)):
        top_k = e - 1 if k is not None and k >= e else None
        targets.append((target, RoutingOverride(top_k=top_k, knocked_out=(i,))))
    if caps["num_shared"] > 0:
        targets.append(("shared", RoutingOverride(use_shared=False)))
    rows = []
    for target, routing in targets:
        scores = _scores(model, table, names, batch_size, routing)
        for dom, (auc, ll) in scores.items():
            b_auc, b_ll = base[dom]
            rows.append((target, dom, auc, ll, auc - b_auc, ll - b_ll))
    return pd.DataFrame(rows, columns=KNOCKOUT_COLUMNS)


def k_curve(
    model: nn.Module,
    table: EncodedTable,
    domain_names: Sequence[str],
    *,
    ks: Sequence[int] | None = None,
    batch_size: int = 8192,
) -> pd.DataFrame:
    """Per-domain AUC and logloss when a gated model is re-routed with each k in ``ks``.

    ``ks`` defaults to 1..R, R = the experts one row's gate chooses among (E; ple_specific +
    ple_shared for PLE).  A k override keeps the k largest gate weights and renormalizes them to
    sum to 1 (k = 1: the top expert with weight 1), for top-k and dense gates alike; the trained k
    (dense gates: k = R) gives exactly the unmodified model's predictions.  One row per
    (k, domain) with domain ``"overall"`` first, then each name.  Columns: ``k``, ``domain``,
    ``auc``, ``logloss``, ``active_experts`` = k + S (the experts that contribute per row; S =
    always-on shared experts, which run outside the gate).

    Raises ``ValueError`` (the line of ``analysis.capabilities.not_applicable``) for a model
    without a gate or with one expert per row's gate, and for k outside [1, R].
    """
    names = _check(model, table, domain_names, batch_size)
    caps = routing_capabilities(model)
    reason = not_applicable(caps, "k_curve")
    if reason:
        raise ValueError(f"k_curve: {reason}")
    r = caps["row_experts"]
    ks = list(range(1, r + 1)) if ks is None else list(ks)
    if not ks:
        raise ValueError("ks must hold at least one k")
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= r]
    if bad:
        raise ValueError(f"ks has values outside [1, {r}] (experts under one row's gate): {bad}")
    rows = []
    for k in ks:
        scores = _scores(model, table, names, batch_size, RoutingOverride(top_k=k))
        for dom, (auc, ll) in scores.items():
            rows.append((k, dom, auc, ll, k + caps["always_on"]))
    return pd.DataFrame(rows, columns=K_CURVE_COLUMNS)
