"""The computations behind ``build_report``: load, run the model once, measure, project.

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
from analysis.alarms import health_alarms
from analysis.capabilities import expert_names
from analysis.causal import k_curve, knockout_importance
from analysis.collect import Collection, collect
from analysis.measures import row_entropy_by_domain, summarize
from analysis.report_inspection import inspection_section
from analysis.truth import truth_recovery

log = logging.getLogger(__name__)


@contextmanager
def _timed(timings: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t0


def gather(
    ckpt_path: Path,
    data_source: str | None,
    *,
    split: str,
    sample_size: int,
    embedding: str,
    seed: int,
    progress: bool,
    cache_dir: str | Path | None,
) -> dict[str, Any]:
    from analysis.stream import collect_stream
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import MultiDomainData
    from cesaa.data.locate import open_checkpoint_data
    from cesaa.metrics import evaluate_predictions
    from cesaa.train import read_history

    timings: dict[str, float] = {}
    notes: dict[str, str] = {}
    with _timed(timings, "load"):
        ckpt = load_checkpoint(ckpt_path)
        meta = ckpt.meta
        # the checkpoint's own data (found where it was trained, or relative to the run folder)
        data = open_checkpoint_data(meta, ckpt.path, override=data_source)
        source = data_source or meta["data"].get("description", {}).get("source")
        stream = not isinstance(data, MultiDomainData)  # Parquet larger than memory
        part = getattr(data, split)
        table = part.sample_table(100_000, seed=seed) if stream else part  # knock-out, k curve
    domains = list(ckpt.domain_names)
    model = ckpt.model
    with _timed(timings, "collect"):
        col = (
            collect_stream(
                model,
                part.chunks(),
                num_domains=len(domains),
                rows=len(part),
                sample_size=sample_size,
                seed=seed,
            )
            if stream
            else collect(
                model,
                table,
                num_domains=len(domains),
                sample_size=sample_size,
                seed=seed,
                progress=progress,
            )
        )
    caps = col.capabilities
    experts = expert_names(caps, domains)
    if stream:
        user = part.column("user")
    else:
        user = table.user.numpy() if table.user is not None else None
    metrics = evaluate_predictions(
        col.labels, col.predictions, col.domain, user=user, domain_names=domains
    )
    summary = summarize(col.stats, domains, experts) if col.stats is not None else None
    if summary is None:
        notes["routing"] = col.no_routing_reason or "the model has no gate"

    with _timed(timings, "causal"):
        knockout = _optional(notes, "knockout", knockout_importance, model, table, domains, caps)
        kc = _optional(notes, "k_curve", k_curve, model, table, domains, caps)  # any gate

    truth = _truth(data.truth, col, caps, domains, notes)
    # only the CESAA family (a top-k gate) trains with the MI loss; baselines ignore model.alpha
    alpha = float(ckpt.model_config.alpha) if caps["has_topk"] else 0.0
    alarms = health_alarms(
        col.stats,
        metrics,
        domains,
        alpha=alpha,
        predictions_std_per_domain=col.prediction_std_per_domain(),
    )
    entropy = None
    s = col.sample
    if s is not None and s.probs is not None and len(s):
        entropy = row_entropy_by_domain(s.probs, s.domain)
    with _timed(timings, "embedding"):
        projection, used = _embedding(
            col,
            meta,
            data.fingerprint,
            split,
            embedding,
            seed,
            ckpt_path,
            cache_dir,
            experts,
            notes,
        )

    with _timed(timings, "inspection"):  # experts, domain swap, routing over training
        inspection = inspection_section(model, table, ckpt.encoders, domains, ckpt_path)
    history = read_history(ckpt_path)
    return {
        "checkpoint": {
            "path": str(ckpt_path),
            "weights_sha256": meta.get("weights_sha256"),
            "trained_with_cesaa": meta.get("package_version"),
        },
        "model_card": {
            "name": meta["model"].get("name"),
            "config": meta["model"].get("config"),
            "train_config": meta.get("train"),
            "status": meta.get("status"),
            "best_epoch": meta.get("metrics", {}).get("best_epoch"),
            "checkpoint_metrics": meta.get("metrics"),
            "capabilities": caps,
            "domain_names": domains,
            "expert_names": experts,
            "data": {
                "source": source,
                "description": data.description,
                "fingerprint": data.fingerprint,
                "train_fingerprint": meta["data"].get("fingerprint"),
                "split": split,
                "rows": len(part),
            },
            "history": history,
        },
        "settings": {
            "data": source,
            "split": split,
            "sample_size": sample_size,
            "embedding": used,
            "embedding_requested": embedding,
            "seed": seed,
        },
        "metrics": metrics,
        "summary": summary,
        "entropy": entropy,
        "knockout": None if knockout is None else knockout.to_dict(orient="records"),
        "k_curve": None if kc is None else kc.to_dict(orient="records"),
        "truth": truth,
        "alarms": [a.to_dict() for a in alarms],
        "embedding": projection,
        "inspection": inspection,
        "notes": notes,
        "timings": timings,
        "embedding_method": used,
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


def _embedding(
    col: Collection,
    meta: dict,
    fingerprint: str,
    split: str,
    embedding: str,
    seed: int,
    ckpt_path: Path,
    cache_dir: Any,
    experts: list,
    notes: dict,
) -> tuple[dict | None, str]:
    method, note = resolve_embedding(embedding)
    s = col.sample
    if s is None or s.expert_outputs is None or len(s) == 0:
        notes["embedding"] = (
            "No expert outputs to project (the model returns none, or sample_size is 0)."
        )
        return None, method
    points, labels = emb.expert_output_points(s, "routed")
    if method == "umap" and len(points) < 4:
        method, note = "pca", f"only {len(points)} sampled rows: PCA instead of UMAP."
    params = dict(emb.UMAP_DEFAULTS) if method == "umap" else {}
    key = emb.projection_key(
        meta,
        method=method,
        mode="routed",
        split=split,
        sample_size=len(points),
        seed=seed,
        params=params,
        data_fingerprint=fingerprint,
    )
    cache = Path(cache_dir) if cache_dir is not None else emb.embedding_cache_path(ckpt_path)
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
