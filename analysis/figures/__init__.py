"""Plotly figure builders shared by the report and the dashboard (the dashboard draws, it computes
nothing: every number comes from ``analysis`` functions and is passed in here as is).

Shapes: D = domains, E = selectable experts, K = planted mechanisms, n = sampled rows.

Every builder returns a ``go.Figure``; ``width``/``height`` in pixels fix its size (static export,
PDF pages), None lets it fill its container.  The mode bar is a display option, not part of the
figure: pass ``html_config(static=True)`` when rendering for print.
"""

from __future__ import annotations

from analysis.figures.pruning import prune_cost_figure
from analysis.figures.results import (
    embedding_scatter,
    k_curve_figure,
    knockout_heatmap,
    metric_bars,
    training_curve,
    truth_vs_learned,
)
from analysis.figures.routing import (
    activation_heatmap,
    aligned_difference_heatmap,
    coactivation_heatmap,
    entropy_histogram,
    entropy_violin,
    load_bars,
    similarity_heatmap,
)
from analysis.figures.style import DIVERGING, PALETTE, SEQUENTIAL, domain_color, html_config

__all__ = [
    "DIVERGING",
    "PALETTE",
    "SEQUENTIAL",
    "activation_heatmap",
    "aligned_difference_heatmap",
    "coactivation_heatmap",
    "domain_color",
    "embedding_scatter",
    "entropy_histogram",
    "entropy_violin",
    "html_config",
    "k_curve_figure",
    "knockout_heatmap",
    "load_bars",
    "metric_bars",
    "prune_cost_figure",
    "similarity_heatmap",
    "training_curve",
    "truth_vs_learned",
]
