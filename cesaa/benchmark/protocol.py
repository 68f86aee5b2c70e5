"""What one benchmark run is: a data source, a model with overrides, a seed, the training protocol.

A run is described by a plain dict (a :class:`RunTask` as dict) so that it can be sent to a spawned
worker process; :func:`run_task` trains it and returns a plain-dict record.  Each process loads a
data source once (cached by source, split seed and row cap).
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cesaa.config import ModelConfig, TrainConfig

_DATA_CACHE: dict[tuple, Any] = {}
MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"name"}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig)) - {"seed", "device"}


@dataclass
class Protocol:
    """The training protocol every model and seed shares (TrainConfig fields a run may not change).

    ``train``: ``TrainConfig`` overrides for every run (e.g. ``{"epochs": 30, "patience": 4}``);
    ``device``: torch device of every run; ``max_train``: keep only the first N training rows
    (0 = all); ``split_seed``: seed of the 8:1:1 split, the same for every model and seed;
    ``split``: ``random`` (8:1:1), ``temporal`` (per user, by time) or ``files`` (Ali-CCP's
    distributed train / val / test files).
    """

    train: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    max_train: int = 0
    split_seed: int = 0
    split: str = "random"

    def __post_init__(self) -> None:
        from cesaa.data.splits import TRAIN_SPLITS

        if self.split not in TRAIN_SPLITS:
            raise ValueError(f"split={self.split!r} must be one of {list(TRAIN_SPLITS)}")
        unknown = sorted(set(self.train) - TRAIN_FIELDS)
        if unknown:
            raise ValueError(
                f"protocol: unknown or fixed train field(s) {unknown}; valid: {sorted(TRAIN_FIELDS)}"
            )
        if self.max_train < 0:
            raise ValueError(f"max_train={self.max_train} must be >= 0")
        TrainConfig(**self.train, device=self.device)  # validates the values (raises ValueError)


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A search space's flat dict -> (ModelConfig overrides, TrainConfig overrides).

    Keys are ModelConfig or TrainConfig field names (the two sets do not overlap); anything else
    raises ``ValueError`` naming the key.
    """
    model, train = {}, {}
    for k, v in params.items():
        if k in MODEL_FIELDS:
            model[k] = v
        elif k in TRAIN_FIELDS:
            train[k] = v
        else:
            raise ValueError(
                f"search-space key {k!r} is neither a ModelConfig nor a TrainConfig field"
            )
    return model, train


def run_setup(setup: str | None) -> None:
    """Call ``module:function`` (e.g. to register extra models in workers); it must be idempotent:
    it runs before every run."""
    if not setup:
        return
    mod, _, fn = setup.partition(":")
    if not fn:
        raise ValueError(f"setup {setup!r} must be 'module:function'")
    getattr(importlib.import_module(mod), fn)()


def load_source(source: str, split_seed: int = 0, max_train: int = 0, split: str = "random") -> Any:
    """``load_data`` (or ``open_stream`` for ``stream:``) with ``split``, cached per process.

    ``max_train`` keeps the first N training rows of an in-memory table (a stream is used whole:
    asking to cap one raises ``ValueError``).
    """
    key = (source, split, split_seed, max_train)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    from cesaa.data import load_data
    from cesaa.data.stream import is_stream_source, open_stream

    if is_stream_source(source):
        if max_train:
            raise ValueError(f"--max-train cannot cap a stream source ({source!r})")
        data = open_stream(source, split=split, seed=split_seed)
    else:
        data = load_data(source, split=split, seed=split_seed)
        if max_train and len(data.train) > max_train:
            import torch

            data = dataclasses.replace(data, train=data.train.subset(torch.arange(max_train)))
    _DATA_CACHE[key] = data
    return data


def build_configs(
    model: str, params: dict[str, Any], protocol: Protocol, seed: int
) -> tuple[ModelConfig, TrainConfig]:
    """The model's registry defaults + ``params``; the protocol's TrainConfig + ``params``."""
    from cesaa.models.registry import default_config

    model_over, train_over = split_params(params)
    tcfg = TrainConfig(**{**protocol.train, **train_over, "seed": seed, "device": protocol.device})
    return default_config(model, **model_over), tcfg


@dataclass
class RunTask:
    """One training run: ``model`` with ``params`` on ``source`` under ``protocol`` with ``seed``."""

    source: str
    model: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol = field(default_factory=Protocol)
    setup: str | None = None
    phase: str = "final"  # final: fresh seeds after selection; tune: a tuning trial

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunTask:
        return cls(**{**d, "protocol": Protocol(**d["protocol"])})


def run_task(
    task: RunTask | dict, callback: Callable[[dict], None] | None = None
) -> dict[str, Any]:
    """Train one run and return its record (plain data).

    Record keys: model, seed, phase, params, val and test (flat metric dicts of the best-validation
    epoch), best_epoch, epochs (completed), seconds (training wall time), history (per-epoch
    validation monitor), end (``converged``, ``plateau`` or ``not_converged``: how the run ended,
    :mod:`cesaa.convergence`; None when the validation AUC was never finite).  ``callback`` receives the trainer's events (see ``cesaa.train.train``).
    """
    from cesaa.train import train

    t = RunTask.from_dict(task) if isinstance(task, dict) else task
    run_setup(t.setup)
    p = t.protocol
    data = load_source(t.source, p.split_seed, p.max_train, p.split)
    mcfg, tcfg = build_configs(t.model, t.params, t.protocol, t.seed)
    t0 = time.perf_counter()
    res = train(mcfg, tcfg, data, callback=callback)
    seconds = time.perf_counter() - t0
    monitor = f"val/{tcfg.monitor}"
    return {
        "model": t.model,
        "seed": t.seed,
        "phase": t.phase,
        "params": dict(t.params),
        "val": {k: float(v) for k, v in res.val_metrics.items()},
        "test": {k: float(v) for k, v in res.test_metrics.items()},
        "best_epoch": int(res.best_epoch),
        "epochs": len(res.history),
        "seconds": seconds,
        "history": [float(h.get(monitor, float("nan"))) for h in res.history],
        "end": None if res.end is None else res.end.verdict,
        "domains": list(data.domain_names),
    }
