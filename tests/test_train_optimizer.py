"""The trainer's optimizer: torch's fused Adam where it runs, the same updates as the loop."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from cesaa.features import FeatureSpec
from cesaa.models.registry import build_model, default_config
from cesaa.train import make_optimizer
from cesaa.train_state import load_optimizer, save_optimizer

SPEC = FeatureSpec(("a", "b"), (5, 7), ("n0",), ("d0", "d1", "d2"))


def _batch(seed: int, b: int = 64):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(5, (b,), generator=g), torch.randint(7, (b,), generator=g)], 1)
    num = torch.randn(b, 1, generator=g)
    domain = torch.randint(3, (b,), generator=g)
    label = torch.randint(2, (b,), generator=g).float()
    return cat, num, domain, label


def _steps(model, opt, seeds) -> None:
    model.train()
    for s in seeds:
        cat, num, domain, label = _batch(s)
        torch.manual_seed(100 + s)  # the same gate noise for both copies
        out = model(cat, num, domain)
        loss = F.binary_cross_entropy_with_logits(out.logit, label) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_the_trainer_uses_fused_adam_on_cpu() -> None:
    torch.manual_seed(0)
    model = build_model(default_config("cesaa"), SPEC)
    opt = make_optimizer(model, lr=1e-3, weight_decay=1e-5)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["fused"] is True
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-5


def test_fused_adam_trains_like_the_per_tensor_loop() -> None:
    torch.manual_seed(0)
    a = build_model(default_config("cesaa"), SPEC)
    b = copy.deepcopy(a)
    init = copy.deepcopy(a)
    _steps(a, make_optimizer(a, lr=1e-2, weight_decay=1e-5), range(8))
    loop = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-5, foreach=False)
    _steps(b, loop, range(8))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5, rtol=1e-4), name
    moved = [not torch.equal(p, q) for p, q in zip(a.parameters(), init.parameters(), strict=True)]
    assert all(moved)  # the steps did update every tensor


def test_a_loop_adam_state_resumes_into_the_fused_optimizer(tmp_path) -> None:
    # optimizer.safetensors written before the switch (per-tensor loop) must resume and continue
    # as the loop would have
    torch.manual_seed(0)
    a = build_model(default_config("cesaa"), SPEC)
    old = torch.optim.Adam(a.parameters(), lr=1e-2, weight_decay=1e-5, foreach=False)
    _steps(a, old, range(3))
    save_optimizer(old, tmp_path / "optimizer.safetensors", epoch=0)
    b = copy.deepcopy(a)
    resumed = make_optimizer(b, lr=1e-2, weight_decay=1e-5)
    load_optimizer(resumed, tmp_path / "optimizer.safetensors", torch.device("cpu"))
    _steps(a, old, range(3, 6))
    _steps(b, resumed, range(3, 6))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5, rtol=1e-4), name
