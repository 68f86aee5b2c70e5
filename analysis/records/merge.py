"""Merge records written in parts (several ranks or shards) into one record.

Parts are written with ``RecordWriter(..., row_offset=rows before this part)``, so each row keeps
its global position.  Rows are copied row group by row group (one in memory at a time), routing
statistics add up (``RoutingStats.merge``), and because the sample is a bottom-n sketch of a hash
of the global position, the n smallest keys of the parts' samples are exactly the sample one
writer would have drawn.  Metrics and the rows' hash are recomputed from the merged rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.format import META_FILE, ROWS_FILE, SAMPLE_FILE, RecordError
from analysis.records.reader import Record, open_record
from analysis.records.sample import row_keys
from analysis.records.writer import _metrics
from cesaa.checkpoint import write_json


def merge_records(
    parts: Sequence[str | Path], out: str | Path, *, command: str = "", overwrite: bool = False
) -> Record:
    """One record at ``out`` from ``parts`` (any order; their rows must tile 0..N-1)."""
    if not parts:
        raise ValueError("merge_records needs at least one part")
    recs = sorted((open_record(p) for p in parts), key=lambda r: r.meta.data.get("row_offset", 0))
    first = recs[0].meta
    expected = 0
    for r in recs:
        m = r.meta
        for key in ("domains", "gates", "kept", "always_on", "model_name", "labels"):
            if getattr(m, key) != getattr(first, key):
                raise RecordError(f"{r.path}: {key} differs from {recs[0].path}'s; cannot merge")
        if m.sample.get("seed") != first.sample.get("seed"):
            raise RecordError(f"{r.path}: sample seed differs from {recs[0].path}'s")
        offset = m.data.get("row_offset", 0)
        if offset != expected:
            raise RecordError(
                f"{r.path}: starts at row {offset} but the parts before it end at row {expected} "
                "(write each part with row_offset = the rows before it)"
            )
        expected += m.rows
    out = Path(out)
    if (out / META_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a record; pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)

    hashes = {"domain": hashlib.sha256(), "label": hashlib.sha256()}
    writer = None
    try:
        for r in recs:
            pf = pq.ParquetFile(r.path / ROWS_FILE)
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i)
                if writer is None:
                    writer = pq.ParquetWriter(out / ROWS_FILE, t.schema)
                writer.write_table(t)
                hashes["domain"].update(t["domain"].to_numpy().astype(np.int32).tobytes())
                hashes["label"].update(t["label"].to_numpy().astype(np.float32).tobytes())
        if writer is None:
            pq.write_table(pq.read_table(recs[0].path / ROWS_FILE), out / ROWS_FILE)
    finally:
        if writer is not None:
            writer.close()

    requested = max(int(r.meta.sample.get("requested", r.meta.sample.get("size", 0))) for r in recs)
    samples = [pq.read_table(r.path / SAMPLE_FILE) for r in recs if r.has_sample]
    sample = {"size": 0, "seed": first.sample.get("seed", 0), "requested": requested}
    (out / SAMPLE_FILE).unlink(missing_ok=True)
    if samples:
        t = pa.concat_tables(samples)
        keys = row_keys(t["row"].to_numpy(), int(sample["seed"]))
        keep = np.sort(np.argsort(keys, kind="stable")[:requested])
        t = t.take(pa.array(keep))
        t = t.take(pa.array(np.argsort(t["row"].to_numpy(), kind="stable")))
        pq.write_table(t, out / SAMPLE_FILE)
        info = next(r.meta.sample for r in recs if r.has_sample)
        sample = {**sample, "size": t.num_rows, "hidden": info.get("hidden"),
                  "shared": info.get("shared", 0)}  # fmt: skip

    stats = {}
    for g in first.gates:
        st = recs[0].stats[g.name]
        for r in recs[1:]:
            st = st.merge(r.stats[g.name])
        stats[g.name] = st.to_dict()
    digest = hashlib.sha256((hashes["domain"].hexdigest() + hashes["label"].hexdigest()).encode())
    data = {k: v for k, v in first.data.items() if k not in ("row_offset", "rows_sha256")}
    meta = first
    meta.rows = expected
    meta.stats = stats
    meta.metrics = _metrics(out / ROWS_FILE, meta.domains) if expected and meta.labels else {}
    meta.sample = sample
    meta.data = {**data, "rows_sha256": digest.hexdigest(), "merged_parts": len(recs)}
    meta.command = command or meta.command
    write_json(out / META_FILE, meta.to_dict())
    return open_record(out)
