"""The early-stopping monitor: its score, and a check before training that it can be computed.

A monitor that is NaN on every epoch never improves: without this check training would stop after
``patience`` epochs and return the initial weights.  ``check_monitor`` refuses such a run before the
first step, naming the metric, the split and why; :class:`NoImprovementError` is raised when no
epoch improved on the initial weights (e.g. the monitor turned NaN during training).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from cesaa.data.table import EncodedTable

LOWER_IS_BETTER = {"logloss"}
DOMAIN_MONITORS = ("mean_domain_auc", "worst_domain_auc")


class NoImprovementError(RuntimeError):
    """Training finished without any epoch improving the monitor: there are no trained weights."""


def score(metrics: dict, monitor: str) -> float:
    """The monitor as a score to maximize (NaN when the metric is missing or undefined)."""
    v = metrics.get(monitor, math.nan)
    return -v if monitor in LOWER_IS_BETTER else v


def _columns(part: object) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(label, domain, user or None)`` of a split, piece by piece (a table is one piece)."""
    pieces = [part] if isinstance(part, EncodedTable) else part.chunks()
    for t in pieces:
        user = None if t.user is None else t.user.numpy()
        yield t.label.numpy(), t.domain.numpy(), user


def _undefined_reason(monitor: str, part: object) -> str | None:
    """Why ``monitor`` cannot be computed on ``part`` (None when it can)."""
    has_user = part.user is not None if isinstance(part, EncodedTable) else part.has_user
    if monitor == "gauc" and not has_user:
        return "the data has no user column (GAUC averages the AUC of each user)"
    if len(part) == 0:
        return "the split has no rows"
    if monitor == "logloss":
        return None
    classes: set[float] = set()
    dom_classes: dict[int, set[float]] = {}
    users: dict[int, tuple[float, float]] = {}  # user -> (min label, max label) so far
    for y, d, u in _columns(part):
        if monitor == "auc":
            classes.update(np.unique(y).tolist())
            if len(classes) == 2:
                return None
        elif monitor in DOMAIN_MONITORS:
            for dd in np.unique(d).tolist():
                dom_classes.setdefault(dd, set()).update(np.unique(y[d == dd]).tolist())
                if len(dom_classes[dd]) == 2:
                    return None
        else:  # gauc
            ids, lows, highs = _user_label_range(u, y)
            if lows != highs:
                return None
            for uu, lo, hi in zip(ids, lows, highs, strict=True):
                a, b = users.get(uu, (lo, hi))
                if min(a, lo) != max(b, hi):
                    return None
                users[uu] = (min(a, lo), max(b, hi))
    if monitor == "auc":
        return f"every label is {classes.pop():g} (AUC needs both classes)"
    if monitor in DOMAIN_MONITORS:
        return "no domain has both classes (a domain AUC needs both)"
    return "no user has both a positive and a negative row (each user's AUC needs both)"


def _user_label_range(u: np.ndarray, y: np.ndarray) -> tuple[list, list, list]:
    """Per distinct user of a piece: (user, min label, max label)."""
    order = np.argsort(u, kind="stable")
    us, ys = u[order], y[order]
    starts = np.flatnonzero(np.r_[True, us[1:] != us[:-1]])
    lo = np.minimum.reduceat(ys, starts)
    hi = np.maximum.reduceat(ys, starts)
    return us[starts].tolist(), lo.tolist(), hi.tolist()


def check_monitor(monitor: str, part: object, split: str = "validation") -> None:
    """Raise ``ValueError`` when ``monitor`` is undefined on ``part`` (so early stopping would
    never see an improvement), naming the metric, the split, the reason and what to use instead."""
    reason = _undefined_reason(monitor, part)
    if reason is None:
        return
    if monitor == "gauc":
        instead = "use --set train.monitor=auc (or logloss), or give the data a user column"
    elif monitor == "logloss":
        instead = "give the split some rows (a larger data set or another split)"
    else:
        instead = "use --set train.monitor=logloss, or data whose split has both labels"
    raise ValueError(
        f"train.monitor={monitor!r} cannot be computed on the {split} split: {reason}; "
        f"early stopping would never see an improvement and return untrained weights. {instead}"
    )
