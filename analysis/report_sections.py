"""The sections of the report's HTML page, one renderer per section id of
``analysis.report_html.SECTIONS`` (``RENDER``).  Each takes the report, its figures by name and
``static`` and returns the section's body; ``analysis.report_html`` assembles the page.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analysis import figures, report_gates
from analysis.information import ceiling_note
from analysis.prune_plans import describe_plan, prediction_error
from analysis.report_inspection import inspection_html


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
