"""Training and evaluation as functions: ``train(...) -> TrainResult`` and ``evaluate(...) -> dict``.

Determinism: the model is initialized under ``seed``; epoch ``t`` shuffles with a generator seeded from
``(seed, t)`` and reseeds the global RNG (gate noise, dropout) from ``(seed, t)``, so a run resumed after
epoch ``t`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cesaa.checkpoint import (
    META,
    WEIGHTS,
    CheckpointError,
    build_meta,
    read_meta,
    read_tensors,
    save_checkpoint,
    write_json,
    write_tensors,
    write_text,
)
from cesaa.config import ModelConfig, TrainConfig, config_from_dict
from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import build_model
from cesaa.train_state import load_optimizer, save_optimizer

log = logging.getLogger(__name__)

LAST = "last.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "train_state.json"
METRICS = "metrics.jsonl"
LOWER_IS_BETTER = {"logloss"}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@torch.no_grad()
def predict(
    model: nn.Module,
    table: EncodedTable,
    batch_size: int = 8192,
    routing: RoutingOverride | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted positive probabilities [N] in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for b in table.batches(batch_size):
        b = b.to(device)
        out.append(
            torch.sigmoid(model(b.cat, b.num, b.domain, routing=routing).logit).float().cpu()
        )
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def evaluate(
    model: nn.Module,
    table: EncodedTable,
    domain_names: tuple[str, ...],
    batch_size: int = 8192,
    routing: RoutingOverride | None = None,
) -> dict[str, float]:
    """Overall and per-domain AUC / GAUC / logloss (flat keys, see ``cesaa.metrics``)."""
    p = predict(model, table, batch_size, routing)
    user = table.user.numpy() if table.user is not None else None
    return evaluate_predictions(
        table.label.numpy(), p, table.domain.numpy(), user=user, domain_names=domain_names
    )


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    run_dir: Path | None = None
    stopped_early: bool = False


def _score(metrics: dict, monitor: str) -> float:
    v = metrics.get(monitor, float("nan"))
    return -v if monitor in LOWER_IS_BETTER else v


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


def _train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: EncodedTable,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: bool,
    callback: Callable[[dict], None] | None,
) -> dict[str, float]:
    model.train()
    torch.manual_seed(_epoch_seed(cfg.seed, epoch))
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 17)
    n_batches = math.ceil(len(data) / cfg.batch_size)
    sums: dict[str, float] = {}
    rows = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for step, batch in enumerate(data.batches(cfg.batch_size, shuffle=True, generator=gen)):
        b = batch.to(device)
        out = model(b.cat, b.num, b.domain)
        bce = F.binary_cross_entropy_with_logits(out.logit, b.label)
        loss = bce + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        n = len(batch)
        rows += n
        terms = {"loss": loss.item(), "bce": bce.item()}
        terms.update({k: float(v) for k, v in out.losses.items()})
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * n
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()})
        if callback is not None:
            callback({"event": "batch", "epoch": epoch, "step": step, "steps": n_batches, **terms})
    if bar is not None:
        bar.close()
    return {f"train/{k}": v / max(rows, 1) for k, v in sums.items()}


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: MultiDomainData,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model_cfg.name`` on ``data`` with early stopping on ``train_cfg.monitor``.

    With ``out_dir`` every completed epoch is checkpointed (see :mod:`cesaa.checkpoint`); with
    ``resume=True`` training continues from the last completed epoch in ``out_dir``.  The best
    weights (by the validation monitor) are restored at the end and evaluated on the test split.
    """
    device = resolve_device(train_cfg.device)
    run = Path(out_dir) if out_dir is not None else None
    seed_everything(train_cfg.seed)
    model = build_model(model_cfg, data.spec).to(device)
    opt = _make_optimizer(model, train_cfg)
    meta = build_meta(
        model_cfg,
        train_cfg,
        data.spec,
        data.description,
        data.fingerprint,
        data.encoders,
        data.truth,
    )
    history: list[dict] = []
    start_epoch, best_score, best_epoch, bad_epochs = 0, -math.inf, -1, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if resume:
        if run is None:
            raise ValueError("resume=True needs out_dir (the run folder to resume)")
        state = _read_state(run)
        old = read_meta(run)
        if old["data"].get("fingerprint") != data.fingerprint:
            raise CheckpointError(
                f"{run / META}: data fingerprint {old['data'].get('fingerprint')} differs from the "
                f"data given now ({data.fingerprint}); resume with the same data"
            )
        if (
            config_from_dict(ModelConfig, old["model"]["config"]) != model_cfg
            or config_from_dict(TrainConfig, old["train"]) != train_cfg
        ):
            raise CheckpointError(
                f"{run / META}: model or train config differs from the run being resumed"
            )
        model.load_state_dict(read_tensors(run / LAST))
        load_optimizer(opt, run / OPTIMIZER, device)
        if (run / WEIGHTS).is_file():
            best_state = read_tensors(run / WEIGHTS)
        start_epoch = state["epoch"] + 1
        best_score, best_epoch, bad_epochs = (
            state["best_score"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        history = _read_history(run, state["epoch"])
        meta = {**old, "status": "running"}
        if state.get("finished"):
            start_epoch = train_cfg.epochs  # nothing left to do
    elif run is not None:
        run.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, STATE, LAST, OPTIMIZER):
            (run / name).unlink(missing_ok=True)
        save_checkpoint(run, model, meta)

    stopped_early = bad_epochs >= train_cfg.patience > 0 and start_epoch > 0
    for epoch in range(start_epoch, train_cfg.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_terms = _train_one_epoch(
            model, opt, data.train, train_cfg, epoch, device, progress, callback
        )
        val = evaluate(model, data.val, data.domain_names, train_cfg.eval_batch_size)
        record = {
            "epoch": epoch + 1,
            **train_terms,
            **{f"val/{k}": v for k, v in val.items()},
            "time_s": time.perf_counter() - t0,
        }
        if run is not None and train_cfg.routing_snapshots:
            _write_routing_snapshot(run, model, data, epoch, train_cfg.eval_batch_size)
        score = _score(val, train_cfg.monitor)
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if run is not None:
                meta["metrics"] = {"best_epoch": epoch + 1, "val": val}
                save_checkpoint(run, model, meta)
        else:
            bad_epochs += 1
        history.append(record)
        stopped_early = train_cfg.patience > 0 and bad_epochs >= train_cfg.patience
        if run is not None:
            _commit_epoch(run, model, opt, history, epoch, best_score, best_epoch, bad_epochs)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        if callback is not None:
            callback({"event": "epoch", **record})

    model.load_state_dict(best_state)
    model.eval()
    val = evaluate(model, data.val, data.domain_names, train_cfg.eval_batch_size)
    test = evaluate(model, data.test, data.domain_names, train_cfg.eval_batch_size)
    if run is not None:
        meta["status"] = "complete"
        meta["metrics"] = {"best_epoch": best_epoch + 1, "val": val, "test": test}
        meta["epochs_completed"] = len(history)
        save_checkpoint(run, model, meta)
        state = _read_state(run) if (run / STATE).is_file() else {}
        write_json(run / STATE, {**state, "finished": True})
    return TrainResult(model, history, best_epoch + 1, val, test, run, stopped_early)


def _commit_epoch(
    run: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    history: list[dict],
    epoch: int,
    best_score: float,
    best_epoch: int,
    bad_epochs: int,
) -> None:
    """Write everything a resume needs; ``train_state.json`` last, so it is the commit point."""
    write_tensors(run / LAST, model.state_dict(), metadata={"epoch": str(epoch)})
    save_optimizer(opt, run / OPTIMIZER, epoch)
    lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in history)
    write_text(run / METRICS, lines)
    write_json(
        run / STATE,
        {
            "epoch": epoch,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
        },
    )


ROUTING_DIR = "routing"


@torch.no_grad()
def _write_routing_snapshot(
    run: Path, model: nn.Module, data: MultiDomainData, epoch: int, batch_size: int
) -> None:
    """Routing statistics of the validation split after ``epoch`` -> ``routing/epoch_XXX.json``.

    Read back by ``analysis.compare.routing_evolution`` (how MI and P(e|d) evolve in training).
    """
    from analysis.collect import collect

    stats = collect(model, data.val, num_domains=data.spec.num_domains, batch_size=batch_size).stats
    if stats is not None:  # models without a gate have no routing to snapshot
        write_json(run / ROUTING_DIR / f"epoch_{epoch + 1:03d}.json", stats.to_dict())


def _read_state(run: Path) -> dict:
    path = run / STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; no completed epoch to resume from")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _read_history(run: Path, last_epoch: int) -> list[dict]:
    path = run / METRICS
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r["epoch"] <= last_epoch + 1]


def read_history(run: str | Path) -> list[dict]:
    """The per-epoch records of a run folder (``metrics.jsonl``)."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
