"""PLE's gates as ``GateSpec``s and the multi-task head's prediction, shared by the adapters of
multi-task models (DeepCTR-Torch, torch-rechub).

Shapes: T = tasks, E = experts of a level (every task's specific experts, task by task, then the
shared ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from analysis.records.format import ExpertInfo
from analysis.records.hooks import GateSpec


def ple_gates(
    n_task: int,
    n_specific: int,
    n_shared: int,
    owners: Sequence[str],
    levels: int,
    tasks: Sequence[int],
    *,
    per_domain: bool,
    specific_module: Callable[[int, int], str],
    shared_module: Callable[[int], str],
    kind: str = "probs",
    gate_kind: str | None = None,
    shared_gate_kind: str | None = None,
) -> dict[str, GateSpec]:
    """One ``GateSpec`` per CGC level over the E experts of the level (specific ones owned by
    ``owners[t]``, then shared): the last level first as ``gate``, earlier levels as
    ``level<l>`` (the tasks' gates, ``specific_module(level, t)``) and ``level<l>_shared`` (the
    shared experts' gate, ``shared_module(level)``).  ``kind``, ``gate_kind`` and
    ``shared_gate_kind`` are passed to the ``GateSpec``s as they are."""
    e = n_task * n_specific + n_shared
    experts = tuple(
        [
            ExpertInfo(f"specific_{t}_{j}", "specific", owners[t])
            for t in range(n_task)
            for j in range(n_specific)
        ]
        + [ExpertInfo(f"shared_{j}", "shared") for j in range(n_shared)]
    )

    def columns(t: int) -> tuple[int, ...]:
        return tuple(t * n_specific + j for j in range(n_specific)) + tuple(
            n_task * n_specific + j for j in range(n_shared)
        )

    gates: dict[str, GateSpec] = {}
    for level in [levels - 1, *range(levels - 1)]:  # the last level first: the primary gate
        name = "gate" if level == levels - 1 else f"level{level + 1}"
        gates[name] = GateSpec(
            modules=tuple(specific_module(level, t) for t in tasks),
            kind=kind,
            per_domain=per_domain,
            columns=tuple(columns(t) for t in tasks),
            num_experts=e,
            experts=experts,
            gate_kind=gate_kind,
            hyper={},
            layer=level,  # levels in sequence: the cross-gate views compare consecutive ones
        )
        if level < levels - 1:
            gates[f"level{level + 1}_shared"] = GateSpec(
                modules=(shared_module(level),),
                kind=kind,
                experts=experts,
                gate_kind=shared_gate_kind,
                hyper={},
            )
    return gates


def task_prediction(task: int | None) -> Callable[[torch.Tensor, Any, np.ndarray], torch.Tensor]:
    """The record's prediction from a multi-task model's output ``out`` [B, T] (every task's
    probability): task ``task`` for every row, or (``None``) each row's own domain's task."""

    def prediction(out: torch.Tensor, batch: Any, dom: np.ndarray) -> torch.Tensor:
        if task is not None:
            return out[:, task]
        return out.gather(1, torch.as_tensor(dom, device=out.device).unsqueeze(1)).squeeze(1)

    return prediction
