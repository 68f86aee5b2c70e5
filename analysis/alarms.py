"""Health alarms: plain-language warnings about routing and per-domain quality.

Shapes: D = domains, E = selectable experts.

Each alarm says what was measured, what it means and what to try.  The checks:

- ``gate_collapse`` (warning): the gate sends (nearly) every domain to the same expert: some gated
  expert is selected by more than ``collapse_share`` of the rows of the average domain,
  mean_d q(e | d) with q(e | d) = the fraction of domain d's rows that select e (= k P_hard(e | d)),
  while the model has more experts than it selects per row.  One domain sent decisively to its own
  expert is what the MI loss asks for and does not fire; all domains on one expert (or one expert
  in every row, carrying 1/k of all selections) does.
- ``dead_expert`` (warning): an expert's share of all selections is below ``dead_fraction`` x 1/E
  (as ``analysis.measures.load_balance``; for dense gates a row "selects" its largest gate weight).
- ``domain_auc_chance`` (critical): a domain's AUC is within ``chance_auc_margin`` of 0.5.
- ``constant_predictions`` (critical): a domain's predictions have a standard deviation below
  ``constant_pred_std``.
- ``mi_near_zero`` (warning): alpha > 0 but the normalized soft I(D; E) is below ``min_mi``.
- ``domains_indistinguishable`` (warning): alpha > 0 (the MI loss asks for domain-specific
  routing) but two domains' soft P(e | d) have a Jensen-Shannon divergence below
  ``similar_domains_js`` nats.

Definitions, thresholds and the tests that pin them: docs/measures.md ("Alarms").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from analysis.measures import domain_similarity, load_balance, mutual_information
from analysis.stats import RoutingStats
from analysis.validation import to_numpy

LEVELS = ("critical", "warning")


@dataclass(frozen=True)
class AlarmThresholds:
    """When each alarm fires.  Defaults and why:

    - ``collapse_share`` = 0.9: an expert selected by more than 90% of the rows of the average
      domain serves every domain alike: cross-domain collapse.  With D domains each sent to its
      own expert, the largest value is 1/D (0.5 for two domains), far below.
    - ``dead_fraction`` = 0.01: an expert with < 1% of its uniform share 1/E of the selections does
      essentially no work (the same default as ``load_balance``).
    - ``chance_auc_margin`` = 0.02: AUC in [0.48, 0.52] is within the noise of a random ranking
      for a few thousand rows (the AUC's standard error is about 0.01 at 2,500 rows).
    - ``constant_pred_std`` = 1e-3: predicted probabilities that vary by less than 0.1 percentage
      point cannot rank rows.
    - ``min_mi`` = 0.05: normalized I(D; E) (in [0, 1], see ``mutual_information``) below 5% of
      its maximum means the routing barely depends on the domain.
    - ``similar_domains_js`` = 0.005 nats: Jensen-Shannon divergence below 0.7% of its maximum
      log 2, i.e. the two domains' expert mixes differ by about a percent.
    """

    collapse_share: float = 0.9
    dead_fraction: float = 0.01
    chance_auc_margin: float = 0.02
    constant_pred_std: float = 1e-3
    min_mi: float = 0.05
    similar_domains_js: float = 0.005

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"AlarmThresholds.{name} must be a number >= 0, got {value!r}")
        if not 0 < self.collapse_share <= 1:
            raise ValueError(f"collapse_share={self.collapse_share} must be in (0, 1]")


@dataclass(frozen=True)
class Alarm:
    """One finding: ``level`` ("critical" or "warning"), a stable ``code``, a short ``title``, a
    ``message`` in plain language (what it means, what to try), the ``domain`` name and ``expert``
    index it concerns (or None), the measured ``value`` and the ``threshold`` it crossed.  Alarms
    about a pair of domains name the second one in ``other_domain``."""

    level: str
    code: str
    title: str
    message: str
    domain: str | None = None
    expert: int | None = None
    value: float | None = None
    threshold: float | None = None
    other_domain: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    alpha: float,
    predictions_std_per_domain: Any = None,
    thresholds: AlarmThresholds = AlarmThresholds(),  # noqa: B008 (frozen, immutable)
) -> list[Alarm]:
    """Every alarm that fires, critical ones first.

    ``stats``: the routing statistics (``None`` for models without a gate: only the metric checks
    run).  ``metrics``: flat metric keys as ``cesaa.train.evaluate`` returns (``auc/<domain>``).
    ``alpha``: the MI-loss weight the model was trained with.  ``predictions_std_per_domain``:
    [D] array or {name: std} (see ``prediction_std_per_domain``); without it the
    constant-prediction check is skipped.
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
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    if not isinstance(thresholds, AlarmThresholds):
        raise ValueError(f"thresholds must be AlarmThresholds, got {type(thresholds).__name__}")
    t = thresholds
    std = _std_array(predictions_std_per_domain, names)

    alarms = _metric_alarms(metrics, names, std, t)
    if stats is not None and stats.rows > 0:
        alarms += _routing_alarms(stats, names, alpha, t)
    return sorted(alarms, key=lambda a: LEVELS.index(a.level))


def _metric_alarms(
    metrics: Mapping[str, float], names: list[str], std: np.ndarray | None, t: AlarmThresholds
) -> list[Alarm]:
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
                    "other domains are fine, it may be drowned out by larger ones: try "
                    "domain-specific experts (CESAA with alpha > 0), per-domain towers "
                    "(model.head=per_domain) or more epochs.",
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
                    "high, or a domain whose rows all share one label: try a lower lr, "
                    "max_grad_norm, or check the domain's labels.",
                    domain=name,
                    value=float(std[d]),
                    threshold=t.constant_pred_std,
                )
            )
    return out


def _routing_alarms(
    stats: RoutingStats, names: list[str], alpha: float, t: AlarmThresholds
) -> list[Alarm]:
    out = []
    e = stats.num_experts
    seen = stats.count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.select_count[seen] / stats.count[seen, None]  # [D_seen, E] rows selecting e
    k = float(stats.select_count.sum() / stats.rows)  # mean experts selected per row
    q_bar = q.mean(axis=0)  # [E]
    top = int(np.argmax(q_bar))
    if e > k + 1e-9 and q_bar[top] > t.collapse_share:
        out.append(
            Alarm(
                "warning",
                "gate_collapse",
                f"gate collapsed onto expert {top}",
                f"Expert {top} is selected by {q_bar[top]:.0%} of the rows of the average "
                "domain: the gate sends every domain to the same expert instead of giving "
                "domains their own, so it carries far more than its share of the load and the "
                "routing tells nothing about the domain.  Try a load-balancing loss "
                "(model.beta > 0), keep noisy gating on (model.noisy_gating=true), a larger "
                "alpha, or a gate that sees the domain (model.gate_input=concat); if every "
                "domain should share this expert, make it a shared expert (model.num_shared).",
                expert=top,
                value=float(q_bar[top]),
                threshold=t.collapse_share,
            )
        )

    lb = load_balance(stats, dead_fraction=t.dead_fraction)
    for i in lb["dead_experts"]:
        load = float(lb["load"][i])
        out.append(
            Alarm(
                "warning",
                "dead_expert",
                f"expert {i} is unused",
                f"Expert {i} gets {load:.2%} of the routing decisions (an even share would be "
                f"{1 / e:.0%}): it does essentially no work, so its parameters are wasted.  Try "
                "a load-balancing loss (model.beta > 0), noisy gating, or fewer experts.",
                expert=int(i),
                value=load,
                threshold=float(lb["dead_threshold"]),
            )
        )

    if alpha > 0 and stats.num_domains > 1 and e > 1:
        mi = mutual_information(stats, "soft")
        norm = mutual_information(stats, "soft", normalized=True)
        if norm < t.min_mi:
            out.append(
                Alarm(
                    "warning",
                    "mi_near_zero",
                    "routing ignores the domain although alpha > 0",
                    f"alpha = {alpha:g} asks the gate to give domains their own experts, but the "
                    f"mutual information between domain and expert is only {mi:.3g} nats "
                    f"({norm:.1%} of its maximum): the routing is nearly the same for every "
                    "domain.  Try a larger alpha, a gate that sees the domain "
                    "(gate_input=concat or per_domain), or more epochs.",
                    value=norm,
                    threshold=t.min_mi,
                )
            )

    js = domain_similarity(stats, "soft") if alpha > 0 else np.full((len(names),) * 2, np.nan)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            if not np.isnan(js[a, b]) and js[a, b] < t.similar_domains_js:
                out.append(
                    Alarm(
                        "warning",
                        "domains_indistinguishable",
                        f"{names[a]} and {names[b]} are routed alike",
                        f"{names[a]} and {names[b]} send their rows to the experts in almost "
                        f"the same proportions (Jensen-Shannon divergence {js[a, b]:.2g} nats, "
                        "0 = identical) although alpha > 0 asks for domain-specific routing: "
                        "the gate treats them as one domain.  Fine if the two domains really "
                        "behave alike (compare their per-domain AUC with a per-domain head); "
                        "otherwise try a larger alpha, more experts than domains x top_k, or a "
                        "gate that sees the domain (model.gate_input=concat).",
                        domain=names[a],
                        value=float(js[a, b]),
                        threshold=t.similar_domains_js,
                        other_domain=names[b],
                    )
                )
    return out
