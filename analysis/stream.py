"""Routing statistics and collections over a stream of batches (out-of-core data, several ranks).

Shapes: N = rows of the whole stream, D = domains, E = selectable experts, k = experts per row.

- ``stream_routing_stats(model, batches, num_domains=D)``: one gradient-free pass that keeps only a
  ``RoutingStats`` (sums): memory independent of N.  Stats of several files or ranks merge exactly
  (``RoutingStats.merge``, ``cesaa.distributed.merge_routing_stats``).
- ``collect_stream(model, chunks, num_domains=D, rows=N)``: the ``analysis.collect.Collection`` that
  ``collect`` returns for the whole table, built chunk by chunk (e.g. the row-group pieces of
  ``cesaa.data.stream.ParquetPart.chunks()``): the features are never all in memory, only the
  per-row scalars a report needs (prediction, label, domain, top-1 expert: about 24 bytes a row)
  and the embedding sample, drawn from the same seeded positions as ``collect`` draws them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from analysis.capabilities import routing_capabilities
from analysis.collect import Collection, EmbeddingSample, collect
from analysis.stats import RoutingStats
from cesaa.data.table import EncodedTable
from cesaa.models.output import RoutingOverride


@torch.no_grad()
def stream_routing_stats(
    model: nn.Module,
    batches: Iterable[EncodedTable],
    *,
    num_domains: int,
    routing: RoutingOverride | None = None,
) -> RoutingStats | None:
    """``RoutingStats`` (with labels and predictions) of every row of ``batches``, in eval mode.

    ``None`` for a model without a gate; empty stats when a gated model sees no rows.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stats: RoutingStats | None = None
    try:
        for batch in batches:
            b = batch.to(device)
            out = model(b.cat, b.num, b.domain, routing=routing)
            if out.probs is None:
                continue
            probs = out.probs.float().cpu().numpy()  # [B, E]
            topk = None if out.topk_idx is None else out.topk_idx.cpu().numpy()  # [B, k]
            if stats is None:
                stats = RoutingStats.empty(num_domains, probs.shape[1])
            stats = stats.update(
                probs,
                batch.domain.numpy(),
                topk_idx=topk,
                labels=batch.label.numpy(),
                preds=torch.sigmoid(out.logit).float().cpu().numpy(),
            )
    finally:
        model.train(was_training)
    if stats is None:
        caps = routing_capabilities(model)
        if caps["has_gate"]:
            stats = RoutingStats.empty(num_domains, caps["num_experts"])
    return stats


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
