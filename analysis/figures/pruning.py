"""The cost of doing without experts: measured (and predicted) ΔAUC against experts kept."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from analysis.figures.style import PALETTE, finish


def prune_cost_figure(
    curve: pd.DataFrame,
    keep: int | None = None,
    title: str = "Cost of keeping fewer experts (measured, with predicted dashed)",
    *,
    width: int | None = None,
    height: int | None = 360,
) -> go.Figure:
    """One line per criterion of the measured ``delta_auc`` against ``keep`` (markers, with the
    bootstrap interval as error bars) and its ``predicted_delta_auc`` (dashed, same colour), from
    ``analysis.prune_plans.prune_curve``; ``keep`` marks the chosen budget."""
    need = ("criterion", "keep", "delta_auc", "ci_low", "ci_high", "predicted_delta_auc")
    missing = [c for c in need if c not in curve.columns]
    if missing:
        raise ValueError(f"prune curve needs columns {missing}, got {list(curve.columns)}")
    fig = go.Figure()
    for i, (crit, part) in enumerate(curve.groupby("criterion", sort=False)):
        part = part.sort_values("keep")
        color = PALETTE[i % len(PALETTE)]
        fig.add_scatter(
            x=part["keep"],
            y=part["delta_auc"],
            mode="lines+markers",
            name=f"{crit}: measured",
            line={"color": color},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": part["ci_high"] - part["delta_auc"],
                "arrayminus": part["delta_auc"] - part["ci_low"],
            },
        )
        fig.add_scatter(
            x=part["keep"],
            y=part["predicted_delta_auc"],
            mode="lines",
            name=f"{crit}: predicted",
            line={"color": color, "dash": "dash"},
        )
    if keep is not None:
        fig.add_vline(x=keep, line={"color": "#7f7f7f", "dash": "dot"})
    fig.update_xaxes(title="experts kept", dtick=1 if curve["keep"].max() <= 16 else None)
    fig.update_yaxes(title="ΔAUC against the unedited model")
    return finish(fig, title, width, height)
