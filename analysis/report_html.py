"""The HTML view of a ``Report``: one self-contained page (plotly.js embedded once, no network).

Everything drawn here is read from the report's numbers, so ``Report.from_json(...).to_html()``
gives the same page as the report that was built from the checkpoint.  Section ids are stable:
``SECTIONS``.  This module draws the figures and assembles the page; each section's body is rendered
by ``analysis.report_sections``.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis import figures, report_gates
from analysis.report_sections import RENDER

SECTIONS = {
    "model-card": "Model card",
    "metrics": "Per-domain metrics",
    "alarms": "Alarms",
    "routing": "Routing: P(expert | domain)",
    "information": "Mutual information",
    "load": "Expert load",
    "entropy": "Gate entropy",
    "gates": "Every gate",
    "knockout": "Knock-out",
    "k-curve": "k curve",
    "prune": "Pruning and merging",
    "embeddings": "Expert outputs",
    "truth": "Planted truth",
    "inspection": "Experts, domain swap, routing over training",
    "reproduce": "Reproduce",
}
STATIC_WIDTH = 900

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
nav{padding:8px 24px;background:#eef2f6;font-size:13px;position:sticky;top:0;z-index:5}
nav a{margin-right:12px;color:#1f3b57}main{padding:0 24px 40px;max-width:1100px}
section{border-bottom:1px solid #ddd;padding:10px 0 18px}h2{font-size:18px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{color:#666;font-style:italic}.kv td:first-child{text-align:left;font-weight:600}
.alarm{padding:6px 10px;margin:4px 0;border-left:5px solid #999;background:#fafafa}
.alarm.critical{border-color:#c0392b}.alarm.warning{border-color:#e67e22}
.alarm.info,.alarm.unchecked{border-color:#2980b9}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
.figure{margin:6px 0}
@media print{nav{display:none}section{page-break-inside:avoid}}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


# ---- figures -------------------------------------------------------------------------------------


def report_figures(report: Any, static: bool = False) -> dict[str, go.Figure]:
    """Every figure of the report by name (fixed width when ``static``); absent parts are left
    out (no knock-out for a model without a gate, no truth without planted data, ...)."""
    w = STATIC_WIDTH if static else None
    card, s = report.model_card, report.summary
    domains, experts = card["domain_names"], card.get("expert_names")
    figs: dict[str, go.Figure] = {}
    if card.get("history"):
        figs["training"] = figures.training_curve(card["history"], width=w)
    if report.metrics:  # a record without labels has none
        figs["metrics"] = figures.metric_bars(report.metrics, domains, "auc", width=w)
    if s is not None:
        experts = s["expert_names"]
        for kind in ("soft", "hard"):
            figs[f"activation_{kind}"] = figures.activation_heatmap(
                _arr(s[f"activation_{kind}"]),
                domains,
                experts,
                f"P(expert | domain), {kind}",
                width=w,
            )
        figs["similarity"] = figures.similarity_heatmap(
            _arr(s["domain_similarity_soft"]), domains, width=w
        )
        figs["load"] = figures.load_bars(
            _arr(s["load_hard"]), experts, soft=_arr(s["load_soft"]), width=w
        )
        figs["coactivation"] = figures.coactivation_heatmap(
            _arr(s["load_balance"]["coactivation"]), experts, width=w
        )
    if report.entropy:
        figs["entropy"] = figures.entropy_violin(
            _arr(report.entropy["values"]),
            report.entropy["domain"],
            domains,
            max_entropy=report.entropy.get("max"),
            width=w,
        )
    figs.update(report_gates.gate_figures(report, width=w))
    if report.knockout:
        figs["knockout"] = figures.knockout_heatmap(pd.DataFrame(report.knockout), width=w)
    if report.k_curve:
        figs["k_curve"] = figures.k_curve_figure(pd.DataFrame(report.k_curve), width=w)
    if report.prune:
        figs["prune"] = figures.prune_cost_figure(pd.DataFrame(report.prune), width=w)
    emb = report.embedding
    if emb and emb.get("xy"):
        xy, title = _arr(emb["xy"]), f"Expert outputs ({emb['method'].upper()}, {emb['mode']})"
        figs["embedding_domain"] = figures.embedding_scatter(
            xy, emb["domain"], domains, f"{title}, colored by domain", width=w
        )
        figs["embedding_expert"] = figures.embedding_scatter(
            xy, emb["expert"], emb.get("expert_names"), f"{title}, colored by top expert", width=w
        )
    t = report.truth
    if t and t.get("matrix") is not None and s is not None:
        figs["truth"] = figures.truth_vs_learned(
            _arr(t["matrix"]),
            _arr(s["activation_hard"]),
            domains,
            t.get("mechanism_names"),
            s["expert_names"],
            width=w,
        )
    return figs


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)  # JSON null -> NaN


# ---- page ----------------------------------------------------------------------------------------


def render_html(report: Any, static: bool = False) -> str:
    """The report as one self-contained HTML page (plotly.js inlined once in <head>).

    ``static``: fixed-width figures, no mode bar, no interaction (for PDF printing).
    """
    figs = report_figures(report, static=static)
    nav = "".join(f"<a href='#{sid}'>{_e(title)}</a>" for sid, title in SECTIONS.items())
    body = "".join(
        f"<section id='{sid}'><h2>{_e(title)}</h2>{RENDER[sid](report, figs, static)}</section>"
        for sid, title in SECTIONS.items()
    )
    name = report.model_card.get("name", "model")
    title = f"cesaa report: {name} on {report.model_card.get('data', {}).get('source', '')}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<header><h1>{_e(title)}</h1></header><nav>{nav}</nav><main>{body}</main></body></html>"
    )
