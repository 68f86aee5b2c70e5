"""The report's per-gate and cross-gate sections (HTML), from ``Report.gates`` and
``Report.cross_gates`` (``analysis.gate_report``).  Kept apart from ``analysis.report_sections`` so
that each section is one small file."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from analysis import figures

KIND_TEXT = {
    "dense": "dense softmax: every expert mixes into every row; an expert's work is its gate weight",
    "sparse": "sparse top-k: each row runs its k selected experts; an expert's work is its share "
    "of the selections",
    "structured": "structured: each domain's gate weighs only the experts it can reach; an "
    "expert's work is its gate weight over the rows that can reach it",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt)


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td class='l'>{v}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def gate_figures(report: Any, width: int | None = None) -> dict[str, go.Figure]:
    """P(expert | domain) in each gate's own notion, and P(next | previous) of consecutive gates."""
    domains = report.model_card["domain_names"]
    figs: dict[str, go.Figure] = {}
    for g in report.gates or []:
        d, s = g["declaration"], g["summary"]
        notion = "hard" if d["kind"] == "sparse" else "soft"
        figs[f"gate_{d['name']}"] = figures.activation_heatmap(
            np.asarray(s[f"activation_{notion}"], dtype=np.float64),
            domains,
            d["expert_names"],
            f"gate {d['name']}: P(expert | domain), {notion}",
            width=width,
        )
    for c in report.cross_gates or []:
        co = np.asarray(
            [[math.nan if v is None else v for v in r] for r in c["co_selection"]], np.float64
        )
        fig = figures.activation_heatmap(
            co,
            c["expert_names_first"],
            c["expert_names_second"],
            f"P(top expert at {c['second']} | top expert at {c['first']})",
            width=width,
        )
        figs[f"cross_{c['first']}_{c['second']}"] = fig
    return figs


def gates_html(report: Any, figs: dict, fig_html: Any) -> str:
    """One sub-section per gate, then one per pair of consecutive gates; ``fig_html(name)``
    renders a figure of ``figs``."""
    gates = report.gates or []
    if not gates:
        return "<p class='note'>The model has no gate: no routing to analyze.</p>"
    out = []
    for g in gates:
        d, s = g["declaration"], g["summary"]
        work = s.get("work") or {}
        names = d["expert_names"]
        dead = ", ".join(names[i] for i in s.get("dead_experts", [])) or "none"
        rows = [
            ("kind", _e(KIND_TEXT.get(d["kind"], d["kind"]))),
            ("k", _e(d["top_k"] if d["top_k"] is not None else "all (dense)")),
            ("gated shared experts", _e(", ".join(names[i] for i in d["shared"]) or "none")),
            ("hyperparameters", _e(d["hyper"] if d["hyper"] is not None else "not declared")),
            ("declared", _e(d["declared"])),
            ("I(D;E) soft [nats]", _num(s["mi_soft"])),
            ("I(D;E) hard [nats]", _num(s["mi_hard"])),
        ]
        if s.get("mi_built_in") is not None:
            rows.append(
                (
                    "I(D;E) built in by the reach [nats]",
                    _num(s["mi_built_in"])
                    + _e(
                        " (every domain spreading evenly over the experts it can reach; the "
                        "measured soft I(D;E) beyond it is what the gates learned)"
                    ),
                )
            )
        rows.append((f"dead experts (by {work.get('notion', 'selections')})", _e(dead)))
        share = work.get("share") or []
        table = "".join(
            f"<tr><td class='l'>{_e(n)}</td><td>{_num(v)}</td><td>{_num(f)}</td></tr>"
            for n, v, f in zip(names, share, work.get("fair") or [], strict=False)
        )
        out.append(
            f"<h3>gate {_e(d['name'])}</h3>"
            + _kv(rows)
            + f"<table><tr><th class='l'>expert</th><th>share of {_e(work.get('notion', ''))}"
            f"</th><th>even share</th></tr>{table}</table>"
            + fig_html(f"gate_{d['name']}")
            + "".join(
                f"<div class='alarm {_e(a['level'])}'><b>{_e(a['title'])}</b></div>"
                for a in g["alarms"]
                if a["level"] != "critical"  # the metric alarms are in the Alarms section
            )
        )
    for c in report.cross_gates or []:
        out.append(
            f"<h3>{_e(c['first'])} → {_e(c['second'])}</h3>"
            + _kv(
                [
                    ("I(top expert at first; top expert at second) [nats]", _num(c["mi"])),
                    ("ceiling min(H(first), H(second)) [nats]", _num(c["mi_ceiling"])),
                    ("fraction of ceiling", _num(c["mi_normalized"])),
                ]
            )
            + fig_html(f"cross_{c['first']}_{c['second']}")
        )
    if len(gates) > 1 and not report.cross_gates:
        out.append(
            "<p class='note'>No cross-gate views: the record declares no layer order of its gates "
            "(GateInfo.layer).</p>"
        )
    return "".join(out)
