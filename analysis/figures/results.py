"""Figures of what routing does: knock-out, k curve, expert-output maps, training history, planted
truth, per-domain metrics.

Shapes: D = domains, E = selectable experts, K = planted mechanisms, n = sampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures.style import (
    DIVERGING,
    MANY_DOMAINS,
    OVERALL_COLOR,
    PALETTE,
    SEQUENTIAL,
    as_matrix,
    axis_names,
    domain_color,
    finish,
    heatmap_trace,
)


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))


def knockout_heatmap(
    df: pd.DataFrame,
    value: str = "delta_auc",
    title: str = "Knock-out: change of AUC when an expert is removed",
    *,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Rows = knocked-out targets, columns = domains, cells = ``df[value]`` (0 at the center of
    the diverging scale: red = removing it hurts)."""
    for col in ("target", "domain", value):
        if col not in df.columns:
            raise ValueError(f"knock-out table needs a {col!r} column, got {list(df.columns)}")
    rows, cols = _ordered(df["target"]), _ordered(df["domain"])
    z = df.pivot_table(
        index="target", columns="domain", values=value, aggfunc="first", dropna=False
    )
    z = z.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64)
    scale = DIVERGING if value.startswith("delta_auc") else f"{DIVERGING}_r"
    fig = go.Figure(
        heatmap_trace(
            z,
            [str(c) for c in cols],
            [str(r) for r in rows],
            colorscale=scale,
            zmid=0.0,
            colorbar=value,
            fmt="+.3f",
        )
    )
    fig.update_yaxes(autorange="reversed", title="knocked out")
    fig.update_xaxes(title="domain")
    return finish(fig, title, width, height or max(260, 80 + 28 * len(rows)))


def k_curve_figure(
    df: pd.DataFrame,
    value: str = "auc",
    title: str = "AUC against the number of routed experts k",
    *,
    width: int | None = None,
    height: int | None = 340,
) -> go.Figure:
    """One line per domain of ``df[value]`` against ``df["k"]`` ("overall" dashed, in
    ``OVERALL_COLOR``; each domain in its ``domain_color``).  Past ``MANY_DOMAINS`` domains the
    lines would be unreadable: a heatmap of domains (rows, overall first) by k instead."""
    for col in ("k", "domain", value):
        if col not in df.columns:
            raise ValueError(f"k-curve table needs a {col!r} column, got {list(df.columns)}")
    names = _ordered(df["domain"])
    domains = [n for n in names if str(n) != "overall"]
    if len(domains) > MANY_DOMAINS:
        ks = sorted(df["k"].unique())
        z = df.pivot_table(index="domain", columns="k", values=value, aggfunc="first")
        z = z.reindex(index=names, columns=ks).to_numpy(dtype=np.float64)
        fig = go.Figure(
            heatmap_trace(
                z,
                [str(k) for k in ks],
                [str(n) for n in names],
                colorscale=SEQUENTIAL,
                colorbar=value,
                fmt=".3f",
            )  # fmt: skip
        )
        fig.update_yaxes(autorange="reversed", title="domain", type="category")
        fig.update_xaxes(title="k (experts per row)", type="category")
        return finish(
            fig, f"{title} ({len(domains)} domains: one row each)", width,
            max(height or 0, 80 + 16 * len(names)),
        )  # fmt: skip
    fig = go.Figure()
    for name in names:
        part = df[df["domain"] == name].sort_values("k")
        overall = str(name) == "overall"
        color = OVERALL_COLOR if overall else domain_color(domains.index(name), len(domains))
        fig.add_scatter(
            x=part["k"],
            y=part[value],
            mode="lines+markers",
            name=str(name),
            line={"color": color, "dash": "dash" if overall else "solid"},
        )
    fig.update_xaxes(title="k (experts per row)", dtick=1)
    fig.update_yaxes(title=value)
    return finish(fig, title, width, height)


# ---- embeddings, training, truth, metrics --------------------------------------------------------


def embedding_scatter(
    xy: Any,
    color_labels: Any,
    names: Sequence[str] | None = None,
    title: str = "Expert outputs",
    *,
    hover: Sequence[str] | None = None,
    marker_size: int = 4,
    width: int | None = None,
    height: int | None = 460,
) -> go.Figure:
    """Scatter of xy [n, 2], one trace (legend entry, color) per label; ``color_labels`` [n] are
    ints indexing ``names``."""
    pts = as_matrix(xy, "xy")
    if pts.shape[1] != 2:
        raise ValueError(f"xy must be [n, 2], got shape {pts.shape}")
    lab = np.asarray(color_labels).astype(np.int64).ravel()
    if lab.shape[0] != pts.shape[0]:
        raise ValueError(f"color_labels has {lab.shape[0]} rows but xy has {pts.shape[0]}")
    k = len(names) if names is not None else int(lab.max(initial=-1)) + 1
    names = axis_names(names, k, "names", "")
    fig = go.Figure()
    for i, name in enumerate(names):
        m = lab == i
        text = None if hover is None else [hover[j] for j in np.flatnonzero(m)]
        fig.add_scatter(
            x=pts[m, 0],
            y=pts[m, 1],
            mode="markers",
            name=name,
            text=text,
            marker={"size": marker_size, "color": domain_color(i, len(names)), "opacity": 0.7},
        )
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, scaleanchor="x")
    return finish(fig, title, width, height, legend={"itemsizing": "constant"})


def training_curve(
    history: Sequence[dict],
    title: str = "Training history",
    *,
    width: int | None = None,
    height: int | None = 340,
) -> go.Figure:
    """Left: the ``train/*`` loss terms per epoch; right: ``val/auc`` and ``val/logloss``."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("train losses", "validation"))
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    train_keys = list(dict.fromkeys(k for r in history for k in r if k.startswith("train/")))
    for i, key in enumerate(train_keys):
        fig.add_scatter(
            x=epochs,
            y=[r.get(key) for r in history],
            name=key,
            mode="lines+markers",
            line={"color": PALETTE[i % len(PALETTE)]},
            row=1,
            col=1,
        )
    for j, key in enumerate(k for k in ("val/auc", "val/logloss") if any(k in r for r in history)):
        fig.add_scatter(
            x=epochs,
            y=[r.get(key) for r in history],
            name=key,
            mode="lines+markers",
            line={"color": PALETTE[(len(train_keys) + j) % len(PALETTE)]},
            row=1,
            col=2,
        )
    fig.update_xaxes(title="epoch", dtick=1)
    return finish(fig, title, width, height)


def truth_vs_learned(
    truth: Any,
    activation: Any,
    domain_names: Sequence[str] | None = None,
    mechanism_names: Sequence[str] | None = None,
    expert_names: Sequence[str] | None = None,
    title: str = "Planted domain -> mechanism structure vs learned P(expert | domain)",
    *,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Side by side: the planted truth [D, K] (1 = domain uses the mechanism) and the learned
    activation [D, E]."""
    t, a = as_matrix(truth, "truth"), as_matrix(activation, "activation")
    if t.shape[0] != a.shape[0]:
        raise ValueError(f"truth has {t.shape[0]} domains but activation has {a.shape[0]}")
    y = axis_names(domain_names, t.shape[0], "domain_names", "domain_")
    mx = axis_names(mechanism_names, t.shape[1], "mechanism_names", "m")
    ex = axis_names(expert_names, a.shape[1], "expert_names", "expert_")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("planted (truth)", "learned"), horizontal_spacing=0.12
    )
    fig.add_trace(
        heatmap_trace(t, mx, y, colorscale="Greys", zmin=0, zmax=1, fmt=".0f"), row=1, col=1
    )
    fig.add_trace(heatmap_trace(a, ex, y, colorscale=SEQUENTIAL, zmin=0), row=1, col=2)
    fig.data[0].showscale = False
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, width, height or max(260, 90 + 40 * t.shape[0]))


def metric_bars(
    metrics: dict,
    domain_names: Sequence[str],
    metric: str = "auc",
    title: str | None = None,
    *,
    width: int | None = None,
    height: int | None = 320,
) -> go.Figure:
    """Bars of ``metrics[f"{metric}/{name}"]`` per domain (each in its ``domain_color``) with the
    overall ``metrics[metric]`` as a dashed line (the flat dict of
    ``cesaa.metrics.evaluate_predictions``).  Past ``MANY_DOMAINS`` domains only the
    ``MANY_DOMAINS // 2`` highest and lowest are drawn, sorted, and the title says so."""
    names = [str(n) for n in domain_names]
    vals = [metrics.get(f"{metric}/{n}") for n in names]
    vals = [math.nan if v is None else float(v) for v in vals]
    colors = [domain_color(i, len(names)) for i in range(len(names))]
    idx = list(range(len(names)))
    if len(names) > MANY_DOMAINS:
        half = MANY_DOMAINS // 2
        ranked = sorted((i for i in idx if not math.isnan(vals[i])), key=lambda i: -vals[i])
        idx = ranked[:half] + [i for i in ranked[-half:] if i not in ranked[:half]]
        title = (title or f"{metric} per domain") + (
            f" · the {half} highest and {half} lowest of {len(names)} domains"
        )
    fig = go.Figure(
        go.Bar(
            x=[names[i] for i in idx],
            y=[vals[i] for i in idx],
            marker_color=[colors[i] for i in idx],
            text=[f"{vals[i]:.4f}" for i in idx],
            textposition="outside",
        )
    )
    overall = metrics.get(metric)
    if overall is not None and not math.isnan(float(overall)):
        fig.add_hline(
            y=float(overall),
            line_dash="dash",
            line_color="gray",
            annotation_text=f"overall {float(overall):.4f}",
        )
    finite = [v for v in vals if not math.isnan(v)]
    if metric.startswith("auc") and finite:
        fig.update_yaxes(range=[max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.05)])
    fig.update_yaxes(title=metric)
    return finish(fig, title or f"{metric} per domain", width, height, showlegend=False)
