"""Write a routing record as it is computed: rows in Parquet row groups, statistics as sums.

Shapes: B = rows of one ``write`` call, E = experts of a gate, k = selected experts per row,
n = sample size, H = expert output width, S = always-on shared experts.

Memory does not depend on the record's length: rows are buffered up to ``row_group_rows`` and
flushed, routing statistics are ``RoutingStats`` sums, and the expert-output sample is a bottom-n
sketch (the n rows with the smallest seeded hash of their position: a uniform sample without
replacement that does not depend on how the rows were cut into ``write`` calls).  Writers of
parts of one record (ranks, shards) pass ``row_offset`` = the rows before them; the parts then
merge into exactly the record one writer would have written (``analysis.records.merge``).
The sample itself is ``analysis.records.sample``.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.format import (
    META_FILE,
    ROWS_FILE,
    SAMPLE_FILE,
    RecordMeta,
    keep_column,
    prob_column,
    top_column,
)
from analysis.records.sample import SampleSketch
from cesaa.checkpoint import write_json
from cesaa.routing.stats import RoutingStats
from cesaa.routing.validation import to_numpy


class RecordWriter:
    """Append rows to a record folder; ``close()`` writes ``record.json`` (the commit point).

    Use as a context manager: on an exception the partial folder is removed, so no half-written
    record is ever read.  ``meta`` gives names (model, domains, gates, kept columns, data,
    command); rows, statistics, metrics and sample information are filled in by the writer.
    """

    def __init__(
        self,
        out: str | Path,
        meta: RecordMeta,
        *,
        sample_size: int = 0,
        seed: int = 0,
        row_group_rows: int = 65_536,
        overwrite: bool = False,
        row_offset: int = 0,
    ) -> None:
        self.out = Path(out)
        if (self.out / META_FILE).exists() and not overwrite:
            raise FileExistsError(f"{self.out} already holds a record; pass overwrite=True")
        if self.out.exists() and overwrite:
            for name in (META_FILE, ROWS_FILE, SAMPLE_FILE):
                (self.out / name).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        checks = (
            ("sample_size", sample_size, 0),
            ("row_group_rows", row_group_rows, 1),
            ("row_offset", row_offset, 0),
        )
        for name, v, lo in checks:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.meta = meta
        self.sample_size = int(sample_size)
        self.seed = int(seed)
        self.row_group_rows = int(row_group_rows)
        self.row_offset = int(row_offset)
        d = len(meta.domains)
        self.stats = {g.name: RoutingStats.empty(d, g.num_experts) for g in meta.gates}
        self.rows = 0
        self._hash = {"domain": hashlib.sha256(), "label": hashlib.sha256()}
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._sample = SampleSketch(self.sample_size, self.seed, meta.primary)
        self._closed = False

    # ---- writing --------------------------------------------------------------------------------

    def write(
        self,
        *,
        domain: Any,
        label: Any = None,
        prediction: Any = None,
        probs: Mapping[str, Any],
        topk: Mapping[str, Any] | None = None,
        keep: Mapping[str, Any] | None = None,
        expert_outputs: Any = None,
    ) -> None:
        """Append B rows.

        domain [B] ints in [0, D); label [B] 0/1; prediction [B] probabilities (both ``None``, and
        only then, in a record without labels: ``meta.labels`` False); ``probs`` {gate:
        [B, E]} for every gate of the metadata (rows sum to 1); ``topk`` {gate: [B, k]} for every
        sparse gate; ``keep`` {name: [B]} for every kept column.  ``expert_outputs`` (needed when
        ``sample_size`` > 0): [B, E, H] outputs of the primary gate's experts, or a function
        ``local_rows -> (outputs [m, E, H], shared [m, S, H] or None)`` called only for the rows
        that enter the sample.  Torch tensors are accepted.  Every batch is validated before
        anything is written (``ValueError`` naming the argument).
        """
        if self._closed:
            raise ValueError("the record writer is closed")
        topk, keep = dict(topk or {}), dict(keep or {})
        if self.meta.labels and (label is None or prediction is None):
            raise ValueError(
                "label and prediction are needed for every row (or write a record without "
                "labels: RecordMeta(labels=False))"
            )
        if not self.meta.labels and (label is not None or prediction is not None):
            raise ValueError(
                "this record has no labels (meta.labels False): pass no label or prediction"
            )
        gates = {g.name: g for g in self.meta.gates}
        if set(probs) != set(gates):
            raise ValueError(
                f"probs must have one entry per gate {sorted(gates)}, got {sorted(probs)}"
            )
        sparse = {g.name for g in self.meta.gates if g.top_k}
        if set(topk) != sparse:
            raise ValueError(
                f"topk must have one entry per sparse gate {sorted(sparse)}, got {sorted(topk)}"
            )
        if set(keep) != set(self.meta.kept):
            raise ValueError(
                f"keep must hold the kept columns {list(self.meta.kept)}, got {sorted(keep)}"
            )

        stats = dict(self.stats)
        clean: dict[str, dict[str, np.ndarray]] = {}
        for name, g in gates.items():
            top = None if name not in topk else to_numpy(topk[name], f"topk[{name!r}]")
            if top is not None and top.ndim == 2 and top.shape[1] != g.top_k:
                raise ValueError(
                    f"topk[{name!r}] has {top.shape[1]} columns but gate top_k={g.top_k}"
                )
            try:
                stats[name] = stats[name].update(
                    probs[name], domain, topk_idx=top, labels=label, preds=prediction
                )
            except ValueError as err:
                raise ValueError(f"gate {name!r}: {err}") from None
            clean[name] = {"p": to_numpy(probs[name], "probs").astype(np.float32)}
            if top is not None:
                clean[name]["top"] = top.astype(np.int16)
        dom = to_numpy(domain, "domain").astype(np.int32)
        n = dom.shape[0]
        if not self.meta.labels:  # stored as NaN: the columns keep one schema for every record
            label = prediction = np.full(n, np.nan, np.float32)
        kept = {}
        for name, col in keep.items():
            arr = (
                col if isinstance(col, np.ndarray) else np.asarray(to_numpy(col, f"keep[{name!r}]"))
            )
            if arr.shape != (n,):
                raise ValueError(f"keep[{name!r}] must have shape ({n},), got {arr.shape}")
            kept[name] = arr
        self.stats = stats

        cols: dict[str, np.ndarray] = {
            "row": np.arange(self.rows, self.rows + n, dtype=np.int64) + self.row_offset,
            "domain": dom,
            "label": to_numpy(label, "label").astype(np.float32),
            "prediction": to_numpy(prediction, "prediction").astype(np.float32),
        }
        for name, parts in clean.items():
            for e in range(parts["p"].shape[1]):
                cols[prob_column(name, e)] = parts["p"][:, e]
            for j in range(parts["top"].shape[1] if "top" in parts else 0):
                cols[top_column(name, j)] = parts["top"][:, j]
        for name, arr in kept.items():
            cols[keep_column(name)] = arr
        self._hash["domain"].update(dom.tobytes())  # one hash per column: independent of cuts
        self._hash["label"].update(cols["label"].tobytes())
        if self.sample_size > 0 and n > 0:
            self._sample.add(cols, expert_outputs)
        self._buffer.append(cols)
        self._buffered += n
        self.rows += n
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        cols = {k: np.concatenate([b[k] for b in self._buffer]) for k in self._buffer[0]}
        table = pa.table(cols)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.out / ROWS_FILE, table.schema)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._buffer, self._buffered = [], 0

    # ---- closing --------------------------------------------------------------------------------

    def close(self) -> RecordMeta:
        """Flush the rows, write the sample and ``record.json``; returns the final metadata."""
        if self._closed:
            return self.meta
        self._flush()
        if self._writer is None:  # no rows at all: an empty file with the full schema
            fields = [
                ("row", pa.int64()),
                ("domain", pa.int32()),
                ("label", pa.float32()),
                ("prediction", pa.float32()),
            ]
            for g in self.meta.gates:
                fields += [(prob_column(g.name, e), pa.float32()) for e in range(g.num_experts)]
                fields += [(top_column(g.name, j), pa.int16()) for j in range(g.top_k or 0)]
            fields += [(keep_column(k), pa.float64()) for k in self.meta.kept]
            pq.write_table(pa.schema(fields).empty_table(), self.out / ROWS_FILE)
        else:
            self._writer.close()
        self._closed = True
        sample_info = self._sample.write(self.out / SAMPLE_FILE)
        m = self.meta
        m.rows = self.rows
        m.stats = {name: st.to_dict() for name, st in self.stats.items()}
        m.metrics = _metrics(self.out / ROWS_FILE, m.domains) if self.rows and m.labels else {}
        m.sample = sample_info
        digest = hashlib.sha256(
            (self._hash["domain"].hexdigest() + self._hash["label"].hexdigest()).encode()
        )
        m.data = {**m.data, "rows_sha256": digest.hexdigest()}
        if self.row_offset:  # a part of a larger record (see analysis.records.merge)
            m.data["row_offset"] = self.row_offset
        m.created = m.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.out / META_FILE, m.to_dict())
        return m

    def abort(self) -> None:
        """Remove what was written (the folder, when the writer created its files only)."""
        if self._writer is not None and not self._closed:
            self._writer.close()
        self._closed = True
        for name in (META_FILE, ROWS_FILE, SAMPLE_FILE):
            (self.out / name).unlink(missing_ok=True)
        if self.out.is_dir() and not any(self.out.iterdir()):
            shutil.rmtree(self.out)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _metrics(path: Path, domains: tuple[str, ...]) -> dict[str, float]:
    """Overall and per-domain AUC / logloss from the record's label and prediction columns, and
    GAUC when the record keeps ``user_id``."""
    from cesaa.metrics import evaluate_predictions

    user = keep_column("user_id")
    have = pq.ParquetFile(path).schema_arrow.names
    t = pq.read_table(path, columns=["domain", "label", "prediction"] + [user] * (user in have))
    metrics = evaluate_predictions(
        t["label"].to_numpy(),
        t["prediction"].to_numpy().astype(np.float64),
        t["domain"].to_numpy().astype(np.int64),
        user=t[user].to_numpy(zero_copy_only=False) if user in have else None,
        domain_names=domains,
    )
    # JSON has no NaN: an undefined metric (a domain with one class) is null
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
