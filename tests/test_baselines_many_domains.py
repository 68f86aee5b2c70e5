"""Many domains: synthetic data with D = 40 and every registered model on it (issue: many domains)."""

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
