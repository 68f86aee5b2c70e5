"""The dashboard's routing-record loaders: list record folders, open one, upload one (zip).

A record (``cesaa record`` or ``analysis.records.record``; see docs/record.md) holds what one
forward pass produced, so every view that reads routing, metrics, alarms or the expert-output
sample works from it; views that re-run the model say that they need a checkpoint
(``NEEDS_CHECKPOINT``).  Errors are ``loaders.LoadError`` whose message starts with the record
error's name (``RecordUnknownDomain: ...``), shown as error cards.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

import streamlit as st

META = "record.json"
ROWS = "rows.parquet"
MAX_FILES = 16  # a record folder holds three files (plus a projection cache)


def is_record(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / META).is_file() or (p / ROWS).is_file())


def record_token(path: str | Path) -> str:
    """Changes whenever the record in ``path`` is rewritten (cache key part)."""
    parts = []
    for name in (META, ROWS):
        try:
            s = (Path(path) / name).stat()
            parts.append(f"{s.st_mtime_ns}-{s.st_size}")
        except OSError:
            parts.append("missing")
    return "record:" + "/".join(parts)


@st.cache_data(ttl=30, show_spinner=False)
def list_records(search: tuple[str, ...]) -> list[dict]:
    """Every record folder under ``search``: ``{path, record: True, summary}`` or ``{path,
    record: True, error}`` (reads only record.json and the Parquet footer)."""
    from analysis.records import RecordError, open_record

    out, seen = [], set()
    for root in search:
        base = Path(root)
        if not base.is_dir():
            continue
        for meta in sorted(base.rglob(META)):
            path = str(meta.parent.resolve())
            if path in seen:
                continue
            seen.add(path)
            try:
                rec = open_record(path, check="footer")
            except (RecordError, OSError) as e:
                out.append({"path": path, "record": True, "error": str(e)})
                continue
            m = rec.meta
            out.append(
                {
                    "path": path,
                    "record": True,
                    "summary": {
                        "model": m.model_name,
                        "rows": m.rows,
                        "domains": len(m.domains),
                        "experts": m.primary.num_experts,
                        "top_k": m.primary.top_k,
                        "auc": m.metrics.get("auc"),
                    },
                }
            )
    return out


@st.cache_resource(show_spinner="Opening record…", max_entries=16)
def _record(path: str, tok: str) -> tuple[Any, str | None]:
    from analysis.records import RecordError, open_record

    try:
        return open_record(path), None
    except (RecordError, OSError) as e:
        return None, str(e)


def record(path: str):
    """The opened ``analysis.records.Record`` (validated; cached)."""
    from loaders import LoadError, label

    rec, err = _record(path, record_token(path))
    if err is not None:
        raise LoadError(f"Cannot open the record {label(path)}: {err}")
    return rec


@st.cache_data(show_spinner="Reading the record…", max_entries=16)
def _collection(path: str, tok: str):
    from analysis.records.collection import record_collection

    return record_collection(record(path))


def collection(path: str, sample_size: int = 0):
    """``analysis.records.collection.record_collection`` of the record (cached), its stored
    expert-output sample cut to ``sample_size`` rows when that is smaller."""
    from dataclasses import replace

    from analysis.records.collection import head_sample

    col = _collection(path, record_token(path))
    if sample_size and col.sample is not None and sample_size < len(col.sample):
        col = replace(col, sample=head_sample(col.sample, sample_size))
        col.domain_names = record(path).domains
    return col


def capabilities(path: str) -> dict:
    from analysis.records.collection import record_capabilities

    return record_capabilities(record(path))


def labeled(path: str) -> bool:
    """False for a record written without labels (True for checkpoints and labelled records)."""
    return not is_record(path) or record(path).meta.labels


def metrics(path: str) -> dict:
    """The record's per-domain metrics (stored in record.json; recomputed when absent);
    ``LoadError(NO_LABELS)`` for a record without labels."""
    from loaders import LoadError

    from analysis.collection import NO_LABELS

    if not labeled(path):
        raise LoadError(NO_LABELS)
    m = dict(record(path).meta.metrics)
    if not m:
        m = collection(path).metrics()
    return {k: (float("nan") if v is None else v) for k, v in m.items()}


def needs_checkpoint(what: str) -> str:
    """One line: ``what`` needs a checkpoint, and why."""
    from analysis.records.collection import NEEDS_CHECKPOINT

    return f"{what} {NEEDS_CHECKPOINT}. The selected item is a routing record."


# ---- upload --------------------------------------------------------------------------------------


def save_record_zip(name: str, content: bytes, max_mb: float, root: Path) -> str:
    """Unpack an uploaded record folder (zip) under ``root/records/<hash>/``, open it (full
    validation) and return its path; ``LoadError`` naming the problem (size, zip, record)."""
    from loaders import LoadError

    from analysis.records import RecordError, open_record

    if len(content) > max_mb * 2**20:
        raise LoadError(
            f"{name} is {len(content) / 2**20:.1f} MB, over the dashboard's upload limit of "
            f"{max_mb:g} MB (CESAA_MAX_UPLOAD_MB); open larger records from a folder (sidebar: "
            "Also look in folder) or with `cesaa report RECORD`"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise LoadError(f"{name} is not a zip file (zip the record folder)") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    metas = [i for i in infos if Path(i.filename).name == META]
    if len(metas) != 1:
        raise LoadError(
            f"{name} holds {len(metas)} {META} files; zip exactly one record folder "
            f"({META}, {ROWS}, sample.parquet)"
        )
    prefix = str(Path(metas[0].filename).parent)
    prefix = "" if prefix == "." else prefix + "/"
    mine = [
        i for i in infos if i.filename.startswith(prefix) and "/" not in i.filename[len(prefix) :]
    ]
    total = sum(i.file_size for i in mine)
    if len(mine) > MAX_FILES or total > 4 * max_mb * 2**20:
        raise LoadError(
            f"{name} unpacks to {len(mine)} files, {total / 2**20:.1f} MB: more than a record "
            f"folder within the upload limit"
        )
    digest = hashlib.sha256(content).hexdigest()[:16]
    folder = root / "records" / digest
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in mine:
        (folder / Path(i.filename).name).write_bytes(zf.read(i))
    try:
        open_record(folder, check="full")
    except (RecordError, OSError) as e:
        shutil.rmtree(folder)
        raise LoadError(f"{name}: {e}") from None
    list_records.clear()
    return str(folder.resolve())


# ---- rows for the inspection pages ---------------------------------------------------------------


@st.cache_data(show_spinner="Reading the record's rows…", max_entries=16)
def _inspection_rows(path: str, tok: str, size: int) -> dict:
    import numpy as np
    from inspection import sample_positions

    from analysis.records.format import keep_column, prob_column, top_column

    rec = record(path)
    g = rec.primary
    tokens = {"sequence", "position", "token_id"} <= set(rec.meta.kept)
    idx = sample_positions(rec.rows, size)  # the same seeded positions as the live-model path
    cols = ["domain", "label", "prediction"]
    cols += [prob_column(g.name, e) for e in range(g.num_experts)]
    cols += [top_column(g.name, j) for j in range(g.top_k or 0)]
    cols += [keep_column(k) for k in rec.meta.kept]
    parts, start = [], 0
    for t in rec.iter_batches(cols):  # one row group at a time
        lo, hi = np.searchsorted(idx, [start, start + t.num_rows])
        if hi > lo:
            parts.append(t.take(idx[lo:hi] - start))
        start += t.num_rows
    import pyarrow as pa
    from loaders import LoadError

    if not parts:
        raise LoadError(f"{path}: the record has no rows")
    t = pa.concat_tables(parts)
    probs, topk = rec.gate_arrays(t)
    if topk is None:
        topk, how = probs.argmax(1)[:, None], "the top-1 expert of the dense gate"
    else:
        how = "the selected (top-k) experts"
    return {
        "rows": idx,
        "total": rec.rows,
        "source": "the record",
        "domain": t["domain"].to_numpy().astype(np.int64),
        "label": t["label"].to_numpy().astype(np.float64) if rec.meta.labels else None,
        "prediction": t["prediction"].to_numpy().astype(np.float64) if rec.meta.labels else None,
        "probs": probs,
        "topk": topk.astype(np.int64),
        "routed_by": how,
        "columns": {
            k: t[keep_column(k)].to_numpy(zero_copy_only=False)
            for k in rec.meta.kept
            if not (k == "sequence" and tokens)  # a token record's sequence index: no feature
        },
    }


def inspection_rows(path: str, size: int) -> dict:
    """The ``inspection.rows`` dict from the record's stored rows (no model): a seeded sample of
    ``size`` rows with their gate, selected experts and kept columns (ids, raw feature values)."""
    return _inspection_rows(path, record_token(path), int(size))
