"""Reading a model's tensors for a record: forward hooks that keep each named module's last
output, and the checks that turn a gate output or a per-row value into a numpy array.

Shapes: B = rows of a batch, E = experts of a gate, k = selected experts.  Used by
``analysis.records.hooks.record``; knows nothing of gates' meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


class Capture:
    """Forward hooks that keep the last output of each named module (one call per forward)."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.handles = []
        for name in dict.fromkeys(names):
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"model {type(model).__name__} has no module {name!r} (see "
                    "model.named_modules())"
                ) from None
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.outputs[name] = output.detach()

        return hook

    def reset(self) -> None:
        self.outputs.clear()
        self.calls.clear()

    def get(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise ValueError(f"module {name!r} did not run in the forward pass")
        if self.calls[name] > 1:
            raise ValueError(
                f"module {name!r} ran {self.calls[name]} times in one forward pass; hook a "
                "module that runs once per batch"
            )
        return self.outputs[name]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def squeeze_gate(t: torch.Tensor, name: str, b: int) -> np.ndarray:
    x = t.float()
    while x.dim() > 2 and x.shape[-1] == 1:
        x = x.squeeze(-1)
    if x.dim() != 2 or x.shape[0] != b:
        raise ValueError(f"{name}: expected a gate output of shape [{b}, E], got {tuple(t.shape)}")
    return x.cpu().numpy().astype(np.float64)


def topk_columns(probs: np.ndarray, k: int) -> np.ndarray:
    """[B, k] indices of the k largest columns, largest first (ties: lower index first)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, :k]


def per_row(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    arr = np.asarray(x)
    while arr.ndim > 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one value per row [B], got shape {arr.shape}")
    return arr
