"""Health alarms: plain-language warnings about routing and per-domain quality.

Shapes: D = domains, E = selectable experts.

Each alarm says what was measured, what it means and what to try.  The checks:

- ``gate_collapse`` (warning): the gate sends (nearly) every domain to the same expert: some gated
  expert is selected by more than ``collapse_share`` of the rows of the average domain,
  mean_d q(e | d) with q(e | d) = the fraction of domain d's rows that select e (= k P_hard(e | d)),
  while the model has more experts than it selects per row.  One domain sent decisively to its own
  expert is what the MI loss asks for and does not fire; all domains on one expert (or one expert
  in every row, carrying 1/k of all selections) does.
- ``dead_expert`` (warning): an expert's work is below ``dead_fraction`` x its even share, with the
  notion of work that fits the gate (``analysis.gates.expert_work``): gate weight for dense and
  structured gates, selections for sparse ones.
- ``domain_auc_chance`` (critical): a domain's AUC is within ``chance_auc_margin`` of 0.5.
- ``constant_predictions`` (critical): a domain's predictions have a standard deviation below
  ``constant_pred_std``.
- ``mi_near_zero`` (warning): alpha > 0 but the normalized soft I(D; E) is below ``min_mi``.
- ``mi_not_checked`` (level "unchecked"): the two alpha alarms cannot be decided because the model's
  alpha is not known (a record that declares no hyperparameters); says so instead of passing.
- ``domains_indistinguishable`` (warning): alpha > 0 (the MI loss asks for domain-specific
  routing) but two domains' soft P(e | d) have a Jensen-Shannon divergence below
  ``similar_domains_js`` nats.

Definitions, thresholds and the tests that pin them: docs/measures.md ("Alarms").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.alarm_routing import GateFacts, routing_alarms
from analysis.alarm_types import LEVELS, Alarm, AlarmThresholds
from analysis.gates import check_gate_kind
from analysis.stats import RoutingStats
from analysis.validation import to_numpy


def prediction_std_per_domain(predictions: Any, domain: Any, num_domains: int) -> np.ndarray:
    """[D] standard deviation of the predictions within each domain (NaN for an empty domain)."""
    p = to_numpy(predictions, "predictions").astype(np.float64).ravel()
    dom = to_numpy(domain, "domain").astype(np.int64).ravel()
    if p.shape != dom.shape:
        raise ValueError(f"domain has {dom.shape[0]} rows but predictions has {p.shape[0]}")
    n = np.bincount(dom, minlength=num_domains).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(dom, weights=p, minlength=num_domains) / n
        var = np.bincount(dom, weights=(p - mean[dom]) ** 2, minlength=num_domains) / n
    return np.sqrt(var)


def _std_array(std: Any, names: list[str]) -> np.ndarray | None:
    if std is None:
        return None
    if isinstance(std, Mapping):
        unknown = sorted(set(map(str, std)) - set(names))
        if unknown:
            raise ValueError(f"predictions_std_per_domain names unknown domains {unknown}")
        return np.array([float(std.get(n, math.nan)) for n in names])
    arr = to_numpy(std, "predictions_std_per_domain").astype(np.float64)
    if arr.shape != (len(names),):
        raise ValueError(
            f"predictions_std_per_domain must have shape ({len(names)},) (one per domain), "
            f"got {arr.shape}"
        )
    return arr


def health_alarms(
    stats: RoutingStats | None,
    metrics: Mapping[str, float],
    domain_names: Sequence[str],
    *,
    alpha: float | None,
    predictions_std_per_domain: Any = None,
    thresholds: AlarmThresholds = AlarmThresholds(),  # noqa: B008 (frozen, immutable)
    kind: str = "sparse",
    reach: Any = None,
    expert_names: Sequence[str] | None = None,
    family: str = "cesaa",
) -> list[Alarm]:
    """Every alarm that fires, critical ones first, then the checks that could not be decided.

    ``stats``: the routing statistics (``None`` for models without a gate: only the metric checks
    run).  ``metrics``: flat metric keys as ``cesaa.train.evaluate`` returns (``auc/<domain>``).
    ``alpha``: the MI-loss weight the model was trained with (0 for models without one); ``None``
    when unknown: the alpha alarms are then reported as "unchecked" with the reason.
    ``predictions_std_per_domain``: [D] array or {name: std} (see
    ``prediction_std_per_domain``); without it the constant-prediction check is skipped.
    ``kind`` ("dense", "sparse", "structured") and ``reach`` (structured gates: the experts each
    domain's gate can weigh) pick the notion of load (``analysis.gates``); ``expert_names`` name
    experts in the texts; ``family`` "cesaa" gives advice in cesaa settings, anything else in
    general terms.  ``gate_alarms`` reads all of these from a record's gate.
    """
    if stats is not None and not isinstance(stats, RoutingStats):
        raise ValueError(f"stats must be a RoutingStats or None, got {type(stats).__name__}")
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a dict of metric keys, got {type(metrics).__name__}")
    if isinstance(domain_names, str) or not isinstance(domain_names, Sequence):
        raise ValueError(f"domain_names must be a list of names, got {domain_names!r}")
    names = [str(n) for n in domain_names]
    if stats is not None and len(names) != stats.num_domains:
        raise ValueError(
            f"domain_names has {len(names)} names but stats has {stats.num_domains} domains"
        )
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0
    ):
        raise ValueError(f"alpha must be a number >= 0 or None, got {alpha!r}")
    if not isinstance(thresholds, AlarmThresholds):
        raise ValueError(f"thresholds must be AlarmThresholds, got {type(thresholds).__name__}")
    check_gate_kind(kind)
    t = thresholds
    std = _std_array(predictions_std_per_domain, names)

    alarms = _metric_alarms(metrics, names, std, t, family == "cesaa")
    if stats is not None and stats.rows > 0:
        e = stats.num_experts
        experts = [str(x) for x in expert_names] if expert_names is not None else None
        if experts is not None and len(experts) != e:
            raise ValueError(f"expert_names has {len(experts)} names for {e} experts")
        experts = experts or [f"expert {i}" for i in range(e)]
        gate = GateFacts(kind, reach, experts, family == "cesaa")
        alarms += routing_alarms(stats, names, alpha, t, gate)
    return sorted(alarms, key=lambda a: LEVELS.index(a.level))


def gate_alarms(
    stats: RoutingStats,
    metrics: Mapping[str, float],
    domain_names: Sequence[str],
    gate: Any,
    *,
    predictions_std_per_domain: Any = None,
    thresholds: AlarmThresholds = AlarmThresholds(),  # noqa: B008 (frozen, immutable)
) -> list[Alarm]:
    """``health_alarms`` of one gate of a record (``analysis.records.GateInfo``): its kind, reach,
    expert names, family and alpha as the record declares them (alpha ``None``, so "unchecked",
    when the record declares no hyperparameters; 0 when the model has no alpha)."""
    alpha = None if gate.hyper is None else float(gate.hyper.get("alpha", 0.0))
    return health_alarms(
        stats,
        metrics,
        domain_names,
        alpha=alpha,
        predictions_std_per_domain=predictions_std_per_domain,
        thresholds=thresholds,
        kind=gate.kind,
        reach=gate.reach,
        expert_names=gate.expert_names,
        family=gate.family,
    )


def _metric_alarms(
    metrics: Mapping[str, float],
    names: list[str],
    std: np.ndarray | None,
    t: AlarmThresholds,
    cesaa: bool,
) -> list[Alarm]:
    fix_auc = (
        "try domain-specific experts (CESAA with alpha > 0), per-domain towers "
        "(model.head=per_domain) or more epochs."
        if cesaa
        else "try giving the domain to the gate or the towers (a domain feature, per-domain "
        "heads), or more epochs."
    )
    fix_const = (
        "try a lower lr, max_grad_norm, or check the domain's labels."
        if cesaa
        else "try a lower learning rate, gradient clipping, or check the domain's labels."
    )
    out = []
    for d, name in enumerate(names):
        auc = metrics.get(f"auc/{name}")
        if auc is not None and not math.isnan(auc) and abs(auc - 0.5) <= t.chance_auc_margin:
            out.append(
                Alarm(
                    "critical",
                    "domain_auc_chance",
                    f"{name}: no better than chance",
                    f"The model ranks {name}'s rows no better than a coin flip (AUC {auc:.3f}; "
                    "0.5 is random).  Its predictions are useless for this domain.  Check that the "
                    "domain has enough rows with both labels and features that carry signal; if "
                    f"other domains are fine, it may be drowned out by larger ones: {fix_auc}",
                    domain=name,
                    value=float(auc),
                    threshold=t.chance_auc_margin,
                )
            )
        if std is not None and not math.isnan(std[d]) and std[d] < t.constant_pred_std:
            out.append(
                Alarm(
                    "critical",
                    "constant_predictions",
                    f"{name}: constant predictions",
                    f"The predictions for {name} barely vary (standard deviation {std[d]:.2g}): "
                    "the model gives every row about the same probability, so it cannot rank "
                    "them.  Often a collapsed tower (dead ReLUs), a learning rate that is too "
                    f"high, or a domain whose rows all share one label: {fix_const}",
                    domain=name,
                    value=float(std[d]),
                    threshold=t.constant_pred_std,
                )
            )
    return out
