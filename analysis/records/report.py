"""The parts of a ``Report`` from a routing record (``cesaa report RECORD``): no model needed.

Everything that one forward pass determines comes from the record: per-domain metrics, P(e|d),
mutual information, entropy, load, alarms and the expert-output embedding of the sample.  Views
that re-run the model (knock-out, k curve) carry a one-line note that they need a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from analysis.alarms import health_alarms
from analysis.measures import row_entropy_by_domain, summarize
from analysis.records.collection import NEEDS_CHECKPOINT, head_sample, record_collection
from analysis.records.reader import open_record


def gather_record(
    path: Path,
    *,
    sample_size: int,
    embedding: str,
    seed: int,
    cache_dir: str | Path | None,
) -> dict[str, Any]:
    """``analysis.report_build.gather`` for a record folder (same keys)."""
    from analysis.report_build import _embedding

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rec = open_record(path)
    col = record_collection(rec)
    timings["load"] = time.perf_counter() - t0
    meta = rec.meta
    domains = list(meta.domains)
    experts = [e.name for e in meta.primary.experts]
    notes = {
        "knockout": f"Knock-out importance {NEEDS_CHECKPOINT}.",
        "k_curve": f"The k curve {NEEDS_CHECKPOINT}.",
        "truth": "A record carries no planted truth (only the built-in synthetic data has one).",
    }
    metrics = dict(meta.metrics) or col.metrics(tuple(domains))
    metrics = {k: (float("nan") if v is None else v) for k, v in metrics.items()}
    summary = summarize(col.stats, domains, experts)
    alarms = health_alarms(
        col.stats,
        metrics,
        domains,
        alpha=0.0,
        predictions_std_per_domain=col.prediction_std_per_domain(),
    )
    s = col.sample = head_sample(col.sample, sample_size)  # at most sample_size rows
    entropy = row_entropy_by_domain(s.probs, s.domain) if s is not None and len(s) else None
    t1 = time.perf_counter()
    key_meta = {
        "weights_sha256": meta.data.get("rows_sha256"),
        "data": {"fingerprint": meta.data.get("rows_sha256")},
    }
    projection, used = _embedding(
        col,
        key_meta,
        meta.data.get("rows_sha256", ""),
        str(meta.data.get("part", "record")),
        embedding,
        seed,
        path,
        cache_dir,
        experts,
        notes,
    )
    timings["embedding"] = time.perf_counter() - t1
    return {
        "checkpoint": {"path": str(path), "record": True, "weights_sha256": None},
        "model_card": {
            "name": meta.model_name,
            "description": meta.model_description,
            "config": None,
            "train_config": None,
            "status": "record",
            "best_epoch": None,
            "checkpoint_metrics": None,
            "capabilities": col.capabilities,
            "domain_names": domains,
            "expert_names": experts,
            "data": {
                "source": meta.data.get("source", "record"),
                "description": meta.data,
                "fingerprint": meta.data.get("rows_sha256"),
                "train_fingerprint": meta.data.get("fingerprint"),
                "split": meta.data.get("part", "record"),
                "rows": meta.rows,
            },
            "history": [],
            "record": {"command": meta.command, "created": meta.created, "source": meta.source},
        },
        "settings": {
            "data": str(path),
            "split": str(meta.data.get("part", "record")),
            "sample_size": sample_size,
            "embedding": used,
            "embedding_requested": embedding,
            "seed": seed,
        },
        "metrics": metrics,
        "summary": summary,
        "entropy": entropy,
        "knockout": None,
        "k_curve": None,
        "truth": None,
        "alarms": [a.to_dict() for a in alarms],
        "embedding": projection,
        "notes": notes,
        "timings": timings,
        "embedding_method": used,
    }
