"""Record any PyTorch model: gate outputs captured by forward hooks on named modules.

Shapes: B = rows of a batch, D = domains, E = experts of a gate (global, in record column order),
E_d = outputs of one gate module, k = selected experts, H = expert output width.

No change to the model's code: ``record`` registers forward hooks on the modules named in each
``GateSpec`` (``model.get_submodule(name)``), runs ``forward(model, batch)`` under
``torch.no_grad()`` in eval mode, and removes the hooks afterwards.  A gate is

- one module whose output is the gate ([B, E] softmax probabilities, or logits with ``kind="logits"``;
  trailing singleton dimensions such as [B, E, 1] are squeezed), or
- one module per domain (``per_domain=True``: rows of domain d read module d, as in a multi-task
  MMoE/PLE with one task per domain), whose E_d outputs land in global columns ``columns[d]``
  (experts a domain's gate cannot reach get probability 0), or
- ``output=fn``: read from the model's return value (models that return their gates directly).

``top_k`` declares a sparse gate: the k largest columns of each row are its selected experts.
The record declares each gate's kind (``docs/record.md``): sparse with ``top_k``; structured when
``columns`` place the gate among more experts than it can weigh (domain d reaches ``columns[d]``);
dense otherwise, or as ``gate_kind=`` says.  ``hyper={"alpha": ..., "beta": ...}`` declares the
model settings the alarms read (``{}``: the model has none; left out: not declared);
``layer=l`` places the gate in a sequence (consecutive layers get the cross-gate views).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.records.capture import Capture, per_row, squeeze_gate, topk_columns
from analysis.records.format import ExpertInfo, GateInfo, RecordMeta
from analysis.records.reader import Record, open_record
from analysis.records.writer import RecordWriter

Batch = Any


@dataclass(frozen=True)
class GateSpec:
    """Where a gate is read and how to interpret it (see the module docstring)."""

    modules: tuple[str, ...] = ()
    kind: str = "probs"
    top_k: int | None = None
    per_domain: bool = False
    columns: tuple[tuple[int, ...], ...] | None = None
    num_experts: int | None = None
    experts: tuple[ExpertInfo, ...] | None = None
    output: Callable[[Any], Any] | None = None
    gate_kind: str | None = None
    hyper: dict[str, float] | None = None
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("probs", "logits"):
            raise ValueError(f"GateSpec.kind must be 'probs' or 'logits', got {self.kind!r}")
        if self.output is None and not self.modules:
            raise ValueError("GateSpec needs modules=(name, ...) or output=fn")
        if self.output is not None and self.modules:
            raise ValueError("GateSpec takes modules or output, not both")
        if len(self.modules) > 1 and not self.per_domain:
            raise ValueError(
                f"GateSpec has {len(self.modules)} modules; pass per_domain=True (module d is "
                "the gate of domain d) or name one module"
            )
        if self.columns is not None and len(self.columns) != len(self.modules):
            raise ValueError(
                f"GateSpec.columns has {len(self.columns)} entries but there are "
                f"{len(self.modules)} modules"
            )


def _as_spec(g: GateSpec | str) -> GateSpec:
    return GateSpec(modules=(g,)) if isinstance(g, str) else g


def _gate_probs(
    name: str, spec: GateSpec, cap: Capture, out: Any, domain: np.ndarray, e: int
) -> np.ndarray:
    """[B, E] dense probabilities of gate ``name`` for this batch, in global columns."""
    b = domain.shape[0]
    if spec.output is not None:
        raw = [squeeze_gate(torch.as_tensor(spec.output(out)), f"gate {name!r}", b)]
    else:
        raw = [squeeze_gate(cap.get(m), f"gate {name!r} module {m!r}", b) for m in spec.modules]
    if spec.kind == "logits":
        raw = [np.exp(r - r.max(axis=1, keepdims=True)) for r in raw]
        raw = [r / r.sum(axis=1, keepdims=True) for r in raw]
    probs = np.zeros((b, e))
    for i, r in enumerate(raw):
        cols = spec.columns[i] if spec.columns is not None else tuple(range(r.shape[1]))
        if r.shape[1] != len(cols):
            raise ValueError(
                f"gate {name!r} module {i} gives {r.shape[1]} columns, expected {len(cols)}"
            )
        rows = domain == i if spec.per_domain else np.ones(b, bool)
        probs[np.ix_(rows, np.asarray(cols))] = r[rows]
    if spec.per_domain and (domain >= len(raw)).any():
        raise ValueError(
            f"gate {name!r} has {len(raw)} per-domain modules but a row has domain "
            f"{int(domain.max())}"
        )
    return probs


def default_forward(model: nn.Module, batch: Batch) -> Any:
    """``model(x)`` for a batch ``(x, y)`` (e.g. a torch DataLoader of (features, labels)), else
    ``model(batch)``."""
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


@torch.no_grad()
def record(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    gates: Mapping[str, GateSpec | str],
    out: str | Path,
    domains: Sequence[str],
    domain: Callable[[Batch], Any],
    label: Callable[[Batch], Any] | None = None,
    prediction: Callable[[Any, Batch, np.ndarray], Any] | None = None,
    forward: Callable[[nn.Module, Batch], Any] = default_forward,
    experts: Mapping[str, Sequence[str]] | None = None,
    keep: Mapping[str, Callable[[Batch], Any]] | None = None,
    model_name: str | None = None,
    description: str = "",
    sample_size: int = 0,
    seed: int = 0,
    data: Mapping[str, Any] | None = None,
    command: str = "",
    overwrite: bool = False,
) -> Record:
    """Run ``model`` over ``batches`` and write a routing record to ``out``; returns it opened.

    ``gates``: {name: GateSpec or a module name}; the first is the primary gate (the one the
    overview and the embedding use).  ``domain(batch)`` [B] ints in [0, D) indexing ``domains``;
    ``label(batch)`` [B] 0/1; ``prediction(output, batch, domain)`` [B] probabilities (default:
    the model output squeezed to [B]).  ``label=None`` writes a record without labels (and without
    predictions: a language model's tokens); metrics then say "no labels in this record".  ``experts``: {gate: module names of its experts in column
    order}: their outputs [B, H] are kept for the seeded sample of ``sample_size`` rows (the
    embedding views).  ``keep``: {column: fn(batch) -> [B]} extra columns (user/item ids, raw
    features).  The model's train/eval mode is restored and every hook removed.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not gates:
        raise ValueError("gates must name at least one gate: {name: GateSpec or module name}")
    specs = {name: _as_spec(g) for name, g in gates.items()}
    experts = {k: tuple(v) for k, v in (experts or {}).items()}
    primary = next(iter(specs))
    unknown = sorted(set(experts) - set(specs))
    if unknown:
        raise ValueError(f"experts names gates {unknown} that are not in gates {list(specs)}")
    if sample_size > 0 and primary not in experts:
        raise ValueError(
            f"sample_size={sample_size} needs the expert modules of the primary gate "
            f"{primary!r}: experts={{{primary!r}: [module names]}}"
        )
    names = [m for s in specs.values() for m in s.modules] + list(experts.get(primary, ()))
    cap = Capture(model, names)
    was_training = model.training
    model.eval()
    writer: RecordWriter | None = None
    try:
        for batch in batches:
            cap.reset()
            output = forward(model, batch)
            dom = per_row(domain(batch), "domain").astype(np.int64)
            if writer is None:
                meta = _meta(
                    model,
                    specs,
                    cap,
                    output,
                    dom,
                    domains,
                    experts,
                    keep,
                    model_name,
                    description,
                    data,
                    command,
                    labels=label is not None,
                )
                writer = RecordWriter(
                    out, meta, sample_size=sample_size, seed=seed, overwrite=overwrite
                )
            g = {
                n: _gate_probs(n, s, cap, output, dom, writer.meta.gate(n).num_experts)
                for n, s in specs.items()
            }
            topk = {n: topk_columns(g[n], s.top_k) for n, s in specs.items() if s.top_k}
            labeled = {}
            if label is not None:
                pred = (prediction or (lambda o, b, d: o))(output, batch, dom)
                labeled = {
                    "label": per_row(label(batch), "label"),
                    "prediction": per_row(pred, "prediction"),
                }
            mods = experts.get(primary, ())

            def outputs(local: np.ndarray, mods: tuple[str, ...] = mods) -> tuple[np.ndarray, None]:
                outs = [cap.get(m).float() for m in mods]
                outs = [o.reshape(o.shape[0], -1)[torch.as_tensor(local)] for o in outs]
                return torch.stack(outs, dim=1).cpu().numpy(), None

            writer.write(
                domain=dom,
                **labeled,
                probs=g,
                topk=topk,
                keep={k: per_row(fn(batch), f"keep[{k!r}]") for k, fn in (keep or {}).items()},
                expert_outputs=outputs if sample_size > 0 else None,
            )
        if writer is None:
            raise ValueError("batches yielded no batch: nothing to record")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        cap.remove()
        model.train(was_training)
    return open_record(out)


def _reach(spec: GateSpec, e: int, num_domains: int) -> tuple[tuple[int, ...], ...] | None:
    """Per domain, the global columns its gate module writes, when that is fewer than all ``e``
    (a structured gate); ``None`` when every domain's gate can weigh every expert."""
    if spec.columns is None:
        return None
    per = [spec.columns[d] if spec.per_domain else spec.columns[0] for d in range(num_domains)]
    if spec.per_domain and len(spec.columns) < num_domains:
        raise ValueError(
            f"GateSpec has {len(spec.columns)} per-domain modules for {num_domains} domains"
        )
    if all(len(set(c)) == e for c in per):
        return None
    return tuple(tuple(sorted(c)) for c in per)


def _meta(
    model: nn.Module,
    specs: dict[str, GateSpec],
    cap: Capture,
    output: Any,
    dom: np.ndarray,
    domains: Sequence[str],
    experts: dict[str, tuple[str, ...]],
    keep: Mapping[str, Any] | None,
    model_name: str | None,
    description: str,
    data: Mapping[str, Any] | None,
    command: str,
    labels: bool = True,
) -> RecordMeta:
    """The record's metadata, with gate widths read from the first batch."""
    infos = []
    for name, s in specs.items():
        if s.num_experts is not None:
            e = s.num_experts
        elif s.columns is not None:
            e = max(max(c) for c in s.columns) + 1
        else:
            first = s.output(output) if s.output is not None else cap.get(s.modules[0])
            e = squeeze_gate(torch.as_tensor(first), f"gate {name!r}", dom.shape[0]).shape[1]
        if s.experts is not None:
            if len(s.experts) != e:
                raise ValueError(
                    f"gate {name!r} names {len(s.experts)} experts but has {e} columns"
                )
            ex = s.experts
        else:
            mods = experts.get(name)
            if mods is not None and len(mods) != e:
                raise ValueError(
                    f"experts[{name!r}] names {len(mods)} modules but gate {name!r} has {e} "
                    "experts (the columns of its probabilities): give one module per expert, "
                    "in column order"
                )
            ex = tuple(ExpertInfo(name=mods[i] if mods else f"expert_{i}") for i in range(e))
        reach = _reach(s, e, len(domains))
        kind = s.gate_kind or ("sparse" if s.top_k else "structured" if reach else "dense")
        if kind == "structured" and reach is None:  # every domain reaches every expert
            kind = "dense"
        infos.append(
            GateInfo(
                name=name,
                experts=ex,
                top_k=s.top_k,
                kind=kind,
                reach=reach,
                hyper=None if s.hyper is None else dict(s.hyper),
                layer=s.layer,
            )
        )
    return RecordMeta(
        model_name=model_name or type(model).__name__,
        model_description=description,
        domains=tuple(str(d) for d in domains),
        gates=tuple(infos),
        kept=tuple(keep or ()),
        data=dict(data or {}),
        command=command,
        source={"kind": "hooks", "class": f"{type(model).__module__}.{type(model).__name__}"},
        labels=labels,
    )
