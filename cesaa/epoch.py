"""One training epoch: seeded batch order, the optimization step, and its logged terms.

Determinism: epoch ``t`` shuffles with a generator seeded from ``(seed, t)`` and reseeds the global
RNG (gate noise, dropout) from ``(seed, t)``, so a run resumed after epoch ``t`` continues exactly as
an uninterrupted one.  ``epoch_seed`` is the one definition (the retrieval trainer uses it too).

No host sync in the step: :func:`train_step` returns its terms as detached device tensors, the
epoch accumulates them on the device and reads them back once, at the end of the epoch.  Observers
pay for what they ask: a per-batch callback reads each step's terms (one sync per step), a progress
bar reads the running means every ``POSTFIX_EVERY`` steps.

Logged terms (``train/<name>``, row-weighted means over the epoch's batches): ``loss`` (BCE + the
model's auxiliary loss), ``bce``, and the model's raw auxiliary terms.  The model's ``mi`` term is
logged as ``batch_mi``: I(D; E) of each *training batch* (gate noise on), averaged over batches.  It
is not the split-level MI the analysis and dashboard show (one estimate over all rows of a split, in
eval mode), and is usually smaller than it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cesaa import distributed
from cesaa.config import AMP_MODES, TrainConfig
from cesaa.data.table import EncodedTable
from cesaa.distributed import DistContext

RANK_SEED_STRIDE = 1_000_033  # rank r > 0 draws gate noise / dropout from its own stream
POSTFIX_EVERY = 50  # progress-bar postfix refresh (steps): each refresh is one host read
# a model's raw loss terms -> their logged names (see the module docstring)
LOGGED_NAMES = {"mi": "batch_mi"}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded ``seed`` (batch order, gate noise, dropout)."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_batches(
    data: object, batch_size: int, gen: torch.Generator, ctx: DistContext
) -> Iterator[tuple[EncodedTable, float | None]]:
    """This rank's training batches of one epoch, each with its BCE scale ``W * n_r / n``.

    One in-memory process: ``data.batches`` exactly as always (scale None).  Under DDP every rank
    draws the same permutation and takes its contiguous slice of each global batch, so the ranks
    together see the batches of one process with the same seed.  A stream yields its own shares.
    """
    w = ctx.world_size
    if not isinstance(data, EncodedTable):
        for batch, n_global in data.train_batches(batch_size, gen, rank=ctx.rank, world=w):
            yield batch, (len(batch) * w / n_global if w > 1 else None)
        return
    if w == 1:
        for batch in data.batches(batch_size, shuffle=True, generator=gen):
            yield batch, None
        return
    order = torch.randperm(len(data), generator=gen)
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < w:  # a last global batch too small to give every rank a row: skipped
            break
        mine = idx.tensor_split(w)[ctx.rank]
        yield data.subset(mine), len(mine) * w / len(idx)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device`` for ``amp="bf16"``, a no-op for ``"off"``."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r} must be one of {list(AMP_MODES)}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    b: EncodedTable,
    scale: float | None,
    max_grad_norm: float,
    amp: str = "off",
) -> dict[str, torch.Tensor]:
    """One optimization step on batch ``b`` (already on the model's device).

    Returns the step's terms as detached 0-dim device tensors (``loss``, ``bce`` and the model's
    logged terms); nothing is read back to the host.  ``scale``: the BCE scale under DDP (None in
    one process).  ``amp="bf16"``: the forward pass and the losses under ``torch.autocast``
    (bfloat16; the losses are float32 either way); the backward and the step outside it.
    """
    with autocast(b.cat.device, amp):
        out = model(b.cat, b.num, b.domain)
        bce = F.binary_cross_entropy_with_logits(out.logit.float(), b.label)
        loss = bce + out.aux_loss.float()
    opt.zero_grad(set_to_none=True)
    (loss if scale is None else bce * scale + out.aux_loss).backward()
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    terms = {"loss": loss.detach(), "bce": bce.detach()}
    for k, v in out.losses.items():
        terms[LOGGED_NAMES.get(k, k)] = torch.as_tensor(v, device=bce.device).detach()
    return terms


def train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: EncodedTable,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Train one epoch; ``{"train/<term>": row-weighted mean}`` read back once at the end.

    ``callback`` receives ``{"event": "batch", "epoch", "step", "steps", <term>: float}`` after
    every step (reading those floats is one host sync per step: only when a callback is given).
    """
    ctx = ctx or DistContext(device=device)
    model.train()
    torch.manual_seed(epoch_seed(cfg.seed, epoch) + RANK_SEED_STRIDE * ctx.rank)
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch) + 17)
    n_batches = math.ceil(len(data) / cfg.batch_size)
    keys: list[str] = []
    sums: torch.Tensor | None = None  # [len(keys)] float64 on the device: sum of term * rows
    rows = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for step, (batch, scale) in enumerate(epoch_batches(data, cfg.batch_size, gen, ctx)):
        terms = train_step(model, opt, batch.to(device), scale, cfg.max_grad_norm, cfg.amp)
        n = len(batch)
        rows += n
        if sums is None:
            keys = list(terms)
            sums = torch.zeros(len(keys), dtype=torch.float64, device=terms["loss"].device)
        sums += torch.stack([terms[k] for k in keys]).double() * n
        if bar is not None:
            bar.update(1)
            if (step + 1) % POSTFIX_EVERY == 0:
                bar.set_postfix(
                    {k: f"{v / rows:.4f}" for k, v in zip(keys, sums.tolist(), strict=True)}
                )
        if callback is not None:
            values = dict(zip(keys, torch.stack([terms[k] for k in keys]).tolist(), strict=True))
            callback({"event": "batch", "epoch": epoch, "step": step, "steps": n_batches, **values})
    if bar is not None:
        bar.close()
    if sums is None:
        sums = torch.zeros(0, dtype=torch.float64)
    if ctx.is_distributed:  # row-weighted means over every rank's rows
        count = torch.tensor([float(rows)], dtype=torch.float64, device=sums.device)
        total = distributed.all_reduce_sum(torch.cat([count, sums]), ctx)
        rows, sums = int(total[0].item()), total[1:]
    return {f"train/{k}": v / max(rows, 1) for k, v in zip(keys, sums.tolist(), strict=True)}
