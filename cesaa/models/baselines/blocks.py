"""Building blocks shared by the baselines: per-domain row selection, routing overrides (and
``StackedMLP``, re-exported from :mod:`cesaa.experts`).

Shapes: B = batch, G = stacked groups (experts or per-domain towers), D = domains, E = experts under
one gate, I = input width, O = output width.
"""

from __future__ import annotations

import torch

from cesaa.experts import StackedMLP
from cesaa.models.output import RoutingOverride

__all__ = ["StackedMLP", "override_dense_gate", "reject_routing", "select_domain"]


def select_domain(t: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """Each row's own domain slice: t [B, D, ...], domain [B] long -> [B, ...]."""
    return t[torch.arange(t.shape[0], device=t.device), domain]


def override_dense_gate(
    probs: torch.Tensor, routing: RoutingOverride | None, shared: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply an inference-time routing override to dense softmax gates over the last dim: [..., E].

    1. ``knocked_out`` experts (plus ``shared`` ones when ``use_shared=False``) get probability 0 and
       the rest is renormalized: ``probs = p * keep / sum(p * keep)``, still summing to 1.
    2. ``top_k``: keep the k largest remaining probabilities and renormalize them -> ``gates``
       (exactly k non-zeros, ``topk_idx`` [..., k]).  Without it, or with k = every expert left
       (the dense gate as trained), ``gates = probs`` and no ``topk_idx``: so ``top_k = E`` on a
       dense gate reproduces the trained model bit for bit.

    Same semantics as CESAA's k override (:func:`cesaa.gating.noisy_top_k_gating`): the weights
    of the selected experts always sum to 1, so k = 1 gives the top expert weight exactly 1.
    Returns ``(probs, gates, topk_idx)``; identity (or ``None``) returns the input unchanged.
    """
    if routing is None or routing.is_identity:
        return probs, probs, None
    e = probs.shape[-1]
    off = set(routing.knocked_out) | (set() if routing.use_shared else set(shared))
    bad = sorted(i for i in off if not 0 <= i < e)
    if bad:
        raise ValueError(f"knocked_out={routing.knocked_out}: indices {bad} not in [0, {e})")
    left = e - len(off)
    if left < 1:
        raise ValueError(f"routing override leaves no expert: {e} experts, all switched off")
    if off:
        keep = torch.ones(e, dtype=probs.dtype, device=probs.device)
        keep[list(off)] = 0.0
        probs = probs * keep
        probs = probs / probs.sum(dim=-1, keepdim=True)  # [..., E]
    if routing.top_k is not None and not 1 <= routing.top_k <= left:
        raise ValueError(f"top_k={routing.top_k} must be in [1, {left}] (experts left switched on)")
    if routing.top_k is None or routing.top_k == left:
        return probs, probs, None
    vals, topk_idx = probs.topk(routing.top_k, dim=-1)  # [..., k]
    gates = torch.zeros_like(probs).scatter(-1, topk_idx, vals / vals.sum(dim=-1, keepdim=True))
    return probs, gates, topk_idx


def reject_routing(routing: RoutingOverride | None, model: str) -> None:
    """Models without a gate cannot honour a routing override; say so instead of ignoring it."""
    if routing is not None and not routing.is_identity:
        raise ValueError(f"model {model!r} has no gate: routing overrides do not apply ({routing})")
