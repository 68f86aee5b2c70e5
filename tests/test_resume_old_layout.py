"""Resuming a run folder written before the fused embedding table (per-column tables, one
optimizer state per column) continues exactly as an uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import torch

from cesaa.checkpoint import WEIGHTS, read_tensors, sha256_file, write_tensors
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.registry import build_model, default_config
from cesaa.train import predict, train
from cesaa.train_state import LAST, OPTIMIZER

CFG = default_config("cesaa", expert_hidden=(16,), expert_dim=8, tower_hidden=(8,))


def _split_weights(path, cards) -> None:
    """Rewrite a weights file in the per-column layout (``features.embeddings.<c>.weight``)."""
    state = read_tensors(path)
    fused = state.pop("features.weight")
    for c, block in enumerate(fused.split(list(cards))):
        state[f"features.embeddings.{c}.weight"] = block.clone()
    write_tensors(path, state, metadata={"format": "pt"})


def _split_optimizer(path, index: int, cards) -> None:
    """Rewrite optimizer.safetensors as the per-column model's optimizer would have written it:
    parameter ``index`` (the fused table) becomes len(cards) consecutive parameters."""
    from safetensors import safe_open

    tensors = read_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    extra = len(cards) - 1
    out = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        i = int(idx)
        if i < index:
            out[key] = value
        elif i > index:
            out[f"state.{i + extra}.{name}"] = value
        else:
            parts = [value] * len(cards) if name == "step" else value.split(list(cards))
            for c, part in enumerate(parts):
                out[f"state.{index + c}.{name}"] = part.clone()
    groups = json.loads(meta["param_groups"])
    groups[0]["params"] = list(range(len(groups[0]["params"]) + extra))
    meta["param_groups"] = json.dumps(groups)
    write_tensors(path, out, metadata=meta)


def test_a_per_column_layout_run_resumes_like_an_uninterrupted_one(tmp_path):
    data = load_data("synthetic:rows=3000,domains=3,seed=0")
    cards = data.spec.cat_cardinalities
    assert len(cards) > 1
    one = TrainConfig(epochs=1, batch_size=256, patience=5, seed=0, min_steps=0)
    two = TrainConfig(epochs=2, batch_size=256, patience=5, seed=0, min_steps=0)
    run = tmp_path / "old"
    train(CFG, one, data, run)
    names = [n for n, _ in build_model(CFG, data.spec).named_parameters()]
    _split_weights(run / LAST, cards)
    _split_weights(run / WEIGHTS, cards)
    meta = json.loads((run / "meta.json").read_text())
    meta["weights_sha256"] = sha256_file(run / WEIGHTS)
    (run / "meta.json").write_text(json.dumps(meta))
    _split_optimizer(run / OPTIMIZER, names.index("features.weight"), cards)

    resumed = train(CFG, two, data, run, resume=True)
    straight = train(CFG, two, data, tmp_path / "straight")
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(
        predict(resumed.model, data.test), predict(straight.model, data.test), atol=1e-6
    )
