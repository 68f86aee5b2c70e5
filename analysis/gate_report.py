"""Every gate of a record, analysed for what it is, and the views across consecutive gates.

Shapes: N = rows, D = domains, E_a / E_b = experts of two gates.

``gate_section`` is one gate's part of a report or page: its declaration (kind, k, reach,
hyperparameters, what was inferred), the routing summary in the notion that fits its kind, its
alarms and its per-row entropies read from rows.parquet.  ``gate_sequence`` lists the pairs of
gates at consecutive layers (PLE levels, transformer layers; ``GateInfo.layer``) and
``cross_gate`` measures how the choice at one gate predicts the choice at the next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.alarms import Alarm, gate_alarms, health_alarms
from analysis.information import mutual_information, row_entropy_by_domain
from analysis.measures import json_safe, summarize
from analysis.records.collection import gate_rows
from analysis.records.format import GateInfo, prob_column, top_column
from analysis.records.reader import Record


def declaration(g: GateInfo) -> dict[str, Any]:
    """What the record says about gate ``g`` (JSON values), with what was inferred."""
    return {
        "name": g.name,
        "kind": g.kind,
        "top_k": g.top_k,
        "reach": None if g.reach is None else [list(r) for r in g.reach],
        "shared": g.shared,
        "hyper": g.hyper,
        "family": g.family,
        "layer": g.layer,
        "inferred": list(g.inferred),
        "declared": g.declared or "declared",
        "expert_names": g.expert_names,
    }


def gate_section(
    rec: Record,
    gate: str,
    metrics: dict[str, float] | None = None,
    predictions_std_per_domain: Any = None,
) -> dict[str, Any]:
    """One gate: ``declaration``, ``summary`` (``summarize`` with the gate's kind and reach),
    ``alarms`` (``gate_alarms``; the metric checks only when ``metrics`` are given) and
    ``entropy`` (per-row gate entropies of a seeded draw of rows from rows.parquet)."""
    g = rec.meta.gate(gate)
    domains = list(rec.domains)
    stats = rec.stats[g.name]
    summary = summarize(stats, domains, g.expert_names, gate_kind=g.kind, reach=g.reach)
    alarms = gate_alarms(
        stats,
        metrics or {},
        domains,
        g,
        predictions_std_per_domain=predictions_std_per_domain,
    )
    rows = gate_rows(rec, g.name)
    entropy = None if rows is None else row_entropy_by_domain(rows["probs"], rows["domain"])
    return json_safe(
        {
            "declaration": declaration(g),
            "summary": summary,
            "alarms": [a.to_dict() for a in alarms],
            "entropy": entropy,
        }
    )


def record_alarms(
    rec: Record, metrics: dict[str, float], predictions_std_per_domain: Any
) -> list[Alarm]:
    """The alarms of a whole record: the metric checks once, every gate's routing checks (a
    gate other than the primary one named in the title), critical first."""
    domains = list(rec.domains)
    if not rec.meta.gates:
        family = "cesaa" if rec.meta.source.get("kind") == "cesaa-checkpoint" else ""
        return health_alarms(
            None,
            metrics,
            domains,
            alpha=0.0,
            predictions_std_per_domain=predictions_std_per_domain,
            family=family,
        )
    out = []
    for i, g in enumerate(rec.meta.gates):
        found = gate_alarms(
            rec.stats[g.name],
            metrics if i == 0 else {},
            domains,
            g,
            predictions_std_per_domain=predictions_std_per_domain if i == 0 else None,
        )
        if i > 0:
            found = [_tagged(a, g.name) for a in found]
        out += found
    order = ("critical", "warning", "unchecked")
    return sorted(out, key=lambda a: order.index(a.level))


def _tagged(a: Alarm, gate: str) -> Alarm:
    from dataclasses import replace

    return replace(a, title=f"gate {gate}: {a.title}")


def gate_sequence(rec: Record) -> list[tuple[str, str]]:
    """Pairs (gate at one layer, gate at the next layer that has one) of the gates that declare
    a ``layer`` (MoE layers may skip decoder layers: layer 1 then layer 3 are consecutive)."""
    layered = [g for g in rec.meta.gates if g.layer is not None]
    levels = sorted({g.layer for g in layered})
    nxt = dict(zip(levels, levels[1:], strict=False))
    return [
        (a.name, b.name)
        for a in sorted(layered, key=lambda g: g.layer)
        for b in layered
        if a.layer in nxt and b.layer == nxt[a.layer]
    ]


def _choice(rec: Record, g: GateInfo, t: Any) -> np.ndarray:
    """[n] each row's top expert: the first selected one (sparse) or the largest weight."""
    if g.top_k:
        return t[top_column(g.name, 0)].to_numpy().astype(np.int64)
    probs = np.column_stack([t[prob_column(g.name, e)].to_numpy() for e in range(g.num_experts)])
    return probs.argmax(axis=1)


def cross_gate(rec: Record, first: str, second: str) -> dict[str, Any]:
    """How the top expert at gate ``first`` predicts the top expert at gate ``second``, over
    every row of the record.

    Returns ``counts`` [E_a, E_b] (rows whose top expert is a at ``first`` and b at ``second``),
    ``co_selection`` [E_a, E_b] = P(b at second | a at first) (NaN rows for experts never on
    top), ``mi`` = I(A; B) of the two choices in nats (0: the first choice says nothing about
    the second), ``mi_ceiling`` = min(H(A), H(B)), the largest it can be, and ``mi_normalized``
    (their ratio, 0 when the ceiling is 0).
    """
    a, b = rec.meta.gate(first), rec.meta.gate(second)
    counts = np.zeros((a.num_experts, b.num_experts), np.int64)
    cols = list(dict.fromkeys(_choice_columns(a) + _choice_columns(b)))
    for t in rec.iter_batches(cols):
        np.add.at(counts, (_choice(rec, a, t), _choice(rec, b, t)), 1)
    total = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        co = counts / counts.sum(axis=1, keepdims=True)
    mi = mutual_information(counts.astype(np.float64)) if total else math.nan
    ceiling = min(_entropy(counts.sum(axis=1)), _entropy(counts.sum(axis=0))) if total else 0.0
    return json_safe(
        {
            "first": first,
            "second": second,
            "expert_names_first": a.expert_names,
            "expert_names_second": b.expert_names,
            "counts": counts,
            "co_selection": co,
            "mi": mi,
            "mi_ceiling": ceiling,
            "mi_normalized": 0.0 if ceiling <= 1e-12 else min(max(mi / ceiling, 0.0), 1.0),
        }
    )


def _choice_columns(g: GateInfo) -> list[str]:
    if g.top_k:
        return [top_column(g.name, 0)]
    return [prob_column(g.name, e) for e in range(g.num_experts)]


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
