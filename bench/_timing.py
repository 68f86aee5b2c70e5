"""Build one benchmarked model and time its training steps and inference (shared by
``bench.throughput`` and ``bench._allocator_cmp``)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def build(name: str, spec) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from cesaa.models import build_model, default_config
    from cesaa.train import make_optimizer

    torch.manual_seed(0)
    model = build_model(default_config(name), spec)
    # every model, ours and theirs, gets the trainer's optimizer (fused Adam where torch has it)
    return model, make_optimizer(model, lr=1e-3, weight_decay=1e-5)


def train_steps(model, opt, table, batches: list[torch.Tensor]) -> float:
    """Seconds for one training step per batch index tensor."""
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        b = table.subset(idx)
        out = model(b.cat, b.num, b.domain)
        loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # as the trainer, which logs it
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, table, batch: int) -> float:
    """Seconds to predict every row of ``table`` in batches of ``batch``."""
    model.eval()
    t0 = time.perf_counter()
    for b in table.batches(batch):
        torch.sigmoid(model(b.cat, b.num, b.domain).logit)
    return time.perf_counter() - t0
