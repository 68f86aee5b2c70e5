from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cesaa.config import TrainConfig
from cesaa.models.registry import default_config, model_names
from cesaa.train import predict, read_history, train


def _cfg(**kw):
    base = dict(epochs=3, batch_size=256, patience=5, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("name", model_names())
def test_every_model_learns_the_synthetic_data(small_data, name):
    cfg = default_config(name, expert_hidden=(32,), expert_dim=16, tower_hidden=(16,))
    res = train(cfg, _cfg(epochs=5, lr=3e-3), small_data)
    assert res.test_metrics["auc"] > 0.70, (name, res.test_metrics["auc"])
    for d in small_data.domain_names:
        assert f"auc/{d}" in res.test_metrics


def test_training_is_deterministic_under_a_seed(small_data):
    cfg = default_config("cesaa")
    a = train(cfg, _cfg(epochs=2), small_data)
    b = train(cfg, _cfg(epochs=2), small_data)
    pa, pb = predict(a.model, small_data.test), predict(b.model, small_data.test)
    np.testing.assert_array_equal(pa, pb)
    c = train(cfg, _cfg(epochs=2, seed=1), small_data)
    assert not np.array_equal(pa, predict(c.model, small_data.test))


def test_run_folder_and_metrics_jsonl(small_data, tmp_path):
    res = train(default_config("cesaa"), _cfg(epochs=2), small_data, tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "meta.json",
        "model.safetensors",
        "metrics.jsonl",
        "last.safetensors",
        "optimizer.safetensors",
        "train_state.json",
    ):
        assert (run / name).is_file(), name
    hist = read_history(run)
    assert [r["epoch"] for r in hist] == [1, 2]
    assert "train/batch_mi" in hist[0] and "val/auc" in hist[0]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["metrics"]["test"]["auc"] == pytest.approx(res.test_metrics["auc"])
    assert not list(run.glob("*.tmp"))


def test_early_stopping_restores_best_weights(small_data):
    # lr so large that validation degrades: training must stop and keep the best epoch's weights
    res = train(default_config("mlp"), _cfg(epochs=30, patience=2, lr=0.5), small_data)
    assert res.stopped_early
    assert len(res.history) < 30
    best = max(r["val/auc"] for r in res.history)
    assert res.val_metrics["auc"] == pytest.approx(best, abs=1e-9)
    assert res.history[res.best_epoch - 1]["val/auc"] == pytest.approx(best)


def test_resume_equals_uninterrupted_run(small_data, tmp_path):
    cfg = default_config("cesaa")
    full = train(cfg, _cfg(epochs=4, patience=10), small_data, tmp_path / "full")
    # "interrupted" after epoch 2: train 2 epochs with the same train config, then resume to 4
    part_cfg = _cfg(epochs=4, patience=10)
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def interrupt(event):
        if event["event"] == "epoch":
            calls["n"] += 1
            if calls["n"] == 2:
                raise Stop

    with pytest.raises(Stop):
        train(cfg, part_cfg, small_data, tmp_path / "part", callback=interrupt)
    assert [r["epoch"] for r in read_history(tmp_path / "part")] == [1, 2]
    resumed = train(cfg, part_cfg, small_data, tmp_path / "part", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_array_equal(
        predict(full.model, small_data.test), predict(resumed.model, small_data.test)
    )
    assert resumed.test_metrics["auc"] == full.test_metrics["auc"]


def test_resume_refuses_other_data(small_data, tmp_path):
    from cesaa.checkpoint import CheckpointError
    from cesaa.data import load_data

    train(default_config("mlp"), _cfg(epochs=1), small_data, tmp_path / "r")
    other = load_data("synthetic:rows=20000,domains=3,seed=5")
    with pytest.raises(CheckpointError, match="fingerprint"):
        train(default_config("mlp"), _cfg(epochs=1), other, tmp_path / "r", resume=True)


def test_aux_loss_enters_the_gradient(small_data):
    # with alpha > 0 the gate receives gradient from the MI term even when BCE is detached
    from cesaa.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(default_config("cesaa", alpha=1.0), small_data.spec)
    with torch.no_grad():  # the gate starts uniform (MI = 0 is a stationary point): perturb it
        for n, p in model.named_parameters():
            if "gate" in n:
                p.normal_(0, 0.5)
    b = next(small_data.train.batches(128))
    out = model(b.cat, b.num, b.domain)
    out.aux_loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "gate" in n and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
