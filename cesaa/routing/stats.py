"""Mergeable sufficient statistics of routing.

Shapes: N = rows in a batch, D = domains, E = selectable experts, k = experts selected per row.

A ``RoutingStats`` holds sums only, so its memory does not depend on the number of rows and two
shards combine exactly: ``a.merge(b) == RoutingStats.from_arrays(rows of a and b)`` (integer fields
exactly, float fields up to summation order).  Every measure in ``analysis.measures`` is a function
of these sums.  Stats are immutable in spirit: ``update`` and ``merge`` return new objects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from cesaa.routing.validation import RoutingArrays, check_routing_arrays

SCHEMA_VERSION = 1
_INT_FIELDS = ("count", "select_count", "coact", "labeled_count")
_FLOAT_FIELDS = ("prob_sum", "entropy_sum", "top1_margin_sum", "label_sum", "pred_sum")


@dataclass(frozen=True, eq=False)
class RoutingStats:
    """Per-domain sums over the rows seen so far.

    - ``count``: [D] int, rows per domain.
    - ``prob_sum``: [D, E] float, sum of dense gate probabilities p(x)_e.
    - ``select_count``: [D, E] int, how often each expert was selected (top-k / non-zero gate).
    - ``coact``: [E, E] int, rows in which experts e and e' were both selected (diagonal: how often
      e was selected, i.e. ``select_count.sum(0)``).
    - ``entropy_sum``: [D] float, sum of per-row gate entropy -sum_e p_e log p_e (nats).
    - ``top1_margin_sum``: [D] float, sum of (largest - second largest gate probability).
    - ``labeled_count``: [D] int, rows that came with labels and predictions.
    - ``label_sum``, ``pred_sum``: [D] float, sums of labels (positives) and of predicted
      probabilities.
    """

    count: np.ndarray
    prob_sum: np.ndarray
    select_count: np.ndarray
    coact: np.ndarray
    entropy_sum: np.ndarray
    top1_margin_sum: np.ndarray
    labeled_count: np.ndarray
    label_sum: np.ndarray
    pred_sum: np.ndarray

    def __post_init__(self) -> None:
        d, e = np.shape(self.prob_sum) if np.ndim(self.prob_sum) == 2 else (None, None)
        if d is None:
            raise ValueError(
                f"prob_sum must be 2-D [domains, experts], got shape {np.shape(self.prob_sum)}"
            )
        expected = {
            "count": (d,),
            "prob_sum": (d, e),
            "select_count": (d, e),
            "coact": (e, e),
            "entropy_sum": (d,),
            "top1_margin_sum": (d,),
            "labeled_count": (d,),
            "label_sum": (d,),
            "pred_sum": (d,),
        }
        for name, shape in expected.items():
            dtype = np.int64 if name in _INT_FIELDS else np.float64
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != shape:
                raise ValueError(f"RoutingStats.{name} must have shape {shape}, got {arr.shape}")
            object.__setattr__(self, name, arr)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls, num_domains: int, num_experts: int) -> RoutingStats:
        """Stats of zero rows for ``num_domains`` domains and ``num_experts`` experts."""
        for name, v in (("num_domains", num_domains), ("num_experts", num_experts)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        d, e = int(num_domains), int(num_experts)
        return cls(
            count=np.zeros(d, np.int64),
            prob_sum=np.zeros((d, e)),
            select_count=np.zeros((d, e), np.int64),
            coact=np.zeros((e, e), np.int64),
            entropy_sum=np.zeros(d),
            top1_margin_sum=np.zeros(d),
            labeled_count=np.zeros(d, np.int64),
            label_sum=np.zeros(d),
            pred_sum=np.zeros(d),
        )

    @classmethod
    def from_arrays(
        cls,
        probs: Any,
        domain: Any,
        num_domains: int | None = None,
        *,
        topk_idx: Any = None,
        selected: Any = None,
        labels: Any = None,
        preds: Any = None,
    ) -> RoutingStats:
        """Stats of one set of rows; ``num_domains`` defaults to ``domain.max() + 1``.

        See ``update`` for the arguments.
        """
        arrays = _check(probs, domain, topk_idx, selected, labels, preds, num_domains, None)
        return cls.empty(arrays.num_domains or 1, arrays.num_experts)._add(arrays)

    def update(
        self,
        probs: Any,
        domain: Any,
        *,
        topk_idx: Any = None,
        selected: Any = None,
        labels: Any = None,
        preds: Any = None,
    ) -> RoutingStats:
        """New stats = these stats + one batch.  ``self`` is not modified.

        probs: [N, E] dense gate probabilities (rows sum to 1); domain: [N] ints in [0, D).
        Which experts a row selected: ``topk_idx`` [N, k], or ``selected`` [N, E] (a bool mask, or
        the sparse gates themselves: non-zero = selected); with neither, the top-1 expert
        ``argmax(probs)`` (the hard routing of a dense gate).  labels [N] in {0, 1} and preds [N] in
        [0, 1] are optional and must come together.  Torch tensors are accepted.
        """
        arrays = _check(
            probs, domain, topk_idx, selected, labels, preds, self.num_domains, self.num_experts
        )
        return self._add(arrays)

    def merge(self, other: RoutingStats) -> RoutingStats:
        """Exact combination of two shards' stats (element-wise sums)."""
        if not isinstance(other, RoutingStats):
            raise ValueError(f"other must be a RoutingStats, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(
                f"cannot merge RoutingStats of shape {other.shape} (domains, experts) into "
                f"{self.shape}"
            )
        return RoutingStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def _add(self, a: RoutingArrays) -> RoutingStats:
        d, e = self.shape
        probs, domain = a.probs, a.domain
        n = probs.shape[0]
        if a.topk_idx is not None:
            sel = np.zeros((n, e), dtype=bool)
            sel[np.arange(n)[:, None], a.topk_idx] = True
        elif a.selected is not None:
            sel = a.selected
        else:
            sel = np.zeros((n, e), dtype=bool)
            sel[np.arange(n), probs.argmax(axis=1)] = True

        cell = (domain[:, None] * e + np.arange(e)).ravel()  # flat [D, E] index of every entry
        prob_sum = np.bincount(cell, weights=probs.ravel(), minlength=d * e).reshape(d, e)
        select = np.bincount(cell[sel.ravel()], minlength=d * e).reshape(d, e)
        s = sel.astype(np.float64)
        coact = np.rint(s.T @ s).astype(np.int64)  # exact: counts far below 2**53

        logs = np.log(np.where(probs > 0, probs, 1.0))
        row_entropy = -(probs * logs).sum(axis=1)
        top2 = np.sort(probs, axis=1)[:, -2:] if e > 1 else np.c_[np.zeros(n), probs]
        margin = top2[:, -1] - top2[:, 0]

        labeled = np.zeros(d, np.int64)
        label_sum = np.zeros(d)
        pred_sum = np.zeros(d)
        if a.labels is not None:
            labeled = np.bincount(domain, minlength=d)
            label_sum = np.bincount(domain, weights=a.labels, minlength=d)
            pred_sum = np.bincount(domain, weights=a.preds, minlength=d)

        return RoutingStats(
            count=self.count + np.bincount(domain, minlength=d),
            prob_sum=self.prob_sum + prob_sum,
            select_count=self.select_count + select,
            coact=self.coact + coact,
            entropy_sum=self.entropy_sum + np.bincount(domain, weights=row_entropy, minlength=d),
            top1_margin_sum=self.top1_margin_sum + np.bincount(domain, weights=margin, minlength=d),
            labeled_count=self.labeled_count + labeled,
            label_sum=self.label_sum + label_sum,
            pred_sum=self.pred_sum + pred_sum,
        )

    # ---- inspection ---------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """(D, E)."""
        return tuple(self.prob_sum.shape)  # type: ignore[return-value]

    @property
    def num_domains(self) -> int:
        return self.prob_sum.shape[0]

    @property
    def num_experts(self) -> int:
        return self.prob_sum.shape[1]

    @property
    def rows(self) -> int:
        """Total rows seen."""
        return int(self.count.sum())

    def __eq__(self, other: object) -> bool:
        """Exact equality of every field (use ``isclose`` for float sums in another order)."""
        if not isinstance(other, RoutingStats) or other.shape != self.shape:
            return False
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]

    def isclose(self, other: RoutingStats, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Integer fields equal and float fields ``np.allclose(rtol, atol)``."""
        if not isinstance(other, RoutingStats) or other.shape != self.shape:
            return False
        ints = all(np.array_equal(getattr(self, n), getattr(other, n)) for n in _INT_FIELDS)
        return ints and all(
            np.allclose(getattr(self, n), getattr(other, n), rtol=rtol, atol=atol)
            for n in _FLOAT_FIELDS
        )

    # ---- serialization ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (ints and floats in nested lists) with a schema version."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "num_domains": self.num_domains,
            "num_experts": self.num_experts,
        }
        for f in fields(self):
            out[f.name] = getattr(self, f.name).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingStats:
        """Inverse of ``to_dict``; raises ValueError on a missing field or a bad shape."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"RoutingStats schema_version must be {SCHEMA_VERSION}, got {version!r}"
            )
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"RoutingStats dict is missing fields {missing}")
        return cls(**{f.name: np.asarray(data[f.name]) for f in fields(cls)})


def _check(
    probs: Any,
    domain: Any,
    topk_idx: Any,
    selected: Any,
    labels: Any,
    preds: Any,
    num_domains: int | None,
    num_experts: int | None,
) -> RoutingArrays:
    if probs is None or domain is None:
        raise ValueError("probs and domain are required (dense gate probabilities and row domains)")
    if topk_idx is not None and selected is not None:
        raise ValueError("give topk_idx or selected, not both")
    if (labels is None) != (preds is None):
        raise ValueError("labels and preds must be given together")
    return check_routing_arrays(
        probs,
        domain,
        topk_idx=topk_idx,
        selected=selected,
        labels=labels,
        preds=preds,
        num_domains=num_domains,
        num_experts=num_experts,
    )
