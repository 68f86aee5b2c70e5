"""Build one benchmarked model, its training step, and time its training steps and inference
(shared by ``bench.throughput``, ``bench._allocator_cmp``, ``bench.roofline`` and
``bench.thread_scaling``)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def build(name: str, spec, **overrides) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Model ``name`` at its default config (with ``overrides``), seed 0, and the trainer's
    optimizer."""
    from cesaa.models import build_model, default_config

    torch.manual_seed(0)
    model = build_model(default_config(name, **overrides), spec)
    # every model, ours and theirs, gets the trainer's optimizer (fused Adam where torch has it)
    from cesaa.train import make_optimizer

    return model, make_optimizer(model, lr=1e-3, weight_decay=1e-5)


def train_step(model, opt, table, idx: torch.Tensor) -> torch.Tensor:
    """One training step on rows ``idx`` (slice, forward, BCE + auxiliary loss, backward, optimizer
    step, as ``cesaa.train``); returns the loss."""
    b = table.subset(idx)
    out = model(b.cat, b.num, b.domain)
    loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train_steps(model, opt, table, batches: list[torch.Tensor]) -> float:
    """Seconds for one training step per batch index tensor."""
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        train_step(model, opt, table, idx).item()  # as the trainer, which logs it
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, table, batch: int) -> float:
    """Seconds to predict every row of ``table`` in batches of ``batch``."""
    model.eval()
    t0 = time.perf_counter()
    for b in table.batches(batch):
        torch.sigmoid(model(b.cat, b.num, b.domain).logit)
    return time.perf_counter() - t0
