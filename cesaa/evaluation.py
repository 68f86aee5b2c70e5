"""Evaluation as functions: ``predict`` (probabilities) and ``evaluate`` (AUC / GAUC / logloss).

``evaluate_part`` is ``evaluate`` for a split that may be a Parquet stream or shared over DDP ranks:
each rank predicts its share, the predictions are gathered, and every rank computes the same metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from cesaa import allocator, distributed
from cesaa.data.table import EncodedTable
from cesaa.distributed import DistContext
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride


@torch.no_grad()
def predict(
    model: nn.Module,
    table: EncodedTable,
    batch_size: int = 8192,
    routing: RoutingOverride | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted positive probabilities [N] in eval mode (restores the previous mode).

    Keeps freed memory in the process (:func:`cesaa.allocator.retain_freed_memory`)."""
    allocator.retain_freed_memory()
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for b in table.batches(batch_size):
        b = b.to(device)
        out.append(
            torch.sigmoid(model(b.cat, b.num, b.domain, routing=routing).logit).float().cpu()
        )
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def evaluate(
    model: nn.Module,
    table: EncodedTable,
    domain_names: tuple[str, ...],
    batch_size: int = 8192,
    routing: RoutingOverride | None = None,
) -> dict[str, float]:
    """Overall and per-domain AUC / GAUC / logloss (flat keys, see ``cesaa.metrics``).

    ``table``: an ``EncodedTable`` or a Parquet stream part (``cesaa.data.stream.ParquetPart``).
    """
    if not isinstance(table, EncodedTable):
        return evaluate_part(model, table, domain_names, batch_size, DistContext(), routing)
    p = predict(model, table, batch_size, routing)
    user = table.user.numpy() if table.user is not None else None
    return evaluate_predictions(
        table.label.numpy(), p, table.domain.numpy(), user=user, domain_names=domain_names
    )


def evaluate_part(
    model: nn.Module,
    part: object,
    domain_names: tuple[str, ...],
    batch_size: int,
    ctx: DistContext,
    routing: RoutingOverride | None = None,
) -> dict[str, float]:
    """``evaluate`` with the rows shared over ranks: each rank predicts its share (a contiguous
    slice of a table, or its row groups of a stream), the predictions are gathered, and every rank
    computes the same metrics."""
    allocator.retain_freed_memory()
    if ctx.world_size == 1 and isinstance(part, EncodedTable):
        return evaluate(model, part, domain_names, batch_size, routing)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cols: dict[str, list[torch.Tensor]] = {"p": [], "y": [], "d": [], "u": []}
    with torch.no_grad():
        for b in shard_batches(part, batch_size, ctx):
            b = b.to(device)
            out = model(b.cat, b.num, b.domain, routing=routing)
            cols["p"].append(torch.sigmoid(out.logit).float().cpu())
            cols["y"].append(b.label.float().cpu())
            cols["d"].append(b.domain.cpu())
            if b.user is not None:
                cols["u"].append(b.user.cpu())
    model.train(was_training)
    has_user = part.user is not None if isinstance(part, EncodedTable) else part.has_user
    dtypes = {"p": torch.float32, "y": torch.float32, "d": torch.long, "u": torch.long}
    got = {
        k: distributed.gather_rows(torch.cat(v) if v else torch.zeros(0, dtype=dtypes[k]), ctx)
        for k, v in cols.items()
        if k != "u" or has_user
    }
    user = got["u"].numpy() if has_user else None
    return evaluate_predictions(
        got["y"].float().numpy(),
        got["p"].float().numpy(),
        got["d"].numpy(),
        user=user,
        domain_names=domain_names,
    )


def shard_batches(part: object, batch_size: int, ctx: DistContext) -> Iterator[EncodedTable]:
    """This rank's contiguous share of a table's (or a stream's) rows, in batches."""
    if not isinstance(part, EncodedTable):
        return part.eval_batches(batch_size, rank=ctx.rank, world=ctx.world_size)
    lo, hi = distributed.shard_range(len(part), ctx.rank, ctx.world_size)
    fields = ("cat", "num", "domain", "label", "user", "item", "time")
    mine = EncodedTable(
        **{n: None if (x := getattr(part, n)) is None else x[lo:hi] for n in fields}
    )
    return mine.batches(batch_size)
