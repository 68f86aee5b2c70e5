"""Run a model once over a table and collect its routing.

Shapes: N = rows of the table, n = rows in the embedding sample, D = domains, E = selectable experts,
k = experts selected per row, S = shared experts, H = expert width.

One batched, gradient-free pass.  The routing statistics are a ``RoutingStats`` (sums only), so
their memory does not depend on N and the stats of two halves of a table merge into the stats of
the whole.  Only a few per-row arrays are kept (predictions, labels, domains and the top-1 expert:
what metrics and row-level comparisons need) plus, on request, a seeded random subsample of rows
with every expert's output (for embedding plots).

``collect(model, table, routing=...)`` is what the causal views run: the live model re-routed
(another k, knocked-out experts, shared experts off).  A checkpoint as trained is read through its
record (``analysis.opened``; ``analysis.records.checkpoint.record_checkpoint`` streams a Parquet
source one row-group piece at a time).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.collection import Collection, EmbeddingSample
from cesaa.data.table import EncodedTable
from cesaa.models.output import RoutingOverride
from cesaa.routing.capabilities import routing_capabilities
from cesaa.routing.stats import RoutingStats
from cesaa.routing.validation import check_routing_arrays

__all__ = ["Collection", "EmbeddingSample", "collect"]


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
