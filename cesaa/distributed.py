"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` launched by ``torchrun``.

    torchrun --nproc_per_node=2 -m cesaa train --data synthetic --set train.mi_scope=global

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them and starts the process group (NCCL when training on CUDA, gloo on CPU).
Without them everything here is a no-op and training is the single-process code path, unchanged.

Conventions (W = world size, r = rank):

- ``TrainConfig.batch_size`` is the **global** batch.  Every process draws the same seeded
  permutation of the training rows; global batch ``t`` is split into W contiguous slices and rank r
  trains on slice r (in-memory data), or each rank reads its own share of the Parquet row groups
  (``cesaa.data.stream``).  The BCE of rank r is scaled by ``W * n_r / n`` so that DDP's gradient
  average equals the gradient of the mean BCE over the global batch, also when slices are uneven.
- L_MI: ``mi_scope="rank"`` (default) computes I(D; E) from each rank's own slice; DDP averages the
  W gradients.  ``mi_scope="global"`` all-reduces the joint sums S[d, e] = sum_x p(x)_e with the
  differentiable functional ``all_reduce`` of ``torch.distributed``, so every rank evaluates I on the
  global batch.  Its backward all-reduces the incoming gradients: rank r receives
  W * dI/dS (one copy per rank's identical loss), DDP divides by W, and the parameter gradient is
  exactly dI/d(theta) of the global batch: the single-process gradient.
- Gate noise and dropout draw from a per-rank seed (rank 0 keeps the single-process seed).
- Only rank 0 writes checkpoints; every rank reads them on ``--resume``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from cesaa.routing.stats import RoutingStats

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank r of W, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> DistContext:
    """Join the process group ``torchrun`` describes (once per process); a no-op when not launched.

    ``device`` is the single-process choice; under DDP on CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return DistContext(device=device)
        missing = [v for v in ENV_VARS if v not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE > 1 but {missing} are not set; launch with torchrun")
        if device.type == "cuda":  # NCCL, one GPU per rank
            gpu = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", timeout=TIMEOUT, device_id=gpu)
        else:
            dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return DistContext(rank, world, local, device)


def shutdown() -> None:
    """Leave the process group (call once at the end of a torchrun program)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel(model)`` under torchrun, else ``model`` itself."""
    if not ctx.is_distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank``: W contiguous slices whose sizes differ by at most 1
    (the first ``n % W`` ranks take one more), as ``torch.tensor_split``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank={rank} must be in [0, world={world})")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def global_joint_reducer(group: dist.ProcessGroup | None = None):
    """``S -> sum over ranks of S``, differentiable: the functional ``all_reduce`` of
    ``torch.distributed`` (its backward all-reduces the gradient; ``torch.distributed.nn`` on older
    torch).

    Set as ``model.joint_reducer`` for ``mi_scope="global"``: every rank then computes I(D; E) of the
    global batch and its gradient flows back into each rank's own gate probabilities.
    """
    import torch.distributed._functional_collectives as funcol

    if hasattr(funcol, "all_reduce_backward"):  # autograd-aware functional collective

        def reduce(joint: torch.Tensor) -> torch.Tensor:  # [D, E] -> [D, E]
            return funcol.all_reduce(joint, "sum", group or dist.group.WORLD)

        return reduce
    from torch.distributed.nn.functional import all_reduce  # older torch: the autograd.Function

    return lambda joint: all_reduce(joint, op=dist.ReduceOp.SUM, group=group or dist.group.WORLD)


def all_reduce_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum over ranks (no gradient); ``x`` itself when not distributed."""
    if not ctx.is_distributed:
        return x
    y = x.detach().to(ctx.device).clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y.to(x.device)


def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's ``x`` ([n_r, ...], n_r may differ) in rank order, on every rank."""
    if not ctx.is_distributed:
        return x
    n = torch.tensor([x.shape[0]], device=ctx.device)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = x.new_zeros((longest, *x.shape[1:])).to(ctx.device)
    padded[: x.shape[0]] = x.to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(x.device)


def merge_routing_stats(stats: RoutingStats | None, ctx: DistContext) -> RoutingStats | None:
    """The ``RoutingStats`` of all ranks' rows: their sums all-reduced (exact for the integer
    counts).  Every rank must call it with stats of the same shape, or all with ``None``."""
    if stats is None or not ctx.is_distributed:
        return stats
    from dataclasses import fields

    from cesaa.routing.stats import RoutingStats

    merged = {}
    for f in fields(stats):
        value = torch.from_numpy(getattr(stats, f.name).copy())
        merged[f.name] = all_reduce_sum(value, ctx).numpy()
    return RoutingStats(**merged)
