"""The dashboard's catalog: where checkpoints live, how they are named, and every checkpoint and
routing record found under those folders.

``list_runs`` reads only each run's ``meta.json`` and each record's ``record.json`` and Parquet
footer (``st.cache_data`` for 30 s; the Refresh button clears it); ``label`` names a path relative
to the folder it was found in.  Opening a path, and telling a record folder from a run folder when
one is opened, is ``loaders``; this module only lists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS_ENV = "CESAA_CHECKPOINTS"  # folder of the shipped checkpoints (default checkpoints/)
RUNS_ENV = "CESAA_DASHBOARD_RUNS"  # where the dashboard writes (default runs/dashboard/)
DEFAULT_CHECKPOINT = "cesaa"
MAKE_COMMAND = ".venv/bin/python scripts/make_checkpoints.py"


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


# ---- listing -------------------------------------------------------------------------------------


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
    for item in list_records(search):  # routing records beside the checkpoints
        if item["path"] not in seen:
            seen.add(item["path"])
            out.append({**item, "label": label(item["path"]) + " (record)"})
    first = str((shipped_root() / DEFAULT_CHECKPOINT).resolve())
    return sorted(out, key=lambda e: e["path"] != first)


def list_records(search: tuple[str, ...]) -> list[dict]:
    """Every record folder under ``search``: ``{path, record: True, summary}`` or ``{path, record:
    True, error}`` (reads only record.json and the Parquet footer)."""
    from analysis.records import RecordError, open_record

    out, seen = [], set()
    for root in search:
        base = Path(root)
        if not base.is_dir():
            continue
        for meta in sorted(base.rglob("record.json")):
            path = str(meta.parent.resolve())
            if path in seen:
                continue
            seen.add(path)
            try:
                rec = open_record(path, check="footer")
            except (RecordError, OSError) as e:
                out.append({"path": path, "record": True, "error": str(e)})
                continue
            out.append({"path": path, "record": True, "summary": record_summary(rec.meta)})
    return out


def record_summary(m: Any, auc: float | None = None) -> dict:
    """One row of the "All checkpoints" table, from a record's metadata (``RecordMeta``)."""
    g = m.primary
    return {
        "model": m.model_name,
        "gate": "none" if g is None else g.kind,
        "experts": 0 if g is None else g.num_experts,
        "k": None if g is None else g.top_k,
        "gated shared": 0 if g is None else len(g.shared),
        "always-on shared": len(m.always_on),
        "alpha": None if g is None else g.hyperparameter("alpha"),
        "test AUC": m.metrics.get("auc") if auc is None else auc,
    }
