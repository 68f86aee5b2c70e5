"""No host sync in the training step (issue 13): the step's terms stay device tensors and the epoch
reads them back once.  On CPU the test counts every Python-level read of a tensor value (``item``,
``tolist``, ``float()``, ``int()``, ``bool()``, ``numpy()``, ``__index__``) made from code outside
torch itself (torch's Adam reads its CPU step counter, which is not a device sync); on CUDA,
``torch.cuda.set_sync_debug_mode("error")`` makes any synchronizing call inside the step raise.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

import cesaa.epoch as epoch_module
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.registry import build_model, default_config

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "__index__")
TORCH_DIR = os.path.dirname(torch.__file__)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic:rows=3000,domains=3,seed=0")


@pytest.fixture
def reads(monkeypatch):
    """Host reads from non-torch code, each tagged whether it happened inside ``train_step``."""
    log: list[tuple[bool, str, str, int]] = []
    inside = [False]
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *args, _orig=orig, _name=name, **kw):
            caller = sys._getframe(1).f_code
            if not caller.co_filename.startswith(TORCH_DIR):
                log.append((inside[0], _name, caller.co_filename, sys._getframe(1).f_lineno))
            return _orig(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    step = epoch_module.train_step

    def counted_step(*args, **kw):
        inside[0] = True
        try:
            return step(*args, **kw)
        finally:
            inside[0] = False

    monkeypatch.setattr(epoch_module, "train_step", counted_step)
    return log


def _epoch(data, model_name: str, batch_size: int, **kw) -> dict:
    torch.manual_seed(0)
    model = build_model(default_config(model_name), data.spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, **kw)
    return epoch_module.train_one_epoch(model, opt, data.train, cfg, 0, torch.device("cpu"))


def test_the_counter_sees_a_host_read(reads):
    x = torch.ones(3)
    assert float(x.sum()) == 3.0 and x.tolist() == [1.0, 1.0, 1.0]
    assert [r[1] for r in reads] == ["__float__", "tolist"]


@pytest.mark.parametrize("model_name", ["mmoe", "mlp"])
def test_no_host_read_in_the_step_and_one_per_epoch(data, reads, model_name):
    terms = _epoch(data, model_name, batch_size=400)  # 6 steps
    in_step = [r for r in reads if r[0]]
    assert in_step == []
    per_epoch = [r for r in reads if not r[0]]
    reads.clear()
    _epoch(data, model_name, batch_size=200)  # 12 steps: still the same reads, once per epoch
    assert [r[1:] for r in reads] == [r[1:] for r in per_epoch]
    assert len(per_epoch) == 1 and per_epoch[0][1] == "tolist"
    assert set(terms) >= {"train/loss", "train/bce"} and all(
        isinstance(v, float) for v in terms.values()
    )


def test_clipping_adds_no_host_read(data, reads):
    _epoch(data, "mmoe", batch_size=400, max_grad_norm=1.0)
    assert [r for r in reads if r[0]] == []


def test_epoch_terms_are_row_weighted_means_of_the_steps(data, monkeypatch):
    seen: list[tuple[int, float]] = []
    step = epoch_module.train_step

    def spy(model, opt, b, scale, max_grad_norm, amp="off"):
        out = step(model, opt, b, scale, max_grad_norm, amp)
        seen.append((len(b), float(out["loss"])))
        return out

    monkeypatch.setattr(epoch_module, "train_step", spy)
    terms = _epoch(data, "mmoe", batch_size=1000)  # 2400 training rows: 1000, 1000, 400
    assert [n for n, _ in seen] == [1000, 1000, len(data.train) - 2000]
    expected = sum(n * v for n, v in seen) / sum(n for n, _ in seen)
    assert terms["train/loss"] == pytest.approx(expected, rel=1e-6)


def _models():
    from cesaa.models.registry import model_names

    return list(model_names())


@pytest.mark.parametrize("model_name", _models())
def test_no_host_read_in_any_models_step(data, reads, model_name):
    _epoch(data, model_name, batch_size=400)
    assert [r[1:] for r in reads if r[0]] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_name", ["mmoe", "mlp"])
def test_no_cuda_sync_in_the_step(data, monkeypatch, model_name):
    step = epoch_module.train_step

    def strict(*args, **kw):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*args, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(epoch_module, "train_step", strict)
    device = torch.device("cuda")
    model = build_model(default_config(model_name), data.spec).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = TrainConfig(epochs=1, batch_size=400, device="cuda")
    terms = epoch_module.train_one_epoch(model, opt, data.train, cfg, 0, device)
    assert terms["train/loss"] > 0
