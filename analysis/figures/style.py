"""Shared look of every figure: palette, color scales, layout, heatmap cells, display config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
OVERALL_COLOR = "#444444"  # the "overall" line / bar beside the domains
MANY_DOMAINS = 12  # past this, per-domain bars and lines give way to top/bottom or a heatmap


def domain_color(index: int, num_domains: int) -> str:
    """The one colour of domain ``index`` (of ``num_domains``) in every figure, app and report:
    the 10-colour palette up to 10 domains, evenly spaced hues past that."""
    if not 0 <= index < num_domains:
        raise ValueError(f"domain index {index} must be in [0, {num_domains})")
    if num_domains <= len(PALETTE):
        return PALETTE[index]
    return f"hsl({round(360 * index / num_domains)}, 65%, {45 + 10 * (index % 2)}%)"


SEQUENTIAL = "Blues"
DIVERGING = "RdBu"


def html_config(static: bool = False) -> dict[str, Any]:
    """Plotly display config: no logo; ``static`` also hides the mode bar and interactions."""
    if static:
        return {"displayModeBar": False, "staticPlot": True, "displaylogo": False}
    return {"displaylogo": False, "responsive": True}


def as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 2-D array; ValueError naming ``name`` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr


def axis_names(names: Sequence[str] | None, n: int, arg: str, prefix: str) -> list[str]:
    """``n`` tick labels: ``names`` as strings (checked against ``n``) or ``prefix0..``."""
    if names is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = [str(v) for v in names]
    if len(names) != n:
        raise ValueError(f"{arg} has {len(names)} names but the data has {n}")
    return names


def finish(
    fig: go.Figure, title: str, width: int | None, height: int | None, **layout: Any
) -> go.Figure:
    """The common layout; a fixed ``width`` turns autosize off (static export)."""
    fig.update_layout(
        title={"text": title, "x": 0.01},
        width=width,
        height=height,
        autosize=width is None,
        margin={"l": 70, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
        **layout,
    )
    return fig


def heatmap_trace(
    z: np.ndarray,
    x: list[str],
    y: list[str],
    *,
    colorscale: str,
    zmin: float | None = None,
    zmax: float | None = None,
    zmid: float | None = None,
    colorbar: str = "",
    fmt: str = ".2f",
) -> go.Heatmap:
    """A heatmap whose cells print their value (``fmt``; blank for NaN)."""
    text = [["" if math.isnan(v) else format(v, fmt) for v in row] for row in z]
    return go.Heatmap(
        z=z,
        x=x,
        y=y,
        text=text,
        texttemplate="%{text}",
        colorscale=colorscale,
        zmin=zmin,
        zmax=zmax,
        zmid=zmid,
        colorbar={"title": {"text": colorbar}},
        hovertemplate="%{y} / %{x}: %{z:.4f}<extra></extra>",
    )
