"""Evaluation metrics of ranking and retrieval, as stateless functions (numpy/torch in, floats out).

Shapes: N = rows, U = users, I = items.

- ``auc``, ``gauc`` (Zhou et al. 2018), ``logloss``: click-through ranking;
- ``evaluate_predictions``: all of them overall and per domain, as the flat dict the trainer logs;
- ``recall_at_k``: retrieval, |TopK(u) ∩ GT(u)| / |GT(u)| averaged over users.

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


# ---- retrieval ----------------------------------------------------------------------------------


def _pairs(x: Any, n_users: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) index pairs of a per-user item collection: list of iterables, a scipy sparse
    matrix or a dense [U, I] 0/1 array (non-zero = member)."""
    if hasattr(x, "tocoo"):  # scipy sparse
        coo = x.tocoo()
        coo.sum_duplicates()
        if coo.shape[0] != n_users:
            raise ValueError(f"{name} has {coo.shape[0]} users but scores has {n_users}")
        keep = coo.data != 0
        return coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        arr = _numpy_2d(x, name)
        if arr.shape[0] != n_users:
            raise ValueError(f"{name} has {arr.shape[0]} users but scores has {n_users}")
        r, c = np.nonzero(arr)
        return r.astype(np.int64), c.astype(np.int64)
    x = list(x)
    if len(x) != n_users:
        raise ValueError(f"{name} has {len(x)} users but scores has {n_users}")
    items = [np.unique(np.fromiter((int(i) for i in s), dtype=np.int64)) for s in x]
    sizes = [v.size for v in items]
    rows = np.repeat(np.arange(n_users, dtype=np.int64), sizes)
    cols = np.concatenate(items) if items else np.zeros(0, np.int64)
    return rows, cols


def _numpy_2d(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [users, items], got shape {arr.shape}")
    return arr


@torch.no_grad()
def recall_at_k(scores: Any, ground_truth: Any, k: int, *, exclude: Any = None) -> float:
    """Recall@K = mean over users with a non-empty GT of |TopK(u) ∩ GT(u)| / |GT(u)|, in [0, 1].

    scores: [U, I] float scores (higher = better), or [U, >= k] integer item indices already ranked
    best-first (their first k columns are TopK).  ground_truth: per user, the relevant items: a list
    of U iterables of item ids, a scipy sparse or a dense 0/1 [U, I] matrix.  exclude: seen (e.g.
    training) items in the same formats, removed from the ranking before taking TopK (needs float
    scores); an excluded item is never counted as a hit.  Note the denominator is |GT(u)|, not
    min(k, |GT(u)|).  NaN with an ``UndefinedMetricWarning`` when every GT is empty.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    s = torch.as_tensor(_numpy_2d(scores, "scores"))
    n_users = s.shape[0]
    gt_rows, gt_cols = _pairs(ground_truth, n_users, "ground_truth")
    if s.is_floating_point():
        n_items = s.shape[1]
        if torch.isnan(s).any():
            raise ValueError("scores has NaN")
        if k > n_items:
            raise ValueError(f"k={k} exceeds the number of items ({n_items} columns of scores)")
        if exclude is not None:
            ex_rows, ex_cols = _pairs(exclude, n_users, "exclude")
            if ex_cols.size and ex_cols.max() >= n_items:
                raise ValueError(f"exclude has item ids outside [0, {n_items}): {ex_cols.max()}")
            s = s.double().clone()
            s[torch.from_numpy(ex_rows), torch.from_numpy(ex_cols)] = -math.inf
        values, top = torch.topk(s, k, dim=1)
        top, keep = top.numpy().astype(np.int64), (values > -math.inf).numpy()
    else:
        if exclude is not None:
            raise ValueError("exclude needs float scores [users, items], got ranked item indices")
        if s.shape[1] < k:
            raise ValueError(f"scores holds {s.shape[1]} ranked items per user, fewer than k={k}")
        top = s[:, :k].numpy().astype(np.int64)
        if top.size and top.min() < 0:
            raise ValueError(f"scores (item indices) has negative values: {top.min()}")
        srt = np.sort(top, axis=1)
        dup = srt[:, 1:] == srt[:, :-1]
        if dup.any():
            r, c = (int(v) for v in np.argwhere(dup)[0])
            raise ValueError(f"scores (item indices) row {r} ranks item {int(srt[r, c])} twice")
        keep = np.ones_like(top, dtype=bool)
        n_items = int(max(top.max(initial=-1), gt_cols.max(initial=-1))) + 1
    if gt_cols.size and (gt_cols.min() < 0 or gt_cols.max() >= n_items):
        raise ValueError(
            f"ground_truth has item ids outside [0, {n_items}): "
            f"{[int(gt_cols.min()), int(gt_cols.max())]}"
        )
    gt_size = np.bincount(gt_rows, minlength=n_users)
    users = np.broadcast_to(np.arange(n_users)[:, None], top.shape)
    hit = np.isin(users * n_items + top, gt_rows * n_items + gt_cols) & keep
    hits = hit.sum(axis=1)
    has_gt = gt_size > 0
    if not has_gt.any():
        warnings.warn(
            "recall_at_k is undefined when every ground-truth set is empty; returning NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return math.nan
    return float(np.mean(hits[has_gt] / gt_size[has_gt]))
