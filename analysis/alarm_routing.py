"""The routing checks of ``analysis.alarms.health_alarms``: gate collapse, dead experts and the
alpha checks (routing that ignores the domain, domains routed alike), each in the notion of load
that fits the gate's kind (``analysis.gates``) and with advice that fits the model.

Shapes: D = domains, E = experts of the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.alarm_types import Alarm, AlarmThresholds
from analysis.gates import expert_work, notion
from analysis.measures import domain_similarity, mutual_information
from analysis.stats import RoutingStats


@dataclass(frozen=True)
class GateFacts:
    """What the routing checks need to know about the gate."""

    kind: str
    reach: Any
    names: list[str]
    cesaa: bool


def _advice(gate: GateFacts, cesaa: str, other: str) -> str:
    return cesaa if gate.cesaa else other


def routing_alarms(
    stats: RoutingStats, names: list[str], alpha: float | None, t: AlarmThresholds, gate: GateFacts
) -> list[Alarm]:
    out = []
    e = stats.num_experts
    seen = stats.count > 0
    hard = notion(gate.kind) == "hard"
    with np.errstate(invalid="ignore", divide="ignore"):
        if hard:  # [D_seen, E] the fraction of domain d's rows that select e
            q = stats.select_count[seen] / stats.count[seen, None]
        else:  # [D_seen, E] the mean gate weight of e in domain d
            q = stats.prob_sum[seen] / stats.count[seen, None]
    k = float(stats.select_count.sum() / stats.rows) if hard else 1.0  # experts per row
    q_bar = q.mean(axis=0)  # [E]
    top = int(np.argmax(q_bar))
    what = "selected by" if hard else "given"
    unit = "of the rows" if hard else "of the gate weight"
    if e > k + 1e-9 and q_bar[top] > t.collapse_share:
        name = gate.names[top]
        fix = _advice(
            gate,
            "Try a load-balancing loss (model.beta > 0), keep noisy gating on "
            "(model.noisy_gating=true), a larger alpha, or a gate that sees the domain "
            "(model.gate_input=concat); if every domain should share this expert, make it a "
            "shared expert (model.num_shared).",
            "Try a load-balancing loss on the gate, noise on the gate logits during training, or "
            "a gate that sees the domain; if every domain should share this expert, make it a "
            "shared expert outside the gate.",
        )
        out.append(
            Alarm(
                "warning",
                "gate_collapse",
                f"gate collapsed onto {name}",
                f"{name} is {what} {q_bar[top]:.0%} {unit} of the average domain: the gate sends "
                "every domain to the same expert instead of giving domains their own, so it "
                "carries far more than its share of the load and the routing tells nothing about "
                f"the domain.  {fix}",
                expert=top,
                value=float(q_bar[top]),
                threshold=t.collapse_share,
            )
        )

    work = expert_work(stats, gate.kind, gate.reach)
    share, fair = work["share"], work["fair"]
    with np.errstate(invalid="ignore"):
        dead = np.flatnonzero((share < t.dead_fraction * fair) & (work["reached_rows"] > 0))
    for i in dead:
        name = gate.names[i]
        fix = _advice(
            gate,
            "Try a load-balancing loss (model.beta > 0), noisy gating, or fewer experts.",
            "Try a load-balancing loss on the gate, noise on the gate logits during training, or "
            "fewer experts.",
        )
        out.append(
            Alarm(
                "warning",
                "dead_expert",
                f"{name} is unused",
                f"{name} gets {share[i]:.2%} of the {work['notion']} of the rows whose gate can "
                f"reach it (an even share would be {fair[i]:.0%}): it does essentially no work, "
                f"so its parameters are wasted.  {fix}",
                expert=int(i),
                value=float(share[i]),
                threshold=float(t.dead_fraction * fair[i]),
            )
        )

    if alpha is None:
        if stats.num_domains > 1 and e > 1:
            out.append(
                Alarm(
                    "unchecked",
                    "mi_not_checked",
                    "domain-routing alarms not checked",
                    "Whether the routing should depend on the domain is unknown: the record "
                    "declares no alpha (the weight of a loss asking for domain-specific routing), "
                    "so 'routing ignores the domain' and 'domains routed alike' were not "
                    "checked.  Record the model with its hyperparameters (GateSpec(hyper="
                    "{'alpha': ...}), or {} when it has none) to decide them.",
                )
            )
        return out

    if alpha > 0 and stats.num_domains > 1 and e > 1:
        mi = mutual_information(stats, "soft")
        norm = mutual_information(stats, "soft", normalized=True)
        if norm < t.min_mi:
            fix = _advice(
                gate,
                "Try a larger alpha, a gate that sees the domain (gate_input=concat or "
                "per_domain), or more epochs.",
                "Try a larger alpha, a gate that sees the domain, or more epochs.",
            )
            out.append(
                Alarm(
                    "warning",
                    "mi_near_zero",
                    "routing ignores the domain although alpha > 0",
                    f"alpha = {alpha:g} asks the gate to give domains their own experts, but the "
                    f"mutual information between domain and expert is only {mi:.3g} nats "
                    f"({norm:.1%} of its maximum): the routing is nearly the same for every "
                    f"domain.  {fix}",
                    value=norm,
                    threshold=t.min_mi,
                )
            )

    js = domain_similarity(stats, "soft") if alpha > 0 else np.full((len(names),) * 2, np.nan)
    fix = _advice(
        gate,
        "otherwise try a larger alpha, more experts than domains x top_k, or a gate that sees the "
        "domain (model.gate_input=concat).",
        "otherwise try a larger alpha, more experts, or a gate that sees the domain.",
    )
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
                        f"{fix}",
                        domain=names[a],
                        value=float(js[a, b]),
                        threshold=t.similar_domains_js,
                        other_domain=names[b],
                    )
                )
    return out
