"""What routing a model has: how many experts, top-k or dense gate, shared experts.

The analysis needs to know, before running a model, whether a re-routing experiment makes sense
(knocking out experts needs a gate; a k-curve needs a top-k gate).  The answer is read from the
model's attributes, never from a forward pass.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def routing_capabilities(model: nn.Module) -> dict[str, Any]:
    """The routing a model supports, as a plain dict.

    Keys:

    - ``name``: the registry name (``model.model_name``), else the class name.
    - ``num_experts``: E, the columns of the model's gate (``probs`` [B, E]); 0 without a gate.
    - ``top_k``: the trained k of a top-k gate; ``None`` for dense gates and gate-less models.
    - ``num_shared``: always-on shared experts that ``RoutingOverride(use_shared=False)`` switches
      off (CESAA's shared experts; PLE's shared experts, which are also gate columns S..S+Sh-1).
    - ``has_gate``: the model returns gate probabilities and honours ``knocked_out``.
    - ``has_topk``: the gate selects k of E experts (CESAA, sparse MoE), so ``top_k`` re-routing
      changes which experts run.

    Recognized: the CESAA family (an attribute ``gate`` with ``num_experts`` plus a ``cfg``), PLE
    (``levels`` of CGC levels), MMoE and any other model with an integer ``num_experts`` (dense
    gate); everything else has no gate (mlp, shared_bottom, star).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = str(getattr(model, "model_name", type(model).__name__))
    cfg = getattr(model, "cfg", None)
    gate = getattr(model, "gate", None)
    if cfg is not None and gate is not None and hasattr(gate, "num_experts"):
        shared = getattr(model, "shared", None)
        return _caps(name, int(gate.num_experts), int(cfg.top_k), _count(shared), True, True)
    levels = getattr(model, "levels", None)
    if levels is not None and len(levels) and hasattr(levels[-1], "sh"):
        last = levels[-1]
        return _caps(name, int(last.s + last.sh), None, int(last.sh), True, False)
    n = getattr(model, "num_experts", None)
    if isinstance(n, int) and n > 0:
        return _caps(name, n, None, 0, True, False)
    return _caps(name, 0, None, 0, False, False)


def _count(shared: Any) -> int:
    return 0 if shared is None else int(getattr(shared, "num_experts", 0))


def _caps(
    name: str, e: int, k: int | None, s: int, has_gate: bool, has_topk: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "num_experts": e,
        "top_k": k,
        "num_shared": s,
        "has_gate": has_gate,
        "has_topk": has_topk,
    }
