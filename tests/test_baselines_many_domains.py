"""Many domains (synthetic D = 40, every registered model) and checkpoints of the new baselines."""

from __future__ import annotations

import pytest
import torch

from cesaa.data import load_data
from cesaa.models.registry import build_model, default_config, model_names

D = 40


@pytest.fixture(scope="module")
def data():
    return load_data(f"synthetic:rows=4000,domains={D},seed=3")


def test_synthetic_with_40_domains(data):
    assert data.spec.num_domains == D
    counts = torch.bincount(
        torch.cat([data.train.domain, data.val.domain, data.test.domain]), minlength=D
    )
    assert counts.sum().item() == 4000 and (counts > 0).all()
    assert len(data.truth["domain_names"]) == D


@pytest.mark.parametrize("name", model_names())
def test_every_model_runs_forward_and_backward_on_40_domains(data, name):
    torch.manual_seed(0)
    cfg = default_config(name, expert_hidden=(16,), expert_dim=8, tower_hidden=(8,))
    model = build_model(cfg, data.spec)
    b = next(iter(data.train.batches(256)))
    out = model(b.cat, b.num, b.domain)
    assert out.logit.shape == (len(b),) and torch.isfinite(out.logit).all()
    (out.logit.sum() + out.aux_loss).backward()
    if out.probs is not None:
        torch.testing.assert_close(out.probs.sum(1), torch.ones(len(b)))


@pytest.mark.parametrize("name", ["adasparse", "pepnet", "hmoe", "m2m"])
def test_new_baselines_round_trip_through_a_checkpoint(small_data, tmp_path, name):
    from cesaa.checkpoint import load_checkpoint
    from cesaa.config import TrainConfig
    from cesaa.train import predict, train

    cfg = default_config(name, expert_hidden=(16,), expert_dim=8, tower_hidden=(8,))
    res = train(cfg, TrainConfig(epochs=1, batch_size=512), small_data, tmp_path / name)
    ckpt = load_checkpoint(tmp_path / name)
    assert ckpt.model_config == cfg
    torch.testing.assert_close(
        torch.as_tensor(predict(ckpt.model, small_data.test)),
        torch.as_tensor(predict(res.model, small_data.test)),
        rtol=0,
        atol=0,
    )
    if name == "adasparse":  # the annealed slope travels with the weights
        assert ckpt.model.alpha.item() == pytest.approx(res.model.alpha.item())
        assert res.model.alpha.item() > cfg.adasparse_alpha
