"""Paired row bootstrap of an AUC difference between two predictions of the same rows.

Shapes: N = rows, R = bootstrap replicates.

Each replicate draws N rows with replacement (the same draw for both predictions: paired) and
computes AUC(p1) - AUC(p0) on it, as an AUC with integer row weights (the number of times each
row was drawn; ties count one half).  The interval is the percentile interval of the R
differences.  A replicate that draws a single class has no AUC and is skipped; fewer than half
the replicates defined gives NaN bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.validation import to_numpy


def weighted_auc(y: Any, p: Any, w: Any) -> np.ndarray:
    """AUC of scores ``p`` [N] for labels ``y`` [N] (0/1) under each row of weights ``w`` [R, N]
    (or [N]): P(p_pos > p_neg) + 0.5 P(tie) with pairs weighted by w_pos * w_neg.  [R] (or a
    0-d array); NaN where a class has zero weight."""
    y = to_numpy(y, "y").astype(bool)
    p = to_numpy(p, "p").astype(np.float64)
    w = np.atleast_2d(to_numpy(w, "w").astype(np.float64))
    if y.shape != p.shape or w.shape[1] != y.shape[0]:
        raise ValueError(f"y {y.shape}, p {p.shape} and w {w.shape} must describe the same rows")
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    # each sorted row's tie group [start, end): rows with equal scores
    new = np.r_[True, ps[1:] != ps[:-1]]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], ps.size]
    neg = np.where(ys, 0.0, ws)  # [R, N]
    cum = np.concatenate([np.zeros((ws.shape[0], 1)), np.cumsum(neg, axis=1)], axis=1)
    below = cum[:, starts[group]]  # negative weight strictly below each row's score
    tied = cum[:, ends[group]] - below
    pos = np.where(ys, ws, 0.0)
    num = (pos * (below + 0.5 * tied)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out if to_numpy(w, "w").ndim == 2 else out[0]


def paired_auc_delta_ci(
    y: Any,
    p0: Any,
    p1: Any,
    *,
    reps: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of AUC(p1) - AUC(p0) over ``reps`` paired row bootstraps."""
    y = to_numpy(y, "y")
    n = y.shape[0]
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be a positive int, got {reps!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n == 0:
        return float("nan"), float("nan")
    w = bootstrap_weights(n, reps, seed)
    return percentile_interval(weighted_auc(y, p1, w) - weighted_auc(y, p0, w), level)


def bootstrap_weights(n: int, reps: int, seed: int = 0) -> np.ndarray:
    """[reps, n] row counts of ``reps`` draws of n rows with replacement (``numpy`` seed)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(reps)])


def percentile_interval(d: Any, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of the replicates ``d`` [R] (NaN ones skipped; NaN
    bounds when fewer than half are defined)."""
    d = to_numpy(d, "d").astype(np.float64)
    ok = d[np.isfinite(d)]
    if ok.size < d.size / 2 or ok.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(ok, a)), float(np.quantile(ok, 1 - a))
