"""Edit a trained CESAA-family model's experts: prune gate slots, merge experts, save the result.

Shapes: E = gate slots (the gate's columns, ``cfg.num_experts``), P = expert networks (P = E unless
experts were merged), k = slots selected per row, S = shared experts.

- **Prune** slot e: its gate column and (when no kept slot still runs it) its expert are removed.
  The gate's softmax and top-k then run over the kept slots only, so the kept gates renormalize
  exactly as a knock-out does (``RoutingOverride(knocked_out=...)``); k is clipped to the slots
  left.  A pruned model computes what the knocked-out model computes, with fewer weights.
- **Merge** a group of slots: their experts' weights (every layer's weight and bias) are averaged
  into one expert, and the slots keep their own gate columns (``cfg.expert_slots`` maps each slot
  to the expert it runs; MC-SMoE's "merge, then keep the router").  Merging experts with equal
  weights therefore changes nothing, whatever the router does.  A merge saves parameters, not
  FLOPs: each row still runs k experts.

``ExpertPlan`` says what to do (slot indices of the model being edited), ``apply_plan`` returns
the edited model (the original is left unchanged), ``save_edited_checkpoint`` writes it as a run
folder that loads like any other, with the plan in ``meta.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cesaa.checkpoint import Checkpoint, save_checkpoint
from cesaa.epoch import train_step
from cesaa.models.ces import CESBlock
from cesaa.train import make_optimizer


@dataclass(frozen=True)
class ExpertPlan:
    """Which gate slots to remove and which groups of slots to merge (indices of the edited model).

    ``criterion`` names what proposed the plan (kept in ``meta.json``; no effect on the edit).
    """

    remove: tuple[int, ...] = ()
    merge: tuple[tuple[int, ...], ...] = ()
    criterion: str = ""

    def __post_init__(self) -> None:
        remove = tuple(sorted({_index(i, "remove") for i in self.remove}))
        merge = tuple(tuple(sorted({_index(i, "merge") for i in g})) for g in self.merge)
        short = [list(g) for g in merge if len(g) < 2]
        if short:
            raise ValueError(f"merge groups must hold at least two slots, got {short}")
        seen: set[int] = set(remove)
        for g in merge:
            twice = sorted(seen & set(g))
            if twice:
                raise ValueError(
                    f"slots {twice} appear twice in the plan (remove={list(remove)}, "
                    f"merge={[list(m) for m in merge]}): a slot is removed or merged once"
                )
            seen |= set(g)
        object.__setattr__(self, "remove", remove)
        object.__setattr__(self, "merge", tuple(sorted(merge)))

    def check(self, num_slots: int) -> None:
        """``ValueError`` unless every index is a slot of a gate with ``num_slots`` slots and at
        least one slot is kept."""
        used = [*self.remove, *(i for g in self.merge for i in g)]
        bad = sorted(i for i in used if i >= num_slots)
        if bad:
            raise ValueError(f"plan names slots {bad} outside [0, {num_slots}) (the gate's slots)")
        if len(self.remove) >= num_slots:
            raise ValueError(f"plan removes all {num_slots} slots: keep at least one")

    def kept(self, num_slots: int) -> tuple[int, ...]:
        """The slots left after the plan, in their original order."""
        self.check(num_slots)
        return tuple(i for i in range(num_slots) if i not in set(self.remove))

    def experts_left(self, num_slots: int, slots: tuple[int, ...] = ()) -> int:
        """Expert networks after the plan, for a gate whose slots run ``slots`` (() = one each)."""
        return _new_layout(self, num_slots, slots)[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "remove": list(self.remove),
            "merge": [list(g) for g in self.merge],
            "criterion": self.criterion,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ExpertPlan:
        """The plan of ``to_dict`` (or its JSON); unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"a plan must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"remove", "merge", "criterion"})
        if unknown:
            raise ValueError(f"plan has unknown keys {unknown} (known: remove, merge, criterion)")
        merge = d.get("merge", [])
        if not isinstance(merge, list) or not all(isinstance(g, list) for g in merge):
            raise ValueError(f"plan 'merge' must be a list of lists of slots, got {merge!r}")
        remove = d.get("remove", [])
        if not isinstance(remove, list):
            raise ValueError(f"plan 'remove' must be a list of slots, got {remove!r}")
        return cls(tuple(remove), tuple(tuple(g) for g in merge), str(d.get("criterion", "")))


def _index(i: Any, field: str) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"plan {field} holds {i!r}: slot indices are ints >= 0")
    return i


def not_editable(model: Any) -> str | None:
    """None when ``apply_plan`` can edit ``model``, else why not (one line)."""
    if not isinstance(model, CESBlock):
        return (
            f"{type(model).__name__} is not a CESAA-family model: its experts cannot be edited "
            "here; export the plan as JSON and apply it in the model's own code"
        )
    return None


def _new_layout(
    plan: ExpertPlan, num_slots: int, slots: tuple[int, ...]
) -> tuple[list[list[int]], int, tuple[int, ...]]:
    """(old experts averaged into each new expert, number of new experts, new slot -> expert)."""
    kept = plan.kept(num_slots)
    old = list(slots) if slots else list(range(num_slots))
    parent = list(range(max(old) + 1))  # union-find over the old experts

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for group in plan.merge:
        for s in group[1:]:
            parent[root(old[s])] = root(old[group[0]])
    new_of_root: dict[int, int] = {}
    new_slots = []
    for s in kept:
        new_slots.append(new_of_root.setdefault(root(old[s]), len(new_of_root)))
    members = [[] for _ in new_of_root]
    for e in range(len(parent)):
        if root(e) in new_of_root:
            members[new_of_root[root(e)]].append(e)
    return members, len(members), tuple(new_slots)


def apply_plan(model: nn.Module, plan: ExpertPlan) -> nn.Module:
    """A new model with ``plan`` applied (eval mode, same device); ``model`` is not changed.

    Raises ``ValueError`` for a model that is not CESAA-family (:func:`not_editable`) or a plan
    naming slots the gate does not have.
    """
    from cesaa.models.registry import build_model

    why = not_editable(model)
    if why:
        raise ValueError(why)
    cfg = model.cfg
    e = cfg.num_experts
    members, _, new_slots = _new_layout(plan, e, cfg.expert_slots)
    kept = list(plan.kept(e))
    identity = new_slots == tuple(range(len(new_slots)))
    new_cfg = dataclasses.replace(
        cfg,
        num_experts=len(kept),
        top_k=min(cfg.top_k, len(kept)),
        expert_slots=() if identity else new_slots,
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keep = torch.tensor(kept, device=next(model.parameters()).device)
    for name in ("gate.w_gate", "gate.w_noise"):
        if name in state:  # [..., E] -> [..., E']
            state[name] = state[name].index_select(state[name].dim() - 1, keep)
    for i in range(len(model.experts.weights)):
        for part in ("weights", "biases"):
            key = f"experts.{part}.{i}"
            old = state[key]  # [P, ...]
            state[key] = torch.stack([old[m].mean(dim=0) for m in members])  # [P', ...]
    edited = build_model(new_cfg, model.features.spec)
    edited.load_state_dict(state, strict=True)
    param = next(model.parameters())
    edited.to(device=param.device, dtype=param.dtype)
    return edited.eval()


def count_parameters(model: nn.Module) -> int:
    """Trainable and frozen parameters of ``model`` (every element of every parameter)."""
    return int(sum(p.numel() for p in model.parameters()))


def _mlp_flops(weights: Any) -> int:
    """Multiply-adds x 2 of one row through one expert: 2 * sum of layer in * out (+ biases)."""
    return int(sum(2 * w.shape[1] * w.shape[2] + w.shape[2] for w in weights))


def expert_flops_per_row(model: nn.Module) -> int:
    """FLOPs per row of a CESAA-family model's gate and experts (not features or towers).

    Gate: 2 * Din * E (its clean logits at inference).  Experts: k selected (sparse dispatch) or
    every expert network P (dense dispatch) times one expert's FLOPs, plus S shared experts.
    """
    why = not_editable(model)
    if why:
        raise ValueError(why)
    cfg = model.cfg
    w = model.gate.w_gate
    gate = 2 * (w.shape[-2]) * cfg.num_experts
    one = _mlp_flops(model.experts.weights)
    run = cfg.top_k if cfg.dispatch == "sparse" else model.experts.groups
    shared = _mlp_flops(model.shared.weights) * model.shared.groups if model.shared else 0
    return int(gate + run * one + shared)


def save_edited_checkpoint(
    source: Checkpoint,
    model: nn.Module,
    plan: ExpertPlan,
    out_dir: str | Path,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (``apply_plan(source.model, plan)``) as a run folder at ``out_dir``.

    ``meta.json`` is the source's with the edited model config, ``metrics`` (the caller's
    evaluation of the edited model, e.g. ``{"val": ..., "test": ...}``; {} when None) and an
    ``edit`` entry: the plan, the source folder and weights' sha256, the slots and parameters
    before and after, plus ``extra`` (e.g. fine-tuning).  The data location is re-anchored to the
    new folder.  The folder is written beside ``out_dir`` under a temporary name and renamed into
    place, so ``out_dir`` is either absent or complete; an existing non-empty ``out_dir`` is
    refused (``ValueError`` naming it).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder: choose another")
    meta = copy.deepcopy(source.meta)
    meta["model"] = {"name": model.cfg.name, "config": dataclasses.asdict(model.cfg)}
    meta["metrics"] = dict(metrics or {})
    meta["status"] = "complete"
    meta["edit"] = {
        "plan": plan.to_dict(),
        "source": str(Path(source.path).resolve()),
        "source_weights_sha256": source.meta.get("weights_sha256"),
        "slots_before": source.model_config.num_experts,
        "slots_after": model.cfg.num_experts,
        "experts_before": source.model.experts.groups,
        "experts_after": model.experts.groups,
        "parameters_before": count_parameters(source.model),
        "parameters_after": count_parameters(model),
        **(extra or {}),
    }
    loc = meta["data"].get("location") or {}
    for entry in loc.values():
        if isinstance(entry, dict) and entry.get("absolute"):
            entry["relative_to_run"] = os.path.relpath(entry["absolute"], out.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_checkpoint(tmp, model, meta)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def fine_tune(
    model: nn.Module,
    table: Any,
    steps: int,
    *,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place for ``steps`` optimizer steps on shuffled batches of ``table``
    (the trainer's Adam and step: BCE + the model's auxiliary loss); returns it in eval mode."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--fine-tune {steps!r} must be a number of steps >= 0")
    if steps == 0:
        return model.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, lr, weight_decay)
    model.train()
    done = 0
    while done < steps:
        for b in table.batches(batch_size, shuffle=True, generator=gen):
            train_step(model, opt, b, None, 0.0)
            done += 1
            if done == steps:
                break
    return model.eval()
