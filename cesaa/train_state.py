"""The run-folder state that ``--resume`` needs, written without pickle.

- ``last.safetensors``: weights after the last completed epoch;
- ``optimizer.safetensors``: the optimizer's tensors by name, its other state as JSON metadata;
- ``metrics.jsonl``: one JSON line per completed epoch;
- ``train_state.json``: the epoch counter and early-stopping state, written last (the commit point).

``resume_point`` reads them back for ``train(..., resume=True)``.  A resumed run must use the same
data (fingerprint) and the same model and train config, except for ``RESUME_CHANGES``: more epochs
or another early-stopping setting (patience, min_steps, routing_rise) continue the run (also a
finished or early-stopped one).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cesaa.checkpoint import (
    META,
    WEIGHTS,
    CheckpointError,
    read_meta,
    read_tensors,
    write_json,
    write_tensors,
    write_text,
)
from cesaa.config import ModelConfig, TrainConfig, config_from_dict

LAST = "last.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "train_state.json"
METRICS = "metrics.jsonl"
# TrainConfig fields a resume may change
RESUME_CHANGES = ("epochs", "patience", "min_steps", "routing_rise")
# metric names of older metrics.jsonl files -> today's (read_history renames them)
RENAMED_METRICS = {"train/mi": "train/batch_mi"}


def save_optimizer(opt: torch.optim.Optimizer, path: Path, epoch: int) -> None:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    metadata = {
        "epoch": str(epoch),
        "param_groups": json.dumps(sd["param_groups"]),
        "scalars": json.dumps(scalars),
    }
    write_tensors(path, tensors, metadata=metadata)


def load_optimizer(
    opt: torch.optim.Optimizer, path: Path, device: torch.device, model: nn.Module | None = None
) -> None:
    """Load ``optimizer.safetensors`` into ``opt``.  With ``model`` (whose parameters ``opt``
    optimizes, in order), a state saved before the fused embedding table is upgraded first
    (:func:`fuse_embedding_optimizer_state`)."""
    from safetensors import safe_open

    tensors = read_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    try:
        groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata.get("scalars", "{}"))
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: optimizer metadata is missing or invalid ({e})") from None
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value.to(device) if name != "step" else value
    for idx, extra in scalars.items():
        state.setdefault(int(idx), {}).update(extra)
    if model is not None:
        state, groups = fuse_embedding_optimizer_state(model, state, groups, path)
    opt.load_state_dict({"state": state, "param_groups": groups})


def fuse_embedding_optimizer_state(
    model: nn.Module, state: dict[int, dict], groups: list[dict], where: Path | str = "optimizer"
) -> tuple[dict[int, dict], list[dict]]:
    """Upgrade an optimizer state saved for per-column embedding tables to the fused table.

    Before the fusion a ``FeatureEmbedding`` with C columns held C parameters (one table per
    column, consecutive in ``model.parameters()``) where it now holds one (the tables stacked
    row-wise).  When the saved state has exactly the old number of parameters, each group of C
    per-column states becomes one: tensors of the table's shape (Adam's moments) concatenate
    row-wise, and the step counts, equal in every column, are kept once; later parameters move
    down.  Any other state is returned unchanged (``load_state_dict`` checks it).
    """
    from cesaa.features import FeatureEmbedding

    columns = {
        f"{name}.weight" if name else "weight": len(m.spec.cat_cardinalities)
        for name, m in model.named_modules()
        if isinstance(m, FeatureEmbedding)
    }
    old_to_new: list[int] = []  # new parameter index of each old one
    for i, (name, _) in enumerate(model.named_parameters()):
        old_to_new += [i] * columns.get(name, 1)
    saved = sum(len(g["params"]) for g in groups)
    if len(old_to_new) == len(list(model.parameters())) or saved != len(old_to_new):
        return state, groups  # already fused (or not this model's state)
    merged: dict[int, dict] = {}
    for new in sorted(set(old_to_new)):
        olds = [i for i, n in enumerate(old_to_new) if n == new]
        parts = [state[i] for i in olds if i in state]
        if not parts:
            continue
        if len(parts) != len(olds):
            raise CheckpointError(
                f"{where}: the per-column embedding tables {olds} have optimizer state for "
                f"only {len(parts)} of them; cannot fuse it"
            )
        merged[new] = _merge_column_states(parts, where)
    new_groups = []
    for g in groups:
        params = list(dict.fromkeys(old_to_new[i] for i in g["params"]))
        new_groups.append({**g, "params": params})
    return merged, new_groups


def _merge_column_states(parts: list[dict], where: Path | str) -> dict:
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        first = values[0]
        if torch.is_tensor(first) and first.dim() > 0:
            out[key] = torch.cat(values)  # [sum card_c, De]
        elif all(torch.equal(torch.as_tensor(v), torch.as_tensor(first)) for v in values):
            out[key] = first  # the step count: the same for every column
        else:
            raise CheckpointError(
                f"{where}: per-column embedding tables disagree on optimizer state {key!r} "
                f"({[float(torch.as_tensor(v)) for v in values]}); cannot fuse it"
            )
    return out


def commit_epoch(
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


def read_state(run: Path) -> dict:
    path = run / STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; no completed epoch to resume from")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_history(run: str | Path, last_epoch: int | None = None) -> list[dict]:
    """The per-epoch records of a run folder (``metrics.jsonl``), up to epoch index ``last_epoch``."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    rows = [
        {RENAMED_METRICS.get(k, k): v for k, v in json.loads(line).items()}
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]
    return rows if last_epoch is None else [r for r in rows if r["epoch"] <= last_epoch + 1]


@dataclass
class ResumePoint:
    """Where a run continues: the next epoch, early-stopping state, history and best weights."""

    start_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1  # 0-based; -1 = no epoch improved yet
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    meta: dict | None = None


def check_resume_configs(
    where: Path, old_meta: dict, model_cfg: ModelConfig, train_cfg: TrainConfig
) -> None:
    """The model config must equal the run's; the train config may differ in ``RESUME_CHANGES``."""
    old_model = config_from_dict(ModelConfig, old_meta["model"]["config"])
    if old_model != model_cfg:
        diff = _diff(dataclasses.asdict(old_model), dataclasses.asdict(model_cfg), "model")
        raise CheckpointError(f"{where}: a resumed run keeps its model config; differs in {diff}")
    old_train = config_from_dict(TrainConfig, old_meta["train"])
    keep = {k: v for k, v in dataclasses.asdict(old_train).items() if k not in RESUME_CHANGES}
    new = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in RESUME_CHANGES}
    if keep != new:
        raise CheckpointError(
            f"{where}: a resumed run may change only "
            f"{', '.join('train.' + k for k in RESUME_CHANGES)}; differs in {_diff(keep, new, 'train')}"
        )


def _diff(old: dict, new: dict, section: str) -> str:
    return ", ".join(
        f"{section}.{k} ({old.get(k)!r} -> {new.get(k)!r})"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    )


def resume_point(
    run: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    fingerprint: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    clean: bool = True,
) -> ResumePoint:
    """Load the last completed epoch of ``run`` into ``model`` and ``opt``; checks that the data
    and configs allow it.  ``clean``: delete temporaries of a write cut short by a crash."""
    state = read_state(run)
    old = read_meta(run)
    if clean:  # temporaries of a write cut short by a crash (kill -9); targets are intact
        for tmp in run.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if old["data"].get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{run / META}: data fingerprint {old['data'].get('fingerprint')} differs from the "
            f"data given now ({fingerprint}); resume with the same data"
        )
    check_resume_configs(run / META, old, model_cfg, train_cfg)
    model.load_state_dict(read_tensors(run / LAST))
    load_optimizer(opt, run / OPTIMIZER, device, model)
    best_state = read_tensors(run / WEIGHTS) if (run / WEIGHTS).is_file() else None
    meta = {**old, "train": dataclasses.asdict(train_cfg), "status": "running"}
    return ResumePoint(
        start_epoch=state["epoch"] + 1,
        best_score=state["best_score"],
        best_epoch=state["best_epoch"],
        bad_epochs=state["bad_epochs"],
        history=read_history(run, last_epoch=state["epoch"]),
        best_state=best_state,
        meta=meta,
    )
