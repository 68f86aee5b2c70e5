"""In-memory encoded tables: the one format every loader produces and every model consumes.

Shapes: N = rows, C = categorical columns, M = numeric columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from cesaa.features import FeatureSpec


@dataclass
class EncodedTable:
    """Encoded rows.  Categorical index 0 means out-of-vocabulary (unseen at fit time)."""

    cat: torch.Tensor  # [N, C] long
    num: torch.Tensor  # [N, M] float32
    domain: torch.Tensor  # [N] long, in [0, D)
    label: torch.Tensor  # [N] float32 in {0, 1}
    user: torch.Tensor | None = None  # [N] long, for GAUC
    item: torch.Tensor | None = None  # [N] long, for retrieval
    time: torch.Tensor | None = None  # [N] long, for temporal splits

    def __post_init__(self) -> None:
        n = self.label.shape[0]
        for name in ("cat", "num", "domain", "user", "item", "time"):
            t = getattr(self, name)
            if t is not None and t.shape[0] != n:
                raise ValueError(f"EncodedTable.{name} has {t.shape[0]} rows, label has {n}")

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def subset(self, idx: torch.Tensor) -> EncodedTable:
        """Rows ``idx`` (positions in [0, N), a 1-D integer tensor, or a boolean mask [N]) as a
        new table.

        ``index_select`` per field, not advanced indexing: the same rows, gathered 3-5x faster on
        CPU (the trainer gathers every shuffled batch this way).
        """
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise IndexError(f"a boolean mask of shape {tuple(idx.shape)} for {len(self)} rows")
            idx = idx.nonzero().squeeze(1)
        return EncodedTable(
            **{
                name: (t.index_select(0, idx) if (t := getattr(self, name)) is not None else None)
                for name in ("cat", "num", "domain", "label", "user", "item", "time")
            }
        )

    def to(self, device: torch.device | str) -> EncodedTable:
        return EncodedTable(
            **{
                name: (getattr(self, name).to(device) if getattr(self, name) is not None else None)
                for name in ("cat", "num", "domain", "label", "user", "item", "time")
            }
        )

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[EncodedTable]:
        """Index slices of in-memory tensors (no per-row collate)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                sl = slice(start, min(start + batch_size, n))
                yield EncodedTable(
                    **{
                        name: (getattr(self, name)[sl] if getattr(self, name) is not None else None)
                        for name in ("cat", "num", "domain", "label", "user", "item", "time")
                    }
                )
            else:
                yield self.subset(order[start : start + batch_size])


@dataclass
class MultiDomainData:
    """A dataset ready for training: splits, what the model needs to know, and how to encode new rows.

    - ``encoders``: JSON-serializable vocabularies and numeric statistics (see ``cesaa.data.encoding``),
      stored in ``meta.json`` so a checkpoint can encode new files exactly as at training time.
    - ``description``: where the data came from (source kind, path, options) — also stored in meta.json.
    - ``fingerprint``: a short hash of the encoded content, so reports can tell datasets apart.
    - ``truth``: for the built-in synthetic data, the planted domain -> mechanism matrix [D, K].
    """

    train: EncodedTable
    val: EncodedTable
    test: EncodedTable
    spec: FeatureSpec
    encoders: dict = field(default_factory=dict)
    description: dict = field(default_factory=dict)
    fingerprint: str = ""
    truth: dict | None = None

    @property
    def domain_names(self) -> tuple[str, ...]:
        return self.spec.domain_names
