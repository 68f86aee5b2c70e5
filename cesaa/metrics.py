"""Evaluation metrics of click-through ranking, as stateless functions (numpy/torch in, floats out).

Shapes: N = rows, U = users, I = items.

- ``auc``, ``gauc`` (Zhou et al. 2018), ``logloss``: click-through ranking;
- ``evaluate_predictions``: all of them overall and per domain, as the flat dict the trainer logs.

Retrieval's Recall@K is ``cesaa.retrieval.recall.recall_at_k``.

An undefined AUC (one class only) is NaN with an ``UndefinedMetricWarning``, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

LOGLOSS_EPS = 1e-7


# ---- input checks --------------------------------------------------------------------------------


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        x = x.numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [rows], got shape {arr.shape}")
    return arr


def _check_yp(y: Any, p: Any, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    y, p = _numpy(y, "y"), _numpy(p, "p")
    if y.shape != p.shape:
        raise ValueError(f"p has {p.shape[0]} rows but y has {y.shape[0]}")
    try:
        y, p = y.astype(np.float64), p.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"y and p must be numeric, got dtypes {y.dtype} and {p.dtype}") from None
    bad_y = (y != 0) & (y != 1)
    if bad_y.any():
        raise ValueError(
            f"y must hold 0/1 labels, got values such as {np.unique(y[bad_y])[:5].tolist()}"
        )
    if not np.isfinite(p).all():
        raise ValueError(
            f"p has NaN or infinite values (first at row {int(np.flatnonzero(~np.isfinite(p))[0])})"
        )
    if probabilities and p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"p must be probabilities in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]"
        )
    return y, p


def _undefined(what: str, y: np.ndarray) -> float:
    situation = "no rows" if y.size == 0 else f"only one class (all {int(y[0])}) in {y.size} rows"
    warnings.warn(
        f"{what} is undefined with {situation}; returning NaN", UndefinedMetricWarning, stacklevel=3
    )
    return math.nan


# ---- ranking ------------------------------------------------------------------------------------


def auc(y: Any, p: Any) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties count 1/2.

    In [0, 1].  y: [N] 0/1 labels; p: [N] scores (any monotone transform gives the same AUC).
    NaN with an ``UndefinedMetricWarning`` when y has only one class or no rows.
    """
    y, p = _check_yp(y, p)
    return _auc(y, p, "auc")


def _auc(y: np.ndarray, p: np.ndarray, what: str) -> float:
    if y.size == 0 or y.min() == y.max():
        return _undefined(what, y)
    return float(roc_auc_score(y, p))


def gauc(y: Any, p: Any, user: Any) -> float:
    """Group AUC (Zhou et al. 2018): sum_u w_u AUC_u / sum_u w_u with w_u = impressions (rows) of u.

    Users whose rows have a single class are skipped (their AUC is undefined).  In [0, 1]; NaN with
    an ``UndefinedMetricWarning`` when no user has both classes.  ``user``: any hashable ids.
    Vectorized: one sort by (user, score), then Mann-Whitney U with average ranks for ties,
    AUC_u = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg).
    """
    y, p = _check_yp(y, p)
    user = _numpy(user, "user")
    if user.shape != y.shape:
        raise ValueError(f"user has {user.shape[0]} rows but y has {y.shape[0]}")
    return _gauc(y, p, user, "gauc")


def _gauc(y: np.ndarray, p: np.ndarray, user: np.ndarray, what: str) -> float:
    auc_u, weight = _per_user_auc(y, p, user)
    valid = ~np.isnan(auc_u)
    if not valid.any():
        situation = (
            "no rows" if y.size == 0 else f"no user having both classes ({auc_u.size} users)"
        )
        warnings.warn(
            f"{what} is undefined with {situation}; returning NaN",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return math.nan
    return float(np.sum(weight[valid] * auc_u[valid]) / np.sum(weight[valid]))


def _per_user_auc(y: np.ndarray, p: np.ndarray, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUC_u [U] with NaN for single-class users, impressions [U]), users in factorized order."""
    codes, uniques = pd.factorize(user)
    n_users = len(uniques)
    if y.size == 0:
        return np.full(0, np.nan), np.zeros(0)
    order = np.lexsort((p, codes))  # by user, then by score
    c, s, yy = codes[order], p[order], y[order]
    counts = np.bincount(codes, minlength=n_users)
    starts = np.cumsum(counts) - counts  # first sorted position of each user
    new_run = np.r_[True, (c[1:] != c[:-1]) | (s[1:] != s[:-1])]  # runs of tied scores
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], c.size]  # exclusive
    avg_pos = (run_start + run_end - 1) / 2.0  # mean sorted position over a tie run
    rank = avg_pos[np.cumsum(new_run) - 1] - starts[c] + 1.0  # 1-based rank within the user
    n_pos = np.bincount(c, weights=yy, minlength=n_users)
    rank_pos = np.bincount(c, weights=rank * yy, minlength=n_users)
    n_neg = counts - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_u = (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc_u[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc_u, counts.astype(np.float64)


def logloss(y: Any, p: Any, eps: float = LOGLOSS_EPS) -> float:
    """Binary cross-entropy -mean(y log p + (1 - y) log(1 - p)) in nats, p clipped to [eps, 1-eps].

    In [0, -log(eps)] (about 16.1 for eps = 1e-7).  p: [N] probabilities in [0, 1].  NaN with an
    ``UndefinedMetricWarning`` when there are no rows.
    """
    y, p = _check_yp(y, p, probabilities=True)
    return _logloss(y, p, eps, "logloss")


def _logloss(y: np.ndarray, p: np.ndarray, eps: float, what: str) -> float:
    if y.size == 0:
        return _undefined(what, y)
    q = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


# ---- per-domain evaluation ----------------------------------------------------------------------


def evaluate_predictions(
    y: Any,
    p: Any,
    domain: Any,
    user: Any = None,
    domain_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All ranking metrics overall and per domain, as one flat dict.

    Keys: ``auc``, ``gauc`` (only with ``user``), ``logloss``, ``rows``, ``pos_rate``,
    ``mean_domain_auc`` (mean of the defined domain AUCs), ``worst_domain_auc`` (their minimum) and
    for each domain name ``auc/<name>``, ``gauc/<name>``, ``logloss/<name>``, ``rows/<name>``,
    ``pos_rate/<name>``.  y: [N] 0/1; p: [N] probabilities; domain: [N] ints in [0, D) with
    D = len(domain_names) (default names ``domain_<d>``, D = max + 1).  A domain with one class gets
    a NaN AUC and a warning; a domain without rows gets NaN metrics and rows 0.
    """
    y, p = _check_yp(y, p, probabilities=True)
    dom = _numpy(domain, "domain")
    if dom.shape != y.shape:
        raise ValueError(f"domain has {dom.shape[0]} rows but y has {y.shape[0]}")
    if dom.size and not np.issubdtype(dom.dtype, np.integer):
        if not (np.isfinite(dom.astype(np.float64)).all() and (dom == np.round(dom)).all()):
            raise ValueError(f"domain must hold integers, got dtype {dom.dtype}")
    dom = dom.astype(np.int64)
    if user is not None:
        user = _numpy(user, "user")
        if user.shape != y.shape:
            raise ValueError(f"user has {user.shape[0]} rows but y has {y.shape[0]}")
    n_dom = (
        len(domain_names) if domain_names is not None else (int(dom.max()) + 1 if dom.size else 0)
    )
    names = (
        [str(n) for n in domain_names]
        if domain_names is not None
        else [f"domain_{d}" for d in range(n_dom)]
    )
    bad = (dom < 0) | (dom >= n_dom)
    if bad.any():
        raise ValueError(
            f"domain has values outside [0, {n_dom}): {np.unique(dom[bad])[:5].tolist()}"
        )

    out: dict[str, float] = {"auc": _auc(y, p, "auc")}
    if user is not None:
        out["gauc"] = _gauc(y, p, user, "gauc")
    out["logloss"] = _logloss(y, p, LOGLOSS_EPS, "logloss") if y.size else math.nan
    out["rows"] = int(y.size)
    out["pos_rate"] = float(y.mean()) if y.size else math.nan
    domain_aucs = []
    for d, name in enumerate(names):
        m = dom == d
        yd, pd_ = y[m], p[m]
        n = int(m.sum())
        out[f"auc/{name}"] = _auc(yd, pd_, f"auc/{name}") if n else math.nan
        if user is not None:
            out[f"gauc/{name}"] = _gauc(yd, pd_, user[m], f"gauc/{name}") if n else math.nan
        out[f"logloss/{name}"] = (
            _logloss(yd, pd_, LOGLOSS_EPS, f"logloss/{name}") if n else math.nan
        )
        out[f"rows/{name}"] = n
        out[f"pos_rate/{name}"] = float(yd.mean()) if n else math.nan
        domain_aucs.append(out[f"auc/{name}"])
    defined = [a for a in domain_aucs if not math.isnan(a)]
    out["mean_domain_auc"] = float(np.mean(defined)) if defined else math.nan
    out["worst_domain_auc"] = float(np.min(defined)) if defined else math.nan
    return out


def metrics_table(
    metrics: dict[str, float], domain_names: Sequence[str] | None = None, prefix: str = ""
) -> pd.DataFrame:
    """The dict of ``evaluate_predictions`` as a table for printing.

    Rows: "overall" then each domain; columns AUC, GAUC, logloss, rows, pos_rate (NaN where a key
    is absent, e.g. GAUC without users).  ``domain_names`` default to those found in the
    ``auc/<name>`` keys; ``prefix`` is prepended to every key (e.g. "val/" for logged metrics).
    """
    if domain_names is None:
        head = f"{prefix}auc/"
        domain_names = [k[len(head) :] for k in metrics if k.startswith(head)]
    cols = {
        "AUC": "auc",
        "GAUC": "gauc",
        "logloss": "logloss",
        "rows": "rows",
        "pos_rate": "pos_rate",
    }
    table = {}
    for label, suffix in [("overall", ""), *((str(n), f"/{n}") for n in domain_names)]:
        table[label] = {
            c: float(metrics.get(f"{prefix}{k}{suffix}", math.nan)) for c, k in cols.items()
        }
    df = pd.DataFrame.from_dict(table, orient="index", columns=list(cols))
    if "rows" not in metrics and f"{prefix}rows" not in metrics and len(df) > 1:
        df.loc["overall", "rows"] = df["rows"].iloc[1:].sum()
    df.index.name = "domain"
    return df
