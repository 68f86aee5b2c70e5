"""Ready record specs for DeepCTR-Torch's ``MMOE`` and ``PLE`` (``deepctr_torch`` 0.3.0).

Shapes: N = rows, B = rows of a batch, T = tasks, D = domains, E = experts of a gate (global
order), H = expert width.

DeepCTR-Torch's multi-task models take one float tensor X [B, F] (its ``feature_index`` columns)
and return [B, T] task probabilities.  Their gates are found by name:

- ``MMOE``: task t's gate is ``gate_dnn_final_layer.t`` (logits [B, E] over ``expert_dnn.0..E-1``;
  the softmax is taken in ``forward``, so the record takes it too).
- ``PLE``: the gate of task t at CGC level l is ``specific_gate_dnn_final_layer.l.t`` (logits over
  task t's ``specific_experts.l.t.*`` then the ``shared_experts.l.0.*``); the shared experts' own
  gate is ``shared_gate_dnn_final_layer.l`` (logits over every task's specific experts, task by task,
  then the shared ones).  The record's columns are all experts of a level (task 0's specific, task
  1's, ..., then shared), so a task's gate has probability 0 on other tasks' specific experts and
  every expert keeps its identity (kind ``specific`` with its owner, or ``shared``).  The last level
  is the primary gate ``gate``; earlier levels are ``level<l>`` and ``level<l>_shared``.

Two readings of a multi-task model (both models need T >= 2):

- ``task=t`` (default 0): one task for all rows; the domain is a column of the data.
- ``task=None``: one task per domain (T = D): rows of domain d read task d's gate and head.

``record_deepctr(model, x, y, domain=..., domains=..., out=...)`` records the same ``x`` (a dict of
feature name -> array) that ``model.fit`` / ``model.predict`` take.  ``load_deepctr()`` imports
``deepctr_torch`` without the PyPI version check its ``__init__`` starts in a thread (a network
call at import time).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.records.format import ExpertInfo
from analysis.records.hooks import GateSpec, record
from analysis.records.ple import ple_gates, task_prediction
from analysis.records.reader import Record

INSTALL = "pip install 'cesaa[deepctr]' (DeepCTR-Torch 0.3.0)"


def load_deepctr() -> types.ModuleType:
    """``deepctr_torch``, imported without the PyPI version check of its ``__init__``."""
    if "deepctr_torch" not in sys.modules:
        quiet = types.ModuleType("deepctr_torch.utils")
        quiet.check_version = lambda version: None  # the only name deepctr_torch.utils defines
        sys.modules.setdefault("deepctr_torch.utils", quiet)
    try:
        return importlib.import_module("deepctr_torch")
    except ImportError as err:
        raise ImportError(f"DeepCTR-Torch is not installed ({err}); {INSTALL}") from None


def _kind(model: nn.Module) -> str:
    name = type(model).__name__
    if name not in ("MMOE", "PLE") or not type(model).__module__.startswith("deepctr_torch"):
        raise ValueError(
            f"expected a deepctr_torch MMOE or PLE, got {type(model).__module__}.{name}"
        )
    return name


def _tasks(model: nn.Module, task: int | None, domains: Sequence[str] | None) -> list[int]:
    n_task = int(model.num_tasks)
    if task is None:
        if domains is not None and len(domains) != n_task:
            raise ValueError(
                f"task=None reads one task per domain, but the model has {n_task} tasks "
                f"{list(model.task_names)} and {len(domains)} domains"
            )
        return list(range(n_task))
    if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < n_task:
        raise ValueError(
            f"task={task!r} must be an int in [0, {n_task}) (tasks: {model.task_names})"
        )
    return [task]


def deepctr_spec(
    model: nn.Module, *, task: int | None = 0, domains: Sequence[str] | None = None
) -> dict[str, Any]:
    """{gates, experts, prediction} for ``analysis.records.record`` (see the module docstring)."""
    kind = _kind(model)
    tasks = _tasks(model, task, domains)
    per_domain = task is None
    owners = list(domains) if per_domain and domains else [str(t) for t in model.task_names]
    if kind == "MMOE":
        e = int(model.num_experts)
        experts = tuple(ExpertInfo(f"expert_dnn_{i}") for i in range(e))
        gates = {
            "gate": GateSpec(
                modules=tuple(f"gate_dnn_final_layer.{t}" for t in tasks),
                kind="logits",
                per_domain=per_domain,
                experts=experts,
                gate_kind="dense",
                hyper={},  # DeepCTR-Torch's MMOE trains with no MI or load-balancing loss
            )
        }
        modules = [f"expert_dnn.{i}" for i in range(e)]
    else:
        gates, modules = _ple_gates(model, tasks, per_domain, owners)

    return {"gates": gates, "experts": {"gate": modules}, "prediction": task_prediction(task)}


def _ple_gates(
    model: nn.Module, tasks: list[int], per_domain: bool, owners: list[str]
) -> tuple[dict[str, GateSpec], list[str]]:
    levels, n_task = int(model.num_levels), int(model.num_tasks)
    spec, shared = int(model.specific_expert_num), int(model.shared_expert_num)
    if shared > spec:
        # PLE builds specific_expert_num shared experts but its forward reads shared_expert_num
        raise ValueError(
            f"DeepCTR-Torch's PLE builds {spec} shared experts per level but its gates expect "
            f"shared_expert_num={shared}; its forward fails with shared > specific"
        )
    gates = ple_gates(
        n_task,
        spec,
        shared,
        owners,
        levels,
        tasks,
        per_domain=per_domain,
        specific_module=lambda level, t: f"specific_gate_dnn_final_layer.{level}.{t}",
        shared_module=lambda level: f"shared_gate_dnn_final_layer.{level}",
        kind="logits",
        gate_kind="structured",
        shared_gate_kind="dense",
    )
    last = levels - 1
    modules = [f"specific_experts.{last}.{t}.{j}" for t in range(n_task) for j in range(spec)]
    modules += [f"shared_experts.{last}.0.{j}" for j in range(shared)]
    return gates, modules


def _column(x: Mapping[str, Any], name: str, n: int, what: str) -> np.ndarray:
    if name not in x:
        raise ValueError(f"{what}: x has no column {name!r}; columns: {sorted(x)}")
    arr = np.asarray(x[name])
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{what}: column {name!r} must have shape ({n},), got {arr.shape}")
    return arr


def _inputs(model: nn.Module, x: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """X [N, F] float32 as ``model.predict`` builds it (feature_index order)."""
    missing = [f for f in model.feature_index if f not in x]
    if missing:
        raise ValueError(f"x lacks the model's feature columns {missing}; columns: {sorted(x)}")
    cols = [np.asarray(x[f]) for f in model.feature_index]
    cols = [c[:, None] if c.ndim == 1 else c for c in cols]
    n = cols[0].shape[0]
    bad = {f: c.shape[0] for f, c in zip(model.feature_index, cols, strict=True) if c.shape[0] != n}
    if bad:
        raise ValueError(f"x's columns have different lengths: {n} rows, but {bad}")
    return np.concatenate(cols, axis=1).astype(np.float32), n


def record_deepctr(
    model: nn.Module,
    x: Mapping[str, Any],
    y: Any,
    *,
    domain: str | Any,
    domains: Sequence[str],
    out: str | Path,
    task: int | None = 0,
    keep: Sequence[str] = (),
    batch_size: int = 1024,
    sample_size: int = 0,
    seed: int = 0,
    command: str = "",
    data: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Record:
    """Record a DeepCTR-Torch MMOE/PLE over ``x`` ({feature name: [N] array}, as ``model.fit``).

    ``y``: [N] labels (every task) or [N, T] (the row's task's column is its label: column
    ``task``, or the row's domain with ``task=None``).  ``domain``: a column of ``x`` or an [N]
    array of indices into ``domains``.  ``keep``: columns of ``x`` kept in the record (user and
    item ids).  Rows keep the order of ``x``.
    """
    spec = deepctr_spec(model, task=task, domains=domains)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    feats, n = _inputs(model, x)
    dom = (
        _column(x, domain, n, "domain") if isinstance(domain, str) else np.asarray(domain)
    ).astype(np.int64)
    if dom.shape != (n,):
        raise ValueError(f"domain must give one index per row ({n},), got shape {dom.shape}")
    labels = np.asarray(y, dtype=np.float64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape[0] != n or labels.ndim not in (1, 2):
        raise ValueError(f"y must have shape ({n},) or ({n}, T), got {labels.shape}")
    if labels.ndim == 2:
        t_idx = dom if task is None else np.full(n, task)
        if labels.shape[1] != int(model.num_tasks) or (t_idx >= labels.shape[1]).any():
            raise ValueError(
                f"y has {labels.shape[1]} columns; the model has {model.num_tasks} tasks"
            )
        labels = labels[np.arange(n), t_idx]
    kept = {k: _column(x, k, n, f"keep[{k!r}]") for k in keep}
    device = next(model.parameters()).device

    def batches() -> Iterator[tuple]:
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            yield (
                torch.from_numpy(feats[sl]).to(device),
                dom[sl],
                labels[sl],
                {k: v[sl] for k, v in kept.items()},
            )

    return record(
        model,
        batches(),
        gates=spec["gates"],
        experts=spec["experts"],
        prediction=spec["prediction"],
        out=out,
        domains=domains,
        domain=lambda b: b[1],
        label=lambda b: b[2],
        keep={k: (lambda b, k=k: b[3][k]) for k in keep},
        model_name=f"DeepCTR-Torch {type(model).__name__}",
        description=f"deepctr_torch.models.multitask.{type(model).__name__}, "
        + (
            "one task per domain"
            if task is None
            else f"task {model.task_names[task]!r}, "
            + (f"domain column {domain!r}" if isinstance(domain, str) else "domain array")
        ),
        sample_size=sample_size,
        seed=seed,
        data=data,
        command=command,
        overwrite=overwrite,
    )
