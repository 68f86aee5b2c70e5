"""Record a transformers mixture-of-experts language model: every layer's routing, one row per token.

Shapes: B = sequences of a batch, S = positions, T = B*S token slots, n = real (unpadded) tokens,
E = routed experts of a layer, k = experts a token selects, H = hidden width, m = sampled tokens.

Routers are found by module type, not by name: a transformers MoE model declares the class whose
output ``output_router_logits`` records (``_can_record_outputs["router_logits"]``, an
``OutputRecorder`` naming the router class: Mixtral, OLMoE, Qwen2/3-MoE, DeepSeek-V2/V3, GPT-OSS,
...); models that declare none fall back to modules whose class name ends in ``Router``.  Each
router module is hooked; it returns ``(logits [T, E], weights [T, k], indices [T, k])`` (or logits
alone, then the k largest are taken, k = ``router.top_k`` or ``config.num_experts_per_tok``).

The record (no labels: a language model's tokens have no 0/1 label):

- one row per real token, in the order (batch, sequence, position); padding (attention mask 0) is
  dropped.  ``keep.sequence`` (running sequence index), ``keep.position``, ``keep.token_id`` and,
  with a tokenizer, ``keep.token`` (each id decoded alone) are columns.
- one gate per MoE layer, named ``layer<i>`` after the decoder layer index; ``p.layer<i>.<e>`` is
  softmax(router logits) in float32 (what ``output_router_logits`` gives and load-balancing losses
  read) and ``top.layer<i>.<j>`` the router's *own* selection (DeepSeek-V3's group-limited,
  bias-corrected choice included), ordered by probability, largest first.
- the domain of a token is the source of its sequence: ``domain=`` a key of the batch ([B] ints)
  or a function ``batch -> [B]``.
- the expert-output sample (``sample_size`` > 0): transformers' experts are one module with stacked
  weights, so the sampled tokens' hidden states (the router's input) are run through the layer's
  ``experts`` module once per expert e with ``top_k_index = e`` and weight 1: expert e's own output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.records.format import ExpertInfo, GateInfo, RecordMeta
from analysis.records.reader import Record, open_record
from analysis.records.writer import RecordWriter

INSTALL = "pip install 'cesaa[transformers]'"
_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)(?:\.|$)")


def router_classes(model: nn.Module) -> tuple[type, ...]:
    """The router classes the model declares for ``output_router_logits`` (may be empty)."""
    found: list[type] = []
    for m in model.modules():
        rec = (getattr(type(m), "_can_record_outputs", None) or {}).get("router_logits")
        for r in rec if isinstance(rec, (list, tuple)) else [rec]:
            cls = getattr(r, "target_class", r)
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return tuple(found)


def find_routers(model: nn.Module) -> dict[str, str]:
    """{gate name ``layer<i>``: module name} of every router of ``model``, in layer order."""
    classes = router_classes(model)
    if classes:
        names = [n for n, m in model.named_modules() if isinstance(m, classes)]
    else:
        names = [n for n, m in model.named_modules() if type(m).__name__.endswith("Router")]
    if not names:
        raise ValueError(
            f"found no router in {type(model).__name__}: it declares no router_logits output and "
            "has no module whose class name ends in 'Router' (is it a mixture-of-experts model?)"
        )
    gates: dict[str, str] = {}
    for i, n in enumerate(names):
        m = _LAYER.search(n)
        key = f"layer{m.group(1)}" if m else f"router{i}"
        if key in gates:
            key = f"{key}_{i}"
        gates[key] = n
    return gates


def _top_k(model: nn.Module, router: nn.Module) -> int:
    k = getattr(router, "top_k", None) or getattr(model.config, "num_experts_per_tok", None)
    if not k:
        raise ValueError(
            f"router {type(router).__name__} has no top_k and the config no num_experts_per_tok"
        )
    return int(k)


class _Routers:
    """Forward hooks keeping each router's logits, selection and (for the sampled layer) input."""

    def __init__(self, model: nn.Module, routers: Mapping[str, str], inputs_of: str | None):
        self.out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.hidden: torch.Tensor | None = None
        self.handles = []
        for gate, name in routers.items():
            mod = model.get_submodule(name)
            self.handles.append(mod.register_forward_hook(self._hook(gate, gate == inputs_of)))

    def _hook(self, gate: str, keep_input: bool) -> Callable:
        def hook(_m: nn.Module, inputs: Any, output: Any) -> None:
            if gate in self.out:
                raise ValueError(f"router of {gate} ran twice in one forward pass")
            if isinstance(output, (tuple, list)):
                idx = output[-1] if len(output) > 1 and not output[-1].is_floating_point() else None
                self.out[gate] = (output[0].detach(), None if idx is None else idx.detach())
            else:
                self.out[gate] = (output.detach(), None)
            if keep_input:
                self.hidden = inputs[0].detach().reshape(-1, inputs[0].shape[-1])

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _domains_of(batch: Mapping[str, Any], domain: str | Callable, b: int) -> np.ndarray:
    if callable(domain):
        d = domain(batch)
    elif domain in batch:
        d = batch[domain]
    else:
        raise ValueError(f"the batches have no column {domain!r}; columns: {sorted(batch)}")
    d = np.asarray(d.cpu() if isinstance(d, torch.Tensor) else d).reshape(-1)
    if d.shape != (b,):
        raise ValueError(f"domain must give one source per sequence ({b},), got shape {d.shape}")
    return d.astype(np.int64)


def record_transformers(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    domain: str | Callable[[Mapping[str, Any]], Any],
    domains: Sequence[str],
    out: str | Path,
    tokenizer: Any = None,
    sample_size: int = 0,
    sample_layer: str | None = None,
    seed: int = 0,
    model_name: str | None = None,
    command: str = "",
    data: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Record:
    """Record every router of a transformers MoE model over ``batches``; returns the record opened.

    ``batches``: dicts with ``input_ids`` [B, S], optionally ``attention_mask`` [B, S] (1 = token,
    0 = padding; without it every position is a token) and the domain column; ``domain``: that
    column's key, or ``fn(batch) -> [B]`` source indices into ``domains``.  ``tokenizer``: decodes
    ``keep.token``.  ``sample_size`` tokens keep every expert's output at gate ``sample_layer``
    (default: the first MoE layer, which is also the primary gate).
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"expected a transformers model ({INSTALL}), got {type(model).__name__}")
    routers = find_routers(model)
    primary = sample_layer or next(iter(routers))
    if primary not in routers:
        raise ValueError(f"sample_layer={primary!r} is not a router; routers: {list(routers)}")
    routers = {primary: routers[primary], **routers}  # the sampled layer first: the primary gate
    experts_mod = _experts_module(model, routers[primary]) if sample_size > 0 else None
    body = getattr(model, "base_model", model)  # no language-model head: routing only
    cap = _Routers(model, routers, primary if sample_size > 0 else None)
    was_training = model.training
    model.eval()
    writer: RecordWriter | None = None
    seq0 = 0
    try:
        with torch.no_grad():
            for batch in batches:
                ids = torch.as_tensor(batch["input_ids"])
                if ids.dim() != 2:
                    raise ValueError(f"input_ids must be [B, S], got shape {tuple(ids.shape)}")
                b, s = ids.shape
                mask = batch.get("attention_mask")
                mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
                if mask.shape != ids.shape:
                    raise ValueError(
                        f"attention_mask has shape {tuple(mask.shape)}, input_ids {(b, s)}"
                    )
                dom_seq = _domains_of(batch, domain, b)
                cap.out.clear()
                dev = next(model.parameters()).device
                body(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
                keep_t = mask.reshape(-1).bool().cpu()
                kept = torch.nonzero(keep_t).squeeze(1)  # [n] token slots kept
                if writer is None:
                    writer = RecordWriter(
                        out,
                        _meta(model, routers, cap, domains, tokenizer, model_name, command, data),
                        sample_size=sample_size,
                        seed=seed,
                        overwrite=overwrite,
                    )
                probs, topk = {}, {}
                for gate in routers:
                    p, top = _gate(gate, cap, kept, b * s, writer.meta.gate(gate).top_k)
                    probs[gate], topk[gate] = p, top
                seq = np.repeat(np.arange(seq0, seq0 + b), s)[kept.numpy()]
                pos = np.tile(np.arange(s), b)[kept.numpy()]
                tok = ids.reshape(-1)[kept].cpu().numpy().astype(np.int64)
                keep = {"sequence": seq, "position": pos, "token_id": tok}
                if tokenizer is not None:
                    keep["token"] = _decode(tokenizer, tok)
                seq0 += b

                def outputs(
                    local: np.ndarray, kept: torch.Tensor = kept, e: int = probs[primary].shape[1]
                ) -> tuple[Any, None]:
                    hidden = cap.hidden[kept[local].to(cap.hidden.device)]
                    return _expert_outputs(experts_mod, hidden, e), None

                writer.write(
                    domain=np.repeat(dom_seq, s)[kept.numpy()],
                    probs=probs,
                    topk=topk,
                    keep=keep,
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


def _gate(
    gate: str, cap: _Routers, kept: torch.Tensor, slots: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """[n, E] float32 softmax of the router logits and [n, k] its selection, largest first."""
    if gate not in cap.out:
        raise ValueError(f"the router of {gate} did not run in the forward pass")
    logits, idx = cap.out[gate]
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.shape[0] != slots:
        raise ValueError(f"router of {gate} gave {logits.shape[0]} rows for {slots} token slots")
    probs = torch.softmax(logits[kept.to(logits.device)].float(), dim=-1)  # [n, E]
    if idx is None:
        top = torch.topk(probs, k, dim=-1).indices
    else:
        top = idx.reshape(-1, idx.shape[-1])[kept.to(idx.device)].long()
        order = torch.argsort(probs.gather(1, top), dim=1, descending=True, stable=True)
        top = top.gather(1, order)
    return probs.cpu().numpy(), top.cpu().numpy()


def _decode(tokenizer: Any, ids: np.ndarray) -> np.ndarray:
    """[n] text of each token id, decoded alone (each distinct id once)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    text = np.array([tokenizer.decode([int(i)]) for i in uniq], dtype=object)
    return text[inverse]


def _experts_module(model: nn.Module, router: str) -> nn.Module:
    parent = model.get_submodule(router.rpartition(".")[0]) if "." in router else model
    experts = getattr(parent, "experts", None)
    if not isinstance(experts, nn.Module) or isinstance(experts, nn.ModuleList):
        raise ValueError(
            f"sample_size > 0 needs the fused experts module beside {router!r} "
            f"({type(parent).__name__}.experts called as experts(hidden, top_k_index, "
            "top_k_weights)); this model has none: record with sample_size=0"
        )
    return experts


def _expert_outputs(experts: nn.Module, hidden: torch.Tensor, e: int) -> np.ndarray:
    """[m, E, H] output of every expert on ``hidden`` [m, H]: expert e alone, weight 1."""
    m = hidden.shape[0]
    ones = torch.ones(m, 1, dtype=hidden.dtype, device=hidden.device)
    outs = []
    with torch.no_grad():
        for i in range(e):
            idx = torch.full((m, 1), i, dtype=torch.long, device=hidden.device)
            outs.append(experts(hidden, idx, ones).float())
    return torch.stack(outs, dim=1).cpu().numpy()


def _hyper(cfg: Any) -> dict[str, float]:
    """The settings alarms read: beta = the config's load-balancing loss weight (no MI loss)."""
    coef = getattr(cfg, "router_aux_loss_coef", None)
    return {} if coef is None else {"beta": float(coef)}


def _meta(
    model: nn.Module,
    routers: Mapping[str, str],
    cap: _Routers,
    domains: Sequence[str],
    tokenizer: Any,
    model_name: str | None,
    command: str,
    data: Mapping[str, Any] | None,
) -> RecordMeta:
    gates = []
    for gate, name in routers.items():
        router = model.get_submodule(name)
        e = int(cap.out[gate][0].shape[-1]) if gate in cap.out else int(router.num_experts)
        gates.append(
            GateInfo(
                name=gate,
                experts=tuple(ExpertInfo(f"expert_{i}") for i in range(e)),
                top_k=_top_k(model, router),
                kind="sparse",
                hyper=_hyper(model.config),
                layer=int(gate[5:]) if re.fullmatch(r"layer\d+", gate) else None,
                description=f"{name} ({type(router).__name__}): softmax of its logits; top = "
                "the router's own selection",
            )
        )
    shared = any(re.search(r"\.shared_experts?$", n) for n, _ in model.named_modules())
    always_on = (ExpertInfo("shared_experts", "shared"),) if shared else ()
    cfg = model.config
    return RecordMeta(
        model_name=model_name or f"{type(model).__name__} ({getattr(cfg, 'model_type', '?')})",
        model_description=f"transformers {type(model).__name__}: {len(gates)} MoE layers, "
        "one row per token"
        + (
            " and always-on shared experts in each MoE block (their outputs not sampled)"
            if shared
            else ""
        ),
        always_on=always_on,
        domains=tuple(str(d) for d in domains),
        gates=tuple(gates),
        kept=("sequence", "position", "token_id") + (("token",) if tokenizer is not None else ()),
        data=dict(data or {}),
        command=command,
        source={
            "kind": "transformers",
            "class": f"{type(model).__module__}.{type(model).__name__}",
        },
        labels=False,
    )
