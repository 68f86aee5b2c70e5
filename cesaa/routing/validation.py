"""The one input check every public analysis function goes through.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Errors are ``ValueError`` whose message names the argument and shows the bad shape or value, e.g.
``probs must be 2-D [rows, experts], got shape (5,)`` or ``domain has values outside [0, 3): [7]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_MAX_SHOWN = 5  # bad values listed in a message
MAX_INFERRED = 1 << 20  # largest domain / expert count inferred from index values (not allocated)


@dataclass(frozen=True)
class RoutingArrays:
    """Validated routing arrays (numpy; ``None`` for what was not given).

    - ``probs``: [N, E] float64, non-negative, rows summing to 1.
    - ``domain``: [N] int64 in [0, num_domains).
    - ``topk_idx``: [N, k] int64 in [0, num_experts), no expert twice in a row.
    - ``selected``: [N, E] bool (non-zero entries of what was passed).
    - ``expert``: [N] or [N, k] int64 hard assignments in [0, num_experts).
    - ``joint``: [D, E] float64, non-negative (counts or probabilities).
    - ``labels``: [N] float64 in {0, 1}; ``preds``: [N] float64 in [0, 1].
    """

    probs: np.ndarray | None
    domain: np.ndarray | None
    topk_idx: np.ndarray | None
    selected: np.ndarray | None
    expert: np.ndarray | None
    joint: np.ndarray | None
    labels: np.ndarray | None
    preds: np.ndarray | None
    num_domains: int | None
    num_experts: int | None


def to_numpy(x: Any, name: str, dtype: Any = None) -> np.ndarray:
    """``x`` (array-like or torch tensor, detached and moved to the CPU) as a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {err}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _shown(values: np.ndarray) -> list:
    vals = np.unique(values)[:_MAX_SHOWN].tolist()
    return [int(v) if float(v).is_integer() else float(v) for v in vals]


def _ndim(arr: np.ndarray, name: str, ndim: int, layout: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {arr.shape}")


def _finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return
    bad = np.isnan(arr)
    if bad.any():
        pos = np.argwhere(bad)[0]
        raise ValueError(f"{name} has NaN (first at index {tuple(int(i) for i in pos)})")
    bad = np.isinf(arr)
    if bad.any():
        pos = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} has infinite values (first at index {tuple(int(i) for i in pos)})"
        )


def _integers(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    _finite(arr, name)
    frac = arr != np.round(arr)
    if frac.any():
        raise ValueError(
            f"{name} must hold integers, got {arr.dtype} values such as {_shown(arr[frac])}"
        )
    return arr.astype(np.int64)


def _in_range(arr: np.ndarray, name: str, high: int | None) -> None:
    bad = (arr < 0) if high is None else ((arr < 0) | (arr >= high))
    if bad.any():
        bound = "[0, inf)" if high is None else f"[0, {high})"
        raise ValueError(f"{name} has values outside {bound}: {_shown(arr[bad])}")
    if high is None and arr.size and arr.max() >= MAX_INFERRED:  # the count is inferred from it
        raise ValueError(
            f"{name} has index {int(arr.max())}: more than {MAX_INFERRED} domains/experts "
            "inferred; pass num_domains / num_experts if that is really meant"
        )


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_routing_arrays(
    probs: Any = None,
    domain: Any = None,
    *,
    topk_idx: Any = None,
    selected: Any = None,
    expert: Any = None,
    joint: Any = None,
    labels: Any = None,
    preds: Any = None,
    num_domains: int | None = None,
    num_experts: int | None = None,
    atol: float = 1e-3,
) -> RoutingArrays:
    """Validate whichever routing arrays are given and return them as clean numpy arrays.

    Checks: dimensionality, NaN/inf, dtype (integer arrays must hold whole numbers), value ranges
    (``probs`` >= 0 with rows summing to 1 within ``atol``; indices in ``[0, num_experts)`` and
    ``[0, num_domains)``), that row counts agree across arrays, and that expert counts agree
    (columns of ``probs``/``selected``/``joint`` and ``num_experts``).  When ``num_domains`` is not
    given it is taken from ``joint`` or else inferred as ``domain.max() + 1``; ``num_experts``
    likewise from the arrays' columns.  Torch tensors are accepted (detached, moved to the CPU).

    Raises ``ValueError`` naming the argument, e.g. ``probs rows must sum to 1 (row 4 sums to
    0.62)`` or ``domain has 10 rows but probs has 12``.
    """
    n_dom = _positive_int(num_domains, "num_domains")
    n_exp = _positive_int(num_experts, "num_experts")
    widths: list[tuple[str, int]] = [("num_experts", n_exp)] if n_exp is not None else []
    rows: list[tuple[str, int]] = []

    if probs is not None:
        probs = to_numpy(probs, "probs").astype(np.float64)
        _ndim(probs, "probs", 2, "[rows, experts]")
        _finite(probs, "probs")
        if probs.shape[1] == 0:
            raise ValueError(f"probs must have at least one expert column, got shape {probs.shape}")
        if (probs < 0).any():
            r = int(np.argwhere(probs < 0)[0, 0])
            raise ValueError(f"probs has negative values (row {r} has min {probs[r].min():.4g})")
        sums = probs.sum(axis=1)
        off = np.abs(sums - 1.0) > atol
        if off.any():
            r = int(np.flatnonzero(off)[0])
            raise ValueError(f"probs rows must sum to 1 (row {r} sums to {sums[r]:.4g})")
        widths.append(("probs", probs.shape[1]))
        rows.append(("probs", probs.shape[0]))

    if selected is not None:
        selected = to_numpy(selected, "selected")
        _ndim(selected, "selected", 2, "[rows, experts]")
        _finite(selected, "selected")
        selected = selected != 0
        widths.append(("selected", selected.shape[1]))
        rows.append(("selected", selected.shape[0]))

    if joint is not None:
        joint = to_numpy(joint, "joint").astype(np.float64)
        _ndim(joint, "joint", 2, "[domains, experts]")
        _finite(joint, "joint")
        if (joint < 0).any():
            raise ValueError(f"joint has negative values: {_shown(joint[joint < 0])}")
        if n_dom is not None and joint.shape[0] != n_dom:
            raise ValueError(f"joint has {joint.shape[0]} domains (rows) but num_domains={n_dom}")
        n_dom = joint.shape[0] if n_dom is None else n_dom
        widths.append(("joint", joint.shape[1]))

    if widths:
        ref_name, ref = widths[0]
        for name, width in widths[1:]:
            if width != ref:
                ref_txt = (
                    f"num_experts={ref}" if ref_name == "num_experts" else f"{ref_name} has {ref}"
                )
                raise ValueError(f"{name} has {width} experts (columns) but {ref_txt}")
        n_exp = ref

    if topk_idx is not None:
        topk_idx = _integers(to_numpy(topk_idx, "topk_idx"), "topk_idx")
        _ndim(topk_idx, "topk_idx", 2, "[rows, k]")
        _in_range(topk_idx, "topk_idx", n_exp)
        _no_repeats(topk_idx, "topk_idx")
        rows.append(("topk_idx", topk_idx.shape[0]))

    if expert is not None:
        expert = _integers(to_numpy(expert, "expert"), "expert")
        if expert.ndim not in (1, 2):
            raise ValueError(
                f"expert must be 1-D [rows] or 2-D [rows, k], got shape {expert.shape}"
            )
        _in_range(expert, "expert", n_exp)
        if expert.ndim == 2:
            _no_repeats(expert, "expert")
        rows.append(("expert", expert.shape[0]))

    if domain is not None:
        domain = _integers(to_numpy(domain, "domain"), "domain")
        _ndim(domain, "domain", 1, "[rows]")
        _in_range(domain, "domain", n_dom)
        if n_dom is None:
            n_dom = int(domain.max()) + 1 if domain.size else None
        rows.append(("domain", domain.shape[0]))

    if labels is not None:
        labels = to_numpy(labels, "labels").astype(np.float64)
        _ndim(labels, "labels", 1, "[rows]")
        _finite(labels, "labels")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            raise ValueError(f"labels must be 0/1, got values {_shown(labels[bad])}")
        rows.append(("labels", labels.shape[0]))

    if preds is not None:
        preds = to_numpy(preds, "preds").astype(np.float64)
        _ndim(preds, "preds", 1, "[rows]")
        _finite(preds, "preds")
        bad = (preds < 0) | (preds > 1)
        if bad.any():
            raise ValueError(f"preds must be probabilities in [0, 1], got {_shown(preds[bad])}")
        rows.append(("preds", preds.shape[0]))

    for name, n in rows[1:]:
        if n != rows[0][1]:
            raise ValueError(f"{name} has {n} rows but {rows[0][0]} has {rows[0][1]}")

    return RoutingArrays(
        probs=probs,
        domain=domain,
        topk_idx=topk_idx,
        selected=selected,
        expert=expert,
        joint=joint,
        labels=labels,
        preds=preds,
        num_domains=n_dom,
        num_experts=n_exp,
    )


def _no_repeats(idx: np.ndarray, name: str) -> None:
    if idx.shape[1] < 2 or idx.shape[0] == 0:
        return
    srt = np.sort(idx, axis=1)
    dup = srt[:, 1:] == srt[:, :-1]
    if dup.any():
        r, c = (int(v) for v in np.argwhere(dup)[0])
        raise ValueError(f"{name} row {r} selects expert {int(srt[r, c])} twice")
