"""Mixed precision as a switch: ``TrainConfig.amp="bf16"`` runs the training forward pass under
``torch.autocast(bfloat16)``; weights, gradients, optimizer state, losses and evaluation stay float32.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cesaa.config import ModelConfig, TrainConfig, apply_overrides
from cesaa.epoch import train_step
from cesaa.features import FeatureSpec
from cesaa.models.registry import build_model, default_config, model_names
from cesaa.train import make_optimizer, train

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = FeatureSpec(("a", "b"), (5, 7), ("n0",), ("d0", "d1", "d2"))


class _Batch:
    def __init__(self, seed: int, b: int = 128) -> None:
        g = torch.Generator().manual_seed(seed)
        self.cat = torch.stack(
            [torch.randint(5, (b,), generator=g), torch.randint(7, (b,), generator=g)], 1
        )
        self.num = torch.randn(b, 1, generator=g)
        self.domain = torch.randint(3, (b,), generator=g)
        self.label = torch.randint(2, (b,), generator=g).float()


def test_amp_rejects_an_unknown_mode_by_name() -> None:
    with pytest.raises(ValueError, match=r"amp='fp16' must be one of \['off', 'bf16'\]"):
        TrainConfig(amp="fp16")
    _, train_cfg = apply_overrides(ModelConfig(), TrainConfig(), ["train.amp=bf16"])
    assert train_cfg.amp == "bf16"


@pytest.mark.parametrize(("amp", "dtype"), [("off", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_runs_the_layers_in_bf16_and_keeps_weights_and_grads_float32(amp, dtype) -> None:
    torch.manual_seed(0)
    model = build_model(default_config("mlp"), SPEC)
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    terms = train_step(model, opt, _Batch(0), None, 0.0, amp)
    assert seen and set(seen) == {dtype}
    assert terms["loss"].dtype == torch.float32 and math.isfinite(float(terms["loss"]))
    for p in model.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
    for state in opt.state.values():
        assert state["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize("name", model_names())
def test_every_model_trains_a_step_in_bf16_close_to_float32(name: str) -> None:
    """Same weights, same batch, same gate noise: the bf16 loss is the float32 one to bf16's
    rounding (8 bits of mantissa: relative error ~0.4 % per product; a loss near log 2 moves by
    far less than 0.02), and the gradients are finite."""
    torch.manual_seed(0)
    ref = build_model(default_config(name), SPEC)
    low = copy.deepcopy(ref)
    losses = {}
    for amp, model in (("off", ref), ("bf16", low)):
        torch.manual_seed(1)  # the same noise draws for both copies
        opt = make_optimizer(model, lr=1e-3, weight_decay=0.0)
        losses[amp] = float(train_step(model, opt, _Batch(1), None, 0.0, amp)["loss"])
        for p in model.parameters():
            assert p.grad is None or bool(torch.isfinite(p.grad).all()), (name, amp)
    assert math.isfinite(losses["bf16"])
    assert abs(losses["bf16"] - losses["off"]) < 0.02, losses


def test_the_trainer_trains_and_evaluates_with_bf16(small_data) -> None:
    cfg = TrainConfig(epochs=2, batch_size=512, min_steps=0, amp="bf16", seed=0)
    result = train(default_config("cesaa"), cfg, small_data)
    assert 0.5 < result.test_metrics["auc"] <= 1.0
    ref = train(
        default_config("cesaa"), TrainConfig(epochs=2, batch_size=512, min_steps=0), small_data
    )
    assert (
        abs(result.test_metrics["auc"] - ref.test_metrics["auc"]) < 0.05
    )  # the same run to bf16 rounding
