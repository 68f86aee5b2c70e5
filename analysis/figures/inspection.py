"""Figures of the inspection pages (Experts, Rows, Routing over training) and their report sections.

Shapes: D = domains, E = experts, T = epochs.  Heatmaps print cell values only while they stay
readable (at most ``TEXT_CELLS`` rows and columns); larger ones rely on the hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures.style import DIVERGING, PALETTE, SEQUENTIAL, as_matrix, finish, heatmap_trace

TEXT_CELLS = 16


def matrix_heatmap(
    z: Any,
    x: Sequence[str],
    y: Sequence[str],
    title: str,
    *,
    zmin: float | None = 0.0,
    zmax: float | None = None,
    colorbar: str = "",
    diverging: bool = False,
    x_title: str = "",
    y_title: str = "",
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """A [rows, cols] heatmap with ``y`` top to bottom; cell text while it is readable."""
    m = as_matrix(z, "z")
    if m.shape != (len(y), len(x)):
        raise ValueError(f"z has shape {m.shape} but there are {len(y)} row and {len(x)} names")
    if zmax is None and zmin is not None:  # a range from zmin up, never a flat one (one 0 cell)
        finite = m[np.isfinite(m)]
        top = float(finite.max()) if finite.size else zmin
        zmax = top if top > zmin else zmin + 1.0
    trace = heatmap_trace(
        m,
        list(map(str, x)),
        list(map(str, y)),
        colorscale=DIVERGING if diverging else SEQUENTIAL,
        zmin=zmin,
        zmax=zmax,
        zmid=0.0 if diverging else None,
        colorbar=colorbar,
    )
    if max(m.shape) > TEXT_CELLS:
        trace.update(text=None, texttemplate=None)
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", title=y_title, type="category")
    fig.update_xaxes(title=x_title, type="category")
    return finish(fig, title, width, height or max(240, 80 + min(24, 600 // len(y) + 1) * len(y)))


def log_odds_bars(table: pd.DataFrame, title: str, *, top_n: int = 15) -> go.Figure:
    """The ``top_n`` rows of a ``feature_log_odds`` table as horizontal bars with their 95%
    intervals (significant ones in the first colour)."""
    t = table.head(top_n).iloc[::-1]
    labels = [f"{f} = {v}" for f, v in zip(t["feature"], t["value"], strict=True)]
    colors = [PALETTE[0] if s else "#bbbbbb" for s in t["significant"]]
    fig = go.Figure(
        go.Bar(
            x=t["log_odds"],
            y=labels,
            orientation="h",
            marker_color=colors,
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (t["ci_high"] - t["log_odds"]).to_numpy(),
                "arrayminus": (t["log_odds"] - t["ci_low"]).to_numpy(),
            },
            customdata=np.stack([t["routed_with"], t["other_with"], t["q_value"]], axis=1),
            hovertemplate="%{y}: log-odds %{x:.3f}<br>routed rows with it %{customdata[0]}"
            "<br>other rows with it %{customdata[1]}<br>q %{customdata[2]:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title="log-odds ratio (routed vs other rows of the same domains)")
    return finish(fig, title, None, max(260, 60 + 22 * len(t)))


def contribution_bars(names: Sequence[str], values: Sequence[float], title: str) -> go.Figure:
    """One row's parts of the logit (experts, shared, base) as horizontal bars."""
    v = np.asarray(values, dtype=np.float64)
    colors = [PALETTE[0] if x >= 0 else PALETTE[1] for x in v]
    fig = go.Figure(go.Bar(x=v, y=list(names), orientation="h", marker_color=colors))
    fig.update_xaxes(title="change of the logit")
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, None, max(220, 60 + 26 * len(v)))


def evolution_lines(table: pd.DataFrame, title: str = "Routing over training") -> go.Figure:
    """Left: router saturation at the epochs with a row snapshot; right: normalized MI and load CV
    per epoch."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("router saturation", "MI and load"))
    sat = table.dropna(subset=["saturation"])  # a run may keep row snapshots of some epochs only
    fig.add_scatter(
        x=sat["epoch"],
        y=sat["saturation"],
        name="saturation vs final",
        mode="lines+markers",
        line={"color": PALETTE[0]},
        row=1,
        col=1,
    )
    for i, (key, name) in enumerate(
        (("mi_hard_normalized", "hard I(D;E), normalized"), ("load_cv", "load CV"))
    ):
        fig.add_scatter(
            x=table["epoch"],
            y=table[key],
            name=name,
            mode="lines+markers",
            line={"color": PALETTE[i + 1]},
            row=1,
            col=2,
        )
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title="epoch", dtick=1)
    return finish(fig, title, None, 340)
