"""The computations behind ``build_report``: read the record, measure every gate, project, and
re-run the live model for the causal parts when there is one.

``gather`` returns the parts of a ``Report`` as plain values; ``analysis.report`` assembles them.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from analysis import embeddings as emb
from analysis.causal import k_curve, knockout_importance
from analysis.collection import NO_LABELS, Collection
from analysis.gate_report import cross_gate, gate_section, gate_sequence, record_alarms
from analysis.opened import Opened
from analysis.prune_plans import curve_budgets, planning_sample, prune_curve
from analysis.records.collection import head_sample
from analysis.records.reader import Record
from analysis.report_inspection import inspection_section
from analysis.truth import truth_recovery

log = logging.getLogger(__name__)
PLAN_ROWS = 4000  # validation rows the pruning plans are chosen on (seeded sample)


@contextmanager
def _timed(timings: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t0


def gather(
    opened: Opened,
    *,
    sample_size: int,
    embedding: str,
    seed: int,
    progress: bool,
    cache_dir: str | Path | None,
) -> dict[str, Any]:
    """The parts of a ``Report`` of an opened checkpoint or record (``analysis.opened``).

    Everything descriptive comes from the record (a checkpoint's is its cached record): metrics,
    every gate's summary, alarms and row entropies, the views across consecutive gates and the
    expert-output embedding of the sample.  The causal parts (knock-out, k curve, planted truth,
    inspection) re-run the live model and carry a one-line note when there is none.
    """
    from cesaa.train import read_history

    timings: dict[str, float] = {}
    notes: dict[str, str] = {}
    rec = opened.record
    meta = rec.meta
    domains = list(meta.domains)
    with _timed(timings, "load"):
        col = opened.collection()
    metrics = {k: (float("nan") if v is None else v) for k, v in meta.metrics.items()}
    if not meta.labels:
        notes["metrics"] = NO_LABELS
    std = col.prediction_std_per_domain()
    with _timed(timings, "gates"):
        gates = [gate_section(rec, g.name, metrics, std) for g in meta.gates]
        cross = [cross_gate(rec, a, b) for a, b in gate_sequence(rec)]
        alarms = record_alarms(rec, metrics, std)
    primary = gates[0] if gates else None
    summary = primary["summary"] if primary else None
    if summary is None:
        notes["routing"] = col.no_routing_reason or "the model has no gate"
    experts = meta.primary.expert_names if meta.primary else []

    knockout = kc = truth = inspection = prune = None
    if opened.has_model:
        model, caps, table = opened.model, opened.capabilities(), opened.table()
        with _timed(timings, "causal"):
            knockout = _optional(
                notes, "knockout", knockout_importance, model, table, domains, caps
            )
            kc = _optional(notes, "k_curve", k_curve, model, table, domains, caps)
        with _timed(timings, "prune"):  # plans chosen on the validation split, measured here
            plan_rows = planning_sample(opened.data().val, PLAN_ROWS, seed)
            prune = _optional(
                notes,
                "prune",
                lambda m, t, d: prune_curve(
                    m, plan_rows, t, d, keeps=curve_budgets(caps["num_experts"])
                ),
                model,
                table,
                domains,
                caps,
            )
        truth = _truth(opened.data().truth, col, caps, domains, notes)
        with _timed(timings, "inspection"):  # experts, domain swap, routing over training
            inspection = inspection_section(
                model, table, opened.checkpoint.encoders, domains, opened.path
            )
    else:
        for key, what in (
            ("knockout", "Knock-out importance"),
            ("k_curve", "The k curve"),
            ("prune", "Pruning and merging experts"),
        ):
            notes[key] = opened.needs_model(what)
        notes["truth"] = (
            "A record carries no planted truth (only the built-in synthetic data has one)."
        )
    with _timed(timings, "embedding"):
        seed_of = int(rec.meta.sample.get("seed", 0))
        col.sample = head_sample(col.sample, sample_size, seed_of)  # at most sample_size rows
        projection, used = _embedding(col, rec, embedding, seed, cache_dir, experts, notes)
    return {
        "checkpoint": _origin(opened),
        "model_card": {
            **_card(opened),
            "capabilities": col.capabilities,
            "domain_names": domains,
            "expert_names": experts,
            "gates": [g["declaration"] for g in gates],
            "history": read_history(opened.path) if opened.has_model else [],
        },
        "settings": {
            "data": meta.data.get("source") if opened.has_model else str(opened.path),
            "split": str(meta.data.get("part", "record")),
            "sample_size": sample_size,
            "embedding": used,
            "embedding_requested": embedding,
            "seed": seed,
        },
        "metrics": metrics,
        "summary": summary,
        "entropy": primary["entropy"] if primary else None,
        "gates": gates,
        "cross_gates": cross,
        "knockout": None if knockout is None else knockout.to_dict(orient="records"),
        "k_curve": None if kc is None else kc.to_dict(orient="records"),
        "prune": None if prune is None else prune.to_dict(orient="records"),
        "truth": truth,
        "alarms": [a.to_dict() for a in alarms],
        "embedding": projection,
        "inspection": inspection,
        "notes": notes,
        "timings": timings,
        "embedding_method": used,
    }


def _origin(opened: Opened) -> dict[str, Any]:
    if opened.has_model:
        meta = opened.checkpoint.meta
        return {
            "path": str(opened.path),
            "weights_sha256": meta.get("weights_sha256"),
            "trained_with_cesaa": meta.get("package_version"),
            "record": str(opened.record.path),
        }
    return {"path": str(opened.path), "record": True, "weights_sha256": None}


def _card(opened: Opened) -> dict[str, Any]:
    """Name, configs, status and data of the model card (from the checkpoint when attached)."""
    m = opened.record.meta
    data = {
        "source": m.data.get("source", "record"),
        "description": m.data,
        "fingerprint": m.data.get("rows_sha256"),
        "train_fingerprint": m.data.get("fingerprint"),
        "split": m.data.get("part", "record"),
        "rows": m.rows,
    }
    if not opened.has_model:
        return {
            "name": m.model_name,
            "description": m.model_description,
            "config": None,
            "train_config": None,
            "status": "record",
            "best_epoch": None,
            "checkpoint_metrics": None,
            "data": data,
            "record": {"command": m.command, "created": m.created, "source": m.source},
        }
    meta = opened.checkpoint.meta
    return {
        "name": meta["model"].get("name"),
        "config": meta["model"].get("config"),
        "train_config": meta.get("train"),
        "status": meta.get("status"),
        "best_epoch": meta.get("metrics", {}).get("best_epoch"),
        "checkpoint_metrics": meta.get("metrics"),
        "data": {
            **data,
            "description": opened.data().description,
            "fingerprint": opened.data().fingerprint,
        },
    }


def _optional(notes: dict, key: str, fn: Any, model: Any, table: Any, domains: list, caps: dict):
    if not caps["has_gate"]:
        notes[key] = f"model {caps['name']!r} has no gate: nothing to re-route"
        return None
    try:
        return fn(model, table, domains)
    except ValueError as e:
        notes[key] = str(e)
        return None


def _truth(truth: dict | None, col: Collection, caps: dict, domains: list, notes: dict) -> Any:
    if not truth:
        notes["truth"] = "The data has no planted truth (only the built-in synthetic data has one)."
        return None
    out = {
        "matrix": truth.get("domain_mechanism"),
        "mechanism_names": truth.get("mechanism_names"),
        "recovery": None,
    }
    if col.stats is None:
        notes["truth"] = "The model has no gate: there is no routing to compare with the truth."
        return out
    try:
        rec = truth_recovery(
            col.stats,
            truth,
            kind="hard",
            include_shared=caps["num_shared"] == 0,
            domain_names=domains,
        )
        out["recovery"] = rec.to_dict()
    except ValueError as e:
        notes["truth"] = f"truth recovery undefined: {e}"
    return out


def resolve_embedding(embedding: str) -> tuple[str, str | None]:
    """("pca" | "umap", note): "auto" is UMAP when umap-learn is installed, else PCA."""
    if embedding == "auto":
        if emb.umap_available():
            return "umap", None
        return "pca", "umap-learn is not installed: PCA shown instead (pip install umap-learn)."
    return embedding, None


def record_projection_key(
    rec: Record, method: str, n: int, seed: int, params: dict, mode: str = "routed"
) -> dict[str, Any]:
    """The cache key of a projection of ``n`` rows of a record's expert-output sample: the
    record's rows hash, the weights that made it (checkpoints), its split and sample seed."""
    sha = rec.meta.data.get("rows_sha256")
    key = emb.projection_key(
        {"weights_sha256": rec.meta.source.get("weights_sha256") or sha},
        method=method,
        mode=mode,
        split=str(rec.meta.data.get("part", "record")),
        sample_size=n,
        seed=seed,
        params=params,
        data_fingerprint=sha,
    )
    return {**key, "record_sample_seed": rec.meta.sample.get("seed")}


def _embedding(
    col: Collection,
    rec: Record,
    embedding: str,
    seed: int,
    cache_dir: Any,
    experts: list,
    notes: dict,
) -> tuple[dict | None, str]:
    method, note = resolve_embedding(embedding)
    s = col.sample
    if s is None or s.expert_outputs is None or len(s) == 0:
        notes["embedding"] = (
            "No expert outputs to project (the model returns none, or the record has no sample)."
        )
        return None, method
    points, labels = emb.expert_output_points(s, "routed")
    if method == "umap" and len(points) < 4:
        method, note = "pca", f"only {len(points)} sampled rows: PCA instead of UMAP."
    params = dict(emb.UMAP_DEFAULTS) if method == "umap" else {}
    key = record_projection_key(rec, method, len(points), seed, params)
    cache = Path(cache_dir) if cache_dir is not None else emb.embedding_cache_path(rec.path)
    xy = emb.lookup_projection(cache, key)
    cached = xy is not None
    if xy is None:
        try:
            xy = emb.cached_projection(
                cache, key, lambda: emb.project(points, method, seed=seed, **params)
            )
        except Exception as e:  # "auto" promises a picture: fall back to PCA, say why
            if embedding != "auto" or method == "pca":
                raise
            log.warning("UMAP failed, falling back to PCA: %s", e)
            method, params, note = "pca", {}, f"UMAP failed ({type(e).__name__}: {e}); PCA shown."
            key = {**key, "method": "pca", "params": {}}
            xy = emb.cached_projection(cache, key, lambda: emb.project(points, "pca"))
    proj = {
        "method": method,
        "mode": "routed",
        "params": params,
        "note": note,
        "cached": cached,
        "xy": np.round(xy, 6),
        "domain": labels["domain"],
        "expert": labels["expert"],
        "rows": s.rows,
        "expert_names": experts,
    }
    return proj, method
