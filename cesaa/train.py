"""Training and evaluation as functions: ``train(...) -> TrainResult`` and ``evaluate(...) -> dict``.

Determinism: the model is initialized under ``seed``; epoch ``t`` shuffles with a generator seeded from
``(seed, t)`` and reseeds the global RNG (gate noise, dropout) from ``(seed, t)``, so a run resumed after
epoch ``t`` continues exactly as an uninterrupted one.

Scale: under ``torchrun`` the same function trains with DistributedDataParallel (see
:mod:`cesaa.distributed`: global batch split over ranks, rank 0 writes the checkpoints), and ``data``
may be a :class:`cesaa.data.stream.StreamingData` whose splits are Parquet streams read row group by
row group (bounded memory).  Single-process in-memory training is the code path it always was.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cesaa import distributed
from cesaa.checkpoint import (
    META,
    WEIGHTS,
    CheckpointError,
    build_meta,
    read_meta,
    read_tensors,
    save_checkpoint,
    write_json,
)
from cesaa.config import ModelConfig, TrainConfig, config_from_dict
from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.distributed import DistContext
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import build_model
from cesaa.routing_rows import write_row_snapshot
from cesaa.train_state import (  # noqa: F401  (METRICS, read_history: public via cesaa.train)
    LAST,
    METRICS,
    OPTIMIZER,
    STATE,
    commit_epoch,
    load_optimizer,
    read_history,
    read_state,
)

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"logloss"}
_RANK_SEED_STRIDE = 1_000_033  # rank r > 0 draws gate noise / dropout from its own stream


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
    """Overall and per-domain AUC / GAUC / logloss (flat keys, see ``cesaa.metrics``).

    ``table``: an ``EncodedTable`` or a Parquet stream part (``cesaa.data.stream.ParquetPart``).
    """
    if not isinstance(table, EncodedTable):
        return _evaluate_part(model, table, domain_names, batch_size, DistContext(), routing)
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


def _evaluate_part(
    model: nn.Module,
    part: object,
    domain_names: tuple[str, ...],
    batch_size: int,
    ctx: DistContext,
    routing: RoutingOverride | None = None,
) -> dict[str, float]:
    """``evaluate`` with the rows shared over ranks: each rank predicts its share (a contiguous
    slice of a table, or its row groups of a stream), the predictions are gathered, and every rank
    computes the same metrics."""
    if ctx.world_size == 1 and isinstance(part, EncodedTable):
        return evaluate(model, part, domain_names, batch_size, routing)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cols: dict[str, list[torch.Tensor]] = {"p": [], "y": [], "d": [], "u": []}
    with torch.no_grad():
        for b in _shard_batches(part, batch_size, ctx):
            b = b.to(device)
            out = model(b.cat, b.num, b.domain, routing=routing)
            cols["p"].append(torch.sigmoid(out.logit).float().cpu())
            cols["y"].append(b.label.float().cpu())
            cols["d"].append(b.domain.cpu())
            if b.user is not None:
                cols["u"].append(b.user.cpu())
    model.train(was_training)
    has_user = part.user is not None if isinstance(part, EncodedTable) else part.has_user
    dtypes = {"p": torch.float32, "y": torch.float32, "d": torch.long, "u": torch.long}
    got = {
        k: distributed.gather_rows(torch.cat(v) if v else torch.zeros(0, dtype=dtypes[k]), ctx)
        for k, v in cols.items()
        if k != "u" or has_user
    }
    user = got["u"].numpy() if has_user else None
    return evaluate_predictions(
        got["y"].float().numpy(),
        got["p"].float().numpy(),
        got["d"].numpy(),
        user=user,
        domain_names=domain_names,
    )


def _shard_batches(part: object, batch_size: int, ctx: DistContext) -> Iterator[EncodedTable]:
    """This rank's contiguous share of a table's (or a stream's) rows, in batches."""
    if not isinstance(part, EncodedTable):
        return part.eval_batches(batch_size, rank=ctx.rank, world=ctx.world_size)
    lo, hi = distributed.shard_range(len(part), ctx.rank, ctx.world_size)
    fields = ("cat", "num", "domain", "label", "user", "item", "time")
    mine = EncodedTable(
        **{n: None if (x := getattr(part, n)) is None else x[lo:hi] for n in fields}
    )
    return mine.batches(batch_size)


def _epoch_batches(
    data: object, batch_size: int, gen: torch.Generator, ctx: DistContext
) -> Iterator[tuple[EncodedTable, float | None]]:
    """This rank's training batches of one epoch, each with its BCE scale ``W * n_r / n``.

    One in-memory process: ``data.batches`` exactly as always (scale None).  Under DDP every rank
    draws the same permutation and takes its contiguous slice of each global batch, so the ranks
    together see the batches of one process with the same seed.  A stream yields its own shares.
    """
    w = ctx.world_size
    if not isinstance(data, EncodedTable):
        for batch, n_global in data.train_batches(batch_size, gen, rank=ctx.rank, world=w):
            yield batch, (len(batch) * w / n_global if w > 1 else None)
        return
    if w == 1:
        for batch in data.batches(batch_size, shuffle=True, generator=gen):
            yield batch, None
        return
    order = torch.randperm(len(data), generator=gen)
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < w:  # a last global batch too small to give every rank a row: skipped
            break
        mine = idx.tensor_split(w)[ctx.rank]
        yield data.subset(mine), len(mine) * w / len(idx)


def _train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: EncodedTable,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: bool,
    callback: Callable[[dict], None] | None,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    ctx = ctx or DistContext(device=device)
    model.train()
    torch.manual_seed(_epoch_seed(cfg.seed, epoch) + _RANK_SEED_STRIDE * ctx.rank)
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 17)
    n_batches = math.ceil(len(data) / cfg.batch_size)
    sums: dict[str, float] = {}
    rows = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for step, (batch, scale) in enumerate(_epoch_batches(data, cfg.batch_size, gen, ctx)):
        b = batch.to(device)
        out = model(b.cat, b.num, b.domain)
        bce = F.binary_cross_entropy_with_logits(out.logit, b.label)
        loss = bce + out.aux_loss
        opt.zero_grad(set_to_none=True)
        (loss if scale is None else bce * scale + out.aux_loss).backward()
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
    if ctx.is_distributed:  # row-weighted means over every rank's rows
        keys = sorted(sums)
        total = distributed.all_reduce_sum(
            torch.tensor([rows, *(sums[k] for k in keys)], dtype=torch.float64), ctx
        )
        rows, sums = int(total[0]), {k: float(v) for k, v in zip(keys, total[1:], strict=True)}
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

    Under ``torchrun`` this trains with DistributedDataParallel (every rank calls ``train``; rank 0
    writes ``out_dir`` and runs ``callback``); ``data`` may be a ``StreamingData`` (Parquet streams).
    """
    ctx = distributed.setup(resolve_device(train_cfg.device))
    device = ctx.device
    main = ctx.is_main
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
        state = read_state(run)
        old = read_meta(run)
        if main:  # temporaries of a write cut short by a crash (kill -9); targets are intact
            for tmp in run.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
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
        history = read_history(run, last_epoch=state["epoch"])
        meta = {**old, "status": "running"}
        if state.get("finished"):
            start_epoch = train_cfg.epochs  # nothing left to do
    elif run is not None and main:
        run.mkdir(parents=True, exist_ok=True)
        for name in (METRICS, STATE, LAST, OPTIMIZER):
            (run / name).unlink(missing_ok=True)
        save_checkpoint(run, model, meta)

    if ctx.is_distributed and train_cfg.mi_scope == "global" and hasattr(model, "joint_reducer"):
        model.joint_reducer = distributed.global_joint_reducer()
    net = distributed.wrap(model, ctx)  # DDP under torchrun, else the model itself
    callback = callback if main else None

    stopped_early = bad_epochs >= train_cfg.patience > 0 and start_epoch > 0
    for epoch in range(start_epoch, train_cfg.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_terms = _train_one_epoch(
            net, opt, data.train, train_cfg, epoch, device, progress and main, callback, ctx
        )
        val = _evaluate_part(model, data.val, data.domain_names, train_cfg.eval_batch_size, ctx)
        record = {
            "epoch": epoch + 1,
            **train_terms,
            **{f"val/{k}": v for k, v in val.items()},
            "time_s": time.perf_counter() - t0,
        }
        if run is not None and train_cfg.routing_snapshots:
            _write_routing_snapshot(run, model, data, epoch, train_cfg.eval_batch_size, ctx)
            if ctx.is_main and isinstance(data.val, EncodedTable):  # row-level, for saturation
                write_row_snapshot(run, model, data.val, epoch + 1)
        score = _score(val, train_cfg.monitor)
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if run is not None and main:
                meta["metrics"] = {"best_epoch": epoch + 1, "val": val}
                save_checkpoint(run, model, meta)
        else:
            bad_epochs += 1
        history.append(record)
        stopped_early = train_cfg.patience > 0 and bad_epochs >= train_cfg.patience
        if run is not None and main:
            commit_epoch(run, model, opt, history, epoch, best_score, best_epoch, bad_epochs)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        if callback is not None:
            callback({"event": "epoch", **record})

    model.load_state_dict(best_state)
    model.eval()
    val = _evaluate_part(model, data.val, data.domain_names, train_cfg.eval_batch_size, ctx)
    test = _evaluate_part(model, data.test, data.domain_names, train_cfg.eval_batch_size, ctx)
    if run is not None and main:
        meta["status"] = "complete"
        meta["metrics"] = {"best_epoch": best_epoch + 1, "val": val, "test": test}
        meta["epochs_completed"] = len(history)
        save_checkpoint(run, model, meta)
        state = read_state(run) if (run / STATE).is_file() else {}
        write_json(run / STATE, {**state, "finished": True})
    distributed.barrier(ctx)  # no rank returns before rank 0 has written the run folder
    return TrainResult(model, history, best_epoch + 1, val, test, run, stopped_early)


ROUTING_DIR = "routing"


@torch.no_grad()
def _write_routing_snapshot(
    run: Path,
    model: nn.Module,
    data: MultiDomainData,
    epoch: int,
    batch_size: int,
    ctx: DistContext | None = None,
) -> None:
    """Routing statistics of the validation split after ``epoch`` -> ``routing/epoch_XXX.json``.

    Read back by ``analysis.compare.routing_evolution`` (how MI and P(e|d) evolve in training).
    Under DDP (or for a stream) each rank collects its share and the sums are merged.
    """
    from analysis.collect import collect

    ctx = ctx or DistContext()
    d = data.spec.num_domains
    if ctx.world_size == 1 and isinstance(data.val, EncodedTable):
        stats = collect(model, data.val, num_domains=d, batch_size=batch_size).stats
    else:
        from analysis.stream import stream_routing_stats

        shards = _shard_batches(data.val, batch_size, ctx)
        stats = distributed.merge_routing_stats(
            stream_routing_stats(model, shards, num_domains=d), ctx
        )
    if stats is not None and ctx.is_main:  # models without a gate have no routing to snapshot
        write_json(run / ROUTING_DIR / f"epoch_{epoch + 1:03d}.json", stats.to_dict())
