"""Training as a function: ``train(...) -> TrainResult``, early stopping on a validation monitor.

The pieces live in modules split by concept and are re-exported here:

- :mod:`cesaa.epoch`: one epoch (seeded batch order, the optimization step without host syncs);
- :mod:`cesaa.evaluation`: ``predict`` and ``evaluate``;
- :mod:`cesaa.monitor`: the early-stopping score and the check that it can be computed;
- :mod:`cesaa.train_state`: the run folder's resume state (``--resume``);
- :mod:`cesaa.snapshots`: per-epoch routing snapshots.

Determinism: the model is initialized under ``seed``; epoch ``t`` draws from ``(seed, t)`` (see
:mod:`cesaa.epoch`), so a run resumed after epoch ``t`` continues exactly as an uninterrupted one.

Scale: under ``torchrun`` the same function trains with DistributedDataParallel (see
:mod:`cesaa.distributed`: global batch split over ranks, rank 0 writes the checkpoints), and ``data``
may be a :class:`cesaa.data.stream.StreamingData` whose splits are Parquet streams read row group by
row group (bounded memory).  Single-process in-memory training is the code path it always was.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cesaa import allocator, distributed
from cesaa.checkpoint import build_meta, read_meta, save_checkpoint, write_json
from cesaa.config import ModelConfig, TrainConfig
from cesaa.convergence import RunEnd, classify_run, domain_rate_auc
from cesaa.data.locate import location
from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.epoch import epoch_batches as _epoch_batches  # noqa: F401  (tests import it from here)
from cesaa.epoch import seed_everything, train_one_epoch
from cesaa.evaluation import evaluate, evaluate_part, predict  # noqa: F401  (public API)
from cesaa.models.registry import build_model
from cesaa.monitor import LOWER_IS_BETTER, NoImprovementError, check_monitor, score  # noqa: F401
from cesaa.routing_rows import write_row_snapshot
from cesaa.snapshots import write_routing_snapshot
from cesaa.stopping import routing_forming, should_stop
from cesaa.train_state import (  # noqa: F401  (METRICS, read_history: public via cesaa.train)
    LAST,
    METRICS,
    OPTIMIZER,
    STATE,
    ResumePoint,
    commit_epoch,
    read_history,
    read_state,
    resume_point,
)

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    run_dir: Path | None = None
    stopped_early: bool = False
    end: RunEnd | None = None  # converged, plateau or not converged (cesaa.convergence)


FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused Adam kernel runs


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The trainer's Adam: one fused kernel over all parameters where torch has it (CPU, CUDA).

    The fused kernel computes the same update as the per-tensor loop (to float rounding) in one
    call instead of ~10 small ops per parameter tensor, and reads nothing back to the host.
    Parameters that are not floating point or live elsewhere get torch's default implementation.
    """
    params = list(model.parameters())
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params
    )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return make_optimizer(model, cfg.lr, cfg.weight_decay)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: MultiDomainData,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    batch_events: bool = True,
) -> TrainResult:
    """Train ``model_cfg.name`` on ``data`` with early stopping on ``train_cfg.monitor``.

    With ``out_dir`` every completed epoch is checkpointed (see :mod:`cesaa.checkpoint`); with
    ``resume=True`` training continues from the last completed epoch in ``out_dir`` (``train_cfg``
    may raise ``epochs`` or change ``patience``, see ``cesaa.train_state.RESUME_CHANGES``).  The
    best weights (by the validation monitor) are restored at the end and evaluated on the test split.

    Raises ``ValueError`` before the first step when the monitor cannot be computed on the
    validation split, and :class:`NoImprovementError` (meta.json status ``failed``) when no epoch
    improved it: never returns untrained weights as a result.

    ``callback`` receives ``{"event": "epoch", ...}`` after every epoch and, with ``batch_events``,
    ``{"event": "batch", ...}`` after every step (which reads the step's loss back to the host).
    Under ``torchrun`` this trains with DistributedDataParallel (every rank calls ``train``; rank 0
    writes ``out_dir`` and runs ``callback``); ``data`` may be a ``StreamingData`` (Parquet streams).
    Keeps freed memory in the process (:func:`cesaa.allocator.retain_freed_memory`).
    """
    allocator.retain_freed_memory()
    check_monitor(train_cfg.monitor, data.val, "validation")
    ctx = distributed.setup(resolve_device(train_cfg.device))
    device = ctx.device
    main = ctx.is_main
    run = Path(out_dir) if out_dir is not None else None
    seed_everything(train_cfg.seed)
    model = build_model(model_cfg, data.spec).to(device)
    opt = _make_optimizer(model, train_cfg)
    desc = data.description
    meta = build_meta(
        model_cfg, train_cfg, data.spec, desc, data.fingerprint, data.encoders, data.truth
    )
    at = ResumePoint(best_state=_snapshot(model), meta=meta)
    if resume:
        if run is None:
            raise ValueError("resume=True needs out_dir (the run folder to resume)")
        fp = data.fingerprint
        at = resume_point(run, model, opt, device, fp, model_cfg, train_cfg, clean=main)
        at.best_state = at.best_state or _snapshot(model)
        at.meta["data"]["description"] = desc  # the same data (fingerprint), maybe moved
    at.meta["data"]["location"] = location(desc, data.fingerprint, run)
    meta, history = at.meta, at.history
    if not resume and run is not None and main:
        run.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, STATE, LAST, OPTIMIZER):
            (run / name).unlink(missing_ok=True)
        save_checkpoint(run, model, meta)

    if ctx.is_distributed and train_cfg.mi_scope == "global" and hasattr(model, "joint_reducer"):
        model.joint_reducer = distributed.global_joint_reducer()
    net = distributed.wrap(model, ctx)  # DDP under torchrun, else the model itself
    callback = callback if main else None
    on_batch = callback if batch_events else None
    eval_bs = train_cfg.eval_batch_size

    stopped_early = at.start_epoch > 0 and _stop(train_cfg, at.bad_epochs, history, data)
    for epoch in range(at.start_epoch, train_cfg.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_terms = train_one_epoch(
            net, opt, data.train, train_cfg, epoch, device, progress and main, on_batch, ctx
        )
        val = evaluate_part(model, data.val, data.domain_names, eval_bs, ctx)
        record = {
            "epoch": epoch + 1,
            **train_terms,
            **{f"val/{k}": v for k, v in val.items()},
            "time_s": time.perf_counter() - t0,
        }
        if run is not None and train_cfg.routing_snapshots:
            d = data.spec.num_domains
            write_routing_snapshot(run, model, data.val, d, epoch, eval_bs, ctx)
            if ctx.is_main and isinstance(data.val, EncodedTable):  # row-level, for saturation
                write_row_snapshot(run, model, data.val, epoch + 1)
        s = score(val, train_cfg.monitor)
        if s > at.best_score:
            at.best_score, at.best_epoch, at.bad_epochs = s, epoch, 0
            at.best_state = _snapshot(model)
            if run is not None and main:
                meta["metrics"] = {"best_epoch": epoch + 1, "val": val}
                save_checkpoint(run, model, meta)
        else:
            at.bad_epochs += 1
        history.append(record)
        stopped_early = _stop(train_cfg, at.bad_epochs, history, data)
        if run is not None and main:
            commit_epoch(
                run, model, opt, history, epoch, at.best_score, at.best_epoch, at.bad_epochs
            )
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        if callback is not None:
            callback({"event": "epoch", **record})

    if at.best_epoch < 0:
        _fail_no_improvement(run if main else None, meta, history, train_cfg.monitor)
    model.load_state_dict(at.best_state)
    model.eval()
    val = evaluate_part(model, data.val, data.domain_names, eval_bs, ctx)
    test = evaluate_part(model, data.test, data.domain_names, eval_bs, ctx)
    end = run_end(history, train_cfg, stopped_early, data)
    if run is not None and main:
        meta["status"] = "complete"
        meta["metrics"] = {"best_epoch": at.best_epoch + 1, "val": val, "test": test}
        meta["epochs_completed"] = len(history)
        meta["run_end"] = None if end is None else end.to_dict()
        save_checkpoint(run, model, meta)
        state = read_state(run) if (run / STATE).is_file() else {}
        write_json(run / STATE, {**state, "finished": True})
    distributed.barrier(ctx)  # no rank returns before rank 0 has written the run folder
    return TrainResult(model, history, at.best_epoch + 1, val, test, run, stopped_early, end)


def run_end(
    history: list[dict], cfg: TrainConfig, stopped_early: bool, data: MultiDomainData
) -> RunEnd | None:
    """How the run ended (:func:`cesaa.convergence.classify_run` on the validation AUC per epoch,
    against the domain-only reference when both splits are in memory); None when no epoch has a
    finite validation AUC (e.g. one class in the validation split)."""
    curve = [float(r.get("val/auc", math.nan)) for r in history]
    if not any(math.isfinite(v) for v in curve):
        return None
    ref = None
    if isinstance(data.train, EncodedTable) and isinstance(data.val, EncodedTable):
        tr, va = data.train, data.val
        ref = domain_rate_auc(tr.domain.cpu(), tr.label.cpu(), va.domain.cpu(), va.label.cpu())
    return classify_run(
        curve,
        epochs_cap=cfg.epochs,
        stopped_early=stopped_early,
        patience=cfg.patience,
        reference=ref,
    )


def _fail_no_improvement(run: Path | None, meta: dict, history: list[dict], monitor: str) -> None:
    """No epoch improved the monitor: mark the run failed (if any) and raise."""
    seen = [r.get(f"val/{monitor}", math.nan) for r in history]
    msg = (
        f"no epoch improved val/{monitor} over the initial weights (values per epoch: "
        f"{[round(v, 4) for v in seen]}); the model is untrained, so no result is reported. "
        f"Check the validation split, or choose another train.monitor"
    )
    if run is not None and (run / "meta.json").is_file():
        write_json(run / "meta.json", {**read_meta(run), "status": "failed", "error": msg})
    raise NoImprovementError(msg)


def _stop(cfg: TrainConfig, bad_epochs: int, history: list[dict], data: MultiDomainData) -> bool:
    """Early stopping after the epochs in ``history`` (:func:`cesaa.stopping.should_stop`)."""
    forming = routing_forming(history, cfg.routing_rise)
    rows, bs = len(data.train), cfg.batch_size
    return should_stop(
        bad_epochs, cfg.patience, len(history), rows, bs, cfg.min_steps, forming=forming
    )
