"""The dashboard's checkpoint loaders: list run folders, load a checkpoint, its data and its model.

The dashboard calls ``cesaa`` and ``analysis`` only from three modules, split by concept: this one
(listing and loading), ``derived`` (cached tables derived from a loaded model: routing collections,
metrics, knock-out, k curve, alarms, truth recovery, comparisons) and ``projections`` (expert-output
embeddings, their 2-D projections and the report that embeds one).

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

import record_loaders
import streamlit as st
import torch

# small models on a shared CPU: one thread is ~30x faster than two that contend with other work
torch.set_num_threads(int(os.environ.get("CESAA_DASHBOARD_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS_ENV = "CESAA_CHECKPOINTS"  # folder of the shipped checkpoints (default checkpoints/)
RUNS_ENV = "CESAA_DASHBOARD_RUNS"  # where the dashboard writes (default runs/dashboard/)
DEFAULT_CHECKPOINT = "cesaa"
SPLIT = "test"
AS_TRAINED: tuple = (None, True, ())
LOAD_ERRORS = (ValueError, OSError, KeyError, TypeError, RuntimeError, IndexError)
MAKE_COMMAND = ".venv/bin/python scripts/make_checkpoints.py"
DATA_SOURCES = "nav_data_sources"  # session state: {checkpoint path: data source from the sidebar}
STREAM_SAMPLE_ROWS = 100_000  # rows of a stream checkpoint's split that the pages evaluate
DATA_HINT = (
    "\n\nIf the data moved, enter its new location (e.g. `table:/new/place/clicks.toml`) in the "
    "sidebar's *Data source* field."
)


class LoadError(ValueError):
    """Something the dashboard cannot show; the message says what and what to do."""


def shipped_root() -> Path:
    return Path(os.environ.get(CHECKPOINTS_ENV, REPO / "checkpoints"))


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, REPO / "runs" / "dashboard"))


def roots(extra: str | None = None) -> tuple[str, ...]:
    """The folders searched for checkpoints: shipped, the dashboard's runs, and ``extra``."""
    out = [str(shipped_root()), str(runs_root())]
    if extra and extra.strip():
        out.append(str(Path(extra.strip()).expanduser()))
    return tuple(dict.fromkeys(out))


def token(path: str | Path) -> str:
    """Changes whenever the checkpoint (or record) in ``path`` is rewritten or its data source is
    changed in the sidebar (cache key part)."""
    if record_loaders.is_record(path):
        return record_loaders.record_token(path)
    parts = []
    for name in ("meta.json", "model.safetensors"):
        try:
            s = (Path(path) / name).stat()
            parts.append(f"{s.st_mtime_ns}-{s.st_size}")
        except OSError:
            parts.append("missing")
    override = data_override(str(path))
    return "/".join(parts) + (f"|data={override}" if override else "")


def label(path: str | Path) -> str:
    p = Path(path).resolve()
    for root in (shipped_root(), runs_root()):
        try:
            return str(p.relative_to(root.resolve()))
        except ValueError:
            continue
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


# ---- listing and loading -------------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def list_runs(search: tuple[str, ...]) -> list[dict]:
    """Every run folder under the ``search`` folders: ``{path, label, meta}`` or ``{path, label,
    error}`` (reads only ``meta.json``).  Shipped ones first, ``DEFAULT_CHECKPOINT`` at the top."""
    from cesaa.checkpoint import list_checkpoints

    seen, out = set(), []
    for root in search:
        for item in list_checkpoints(root):
            path = str(Path(item["path"]).resolve())
            if path not in seen:
                seen.add(path)
                out.append({**item, "path": path, "label": label(path)})
    for item in record_loaders.list_records(search):  # routing records beside the checkpoints
        if item["path"] not in seen:
            seen.add(item["path"])
            out.append({**item, "label": label(item["path"]) + " (record)"})
    first = str((shipped_root() / DEFAULT_CHECKPOINT).resolve())
    return sorted(out, key=lambda e: e["path"] != first)


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=24)
def _checkpoint(path: str, tok: str) -> tuple[Any, str | None]:
    from cesaa.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path), None
    except LOAD_ERRORS as e:
        return None, str(e)


def checkpoint(path: str):
    """The loaded ``cesaa.checkpoint.Checkpoint`` (cached); ``LoadError`` when it cannot load, or
    when ``path`` is a routing record (the view needs the live model)."""
    if record_loaders.is_record(path):
        raise LoadError(record_loaders.needs_checkpoint("This view"))
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
    from analysis.capabilities import routing_capabilities

    if record_loaders.is_record(path):
        return record_loaders.capabilities(path)
    return routing_capabilities(checkpoint(path).model)


def domain_names(path: str) -> list[str]:
    if record_loaders.is_record(path):
        return list(record_loaders.record(path).domains)
    return list(checkpoint(path).domain_names)


def expert_names(path: str) -> list[str]:
    """One name per expert index; PLE's say which domain's (``analysis.capabilities``)."""
    if record_loaders.is_record(path):
        return [e.name for e in record_loaders.record(path).primary.experts]
    from analysis.capabilities import expert_names as names

    return names(capabilities(path), domain_names(path))


def override(routing: tuple):
    from cesaa.models.output import RoutingOverride

    top_k, use_shared, knocked = routing
    return RoutingOverride(top_k=top_k, use_shared=use_shared, knocked_out=tuple(knocked))


def history(path: str) -> list[dict]:
    from cesaa.train import read_history

    if record_loaders.is_record(path):
        return []  # a record holds one evaluation, no training history
    try:
        return read_history(path)
    except (ValueError, OSError) as e:
        raise LoadError(f"{label(path)}: unreadable metrics.jsonl ({e})") from None


# ---- alpha siblings ------------------------------------------------------------------------------


def _config_without_alpha(meta: dict) -> dict:
    """The model config with every default filled in (checkpoints written before a config field
    existed compare equal to new ones at its default), alpha removed."""
    from dataclasses import asdict

    from cesaa.config import ModelConfig, config_from_dict

    cfg = asdict(config_from_dict(ModelConfig, dict(meta["model"]["config"])))
    cfg.pop("alpha", None)
    return cfg


def alpha_siblings(path: str, entries: list[dict]) -> list[dict]:
    """Checkpoints that differ from ``path`` only in alpha (same model, data and other settings),
    sorted by alpha: ``[{path, label, alpha}]`` (``path`` itself included)."""
    meta = checkpoint(path).meta
    want = (_config_without_alpha(meta), meta["data"].get("fingerprint"))
    out = []
    for e in entries:
        m = e.get("meta")
        if m is None or m.get("status") != "complete":
            continue
        if (_config_without_alpha(m), m["data"].get("fingerprint")) == want:
            out.append(
                {"path": e["path"], "label": e["label"], "alpha": m["model"]["config"]["alpha"]}
            )
    return sorted(out, key=lambda r: (r["alpha"], r["path"] != path))


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
