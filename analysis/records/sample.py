"""A record's expert-output sample: a bottom-n sketch over a seeded hash of the row positions.

Shapes: B = rows of one batch, E = experts of the primary gate, n = sample size, H = expert output
width, S = always-on shared experts.

The sample is the n rows with the smallest ``row_keys`` (a splitmix64 hash of (seed, global row
position)): a uniform sample without replacement that does not depend on how the rows were cut
into batches, and whose n smallest keys over the parts of a record (``analysis.records.merge``)
or under a smaller n (``analysis.records.collection.head_sample``) are again exactly such a
sample.  Memory is bounded by n: a batch hands over only the rows that can still enter it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.format import GateInfo
from cesaa.routing.validation import to_numpy

ExpertOutputs = Callable[[np.ndarray], tuple[Any, Any]]
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """[B] uint64 splitmix64 hash of (seed, row position): the sample's sort key."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


class SampleSketch:
    """The ``size`` rows with the smallest keys seen so far, with the ``gate``'s expert outputs."""

    def __init__(self, size: int, seed: int, gate: GateInfo | None) -> None:
        self.size = size
        self.seed = seed
        self.gate = gate
        self._sample: dict[str, np.ndarray] | None = None

    def add(self, cols: dict[str, np.ndarray], outputs: Any) -> None:
        """Offer a batch's row columns (``cols["row"]``: global positions); ``outputs`` as
        ``RecordWriter.write``'s ``expert_outputs``, asked only for the rows that enter."""
        keys = row_keys(cols["row"], self.seed)
        # only this batch's size smallest keys can be among the record's smallest: the
        # expert outputs are asked for those alone (a first batch larger than the sample)
        cand = np.arange(len(keys))
        if len(keys) > self.size:
            cand = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
        if self._sample is not None and len(self._sample["key"]) >= self.size:
            cand = cand[keys[cand] < self._sample["key"].max()]
        if cand.size == 0:
            return
        if outputs is None:
            raise ValueError(
                "expert_outputs is needed for rows entering the sample (sample_size > 0)"
            )
        if callable(outputs):
            out, shared = outputs(cand)
            if out is None:
                raise ValueError(
                    "the model returned no expert outputs for the sample; record with "
                    "sample_size=0 (cesaa record --sample 0)"
                )
        else:
            out, shared = to_numpy(outputs, "expert_outputs")[cand], None
        out = to_numpy(out, "expert_outputs").astype(np.float32)
        e = self.gate.num_experts
        if out.ndim != 3 or out.shape[:2] != (cand.size, e):
            raise ValueError(
                f"expert_outputs must have shape [{cand.size}, {e}, H], got {out.shape}"
            )
        new = {k: v[cand] for k, v in cols.items()}
        new["key"] = keys[cand]
        new["out"] = out
        if shared is not None:
            new["shared"] = to_numpy(shared, "shared outputs").astype(np.float32)
        merged = (
            new
            if self._sample is None
            else {k: np.concatenate([self._sample[k], new[k]]) for k in new}
        )
        order = np.argsort(merged["key"], kind="stable")[: self.size]
        self._sample = {k: v[order] for k, v in merged.items()}

    def write(self, path: Path) -> dict[str, Any]:
        """Write the sample in row order to ``path`` (nothing when it is empty); returns the
        record's ``sample`` information."""
        info: dict[str, Any] = {"size": 0, "seed": self.seed, "requested": self.size}
        if self._sample is not None:
            s = self._sample
            order = np.argsort(s["row"])
            cols: dict[str, Any] = {
                k: v[order] for k, v in s.items() if k not in ("key", "out", "shared")
            }
            for e in range(s["out"].shape[1]):
                cols[f"out.{e}"] = list(s["out"][order, e])
            for j in range(s["shared"].shape[1] if "shared" in s else 0):
                cols[f"shared.{j}"] = list(s["shared"][order, j])
            pq.write_table(pa.table(cols), path)
            info = {
                "size": int(len(order)),
                "seed": self.seed,
                "hidden": int(s["out"].shape[2]),
                "shared": int(s["shared"].shape[1]) if "shared" in s else 0,
                "requested": self.size,
            }
        return info
