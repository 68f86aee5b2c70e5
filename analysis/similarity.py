"""Which experts are redundant: similarity of their outputs on the same rows, overlap of the rows
routed to them, and the hierarchical-clustering orders that make D x E heatmaps readable at
D = 50, E = 32.

Shapes: n = rows, E = experts, H = expert output width, k = experts selected per row.

- **Linear CKA** (Kornblith et al. 2019) of two experts' outputs X, Y [n, H] on the same rows::

      CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)      (Xc, Yc: column-centred)

  Range [0, 1]; 1 = one output is an orthogonal transform times a scale of the other (the two
  experts carry the same information); 0 = no linear relation.  Invariant to rotations and
  isotropic scaling, **not** to arbitrary invertible linear maps.  With n <= H it is biased upward
  (every two random experts look similar): use n >> H rows.
- **Cosine** of the mean-centred outputs, flattened: 1 = identical up to a positive scale, -1 =
  opposite, 0 = orthogonal.  It needs both experts in the same output space (same H, unit for
  unit), which holds for the stacked experts of one model.
- **Routing overlap**: Jaccard |R_i & R_j| / |R_i | R_j| of the row sets routed to each expert;
  1 = always selected together, 0 = never.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
from scipy.spatial.distance import pdist, squareform

from analysis.validation import check_routing_arrays, to_numpy

METHODS = ("cka", "cosine")


def _outputs(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x, name).astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, width], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return arr


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA of ``x`` [n, H1] and ``y`` [n, H2] (same rows); NaN when either is constant."""
    x, y = _outputs(x, "x"), _outputs(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"linear CKA needs at least 2 rows, got {x.shape[0]}")
    xc, yc = x - x.mean(0), y - y.mean(0)
    num = np.linalg.norm(yc.T @ xc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


def expert_similarity(expert_outputs: Any, method: str = "cka") -> np.ndarray:
    """[E, E] similarity of every pair of experts' outputs ``expert_outputs`` [n, E, H] on the
    same n rows: ``"cka"`` (linear CKA) or ``"cosine"`` (of the mean-centred outputs)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    out = to_numpy(expert_outputs, "expert_outputs").astype(np.float64)
    if out.ndim != 3:
        raise ValueError(f"expert_outputs must be 3-D [rows, experts, width], got {out.shape}")
    if out.shape[0] < 2:
        raise ValueError(f"expert_outputs needs at least 2 rows, got {out.shape[0]}")
    centred = out - out.mean(axis=0, keepdims=True)  # [n, E, H]
    e = out.shape[1]
    if method == "cosine":
        flat = centred.transpose(1, 0, 2).reshape(e, -1)  # [E, n*H]
        norms = np.linalg.norm(flat, axis=1)
        sim = flat @ flat.T / np.outer(norms, norms).clip(min=1e-300)
        sim[norms == 0, :] = np.nan
        sim[:, norms == 0] = np.nan
        return sim
    grams = np.einsum("nih,njg->ijhg", centred, centred)  # [E, E, H, H] cross-covariances
    fro2 = (grams**2).sum(axis=(2, 3))  # [E, E] ||Xj^T Xi||_F^2
    self_norm = np.sqrt(np.diag(fro2))  # [E] ||Xi^T Xi||_F
    den = np.outer(self_norm, self_norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, fro2 / den, np.nan)


def routing_overlap(topk_idx: Any, num_experts: int) -> np.ndarray:
    """[E, E] Jaccard overlap of the row sets routed to each pair of experts (diagonal 1 for an
    expert with rows, NaN for a pair where neither has any)."""
    arr = check_routing_arrays(topk_idx=topk_idx, num_experts=num_experts)
    sel = np.zeros((arr.topk_idx.shape[0], num_experts), dtype=np.float64)
    np.put_along_axis(sel, arr.topk_idx, 1.0, axis=1)
    both = sel.T @ sel  # [E, E]
    count = np.diag(both)
    union = count[:, None] + count[None, :] - both
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, both / union, np.nan)


def cluster_order(profiles: Any, *, metric: str = "euclidean") -> np.ndarray:
    """Leaf order [R] of average-linkage hierarchical clustering of the rows of ``profiles``
    [R, C] (e.g. each domain's P(e | d)), with the optimal leaf ordering so that neighbours are
    similar.  ``metric`` is any ``scipy.spatial.distance.pdist`` metric; with fewer than 3 rows
    the natural order."""
    p = to_numpy(profiles, "profiles").astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"profiles must be 2-D [items, features], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("profiles has NaN or infinite values")
    if p.shape[0] < 3:
        return np.arange(p.shape[0])
    dist = np.nan_to_num(pdist(p, metric=metric), nan=0.0)
    z = linkage(dist, method="average")
    return leaves_list(optimal_leaf_ordering(z, dist)).astype(np.int64)


def similarity_order(similarity: Any) -> np.ndarray:
    """Leaf order [E] for a symmetric similarity matrix [E, E] in [-1, 1] (distance 1 - s;
    NaN = unrelated)."""
    s = to_numpy(similarity, "similarity").astype(np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be square [E, E], got shape {s.shape}")
    if s.shape[0] < 3:
        return np.arange(s.shape[0])
    d = 1.0 - np.nan_to_num(s, nan=0.0)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    cond = squareform(d.clip(min=0.0), checks=False)
    z = linkage(cond, method="average")
    return leaves_list(optimal_leaf_ordering(z, cond)).astype(np.int64)
