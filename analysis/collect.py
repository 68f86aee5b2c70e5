"""Run a model once over a table and collect its routing.

Shapes: N = rows of the table, n = rows in the embedding sample, D = domains, E = selectable experts,
k = experts selected per row, S = shared experts, H = expert width.

One batched, gradient-free pass.  The routing statistics are a ``RoutingStats`` (sums only), so
their memory does not depend on N and the stats of two halves of a table merge into the stats of
the whole.  Only a few per-row arrays are kept (predictions, labels, domains and the top-1 expert:
what metrics and row-level comparisons need) plus, on request, a seeded random subsample of rows
with every expert's output (for embedding plots).

- ``collect(model, table)``: a table in memory.
- ``collect_stream(model, chunks, rows=N)``: the same collection built chunk by chunk (e.g. the
  row-group pieces of ``cesaa.data.stream.ParquetPart.chunks()``): the features are never all in
  memory, only the per-row scalars a report needs (prediction, label, domain, top-1 expert: about
  24 bytes a row) and the embedding sample, drawn from the same seeded positions.
- ``collect_checkpoint(run, data)``: either of them for a checkpoint on a data source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.collection import Collection, EmbeddingSample
from cesaa.checkpoint import Checkpoint, load_checkpoint
from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.models.output import RoutingOverride
from cesaa.routing.capabilities import routing_capabilities
from cesaa.routing.stats import RoutingStats
from cesaa.routing.validation import check_routing_arrays

__all__ = [
    "Collection",
    "EmbeddingSample",
    "collect",
    "collect_checkpoint",
    "collect_stream",
]

PARTS = ("train", "val", "test")


def _nonnegative_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@torch.no_grad()
def collect(
    model: nn.Module,
    table: EncodedTable,
    *,
    num_domains: int,
    routing: RoutingOverride | None = None,
    batch_size: int = 8192,
    sample_size: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> Collection:
    """Run ``model`` over ``table`` once (eval mode, no gradient, batches of ``batch_size``).

    Collects the routing statistics of every row (dense gate probabilities, selected experts,
    domain, label, prediction), the per-row predictions and top-1 experts, and, when
    ``sample_size`` > 0, an ``EmbeddingSample`` of ``min(sample_size, N)`` rows drawn without
    replacement from ``numpy.random.default_rng(seed)`` whose expert outputs are computed by a
    second forward pass on those rows only.  ``routing`` re-routes at inference (see
    ``RoutingOverride``).  ``progress`` shows a tqdm bar.  The model's train/eval mode is restored.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(table, EncodedTable):
        raise ValueError(f"table must be an EncodedTable, got {type(table).__name__}")
    if routing is not None and not isinstance(routing, RoutingOverride):
        raise ValueError(f"routing must be a RoutingOverride or None, got {type(routing).__name__}")
    num_domains = _nonnegative_int(num_domains, "num_domains", 1)
    batch_size = _nonnegative_int(batch_size, "batch_size", 1)
    sample_size = _nonnegative_int(sample_size, "sample_size", 0)
    domain_all = check_routing_arrays(domain=table.domain, num_domains=num_domains).domain
    caps = routing_capabilities(model)

    n = len(table)
    sample_rows = np.zeros(0, np.int64)
    if sample_size > 0 and n > 0:
        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stats: RoutingStats | None = None
    preds, top1 = [], []
    parts: dict[str, list[np.ndarray]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=math.ceil(n / batch_size), desc="collect routing", leave=False)
    try:
        for start, batch in zip(range(0, n, batch_size), table.batches(batch_size), strict=True):
            b = batch.to(device)
            out = model(b.cat, b.num, b.domain, routing=routing)
            p = torch.sigmoid(out.logit).float().cpu().numpy()  # [B]
            preds.append(p)
            dom = batch.domain.numpy()
            probs = topk = None
            if out.probs is not None:
                probs = out.probs.detach().float().cpu().numpy()  # [B, E]
                topk = None if out.topk_idx is None else out.topk_idx.cpu().numpy()  # [B, k]
                if stats is None:
                    stats = RoutingStats.empty(num_domains, probs.shape[1])
                stats = stats.update(probs, dom, topk_idx=topk, labels=batch.label.numpy(), preds=p)
                top1.append(topk[:, 0] if topk is not None else probs.argmax(axis=1))
            lo, hi = np.searchsorted(sample_rows, [start, start + len(batch)])
            if hi > lo:
                local = sample_rows[lo:hi] - start
                _sample_batch(model, b, local, probs, out.gates, topk, routing, parts)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)

    if stats is None and n == 0 and caps["has_gate"]:
        stats = RoutingStats.empty(num_domains, caps["num_experts"])
    predictions = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    top1_all = np.concatenate(top1).astype(np.int64) if top1 else None
    sample = None
    if sample_size > 0:
        sample = EmbeddingSample(
            rows=sample_rows,
            domain=domain_all[sample_rows],
            label=table.label.numpy()[sample_rows].astype(np.float64),
            prediction=predictions[sample_rows].astype(np.float64),
            expert=None if top1_all is None else top1_all[sample_rows],
            **{k: (np.concatenate(v) if v else None) for k, v in parts.items()},
        )
    return Collection(
        stats=stats,
        predictions=predictions,
        labels=table.label.numpy().astype(np.float32),
        domain=domain_all,
        top1=top1_all,
        sample=sample,
        num_domains=num_domains,
        capabilities=caps,
        routing=routing,
    )


def _sample_batch(
    model: nn.Module,
    batch: EncodedTable,
    local: np.ndarray,
    probs: np.ndarray | None,
    gates: torch.Tensor | None,
    topk: np.ndarray | None,
    routing: RoutingOverride | None,
    parts: dict[str, list[np.ndarray]],
) -> None:
    """Append the sampled rows ``local`` (positions in ``batch``) to ``parts``; expert outputs come
    from a second forward pass on those rows only."""
    idx = torch.as_tensor(local, dtype=torch.long, device=batch.domain.device)
    sub = batch.subset(idx)
    out = model(sub.cat, sub.num, sub.domain, routing=routing, return_expert_outputs=True)
    rows = {
        "probs": None if probs is None else probs[local].astype(np.float64),
        "gates": None if gates is None else _np(gates[idx]).astype(np.float64),
        "topk_idx": None if topk is None else topk[local].astype(np.int64),
        "expert_outputs": _np(out.expert_outputs),
        "shared_outputs": _np(out.shared_outputs),
    }
    for key, value in rows.items():
        if value is not None:
            parts.setdefault(key, []).append(value)


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().float().cpu().numpy()


def collect_checkpoint(
    path_or_ckpt: str | Path | Checkpoint,
    data: str | EncodedTable | MultiDomainData,
    *,
    part: str = "test",
    routing: RoutingOverride | None = None,
    batch_size: int = 8192,
    sample_size: int = 0,
    seed: int = 0,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> Collection:
    """``collect`` for a checkpoint (a run folder or a loaded ``Checkpoint``) on ``data``.

    ``data``: an ``EncodedTable``; a ``MultiDomainData`` (its split ``part``: "train", "val" or
    "test"); or a data source string for ``cesaa.data.load_data`` (or ``stream:SCHEMA``, read piece
    by piece with ``analysis.stream.collect_stream``), encoded with the checkpoint's own encoders
    (default random split, seed 0), of which split ``part`` is used.  The returned
    collection carries the checkpoint's domain names.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
    ckpt = path_or_ckpt
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(path_or_ckpt, device=device)
    if isinstance(data, str):
        from cesaa.data import load_data
        from cesaa.data.stream import is_stream_source, open_stream

        if is_stream_source(data):  # Parquet larger than memory: one piece at a time
            rows = getattr(open_stream(data, encoders=ckpt.encoders), part)
            return collect_stream(
                ckpt.model,
                rows.chunks(),
                num_domains=ckpt.spec.num_domains,
                rows=len(rows),
                routing=routing,
                batch_size=batch_size,
                sample_size=sample_size,
                seed=seed,
                domain_names=tuple(ckpt.domain_names),
            )
        data = load_data(data, encoders=ckpt.encoders)
    if isinstance(data, MultiDomainData):
        data = getattr(data, part)
    if not isinstance(data, EncodedTable):
        raise ValueError(
            "data must be a data source string, a MultiDomainData or an EncodedTable, got "
            f"{type(data).__name__}"
        )
    out = collect(
        ckpt.model,
        data,
        num_domains=ckpt.spec.num_domains,
        routing=routing,
        batch_size=batch_size,
        sample_size=sample_size,
        seed=seed,
        progress=progress,
    )
    out.domain_names = tuple(ckpt.domain_names)
    return out


def collect_stream(
    model: nn.Module,
    chunks: Iterable[EncodedTable],
    *,
    num_domains: int,
    rows: int | None = None,
    routing: RoutingOverride | None = None,
    batch_size: int = 8192,
    sample_size: int = 0,
    seed: int = 0,
    domain_names: tuple[str, ...] | None = None,
) -> Collection:
    """``collect(model, table, ...)`` of the concatenation of ``chunks``, one chunk in memory at a time.

    ``rows`` (the total N, e.g. ``len(part)``) is needed for an embedding sample: its positions are
    ``sort(default_rng(seed).choice(N, min(sample_size, N), replace=False))``, as in ``collect``.
    Routing statistics merge chunk by chunk; predictions equal ``collect``'s up to float rounding.
    """
    if sample_size > 0 and rows is None:
        raise ValueError("collect_stream needs rows= (the total row count) when sample_size > 0")
    sample_rows = np.zeros(0, np.int64)
    if sample_size > 0 and rows:
        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(rows, size=min(sample_size, rows), replace=False))
    kw = dict(num_domains=num_domains, routing=routing, batch_size=batch_size)
    parts: list[Collection] = []
    samples: list[EmbeddingSample] = []
    start = 0
    for chunk in chunks:
        if not isinstance(chunk, EncodedTable):
            raise ValueError(f"chunks must yield EncodedTable, got {type(chunk).__name__}")
        parts.append(collect(model, chunk, **kw))
        lo, hi = np.searchsorted(sample_rows, [start, start + len(chunk)])
        if hi > lo:
            local = sample_rows[lo:hi] - start
            sub = chunk.subset(torch.as_tensor(local, dtype=torch.long))
            s = collect(model, sub, **kw, sample_size=len(local)).sample
            s.rows = sample_rows[lo:hi].copy()
            samples.append(s)
        start += len(chunk)
    if rows is not None and start != rows:
        raise ValueError(f"rows={rows} but the chunks held {start} rows")
    if not parts:  # no rows at all: what collect returns for an empty table
        empty = EncodedTable(
            cat=torch.zeros(0, 0, dtype=torch.long),
            num=torch.zeros(0, 0),
            domain=torch.zeros(0, dtype=torch.long),
            label=torch.zeros(0),
        )
        parts.append(collect(model, empty, **kw))
    stats = parts[0].stats
    for p in parts[1:]:
        stats = p.stats if stats is None else stats.merge(p.stats)
    top1 = [p.top1 for p in parts if p.top1 is not None]
    out = Collection(
        stats=stats,
        predictions=np.concatenate([p.predictions for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        domain=np.concatenate([p.domain for p in parts]),
        top1=np.concatenate(top1) if top1 else None,
        sample=_merge_samples(samples) if sample_size > 0 else None,
        num_domains=num_domains,
        capabilities=parts[0].capabilities,
        routing=routing,
    )
    out.domain_names = domain_names
    return out


def _merge_samples(samples: list[EmbeddingSample]) -> EmbeddingSample:
    if not samples:
        z = np.zeros(0)
        return EmbeddingSample(
            rows=np.zeros(0, np.int64), domain=z.astype(np.int64), label=z, prediction=z
        )
    names = EmbeddingSample.__dataclass_fields__
    return EmbeddingSample(
        **{
            n: None
            if getattr(samples[0], n) is None
            else np.concatenate([getattr(s, n) for s in samples])
            for n in names
        }
    )
