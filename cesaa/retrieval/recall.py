"""Recall@K of a retrieval ranking, as a stateless function (numpy/torch in, a float out).

Shapes: U = users, I = items.  ``recall_at_k``: |TopK(u) ∩ GT(u)| / |GT(u)| averaged over users
with a non-empty ground truth; the relevant and excluded items come as lists of ids, a scipy
sparse matrix or a dense 0/1 [U, I] array.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning


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
