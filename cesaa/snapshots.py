"""Per-epoch routing snapshots: the validation split's routing statistics after each epoch.

Written to ``routing/epoch_XXX.json`` of the run folder when ``TrainConfig.routing_snapshots`` is on
and read back by ``analysis.compare.routing_evolution`` (how MI and P(e|d) evolve in training).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cesaa import distributed
from cesaa.checkpoint import write_json
from cesaa.distributed import DistContext
from cesaa.evaluation import shard_batches

ROUTING_DIR = "routing"


@torch.no_grad()
def write_routing_snapshot(
    run: Path,
    model: nn.Module,
    val: object,
    num_domains: int,
    epoch: int,
    batch_size: int,
    ctx: DistContext | None = None,
) -> None:
    """Routing statistics of ``val`` after ``epoch`` -> ``routing/epoch_XXX.json``.

    Under DDP (or for a stream) each rank collects its share and the sums are merged.
    """
    from cesaa.routing.collect import stream_routing_stats

    ctx = ctx or DistContext()
    shards = shard_batches(val, batch_size, ctx)
    stats = distributed.merge_routing_stats(
        stream_routing_stats(model, shards, num_domains=num_domains), ctx
    )
    if stats is not None and ctx.is_main:  # models without a gate have no routing to snapshot
        write_json(run / ROUTING_DIR / f"epoch_{epoch + 1:03d}.json", stats.to_dict())
