"""The HTML view of a ``Report``: one self-contained page (plotly.js embedded once, no network).

Everything drawn here is read from the report's numbers, so ``Report.from_json(...).to_html()``
gives the same page as the report that was built from the checkpoint.  Section ids are stable:
``SECTIONS``.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analysis import figures, report_gates
from analysis.information import ceiling_note
from analysis.prune_plans import describe_plan, prediction_error
from analysis.report_inspection import inspection_html

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


def _num(x: Any, fmt: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt) if isinstance(x, (int, float)) else _e(x)


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td class='l'>{v}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def _table(df: pd.DataFrame, fmt: str = ".4f") -> str:
    def cell(v: Any) -> str:
        return _num(v, fmt) if isinstance(v, float) else _e(v)

    head = "".join(f"<th>{_e(c)}</th>" for c in [df.index.name or "", *df.columns])
    rows = "".join(
        f"<tr><td class='l'>{_e(i)}</td>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>"
        for i, r in zip(df.index, df.itertuples(index=False), strict=True)
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{_e(text)}</p>"


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


def _fig(figs: dict[str, go.Figure], name: str, static: bool) -> str:
    if name not in figs:
        return ""
    div = figs[name].to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{name}",
        config=figures.html_config(static),
        default_width="100%",
    )
    return f"<div class='figure'>{div}</div>"


# ---- sections ------------------------------------------------------------------------------------


def _model_card(r: Any, figs: dict, static: bool) -> str:
    c = r.model_card
    data = c.get("data", {})
    rows = [
        ("model", _e(c.get("name"))),
        ("checkpoint", _e(r.checkpoint.get("path"))),
        ("weights sha256", f"<code>{_e(r.checkpoint.get('weights_sha256'))}</code>"),
        ("data source", _e(data.get("source"))),
        ("data fingerprint", f"<code>{_e(data.get('fingerprint'))}</code>"),
        ("trained on fingerprint", f"<code>{_e(data.get('train_fingerprint'))}</code>"),
        ("evaluated split", f"{_e(r.settings.get('split'))} ({_e(data.get('rows'))} rows)"),
        ("domains", _e(", ".join(c["domain_names"]))),
        ("best epoch", _e(c.get("best_epoch"))),
        ("created", _e(r.created)),
    ]
    cfg = json.dumps({"model": c.get("config"), "train": c.get("train_config")}, indent=2)
    desc = json.dumps(data.get("description"), indent=2)
    return (
        _kv(rows)
        + f"<details><summary>configuration</summary><pre>{_e(cfg)}</pre></details>"
        + f"<details><summary>data description</summary><pre>{_e(desc)}</pre></details>"
        + (_fig(figs, "training", static) or _note("No training history (metrics.jsonl) found."))
    )


def _metrics(r: Any, figs: dict, static: bool) -> str:
    from cesaa.metrics import metrics_table

    if not r.metrics:
        return _note(r.notes.get("metrics", "No metrics for this model or data."))
    m = {k: (math.nan if v is None else v) for k, v in r.metrics.items()}
    table = metrics_table(m, r.model_card["domain_names"])
    table["rows"] = table["rows"].astype("Int64")
    return _table(table) + _fig(figs, "metrics", static)


def _alarms(r: Any, figs: dict, static: bool) -> str:
    if not r.alarms:
        return _note("No alarms: nothing unusual found in routing, load or metrics.")
    out = []
    for a in r.alarms:
        where = ", ".join(f"{k} {a[k]}" for k in ("domain", "expert") if a.get(k) is not None)
        out.append(
            f"<div class='alarm {_e(a.get('level', ''))}'><b>{_e(a.get('level', '')).upper()} "
            f"{_e(a.get('title', ''))}</b> <code>{_e(a.get('code', ''))}</code>"
            + (f" ({_e(where)})" if where else "")
            + f"<br>{_e(a.get('message', ''))}</div>"
        )
    return "".join(out)


def _no_gate(r: Any) -> str:
    return _note(f"Model {r.model_card.get('name')!s} has no gate: no routing to analyze.")


def _routing(r: Any, figs: dict, static: bool) -> str:
    if r.summary is None:
        return _no_gate(r)
    return _fig(figs, "activation_soft", static) + _fig(figs, "activation_hard", static)


def _information(r: Any, figs: dict, static: bool) -> str:
    s = r.summary
    if s is None:
        return _no_gate(r)
    rows = [
        ("I(D;E) soft [nats]", _num(s["mi_soft"])),
        ("I(D;E) hard [nats]", _num(s["mi_hard"])),
        ("upper bound soft min(H(D), log E) [nats]", _num(s.get("mi_soft_bound"))),
        ("upper bound hard min(H(D), log(E/k)) [nats]", _num(s.get("mi_hard_bound"))),
        ("soft, fraction", f"{_num(s['mi_soft_normalized'])} {_e(ceiling_note(s, 'soft'))}"),
        ("hard, fraction", f"{_num(s['mi_hard_normalized'])} {_e(ceiling_note(s, 'hard'))}"),
        ("mean experts selected per row", _num(s["mean_selected_per_row"], ".2f")),
    ]
    if s.get("mi_built_in") is not None:
        rows.append(("built in by a structured gate's reach [nats]", _num(s["mi_built_in"])))
    return _kv(rows) + _fig(figs, "similarity", static)


def _load(r: Any, figs: dict, static: bool) -> str:
    s = r.summary
    if s is None:
        return _no_gate(r)
    lb = s["load_balance"]
    rows = [
        ("CV of hard load (0 = balanced)", _num(lb["cv"])),
        ("CV of soft load", _num(lb["soft_cv"])),
        (
            f"dead experts (by {(s.get('work') or {}).get('notion', 'selections')})",
            _e(", ".join(s["expert_names"][i] for i in s.get("dead_experts", lb["dead_experts"])))
            or "none",
        ),
        ("mean top-1 margin", _num(lb["top1_margin"])),
    ]
    return _kv(rows) + _fig(figs, "load", static) + _fig(figs, "coactivation", static)


def _entropy(r: Any, figs: dict, static: bool) -> str:
    if r.summary is None:
        return _no_gate(r)
    ent = pd.DataFrame.from_dict(r.summary["entropy"], orient="index")
    ent.index.name = "domain"
    ent = ent.apply(lambda col: col.map(lambda v: math.nan if v is None else v))
    return _table(ent) + _fig(figs, "entropy", static)


def _optional(key: str, what: str) -> Any:
    def section(r: Any, figs: dict, static: bool) -> str:
        if key not in figs:
            return _note(r.notes.get(key, f"No {what} for this model or data."))
        return _fig(figs, key, static)

    return section


def _knockout(r: Any, figs: dict, static: bool) -> str:
    body = _optional("knockout", "knock-out table")(r, figs, static)
    if not r.knockout:
        return body
    table = _table(pd.DataFrame(r.knockout).set_index("target"))
    return body + f"<details><summary>knock-out table</summary>{table}</details>"


def _prune(r: Any, figs: dict, static: bool) -> str:
    body = _optional("prune", "pruning plans")(r, figs, static)
    if not r.prune:
        return body
    curve = pd.DataFrame(r.prune)
    err = prediction_error(curve)
    lead = _note(
        "Which experts this model could do without, and what that would cost: each plan chosen "
        "and its cost predicted on the validation split, then measured on this split with the "
        f"edited model.  Best predictor of its own cost: {err['criterion'].iloc[0]}."
    )
    shown = curve.assign(plan=[describe_plan(p) for p in curve["plan"]]).set_index("criterion")
    return (
        lead
        + body
        + _table(err.set_index("criterion"))
        + f"<details><summary>every plan</summary>{_table(shown)}</details>"
    )


def _embeddings(r: Any, figs: dict, static: bool) -> str:
    emb = r.embedding
    if not emb or not emb.get("xy"):
        return _note(r.notes.get("embedding", "No expert outputs to project for this model."))
    note = _note(emb["note"]) if emb.get("note") else ""
    params = f" (params {json.dumps(emb['params'])})" if emb.get("params") else ""
    info = _note(
        f"{len(emb['xy'])} sampled rows, {emb['method'].upper()} of each row's gate-weighted "
        f"mix of its selected experts' outputs{params}."
    )
    return (
        note
        + info
        + _fig(figs, "embedding_domain", static)
        + _fig(figs, "embedding_expert", static)
    )


def _truth(r: Any, figs: dict, static: bool) -> str:
    t = r.truth
    if not t:
        return _note(r.notes.get("truth", "The data has no planted truth (only synthetic data)."))
    rec = t.get("recovery") or {}
    rows = [
        (k, _num(v) if isinstance(v, float) else _e(v))
        for k, v in rec.items()
        if not isinstance(v, (list, dict))
    ]
    return _kv(rows) + _fig(figs, "truth", static)


def _reproduce(r: Any, figs: dict, static: bool) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    return (
        f"<p>Regenerate this report with:</p><pre>{_e(r.command)}</pre>"
        + _kv([(k, _e(v)) for k, v in r.settings.items()])
        + f"<p>Versions: {_e(versions)}</p>"
        + _kv([(k, _num(v, ".2f") + " s") for k, v in r.timings.items()])
    )


RENDER = {
    "model-card": _model_card,
    "metrics": _metrics,
    "alarms": _alarms,
    "routing": _routing,
    "information": _information,
    "load": _load,
    "entropy": _entropy,
    "gates": lambda r, figs, static: report_gates.gates_html(
        r, figs, lambda name: _fig(figs, name, static)
    ),
    "knockout": _knockout,
    "k-curve": _optional("k_curve", "k curve (the model has no gate)"),
    "prune": _prune,
    "embeddings": _embeddings,
    "truth": _truth,
    "inspection": lambda r, figs, static: inspection_html(r.inspection),
    "reproduce": _reproduce,
}


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
