"""Ready record specs for torch-rechub's ``MMOE`` and ``PLE`` (multi-task models, 0.9.0).

Shapes: B = rows, T = tasks, D = domains, E = experts of a gate (global order), H = expert width.

torch-rechub has no multi-domain models; two readings of its multi-task models are common:

- ``task=t`` (default 0): the domain is a column of the data (e.g. age group), every row reads
  task t's gate and head.  Gate of MMOE: ``gates.t`` over ``experts.0..E-1``; gate of PLE: the last
  CGC level's ``gates_specific.t`` over task t's specific experts and the shared experts.
- ``task=None``: one task per domain (T = D): rows of domain d read gate d and head d.

Expert identities are global: a PLE gate's columns are placed among all experts of its level
(every task's specific experts, then the shared ones), so a domain's specific experts keep their
name and kind ("specific", owned by the task/domain; "shared").  Earlier PLE levels are recorded
as extra gates ``level<l>`` (and ``level<l>_shared``, the gate of the shared experts' input).

``rechub_spec(model)`` returns the arguments of ``analysis.records.record`` for the model;
``record_rechub(model, loader, domain=..., out=..., domains=...)`` records a torch-rechub
``DataLoader`` of ``(x_dict, y)`` batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.records.format import ExpertInfo
from analysis.records.hooks import GateSpec, record
from analysis.records.ple import ple_gates, task_prediction
from analysis.records.reader import Record


def _kind(model: nn.Module) -> str:
    name = type(model).__name__
    if name not in ("MMOE", "PLE") or not type(model).__module__.startswith("torch_rechub"):
        raise ValueError(
            f"expected a torch_rechub MMOE or PLE, got {type(model).__module__}.{name}"
        )
    return name


def rechub_spec(
    model: nn.Module, *, task: int | None = 0, domains: Sequence[str] | None = None
) -> dict[str, Any]:
    """{gates, experts, prediction} for ``analysis.records.record`` (see the module docstring)."""
    kind = _kind(model)
    n_task = int(model.n_task)
    if task is None:
        if domains is not None and len(domains) != n_task:
            raise ValueError(
                f"task=None reads one task per domain, but the model has {n_task} tasks and "
                f"{len(domains)} domains"
            )
        tasks = list(range(n_task))
    else:
        if not 0 <= task < n_task:
            raise ValueError(f"task={task} must be in [0, {n_task})")
        tasks = [task]
    owners = list(domains) if task is None and domains else [f"task_{t}" for t in range(n_task)]

    if kind == "MMOE":
        e = int(model.n_expert)
        experts = tuple(ExpertInfo(f"experts.{i}", "routed") for i in range(e))
        gates = {
            "gate": GateSpec(
                modules=tuple(f"gates.{t}" for t in tasks),
                per_domain=task is None,
                experts=experts,
                hyper={},  # torch-rechub's MMOE trains with no MI or load-balancing loss
            )
        }
        modules = [f"experts.{i}" for i in range(e)]
    else:
        gates, modules = _ple_gates(model, tasks, task is None, owners)

    return {"gates": gates, "experts": {"gate": modules}, "prediction": task_prediction(task)}


def _ple_gates(
    model: nn.Module, tasks: list[int], per_domain: bool, owners: list[str]
) -> tuple[dict[str, GateSpec], list[str]]:
    levels = int(model.n_level)
    spec, shared, n_task = (
        int(model.cgc_layers[0].n_expert_specific),
        int(model.cgc_layers[0].n_expert_shared),
        int(model.n_task),
    )
    gates = ple_gates(
        n_task,
        spec,
        shared,
        owners,
        levels,
        tasks,
        per_domain=per_domain,
        specific_module=lambda level, t: f"cgc_layers.{level}.gates_specific.{t}",
        shared_module=lambda level: f"cgc_layers.{level}.gate_shared",
    )
    last = levels - 1
    modules = [f"cgc_layers.{last}.experts_specific.{i}" for i in range(n_task * spec)]
    modules += [f"cgc_layers.{last}.experts_shared.{j}" for j in range(shared)]
    return gates, modules


def record_rechub(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    domain: str,
    domains: Sequence[str],
    out: str | Path,
    task: int | None = 0,
    keep: Sequence[str] = (),
    sample_size: int = 0,
    seed: int = 0,
    command: str = "",
    data: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Record:
    """Record a torch-rechub MMOE/PLE over a torch-rechub ``DataLoader`` of ``(x_dict, y)``.

    ``domain``: the key of ``x_dict`` holding each row's domain index (into ``domains``);
    ``keep``: keys of ``x_dict`` kept as columns (e.g. user and item ids); y [B, T] (or [B]) labels,
    of which the row's task's column is its label.
    """
    spec = rechub_spec(model, task=task, domains=domains)

    def label(b: Any) -> torch.Tensor:
        y = b[1]
        if y.dim() == 1:
            return y
        if task is not None:
            return y[:, task]
        return y.gather(1, b[0][domain].long().unsqueeze(1)).squeeze(1)

    missing_key = domain

    def dom(b: Any) -> torch.Tensor:
        if missing_key not in b[0]:
            raise ValueError(f"the batches have no column {missing_key!r}; columns: {sorted(b[0])}")
        return b[0][missing_key]

    return record(
        model,
        loader,
        gates=spec["gates"],
        experts=spec["experts"],
        prediction=spec["prediction"],
        out=out,
        domains=domains,
        domain=dom,
        label=label,
        keep={k: (lambda b, k=k: b[0][k]) for k in keep},
        model_name=f"torch-rechub {type(model).__name__}",
        description=f"torch_rechub.models.multi_task.{type(model).__name__}, "
        + ("one task per domain" if task is None else f"task {task}, domain column {domain!r}"),
        sample_size=sample_size,
        seed=seed,
        data=data,
        command=command,
        overwrite=overwrite,
    )
