"""The run-folder state that ``--resume`` needs, written without pickle.

- ``last.safetensors``: weights after the last completed epoch;
- ``optimizer.safetensors``: the optimizer's tensors by name, its other state as JSON metadata;
- ``metrics.jsonl``: one JSON line per completed epoch;
- ``train_state.json``: the epoch counter and early-stopping state, written last (the commit point).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cesaa.checkpoint import CheckpointError, read_tensors, write_json, write_tensors, write_text

LAST = "last.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "train_state.json"
METRICS = "metrics.jsonl"


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


def load_optimizer(opt: torch.optim.Optimizer, path: Path, device: torch.device) -> None:
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
    opt.load_state_dict({"state": state, "param_groups": groups})


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
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows if last_epoch is None else [r for r in rows if r["epoch"] <= last_epoch + 1]
