"""A record as the ``Collection`` the report and the dashboard read (no model needed).

Shapes: N = rows, n = sample rows, D = domains, E = experts, k = selected experts, H = width.

The routing statistics come from ``record.json`` (all rows, instant); the per-row scalars the
metrics need (prediction, label, domain, top-1 expert: about 20 bytes a row) are read column by
column; the embedding sample from ``sample.parquet``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.collection import Collection, EmbeddingSample
from analysis.records.format import prob_column, top_column
from analysis.records.reader import Record
from analysis.records.sample import row_keys

NEEDS_CHECKPOINT = (
    "needs a checkpoint: it re-runs the live model with other routing (knocked-out experts, "
    "another k, shared experts off, a retrain), and a record holds only what one forward pass "
    "produced"
)


def record_capabilities(rec: Record, gate: str | None = None) -> dict[str, Any]:
    """``cesaa.routing.capabilities.routing_capabilities``-style dict of the recorded model, read
    from the metadata (expert kinds: "routed", "shared", or "domain:<d>" for an expert owned by
    domain d)."""
    g = rec.meta.gate(gate) if gate else rec.primary
    if g is None:
        return {
            "name": rec.meta.model_name,
            "num_experts": 0,
            "expert_kinds": [],
            "row_experts": 0,
            "top_k": None,
            "num_shared": 0,
            "always_on": 0,
            "has_gate": False,
            "has_topk": False,
            "source": "record",
        }
    domains = list(rec.domains)
    kinds = []
    for e in g.experts:
        if e.kind == "specific" and e.owner in domains:
            kinds.append(f"domain:{domains.index(e.owner)}")
        else:  # a task's expert in a one-task model is weighed by every row's gate
            kinds.append("shared" if e.kind == "shared" else "routed")
    common = sum(1 for k in kinds if not k.startswith("domain:"))
    owned = [kinds.count(k) for k in dict.fromkeys(k for k in kinds if k.startswith("domain:"))]
    return {
        "name": rec.meta.model_name,
        "num_experts": g.num_experts,
        "expert_kinds": kinds,
        "row_experts": common + (min(owned) if owned else 0),
        "top_k": g.top_k,
        "num_shared": len(rec.meta.always_on) + kinds.count("shared"),
        "always_on": len(rec.meta.always_on),
        "has_gate": True,
        "has_topk": bool(g.top_k),
        "source": "record",
    }


def record_collection(rec: Record, gate: str | None = None) -> Collection:
    """The ``Collection`` of gate ``gate`` (default: the primary gate) of a record."""
    g = rec.meta.gate(gate) if gate else rec.primary
    top1_col = top_column(g.name, 0) if g is not None and g.top_k else None
    pcols = [] if g is None else [prob_column(g.name, e) for e in range(g.num_experts)]
    cols = ["domain", "label", "prediction"] + ([top1_col] if top1_col else pcols)
    parts: dict[str, list[np.ndarray]] = {"domain": [], "label": [], "prediction": [], "top1": []}
    for t in rec.iter_batches(cols):
        parts["domain"].append(t["domain"].to_numpy().astype(np.int64))
        parts["label"].append(t["label"].to_numpy().astype(np.float32))
        parts["prediction"].append(t["prediction"].to_numpy().astype(np.float32))
        if top1_col:
            parts["top1"].append(t[top1_col].to_numpy().astype(np.int64))
        elif pcols:
            probs = np.column_stack([t[c].to_numpy() for c in pcols])
            parts["top1"].append(probs.argmax(axis=1).astype(np.int64))

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype)

    col = Collection(
        stats=None if g is None else rec.stats[g.name],
        predictions=cat("prediction", np.float32),
        labels=cat("label", np.float32),
        domain=cat("domain", np.int64),
        top1=None if g is None else cat("top1", np.int64),
        sample=None if g is None else record_sample(rec, g.name),
        num_domains=len(rec.domains),
        capabilities=record_capabilities(rec, None if g is None else g.name),
        has_labels=rec.meta.labels,
    )
    col.domain_names = tuple(rec.domains)
    return col


def sample_positions(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded uniform draw of ``size`` of ``n`` rows (all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


ROW_DRAW = 20_000  # rows whose per-row gate values (entropy, margin) a report or page shows


def read_rows(rec: Record, columns: list[str], positions: np.ndarray) -> Any:
    """The rows at sorted ``positions`` (a pyarrow Table), read one row group at a time."""
    import pyarrow as pa

    parts, start = [], 0
    for t in rec.iter_batches(columns):
        lo, hi = np.searchsorted(positions, [start, start + t.num_rows])
        if hi > lo:
            parts.append(t.take(positions[lo:hi] - start))
        start += t.num_rows
    return pa.concat_tables(parts) if parts else None


def gate_rows(
    rec: Record, gate: str | None = None, size: int = ROW_DRAW, seed: int = 0
) -> dict[str, np.ndarray] | None:
    """Gate values of a seeded draw of ``size`` rows from rows.parquet (every row when the record
    has fewer): ``{rows, domain, probs [n, E], topk [n, k] or None}``; ``None`` without a gate or
    rows.  Per-row measures (entropy, margin) read these, not the expert-output sample."""
    g = rec.meta.gate(gate) if gate else rec.primary
    if g is None or rec.rows == 0:
        return None
    idx = sample_positions(rec.rows, size, seed)
    t = read_rows(rec, ["domain", *g.columns()], idx)
    probs, top = rec.gate_arrays(t, g.name)
    return {
        "rows": idx,
        "domain": t["domain"].to_numpy().astype(np.int64),
        "probs": probs,
        "topk": top,
    }


def head_sample(sample: EmbeddingSample | None, n: int, seed: int = 0) -> EmbeddingSample | None:
    """The ``n`` rows of a record's sample with the smallest seeded keys (``sample.row_keys``):
    exactly the sample a record written with ``sample_size=n`` holds (a bottom-n sketch keeps
    its property under a smaller n), in row order; ``None`` for n = 0."""
    from dataclasses import fields, replace

    if sample is None or n >= len(sample):
        return sample
    if n <= 0:
        return None
    keep = np.sort(np.argsort(row_keys(sample.rows, seed), kind="stable")[:n])
    return replace(
        sample,
        **{
            f.name: None if getattr(sample, f.name) is None else getattr(sample, f.name)[keep]
            for f in fields(sample)
        },
    )


def record_sample(rec: Record, gate: str | None = None) -> EmbeddingSample | None:
    """The record's expert-output sample as an ``EmbeddingSample`` (``None`` without one)."""
    t = rec.sample()
    if t is None:
        return None
    g = rec.meta.gate(gate) if gate else rec.primary
    probs = np.column_stack(
        [t[prob_column(g.name, e)].to_numpy() for e in range(g.num_experts)]
    ).astype(np.float64)
    topk = None
    if g.top_k:
        topk = np.column_stack(
            [t[top_column(g.name, j)].to_numpy() for j in range(g.top_k)]
        ).astype(np.int64)

    def stack(prefix: str, count: int) -> np.ndarray | None:
        if count == 0:
            return None
        per = [np.stack(t[f"{prefix}.{i}"].to_numpy(zero_copy_only=False)) for i in range(count)]
        return np.stack(per, axis=1).astype(np.float64)  # [n, count, H]

    outputs = stack("out", rec.primary.num_experts) if g.name == rec.primary.name else None
    gates = None
    if topk is not None:  # the weights that mixed the experts: renormalized top-k probabilities
        gates = np.zeros_like(probs)
        rows = np.arange(len(probs))[:, None]
        gates[rows, topk] = probs[rows, topk]
        gates /= np.maximum(gates.sum(axis=1, keepdims=True), 1e-12)
    return EmbeddingSample(
        rows=t["row"].to_numpy().astype(np.int64),
        domain=t["domain"].to_numpy().astype(np.int64),
        label=t["label"].to_numpy().astype(np.float64),
        prediction=t["prediction"].to_numpy().astype(np.float64),
        probs=probs,
        gates=gates if gates is not None else probs,
        topk_idx=topk,
        expert=topk[:, 0] if topk is not None else probs.argmax(axis=1),
        expert_outputs=outputs,
        shared_outputs=stack("shared", int(rec.meta.sample.get("shared", 0))),
    )
