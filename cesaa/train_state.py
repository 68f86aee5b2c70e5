"""Optimizer state to and from safetensors (no pickle): tensors by name, the rest as JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cesaa.checkpoint import CheckpointError, read_tensors, write_tensors


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
