"""Routing figures: P(expert | domain) and its change between two runs, domain similarity, expert
load, co-activation, gate entropy.

Shapes: D = domains, E = selectable experts, n = sampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from analysis.figures.style import (
    DIVERGING,
    PALETTE,
    SEQUENTIAL,
    as_matrix,
    axis_names,
    domain_color,
    finish,
    heatmap_trace,
)


def activation_heatmap(
    act: Any,
    domain_names: Sequence[str] | None = None,
    expert_names: Sequence[str] | None = None,
    title: str = "P(expert | domain)",
    *,
    zmax: float = 1.0,
    contrast: bool = False,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Heatmap of act [D, E]: one row per domain (top to bottom), one column per expert; the cell
    values are ``act`` exactly.

    Probabilities share one fixed scale, 0 to ``zmax`` (default 1), with the uniform gate's 1/E
    marked on the colour bar, so a near-uniform gate looks pale everywhere.  ``contrast`` stretches
    the colours over the data's own range instead (said in the title and on the colour bar): small
    differences then look large.
    """
    z = as_matrix(act, "act")
    d, e = z.shape
    y = axis_names(domain_names, d, "domain_names", "domain_")
    x = axis_names(expert_names, e, "expert_names", "expert_")
    finite = z[np.isfinite(z)]
    if contrast and finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1e-9
        bar, title = f"P (contrast {lo:.2f}–{hi:.2f})", f"{title} · contrast {lo:.2f}–{hi:.2f}"
    else:
        lo, hi, bar = 0.0, float(zmax), "P"
    trace = heatmap_trace(z, x, y, colorscale=SEQUENTIAL, zmin=lo, zmax=hi, colorbar=bar)
    ticks = sorted({lo, hi, *([1 / e] if lo <= 1 / e <= hi else [])})
    trace.update(
        colorbar={
            "title": {"text": bar},
            "tickvals": ticks,
            "ticktext": [f"1/E = {t:.3g} (uniform)" if t == 1 / e else f"{t:.2f}" for t in ticks],
        }
    )
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", title="domain")
    fig.update_xaxes(title="expert", side="bottom")
    return finish(fig, title, width, height or max(220, 60 + 40 * d))


def aligned_difference_heatmap(
    diff: Any,
    domain_names: Sequence[str] | None = None,
    expert_names: Sequence[str] | None = None,
    title: str = "P_b(expert | domain) - P_a(expert | domain), experts aligned",
    *,
    zmax: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Diverging heatmap of diff [D, E] = P_b(e | d) - P_a(e | d) with b's experts aligned to a's
    (``analysis.compare.compare(...).aligned_diff``): one row per domain, one column per expert of
    a; the cell values are ``diff`` exactly.  White is 0 and the scale is symmetric, +-``zmax``
    (default the largest |diff|): blue where b routes more mass to the expert, red where less."""
    z = as_matrix(diff, "diff")
    d, e = z.shape
    y = axis_names(domain_names, d, "domain_names", "domain_")
    x = axis_names(expert_names, e, "expert_names", "expert_")
    if zmax is None:
        finite = np.abs(z[np.isfinite(z)])
        zmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    trace = heatmap_trace(
        z, x, y, colorscale=DIVERGING, zmin=-zmax, zmax=zmax, zmid=0.0, colorbar="Δ P", fmt="+.2f"
    )
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", title="domain")
    fig.update_xaxes(title="expert", side="bottom")
    return finish(fig, title, width, height or max(220, 60 + 40 * d))


def similarity_heatmap(
    sim: Any,
    domain_names: Sequence[str] | None = None,
    title: str = "Jensen-Shannon divergence between domains' routing (nats)",
    *,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Symmetric [D, D] domain x domain heatmap in [0, log 2]."""
    z = as_matrix(sim, "sim")
    names = axis_names(domain_names, z.shape[0], "domain_names", "domain_")
    trace = heatmap_trace(
        z, names, names, colorscale=SEQUENTIAL, zmin=0, zmax=math.log(2), fmt=".3f"
    )
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, width, height or max(240, 80 + 40 * z.shape[0]))


def load_bars(
    load: Any,
    expert_names: Sequence[str] | None = None,
    title: str = "Expert load (share of selections)",
    *,
    soft: Any = None,
    width: int | None = None,
    height: int | None = 320,
) -> go.Figure:
    """Bars of the hard load [E] (and the soft load [E] beside it), with the uniform share 1/E."""
    hard = np.asarray(load, dtype=np.float64).ravel()
    x = axis_names(expert_names, hard.size, "expert_names", "expert_")
    fig = go.Figure(go.Bar(x=x, y=hard, name="hard (selected)", marker_color=PALETTE[0]))
    if soft is not None:
        soft = np.asarray(soft, dtype=np.float64).ravel()
        fig.add_bar(x=x, y=soft, name="soft (gate probability)", marker_color=PALETTE[1])
    if hard.size:
        fig.add_hline(
            y=1 / hard.size, line_dash="dash", line_color="gray", annotation_text="uniform 1/E"
        )
    fig.update_yaxes(title="share", rangemode="tozero")
    return finish(fig, title, width, height, barmode="group")


def coactivation_heatmap(
    coact: Any,
    expert_names: Sequence[str] | None = None,
    title: str = "Co-activation (fraction of rows selecting both experts)",
    *,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """[E, E] heatmap; the diagonal is the fraction of rows selecting each expert."""
    z = as_matrix(coact, "coact")
    names = axis_names(expert_names, z.shape[0], "expert_names", "expert_")
    fig = go.Figure(heatmap_trace(z, names, names, colorscale=SEQUENTIAL, zmin=0))
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, width, height or max(260, 80 + 32 * z.shape[0]))


def _by_domain(entropy: Any, domain: Any, domain_names: Sequence[str] | None) -> list[tuple]:
    h = np.asarray(entropy, dtype=np.float64).ravel()
    dom = np.asarray(domain).astype(np.int64).ravel()
    if h.shape != dom.shape:
        raise ValueError(f"entropy has {h.size} rows but domain has {dom.size}")
    d = len(domain_names) if domain_names is not None else int(dom.max(initial=-1)) + 1
    names = axis_names(domain_names, d, "domain_names", "domain_")
    return [(names[i], h[dom == i], domain_color(i, d)) for i in range(d)]


def entropy_violin(
    entropy: Any,
    domain: Any,
    domain_names: Sequence[str] | None = None,
    title: str = "Gate entropy per row (nats)",
    *,
    max_entropy: float | None = None,
    width: int | None = None,
    height: int | None = 340,
) -> go.Figure:
    """One violin per domain of the per-row gate entropy [n] (``domain`` [n]); a dashed line at
    ``max_entropy`` (log E, a uniform gate)."""
    fig = go.Figure()
    for name, h, color in _by_domain(entropy, domain, domain_names):
        fig.add_violin(
            y=h, name=name, box_visible=True, meanline_visible=True, line_color=color, points=False
        )
    if max_entropy is not None:
        fig.add_hline(y=max_entropy, line_dash="dash", line_color="gray", annotation_text="log E")
    fig.update_yaxes(title="H(p(x)) [nats]", rangemode="tozero")
    return finish(fig, title, width, height, showlegend=False)


def entropy_histogram(
    entropy: Any,
    domain: Any,
    domain_names: Sequence[str] | None = None,
    title: str = "Gate entropy per row (nats)",
    *,
    max_entropy: float | None = None,
    nbins: int = 40,
    width: int | None = None,
    height: int | None = 320,
) -> go.Figure:
    """Overlaid per-domain histograms (probability density) of the per-row gate entropy."""
    fig = go.Figure()
    for name, h, color in _by_domain(entropy, domain, domain_names):
        fig.add_histogram(
            x=h,
            name=name,
            nbinsx=nbins,
            histnorm="probability density",
            opacity=0.55,
            marker_color=color,
        )
    if max_entropy is not None:
        fig.add_vline(x=max_entropy, line_dash="dash", line_color="gray", annotation_text="log E")
    fig.update_xaxes(title="H(p(x)) [nats]")
    return finish(fig, title, width, height, barmode="overlay")
