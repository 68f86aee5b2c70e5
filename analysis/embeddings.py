"""2-D maps of expert outputs: PCA (instant) or UMAP (slow, cached on disk).

Shapes: n = sampled rows, E = selectable experts, H = expert output width, k = experts per row.

UMAP (umap-learn) costs ~25 s to import on a cold numba cache and ~1 min of JIT compilation on
its first fit in a process, so it must never run uncached on an interactive path: compute it in a
batch job (``cesaa report``) through ``cached_projection``, and let interactive code read the
cache with ``lookup_projection`` and show PCA while nothing is cached.

A cache entry is one ``.npz`` (``xy`` [n, 2] float64 + the JSON of its key) whose name is the
sha256 of the key: the checkpoint's weights sha256, the data fingerprint, the split, the method,
its parameters, the sample size and the seed.  Files are written atomically and read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

METHODS = ("pca", "umap")
MODES = ("routed", "per_expert")
CACHE_VERSION = 1
CACHE_DIRNAME = "embeddings"
# what ``cesaa report`` projects with (umap-learn's own defaults); part of the cache key
UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": None}


# ---- projection ----------------------------------------------------------------------------------


def _points(points: Any, name: str = "points") -> np.ndarray:
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().double().numpy()
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, features], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values (shape {arr.shape})")
    return arr


def umap_available() -> bool:
    """True when umap-learn can be imported (checks the installed package, imports nothing)."""
    return importlib.util.find_spec("umap") is not None


def _import_umap() -> Any:
    try:
        import umap  # noqa: PLC0415  (lazy: ~25 s numba JIT on a cold cache)
    except ImportError as e:
        raise ValueError(
            "method='umap' needs umap-learn (pip install 'umap-learn>=0.5.5', or the cesaa "
            f"[dashboard] extra); use method='pca' instead ({e})"
        ) from None
    return umap


def project(
    points: Any,
    method: str = "pca",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """2-D coordinates [n, 2] (float64) of ``points`` [n, d].

    pca: the first two principal components (sklearn, deterministic; zeros where the data has
    fewer than two directions).  umap: umap-learn with ``random_state=seed`` (deterministic,
    single-threaded), ``n_neighbors`` capped at n - 1; ``n_neighbors``/``min_dist``/``n_epochs``
    are ignored by PCA.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = _points(points)
    n, d = x.shape
    if method == "pca":
        out = np.zeros((n, 2))
        c = min(2, n, d)
        if n >= 2 and c >= 1:
            from sklearn.decomposition import PCA

            out[:, :c] = PCA(n_components=c, svd_solver="full", random_state=seed).fit_transform(x)
        return out
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    if n < 4:
        raise ValueError(f"method='umap' needs at least 4 points, got {n}; use method='pca'")
    umap = _import_umap()
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(int(n_neighbors), n - 1),
        min_dist=float(min_dist),
        n_epochs=None if n_epochs is None else int(n_epochs),
        random_state=int(seed),
        n_jobs=1,  # a fixed random_state runs single-threaded anyway; say so to avoid its warning
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


# ---- what to project -----------------------------------------------------------------------------


def _field(sample: Any, *names: str) -> np.ndarray | None:
    for name in names:
        v = sample.get(name) if isinstance(sample, dict) else getattr(sample, name, None)
        if v is not None:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return None


def _selection(sample: Any, n: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """(selected mask [n, E] bool, mixing weights [n, E] summing to 1 over the selected)."""
    gates = _field(sample, "gates")
    probs = _field(sample, "probs")
    topk = _field(sample, "topk_idx", "selected_experts", "selected")
    if gates is not None and gates.shape == (n, e):
        weights = gates.astype(np.float64)
        mask = weights > 0
    else:
        if probs is None or probs.shape != (n, e):
            raise ValueError(
                f"sample needs probs [n={n}, E={e}] (or gates) to weight the experts' outputs, got "
                f"{None if probs is None else probs.shape}"
            )
        if topk is not None and topk.ndim == 2 and topk.dtype == bool:
            mask = topk
        elif topk is not None:
            idx = topk.reshape(n, -1).astype(np.int64)
            mask = np.zeros((n, e), dtype=bool)
            mask[np.arange(n)[:, None], idx] = True
        else:  # a dense gate: every expert is used
            mask = np.ones((n, e), dtype=bool)
        weights = np.where(mask, probs.astype(np.float64), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / e)
    return mask, weights


def expert_output_points(
    sample: Any, mode: str = "routed"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Points to project and their labels, from a sample holding ``expert_outputs`` [n, E, H],
    ``domain`` [n] and the routing (``gates`` [n, E], or ``probs`` [n, E] with ``topk_idx``
    [n, k] / a ``selected`` [n, E] mask; a dense gate when neither).

    - routed: one point per row, the row's mixed output sum_e w_e * out_e over its selected
      experts, w = the gate weights renormalized over them -> points [n, H]; labels ``domain`` [n],
      ``expert`` [n] = the row's top expert, ``row`` [n].
    - per_expert: one point per (row, selected expert) pair, that expert's output -> points
      [m, H] with m = number of selections; labels ``domain``, ``expert`` and ``row`` [m].
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out = _field(sample, "expert_outputs")
    domain = _field(sample, "domain")
    if out is None or out.ndim != 3:
        raise ValueError(
            "sample.expert_outputs must be 3-D [rows, experts, width], got "
            f"{None if out is None else out.shape}"
        )
    n, e, _ = out.shape
    if domain is None or domain.shape != (n,):
        raise ValueError(
            f"sample.domain must be 1-D [{n}], got {None if domain is None else domain.shape}"
        )
    out = out.astype(np.float64)
    domain = domain.astype(np.int64)
    mask, weights = _selection(sample, n, e)
    if mode == "routed":
        points = np.einsum("ne,neh->nh", weights, out)  # [n, H]
        top = np.where(mask, weights, -1.0).argmax(axis=1)  # [n]
        return points, {"domain": domain, "expert": top, "row": np.arange(n)}
    rows, experts = np.nonzero(mask)  # row-major: each row's experts in index order
    return out[rows, experts], {"domain": domain[rows], "expert": experts, "row": rows}


# ---- disk cache ----------------------------------------------------------------------------------


def embedding_cache_path(ckpt_dir: str | Path) -> Path:
    """Default cache folder of a checkpoint: ``<ckpt_dir>/embeddings/``."""
    return Path(ckpt_dir) / CACHE_DIRNAME


def projection_key(
    meta: dict,
    *,
    method: str,
    mode: str = "routed",
    split: str = "test",
    sample_size: int = 0,
    seed: int = 0,
    params: dict | None = None,
    data_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The key parts of a projection of a checkpoint (``meta`` = its meta.json): weights sha256,
    data fingerprint (default: the one in meta), split, method, mode, params, sample size, seed."""
    return {
        "version": CACHE_VERSION,
        "weights_sha256": meta.get("weights_sha256"),
        "data_fingerprint": data_fingerprint or meta.get("data", {}).get("fingerprint"),
        "split": split,
        "method": method,
        "mode": mode,
        "params": dict(sorted((params or {}).items())),
        "sample_size": int(sample_size),
        "seed": int(seed),
    }


def cache_key(key_parts: dict) -> str:
    """Stable hex key of ``key_parts`` (sorted-key JSON; the same dict in any order gives the same
    key)."""
    if not isinstance(key_parts, dict):
        raise ValueError(f"key_parts must be a dict, got {type(key_parts).__name__}")
    text = json.dumps(key_parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _cache_file(cache_dir: str | Path, key_parts: dict) -> Path:
    method = str(key_parts.get("method", "proj"))
    return Path(cache_dir) / f"{method}-{cache_key(key_parts)}.npz"


def lookup_projection(cache_dir: str | Path, key_parts: dict) -> np.ndarray | None:
    """The cached [n, 2] projection for ``key_parts``, or None (missing or unreadable entry)."""
    path = _cache_file(cache_dir, key_parts)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            xy = np.asarray(z["xy"], dtype=np.float64)
            stored = str(z["key"])
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable embedding cache %s: %s", path, e)
        return None
    if (
        xy.ndim != 2
        or xy.shape[1] != 2
        or stored != json.dumps(key_parts, sort_keys=True, default=str)
    ):
        log.warning("ignoring embedding cache %s: unexpected content", path)
        return None
    return xy


def cached_projection(
    cache_dir: str | Path | None, key_parts: dict, compute: Callable[[], Any]
) -> np.ndarray:
    """``compute()`` once per key: later calls with equal ``key_parts`` read ``.npz`` from
    ``cache_dir`` instead (``cache_dir=None``: no cache).  A cache that cannot be written is
    logged and skipped, never an error."""
    if cache_dir is not None:
        hit = lookup_projection(cache_dir, key_parts)
        if hit is not None:
            return hit
    xy = _points(compute(), "compute() result")
    if xy.shape[1] != 2:
        raise ValueError(f"compute() must return [n, 2] coordinates, got shape {xy.shape}")
    if cache_dir is not None:
        try:
            _write_npz(_cache_file(cache_dir, key_parts), xy, key_parts)
        except OSError as e:
            log.warning("could not write embedding cache in %s: %s", cache_dir, e)
    return xy


def _write_npz(path: Path, xy: np.ndarray, key_parts: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            key = np.array(json.dumps(key_parts, sort_keys=True, default=str))
            np.savez(f, xy=xy, key=key)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
