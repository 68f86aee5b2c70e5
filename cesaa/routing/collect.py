"""Routing statistics of a model over a stream of batches (out-of-core data, several ranks).

Shapes: N = rows of the whole stream, D = domains, E = selectable experts, k = experts per row.

One gradient-free pass that keeps only a ``RoutingStats`` (sums): memory independent of N.  Stats
of several files or ranks merge exactly (``RoutingStats.merge``,
``cesaa.distributed.merge_routing_stats``).  Training uses it for per-epoch routing snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cesaa.data.table import EncodedTable
from cesaa.models.output import RoutingOverride
from cesaa.routing.capabilities import routing_capabilities
from cesaa.routing.stats import RoutingStats


@torch.no_grad()
def stream_routing_stats(
    model: nn.Module,
    batches: Iterable[EncodedTable],
    *,
    num_domains: int,
    routing: RoutingOverride | None = None,
) -> RoutingStats | None:
    """``RoutingStats`` (with labels and predictions) of every row of ``batches``, in eval mode.

    ``None`` for a model without a gate; empty stats when a gated model sees no rows.  The model's
    train/eval mode is restored.
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
