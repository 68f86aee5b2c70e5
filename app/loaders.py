"""The dashboard's one loader: open a path (a checkpoint's run folder or a routing record) as one
object.

Every selected path is opened once as an ``analysis.opened.Opened`` (``opened``): its record (a
checkpoint's is made once and cached, ``analysis.records.checkpoint.cached_record``) is what every
descriptive view reads, and a checkpoint adds its live model for the causal views.  Pages ask it
(``has_model``, ``needs_model``) and never branch on what kind of path it was: this module is the
only one that tells a record folder from a run folder.  ``catalog`` lists the checkpoints and
records and names them; ``derived`` (cached tables: collections, metrics, alarms, knock-out, k
curve, truth, comparisons), ``inspection`` (row-level tables) and ``projections`` (embeddings and
the report) build on it; ``siblings`` finds a checkpoint's alpha siblings; ``uploads`` unpacks a
zipped record.

Caching: models and data are ``st.cache_resource`` (one shared object, never copied); everything
derived (routing collections, metrics, tables) is ``st.cache_data``.  Every cached function is keyed
by the checkpoint path, a ``token`` that changes when the checkpoint is rewritten (the mtime of its
``meta.json``) and the parameters it depends on, so an unrelated widget change recomputes nothing.

Errors: a user-facing problem (no data, a corrupt checkpoint, a bad upload, a model without a gate)
is raised as :class:`LoadError` whose message says what is wrong; pages turn it into an error card.
Routing overrides are passed as plain tuples ``(top_k, use_shared, knocked_out)``; ``AS_TRAINED`` is
the unmodified model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from catalog import label, record_summary

# small models on a shared CPU: one thread is ~30x faster than two that contend with other work
torch.set_num_threads(int(os.environ.get("CESAA_DASHBOARD_THREADS", "1")))

SPLIT = "test"
AS_TRAINED: tuple = (None, True, ())
LOAD_ERRORS = (ValueError, OSError, KeyError, TypeError, RuntimeError, IndexError)
DATA_SOURCES = "nav_data_sources"  # session state: {checkpoint path: data source from the sidebar}
STREAM_SAMPLE_ROWS = 100_000  # rows of a stream checkpoint's split that the pages evaluate
DATA_HINT = (
    "\n\nIf the data moved, enter its new location (e.g. `table:/new/place/clicks.toml`) in the "
    "sidebar's *Data source* field."
)


class LoadError(ValueError):
    """Something the dashboard cannot show; the message says what and what to do."""


def _stamp(path: str | Path, names: tuple[str, ...]) -> str:
    parts = []
    for name in names:
        try:
            s = (Path(path) / name).stat()
            parts.append(f"{s.st_mtime_ns}-{s.st_size}")
        except OSError:
            parts.append("missing")
    return "/".join(parts)


def is_record(path: str | Path) -> bool:
    """Whether ``path`` is a record folder; asked here only (``opened`` is what pages ask)."""
    from analysis.records.reader import is_record as record_folder

    return record_folder(path)


def token(path: str | Path) -> str:
    """Changes whenever the checkpoint (or record) in ``path`` is rewritten or its data source is
    changed in the sidebar (cache key part)."""
    if is_record(path):
        return "record:" + _stamp(path, ("record.json", "rows.parquet"))
    override = data_override(str(path))
    return _stamp(path, ("meta.json", "model.safetensors")) + (
        f"|data={override}" if override else ""
    )


# ---- opening ------------------------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def declared(path: str, tok: str) -> dict:
    """``record_summary`` of a record, or of the record a checkpoint declares (its gate's kind, k,
    shared experts and alpha as ``cesaa record`` writes them; no forward pass)."""
    if is_record(path):
        from analysis.records import open_record

        return record_summary(open_record(path, check="footer").meta)
    from analysis.records.checkpoint import checkpoint_meta

    ckpt = checkpoint(path)
    auc = ckpt.meta.get("metrics", {}).get("test", {}).get("auc")
    return record_summary(checkpoint_meta(ckpt, (), "", SPLIT), auc)


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=24)
def _checkpoint(path: str, tok: str) -> tuple[Any, str | None]:
    from cesaa.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path), None
    except LOAD_ERRORS as e:
        return None, str(e)


@st.cache_resource(show_spinner="Opening…", max_entries=24)
def _opened(path: str, tok: str, override: str | None) -> tuple[Any, str | None]:
    from analysis.opened import RECORD_SAMPLE, Opened, open_path
    from analysis.records.checkpoint import cached_record

    try:
        if is_record(path):
            return open_path(path), None
        ckpt = checkpoint(path)
        rec = cached_record(ckpt, data=override, part=SPLIT, sample_size=RECORD_SAMPLE)
        return Opened(Path(path), rec, ckpt, data_source=override, split=SPLIT), None
    except LOAD_ERRORS as e:
        return None, str(e)


def opened(path: str):
    """The path opened as an ``analysis.opened.Opened`` (cached): its record (a checkpoint's made
    once on its test split) and, for a checkpoint, its live model."""
    op, err = _opened(path, token(path), data_override(path))
    if err is not None:
        hint = "" if is_record(path) else DATA_HINT
        raise LoadError(f"Cannot open {label(path)}: {err}{hint}")
    return op


def record(path: str):
    """The ``analysis.records.Record`` every descriptive view reads."""
    return opened(path).record


def labeled(path: str) -> bool:
    """False for a record written without labels (a language model's tokens); True for
    checkpoints and labelled records."""
    return needs_model(path, "") is None or record(path).meta.labels


def needs_model(path: str, what: str) -> str | None:
    """``None`` when ``what`` can run on ``path``, else one line saying it needs a checkpoint."""
    from analysis.records.collection import NEEDS_CHECKPOINT

    if not is_record(path):
        return None
    return f"{what} {NEEDS_CHECKPOINT}. The selected item is a routing record."


def checkpoint(path: str):
    """The loaded ``cesaa.checkpoint.Checkpoint`` (cached; no record needed); ``LoadError`` when
    it cannot load or when ``path`` has no live model (a routing record)."""
    why = needs_model(path, "This view")
    if why is not None:
        raise LoadError(why)
    ckpt, err = _checkpoint(path, token(path))
    if err is not None:
        raise LoadError(f"Cannot load {label(path)}: {err}")
    return ckpt


@st.cache_resource(show_spinner="Loading data…", max_entries=8)
def _data(source: str, data_file: str, fingerprint: str, _run: str, _meta: dict):
    from cesaa.data.locate import checkpoint_split, open_source, verify_fingerprint
    from cesaa.data.table import MultiDomainData

    try:
        d = open_source(source, data=data_file or None, **checkpoint_split(_meta))
        if fingerprint:
            verify_fingerprint(d, _meta, _run, data_file or source)
        if not isinstance(d, MultiDomainData):  # a Parquet stream: a bounded, seeded sample
            d = MultiDomainData(
                train=None,
                val=None,
                test=getattr(d, SPLIT).sample_table(STREAM_SAMPLE_ROWS, seed=0),
                spec=d.spec,
                encoders=d.encoders,
                description=d.description,
                fingerprint=d.fingerprint,
                truth=d.truth,
            )
        return d
    except LOAD_ERRORS as e:  # not cached: the data may be fixed (a folder mounted) and retried
        raise LoadError(f"Cannot load the data {source}: {e}{DATA_HINT}") from None


def data_override(path: str) -> str | None:
    """The data source typed in the sidebar for checkpoint ``path`` (None: its own data)."""
    return (st.session_state.get(DATA_SOURCES) or {}).get(str(path)) or None


def data(path: str):
    """The checkpoint's own data (found where it was trained or relative to its run folder, see
    ``cesaa.data.locate``) or the sidebar's data source, encoded with the checkpoint's encoders and
    split as at training; shared by every checkpoint trained on the same data.  A ``stream:``
    checkpoint gives a seeded sample of its test split (see ``data_note``)."""
    from cesaa.data.locate import DataLocationError, locate

    ckpt = checkpoint(path)
    override = data_override(path)
    try:
        source, data_file = (override, None) if override else locate(ckpt.meta, path)
    except DataLocationError as e:
        raise LoadError(f"{e}{DATA_HINT}") from None
    fp = "" if override else str(ckpt.meta["data"].get("fingerprint") or "")
    return _data(source, str(data_file or ""), fp, str(path), ckpt.meta)


def data_note(path: str) -> str | None:
    """What the dashboard evaluates when it is not the whole split (stream checkpoints)."""
    meta = checkpoint(path).meta
    source = data_override(path) or meta["data"].get("description", {}).get("source", "")
    if not str(source).startswith("stream:"):
        return None
    return (
        f"Parquet stream: pages evaluate a seeded sample of at most {STREAM_SAMPLE_ROWS:,} rows "
        f"of the {SPLIT} split (seed 0); `cesaa report` streams every row."
    )


def capabilities(path: str) -> dict:
    """What the model's routing supports: from the live model when there is one (what re-routing
    may ask), else from the record."""
    if needs_model(path, "") is None:
        from analysis.capabilities import routing_capabilities

        return routing_capabilities(checkpoint(path).model)
    return opened(path).capabilities()


def domain_names(path: str) -> list[str]:
    if needs_model(path, "") is None:
        return list(checkpoint(path).domain_names)
    return opened(path).domains


def gate_names(path: str) -> list[str]:
    """The record's gates, the primary one first (empty for a model without a gate)."""
    return [g.name for g in opened(path).gates]


def expert_names(path: str, gate: str | None = None) -> list[str]:
    """One name per expert of ``gate`` (default: primary), as the record names them (a
    checkpoint's record names PLE's experts by their domain, ``analysis.capabilities``)."""
    if gate is None and needs_model(path, "") is None:
        from analysis.capabilities import expert_names as names

        return names(capabilities(path), domain_names(path))
    g = opened(path).gate(gate)
    return [] if g is None else g.expert_names


def override(routing: tuple):
    from cesaa.models.output import RoutingOverride

    top_k, use_shared, knocked = routing
    return RoutingOverride(top_k=top_k, use_shared=use_shared, knocked_out=tuple(knocked))


def history(path: str) -> list[dict]:
    from cesaa.train import read_history

    if needs_model(path, "") is not None:
        return []  # a record holds one evaluation, no training history
    try:
        return read_history(path)
    except (ValueError, OSError) as e:
        raise LoadError(f"{label(path)}: unreadable metrics.jsonl ({e})") from None


# ---- routing tuples and caches ---------------------------------------------------------------------------


def describe(routing: tuple) -> str:
    top_k, use_shared, knocked = routing
    parts = [f"k={top_k}" if top_k is not None else "trained k"]
    parts.append("shared on" if use_shared else "shared off")
    if knocked:
        parts.append(f"knocked out {list(knocked)}")
    return ", ".join(parts)


def clear_all() -> None:
    """Drop every cache (tests; the Refresh button only clears the listing)."""
    st.cache_data.clear()
    st.cache_resource.clear()
