"""What the dashboard does besides showing: train a checkpoint, store an upload, write report files.

Plain functions (no caching, no widgets): the pages add progress bars and download buttons, the tests
call them directly.  Bad input raises ``loaders.LoadError`` with a message naming the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import catalog
import loaders
from loaders import LOAD_ERRORS, LoadError


def train_checkpoint(
    source: str,
    model: str,
    model_kw: dict,
    train_kw: dict,
    out: str | Path,
    callback: Callable[[dict], None] | None = None,
    *,
    base_config: Any = None,
    data_of: str | None = None,
    split: str = "random",
) -> Path:
    """Train ``model`` on ``source`` into the run folder ``out``; returns its path.

    ``base_config``: a ModelConfig to start from instead of the model's defaults (the alpha
    ablation retrains the loaded checkpoint's exact architecture).  ``data_of``: a checkpoint
    path whose own data to train on instead of ``source`` (found wherever it is now, a stream
    included; see ``cesaa.data.locate``).  ``split``: ``random``, ``time`` or ``temporal``
    (``cesaa.data.splits``; recorded in the run's meta).  Bad input -> ``LoadError``.
    """
    from cesaa.config import TrainConfig
    from cesaa.data.locate import open_checkpoint_data, open_source
    from cesaa.models import default_config
    from cesaa.train import train

    try:
        if base_config is not None:
            mcfg = dataclasses.replace(base_config, **model_kw)
        else:
            mcfg = default_config(model, **model_kw)
        tcfg = TrainConfig(**{"device": "cpu", **train_kw})
        if data_of is not None:
            meta = loaders.checkpoint(data_of).meta
            dataset = open_checkpoint_data(meta, data_of, loaders.data_override(data_of))
        else:
            dataset = open_source(source, split=split)
    except (*LOAD_ERRORS, FileNotFoundError) as e:
        raise LoadError(str(e)) from None
    train(mcfg, tcfg, dataset, out, callback=callback)
    catalog.list_runs.clear()
    return Path(out)


class TrainCancelled(Exception):
    """Raised inside the trainer's callback when the user pressed Cancel."""


class TrainJob:
    """``train_checkpoint`` in a background thread, so the page (and every other page) stays
    usable during a long run: ``progress`` (0..1), ``text`` and ``losses`` follow the batches;
    ``cancel()`` stops it at the next batch and removes the partial run folder; ``error`` holds
    the message of a run that failed (a ``LoadError`` or any other exception)."""

    def __init__(
        self,
        source: str,
        model: str,
        model_kw: dict,
        train_kw: dict,
        out: Path,
        split: str = "random",
    ):
        import threading

        self.out = Path(out)
        self.epochs = int(train_kw.get("epochs", 1))
        self.progress, self.text, self.losses = 0.0, "Loading data…", []
        self.error: str | None = None
        self.cancelled = False
        self._cancel = threading.Event()
        self._args = (source, model, model_kw, train_kw, self.out)
        self._split = split
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"train-{out.name}")

    def start(self) -> TrainJob:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def done(self) -> bool:
        """Finished with a saved checkpoint (not failed, not cancelled)."""
        return not self.running and self.error is None and not self.cancelled

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _callback(self, ev: dict) -> None:
        if self._cancel.is_set():
            raise TrainCancelled
        if ev.get("event") != "batch":
            return
        done = (ev["epoch"] * ev["steps"] + ev["step"] + 1) / (self.epochs * ev["steps"])
        self.progress = min(done, 1.0)
        self.text = (
            f"epoch {ev['epoch'] + 1}/{self.epochs} · batch {ev['step'] + 1}/{ev['steps']} · "
            f"loss {ev['loss']:.4f}"
        )
        self.losses.append(float(ev["loss"]))

    def _run(self) -> None:
        import shutil

        try:
            train_checkpoint(*self._args, callback=self._callback, split=self._split)
            self.progress, self.text = 1.0, "done"
        except TrainCancelled:
            self.cancelled = True
            shutil.rmtree(self.out, ignore_errors=True)
            catalog.list_runs.clear()
        except LoadError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001  (shown as an error card, never a traceback)
            self.error = f"{type(e).__name__}: {e}"


def default_run_name(source_kind: str, upload_name: str | None = None) -> str:
    """The Train page's name for a run before the user types one: the uploaded file's name without
    its extension (``ratings.csv`` -> ``ratings``), else the data's kind (``synthetic``,
    ``movielens-100k``); ``new_run_dir`` adds ``-2``, ``-3`` ... when it is taken."""
    if upload_name:
        return Path(upload_name).name.split(".")[0] or "upload"
    return source_kind


def new_run_dir(name: str) -> Path:
    """A fresh folder under the dashboard's runs folder (``name``, then ``name-2``, ...)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip()) or "run"
    root = catalog.runs_root()
    out, i = root / safe, 2
    while out.exists():
        out, i = root / f"{safe}-{i}", i + 1
    return out


def prune_refusal(path: str) -> str | None:
    """None when the checkpoint's model can be pruned into a new checkpoint, else why not."""
    from cesaa.pruning import not_editable

    return not_editable(loaders.checkpoint(path).model)


def write_pruned(path: str, plan: dict, out: Path) -> Path:
    """The checkpoint at ``path`` with ``plan`` (an ``ExpertPlan`` dict) applied, evaluated on
    its validation and test splits and written to ``out`` (``cesaa.pruning``)."""
    from cesaa.evaluation import evaluate
    from cesaa.pruning import ExpertPlan, apply_plan, save_edited_checkpoint

    ckpt, d = loaders.checkpoint(path), loaders.data(path)
    try:
        p = ExpertPlan.from_dict(plan)
        model = apply_plan(ckpt.model, p)
        names = ckpt.domain_names
        metrics = {"val": evaluate(model, d.val, names), "test": evaluate(model, d.test, names)}
        written = save_edited_checkpoint(ckpt, model, p, out, metrics=metrics)
    except LOAD_ERRORS as e:
        raise LoadError(f"{type(e).__name__}: {e}") from None
    catalog.list_runs.clear()
    return written


# ---- uploads -------------------------------------------------------------------------------------


def max_upload_mb() -> float:
    """The dashboard's own cap on an upload (``CESAA_MAX_UPLOAD_MB``, default 200 MB: the same as
    ``server.maxUploadSize`` in ``.streamlit/config.toml``, which the server enforces first)."""
    return float(os.environ.get("CESAA_MAX_UPLOAD_MB", "200"))


def upload_frame(name: str, content: bytes):
    """Read an uploaded CSV / Parquet file (``LoadError`` naming the problem)."""
    from cesaa.data import read_frame

    limit = max_upload_mb()
    if len(content) > limit * 2**20:
        raise LoadError(
            f"{name} is {len(content) / 2**20:.1f} MB, over the dashboard's upload limit of "
            f"{limit:g} MB (CESAA_MAX_UPLOAD_MB); train on larger files from the command line: "
            "cesaa train --data table:SCHEMA (or stream:SCHEMA for Parquet larger than memory)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(content)
        try:
            return read_frame(path)
        except (*LOAD_ERRORS, FileNotFoundError) as e:
            raise LoadError(str(e).replace(str(path), name)) from None


def save_upload(name: str, content: bytes, schema: dict) -> str:
    """Store an uploaded file with its schema under ``runs/dashboard/uploads/<hash>/``, validate it
    (``cesaa.data.load_table_frame``: errors name the column and value) and return its data source
    string ``table:<schema path>``."""
    import yaml

    from cesaa.data import load_table_frame

    digest = hashlib.sha256(content + json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]
    folder = catalog.runs_root() / "uploads" / digest
    folder.mkdir(parents=True, exist_ok=True)
    data_name = Path(name).name
    (folder / data_name).write_bytes(content)
    clean = {k: v for k, v in schema.items() if v not in (None, "", [])}
    schema_path = folder / "schema.yaml"
    schema_path.write_text(yaml.safe_dump({"data": data_name, **clean}), encoding="utf-8")
    try:
        load_table_frame(schema_path)
    except (*LOAD_ERRORS, FileNotFoundError) as e:
        raise LoadError(str(e).replace(str(folder / data_name), data_name)) from None
    return f"table:{schema_path}"


# ---- report files -------------------------------------------------------------------------------


def report_files(report_obj) -> dict[str, tuple[bytes, str, str]]:
    """The downloadable files of a report: name -> (bytes, mime type, file name).

    ``html`` (self-contained page), ``json`` and ``csv`` (a zip of every CSV table).
    """
    html = report_obj.to_html().encode("utf-8")
    js = report_obj.to_json().encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, df in report_obj.tables().items():
            z.writestr(f"{name}.csv", df.to_csv(index=False))
    return {
        "html": (html, "text/html", "report.html"),
        "json": (js, "application/json", "report.json"),
        "csv": (buf.getvalue(), "application/zip", "report-tables.zip"),
    }


def static_problem(fmt: str) -> str | None:
    """Why PNG / PDF export cannot run here (None when it can)."""
    from analysis.export import static_problem as problem

    return problem(fmt)


def static_file(report_obj, fmt: str) -> tuple[bytes, str, str] | str:
    """PNG figures (a zip) or the PDF of a report; a ``"skipped: ..."`` message when impossible."""
    from analysis.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        written = write_report(report_obj, tmp, formats=(), static=(fmt,))
        out = written.get(fmt)
        if isinstance(out, str) or out is None:
            return out or f"skipped: no {fmt} written"
        out = Path(out)
        if fmt == "pdf":
            return out.read_bytes(), "application/pdf", "report.pdf"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.glob("*.png")):
                z.write(f, f.name)
        return buf.getvalue(), "application/zip", "report-figures.zip"


# ---- column roles of an upload ------------------------------------------------------------------

ROLES = ["label", "domain", "user", "item", "time", "categorical", "numeric", "ignore"]


def proposed_roles(frame) -> list:
    """``cesaa.data.roles.propose_roles`` of an uploaded table (``LoadError`` on bad input)."""
    from cesaa.data.roles import propose_roles

    try:
        return propose_roles(frame)
    except ValueError as e:
        raise LoadError(str(e)) from None


def domain_table(frame, exclude: tuple[str, ...] = ()):
    """The columns that could be the domain, best first (``cesaa.data.roles.domain_candidates``):
    one row each with its number of values, effective number, smallest value's rows and a
    summary of its value counts."""
    import pandas as pd

    from cesaa.data.roles import domain_candidates

    rows = [
        {
            "column": d.column,
            "values": len(d.counts),
            "as spread as (equal values)": round(d.effective, 1),
            "smallest value's rows": d.smallest,
            "value counts": ", ".join(f"{v} {n}" for v, n in list(d.counts.items())[:8])
            + (" ..." if len(d.counts) > 8 else ""),
        }
        for d in domain_candidates(frame, exclude)
    ]
    return pd.DataFrame(rows)


def roles_schema(roles: dict[str, str]) -> dict:
    """The upload's schema dict from the chosen roles (``LoadError`` naming what is missing)."""
    from cesaa.data.roles import schema_from_roles

    try:
        return schema_from_roles(roles)
    except ValueError as e:
        raise LoadError(str(e)) from None
