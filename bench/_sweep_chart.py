"""The heterogeneity sweep's map as a chart: CESAA minus the best baseline, and CESAA minus each
ablation, with 95 % intervals, along each axis of the grid (one panel per axis).

The numbers are the ones the map's table shows: each cell's point from ``bench.sweep.cell_map``.
"""

from __future__ import annotations

import math
from pathlib import Path

# (panel title, index of the coordinate that varies in (h, domains, rows per domain), the other two)
AXES = (
    ("heterogeneity h (12 domains, 3,000 rows each)", 0, {1: 12, 2: 3000}),
    ("domains (h 1, 3,000 rows each)", 1, {0: 1.0, 2: 3000}),
    ("rows per domain (h 1, 3 domains)", 2, {0: 1.0, 1: 3}),
)
GAP = "CESAA − best baseline"
DODGE = 0.02  # sideways shift between series: in h units, or in decades on the log axes


def axis_series(
    points: dict[tuple[float, int, int], dict], axis: int, fixed: dict[int, float], ablations: dict
) -> dict[str, list[tuple[float, float, float, float]]]:
    """The series of one panel: name -> [(x, mean, ci_low, ci_high)] sorted by x, over the cells
    whose coordinates other than ``axis`` equal ``fixed``.  ``GAP`` is CESAA minus the cell's best
    baseline; each ablation present is CESAA minus it (its name from ``ablations``).  Panels with
    fewer than two cells are empty (no axis to draw)."""
    cells = sorted(
        (c for c in points if all(c[i] == v for i, v in fixed.items())), key=lambda c: c[axis]
    )
    if len(cells) < 2:
        return {}

    def point(c: tuple, d: dict) -> tuple[float, float, float, float]:
        return (float(c[axis]), d["mean"], d["ci_low"], d["ci_high"])

    series = {GAP: [point(c, points[c]["gap"]) for c in cells]}
    for name, label in ablations.items():
        pts = [point(c, points[c]["mechanisms"][name]) for c in cells
               if name in points[c]["mechanisms"]]  # fmt: skip
        if pts:
            series[label] = pts
    return series


def figure(points: dict[tuple[float, int, int], dict], ablations: dict):
    """One plotly figure, a column per axis of ``AXES``: the gap to the best baseline on top, the
    ablations below, every series with its interval."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    # top row: the gap to the best baseline; bottom row: the mechanisms, on their own (smaller) scale
    fig = make_subplots(
        rows=2,
        cols=len(AXES),
        subplot_titles=[a[0] for a in AXES],
        vertical_spacing=0.1,
        shared_xaxes=True,
    )
    names = [GAP, *ablations.values()]
    symbols = ["diamond", "circle", "square", "triangle-up", "triangle-down", "x"]
    shown: set[str] = set()
    for col, (_, axis, fixed) in enumerate(AXES, start=1):
        series = axis_series(points, axis, fixed, ablations)
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        for name, pts in series.items():
            i = names.index(name)
            xs, ys, lo, hi = zip(*pts, strict=True)
            color = qualitative.Plotly[i % len(qualitative.Plotly)]
            row = 1 if i == 0 else 2
            shift = DODGE * (i - len(names) / 2)  # side by side, not on top of each other
            fig.add_scatter(
                x=[x + shift if axis == 0 else x * 10**shift for x in xs],
                y=ys,
                error_y={
                    "type": "data",
                    "array": [
                        h - y if math.isfinite(h) else 0 for y, h in zip(ys, hi, strict=True)
                    ],
                    "arrayminus": [
                        y - v if math.isfinite(v) else 0 for y, v in zip(ys, lo, strict=True)
                    ],
                },
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=name not in shown,
                legendrank=i,
                marker={
                    "symbol": symbols[i % len(symbols)],
                    "size": 11 if i == 0 else 7,
                    "color": color,
                },
                line={
                    "width": 3 if i == 0 else 1,
                    "dash": "solid" if i == 0 else "dot",
                    "color": color,
                },
                row=row,
                col=col,
            )
            shown.add(name)
        for row in (1, 2):
            fig.add_hline(y=0, line={"color": "grey", "width": 1}, row=row, col=col)
            kind = "linear" if axis == 0 else "log"
            fig.update_xaxes(tickvals=ticks, type=kind, row=row, col=col)
    fig.update_yaxes(title_text="CESAA − best baseline", row=1, col=1)
    fig.update_yaxes(title_text="CESAA − ablation", row=2, col=1)
    fig.update_layout(
        height=720,
        title="Where routing pays: test AUC differences, mean and 95 % interval over "
        f"{_seeds(points)} paired seeds",
        legend={"orientation": "h", "y": -0.15},
        template="plotly_white",
    )
    return fig


def _seeds(points: dict[tuple[float, int, int], dict]) -> str:
    """The paired seeds behind the gaps: "5", or "3-5" when cells differ."""
    ns = sorted({int(p["gap"]["n"]) for p in points.values()})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def write_png(points: dict[tuple[float, int, int], dict], ablations: dict, path: Path) -> str:
    """Write the chart as PNG (``analysis.export``, kaleido + Chromium): a line saying where, or
    why it was skipped."""
    from analysis.export import export_png

    out = export_png({path.stem: figure(points, ablations)}, path.parent, width=1400)
    return out if isinstance(out, str) else f"wrote {out[path.stem]}"
