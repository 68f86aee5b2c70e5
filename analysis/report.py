"""``cesaa report``: every number about one checkpoint, as one ``Report``, and its files.

``build_report(path)`` opens a checkpoint or a routing record as one ``analysis.opened.Opened``
(a checkpoint's record of the split is made once and cached) and gathers from the record: the
model card, per-domain metrics, every gate's routing summary, alarms and per-row entropies
(``analysis.gate_report``), the views across consecutive gates and a 2-D projection of a sample of
expert outputs (``analysis.embeddings``); with a live model also knock-out and k-curve tables
(``analysis.causal``), planted-truth recovery (``analysis.truth``) and the inspection section.  A ``Report`` holds only JSON
values, so ``Report.from_json(r.to_json()).to_dict() == r.to_dict()`` and the HTML of a reloaded
report is the HTML of the original.  ``write_report`` writes report.html (self-contained),
report.json, CSV tables, and PNG/PDF when a Chromium is available (see ``analysis.export``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.causal import K_CURVE_COLUMNS, KNOCKOUT_COLUMNS
from analysis.measures import json_safe
from analysis.prune_plans import CURVE_COLUMNS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EMBEDDINGS = ("pca", "umap", "auto")
SPLITS = ("train", "val", "test")
ALARM_COLUMNS = ["level", "code", "title", "message", "domain", "expert", "value", "threshold"]
PACKAGES = ("cesaa", "torch", "numpy", "pandas", "scikit-learn", "plotly")
STATIC_FORMATS = ("png", "pdf")


@dataclass
class Report:
    """Every number of a report, as JSON values (see the module docstring for the parts)."""

    checkpoint: dict
    model_card: dict
    settings: dict
    metrics: dict
    summary: dict | None = None  # the primary gate's (also in ``gates[0]``)
    entropy: dict | None = None
    gates: list = field(default_factory=list)  # analysis.gate_report.gate_section, every gate
    cross_gates: list = field(default_factory=list)  # analysis.gate_report.cross_gate
    knockout: list | None = None
    k_curve: list | None = None
    prune: list | None = None  # analysis.prune_plans.prune_curve records
    truth: dict | None = None
    alarms: list = field(default_factory=list)
    embedding: dict | None = None
    inspection: dict | None = None  # analysis.report_inspection
    notes: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    command: str = ""
    created: str = ""
    timings: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, json_safe(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"report schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"report dict has unknown keys {unknown}")
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        """Strict JSON (no NaN); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            _write(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Report:
        """From JSON text or from a report.json path."""
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def to_html(self, path: str | Path | None = None, *, static: bool = False) -> str:
        """The self-contained HTML page (``analysis.report_html``); written to ``path`` if given."""
        from analysis.report_html import render_html

        text = render_html(self, static=static)
        if path is not None:
            _write(Path(path), text)
        return text

    def tables(self) -> dict[str, pd.DataFrame]:
        """The CSV tables by file stem: metrics, activation_soft/hard, knockout, k_curve, prune,
        alarms."""
        from cesaa.metrics import metrics_table

        domains = self.model_card["domain_names"]
        m = {k: (math.nan if v is None else v) for k, v in self.metrics.items()}
        out = {"metrics": metrics_table(m, domains).reset_index()}
        experts = self.summary["expert_names"] if self.summary else []
        for kind in ("soft", "hard"):
            act = self.summary[f"activation_{kind}"] if self.summary else []
            df = pd.DataFrame(
                np.asarray(act, dtype=np.float64).reshape(len(act), len(experts)),
                index=domains[: len(act)],
                columns=experts,
            )
            out[f"activation_{kind}"] = df.rename_axis("domain").reset_index()
        out["knockout"] = pd.DataFrame(self.knockout or [], columns=KNOCKOUT_COLUMNS)
        out["k_curve"] = pd.DataFrame(self.k_curve or [], columns=K_CURVE_COLUMNS)
        out["prune"] = pd.DataFrame(self.prune or [], columns=CURVE_COLUMNS)
        out["alarms"] = pd.DataFrame(self.alarms, columns=ALARM_COLUMNS)
        return out

    def headline(self) -> dict[str, Any]:
        """The numbers ``cesaa report`` prints."""
        s = self.summary or {}
        rec = (self.truth or {}).get("recovery") or {}
        return {
            "auc": self.metrics.get("auc"),
            "mi_soft": s.get("mi_soft"),
            "mi_hard": s.get("mi_hard"),
            "mi_soft_ceiling": s.get("mi_soft_ceiling"),
            "mi_hard_ceiling": s.get("mi_hard_ceiling"),
            "mi_soft_normalized": s.get("mi_soft_normalized"),
            "mi_hard_normalized": s.get("mi_hard_normalized"),
            "alarms": len(self.alarms),
            "recovery_score": rec.get("score"),
            "recovery_score_ceiling": rec.get("score_ceiling"),
            "recovery_set_jaccard": rec.get("set_jaccard"),
            "recovery_set_jaccard_ceiling": rec.get("set_jaccard_ceiling"),
        }


def _write(path: Path, text: str) -> None:
    """Atomic write; readable by others (a temporary file is created 0600)."""
    from cesaa.checkpoint import write_text

    write_text(path, text)
    os.chmod(path, 0o644)


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python and package versions (``"missing"`` for an uninstalled one)."""
    out = {"python": platform.python_version()}
    for pkg in (*PACKAGES, *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def report_command(
    checkpoint: str | Path,
    data: str | None,
    split: str | None,
    sample_size: int,
    embedding: str,
    seed: int,
    out_dir: str | Path | None = None,
) -> str:
    """The ``cesaa report`` command line that regenerates a report (``data`` and ``split``
    ``None`` for a routing record, which holds both)."""
    args = ["cesaa", "report", str(checkpoint)]
    if data is not None:
        args += ["--data", data]
    if split is not None:
        args += ["--split", split]
    args += [
        "--sample",
        str(sample_size),
        "--embedding",
        embedding,
        "--seed",
        str(seed),
    ]
    if out_dir is not None:
        args += ["--out", str(out_dir)]
    return shlex.join(args)


def _with_out(command: str, out_dir: str | Path) -> str:
    args = shlex.split(command)
    if "--out" in args:
        i = args.index("--out")
        del args[i : i + 2]
    return shlex.join([*args, "--out", str(out_dir)]) if args else command


def build_report(
    checkpoint_path: str | Path,
    data_source: str | None = None,
    *,
    split: str = "test",
    sample_size: int = 2000,
    embedding: str = "auto",
    seed: int = 0,
    progress: bool = False,
    cache_dir: str | Path | None = None,
) -> Report:
    """Analyse the checkpoint or routing record folder ``checkpoint_path``; a checkpoint on split
    ``split`` of ``data_source`` (default: the data it was trained on, re-encoded with its own
    encoders and split as at training), through its cached record (``analysis.opened``).

    ``sample_size`` rows (seeded by ``seed``) of expert outputs go into the embedding; per-row
    entropies read a seeded draw of the record's rows.  ``embedding``: "pca" (instant), "umap"
    (umap-learn; ~1 min of JIT on a cold process), or "auto" (UMAP when umap-learn is installed,
    else PCA).  Projections are cached in ``cache_dir`` (default ``<record>/embeddings/``).
    """
    from analysis.opened import RECORD_SAMPLE, open_path
    from analysis.report_build import gather

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0:
        raise ValueError(f"sample_size must be an int >= 0, got {sample_size!r}")
    t0 = time.perf_counter()
    opened = open_path(  # one cached record per checkpoint and split, shared with the dashboard
        checkpoint_path, data=data_source, split=split, sample_size=max(sample_size, RECORD_SAMPLE)
    )
    parts = gather(
        opened,
        sample_size=sample_size,
        embedding=embedding,
        seed=seed,
        progress=progress,
        cache_dir=cache_dir,
    )
    used = parts.pop("embedding_method")
    parts["timings"]["total"] = time.perf_counter() - t0
    extra = ("umap-learn",) if used == "umap" else ()
    record = not opened.has_model
    source = None if record else parts["settings"]["data"]
    return Report(
        **parts,
        versions=versions(extra),
        command=report_command(
            checkpoint_path, source, None if record else split, sample_size, used, seed
        ),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_report(
    report: Report,
    out_dir: str | Path,
    formats: tuple[str, ...] = ("html", "json", "csv"),
    static: tuple[str, ...] | None = STATIC_FORMATS,
) -> dict[str, Path | str]:
    """Write the report's files into ``out_dir``; returns what was written by name.

    Names: "html" (report.html), "json" (report.json), "<table>.csv" for each CSV table, "png"
    (the folder of per-figure PNGs, ``figures/``) and "pdf" (report.pdf).  A static format that
    cannot be produced here maps to a message starting with "skipped: " instead of a path.
    ``static=None`` or ``()`` writes no PNG/PDF.
    """
    from analysis import export

    bad = sorted(set(formats) - {"html", "json", "csv"}) + sorted(
        set(static or ()) - set(STATIC_FORMATS)
    )
    if bad:
        raise ValueError(f"unknown report formats {bad}; valid: html, json, csv, png, pdf")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dataclasses.replace(report, command=_with_out(report.command, out))
    written: dict[str, Path | str] = {}
    if "html" in formats:
        report.to_html(out / "report.html")
        written["html"] = out / "report.html"
    if "json" in formats:
        report.to_json(out / "report.json")
        written["json"] = out / "report.json"
    if "csv" in formats:
        for name, df in report.tables().items():
            df.to_csv(out / f"{name}.csv", index=False)
            written[f"{name}.csv"] = out / f"{name}.csv"
    static = tuple(static or ())
    if "png" in static:
        from analysis.report_html import report_figures

        pngs = export.export_png(report_figures(report, static=True), out / "figures")
        written["png"] = pngs if isinstance(pngs, str) else out / "figures"
    if "pdf" in static:
        written["pdf"] = export.export_pdf(report.to_html(static=True), out / "report.pdf")
    return written
