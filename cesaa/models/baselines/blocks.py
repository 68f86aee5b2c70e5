"""Building blocks shared by the baselines: per-domain row selection, routing overrides (and
``StackedMLP`` and ``softmax_rows``, re-exported from :mod:`cesaa.experts` and :mod:`cesaa.gating`).

Shapes: B = batch, G = stacked groups (experts or per-domain towers), D = domains, E = experts under
one gate, I = input width, O = output width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cesaa.experts import StackedMLP
from cesaa.gating import softmax_rows
from cesaa.models.output import RoutingOverride

_COLUMNS = 16  # GEMM output widths are padded to a multiple of this (fused_linear)

__all__ = [
    "StackedMLP",
    "fused_linear",
    "mix_experts",
    "mix_experts_per_domain",
    "override_dense_gate",
    "reject_routing",
    "select_domain",
    "softmax_rows",
    "switched_off",
]


def select_domain(t: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """Each row's own domain slice: t [B, D, ...], domain [B] long -> [B, ...].

    A ``gather`` along dim 1 (``t[arange(B), domain]`` computed faster on strided views).
    """
    rest = t.shape[2:]
    idx = domain.view(-1, 1, *(1 for _ in rest)).expand(t.shape[0], 1, *rest)  # [B, 1, ...]
    return t.gather(1, idx).squeeze(1)


def fused_linear(
    x: torch.Tensor, parts: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """Several linear maps of one input as one GEMM: x [B, I], parts [(w_j [I, N_j], b_j [N_j])]
    -> [x @ w_j + b_j, each [B, N_j]] (column views of one [B, N] output).

    Reading x once for every part beats one narrow GEMM per part (a gate's few columns run far
    below the GEMM's speed).  The concatenated width is zero-padded to a multiple of 16 columns:
    a ragged width falls off the kernels' fast path (the padded columns are computed as zeros and
    never read).  With autograd, the backward joins the parts' gradients into one [B, N] matrix
    for the GEMM's backward (where a view per part would zero-fill a full-width gradient each).
    """
    widths = [w.shape[1] for w, _ in parts]
    ws, bs = [w for w, _ in parts], [b for _, b in parts]
    pad = -sum(widths) % _COLUMNS
    if pad:
        ws.append(ws[0].new_zeros(ws[0].shape[0], pad))
        bs.append(bs[0].new_zeros(pad))
    w, b = torch.cat(ws, dim=1), torch.cat(bs)  # [I, N (+ pad)], [N (+ pad)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w, b)):
        return list(_FusedLinear.apply(x, w, b, tuple(widths)))
    h = torch.addmm(b, x, w)  # [B, N (+ pad)]
    starts = [sum(widths[:j]) for j in range(len(widths))]
    # one narrow per part (not ``split``): a consumer may run an in-place activation on its view
    return [h.narrow(1, s, n) for s, n in zip(starts, widths, strict=True)]


class _FusedLinear(torch.autograd.Function):
    """``x @ w + b`` returned as column parts of the given widths (the rest, padding, dropped)."""

    @staticmethod
    def forward(ctx, x, w, b, widths):  # x [B, I], w [I, N], b [N] -> parts [B, N_j]
        h = torch.addmm(b, x, w)  # [B, N]
        ctx.save_for_backward(x, w)
        ctx.widths = widths
        starts = [sum(widths[:j]) for j in range(len(widths))]
        return tuple(h.narrow(1, s, n) for s, n in zip(starts, widths, strict=True))

    @staticmethod
    def backward(ctx, *grads):
        x, w = ctx.saved_tensors
        ref = next(g for g in grads if g is not None)
        cols = [
            g if g is not None else ref.new_zeros(ref.shape[0], n)
            for g, n in zip(grads, ctx.widths, strict=True)
        ]
        pad = w.shape[1] - sum(ctx.widths)
        if pad:
            cols.append(ref.new_zeros(ref.shape[0], pad))
        g = torch.cat(cols, dim=1)  # [B, N]: the GEMM output's gradient
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = g @ w.to(g.dtype).t() if need_x else None  # [B, I]
        grad_w = x.to(g.dtype).t() @ g if need_w else None  # [I, N]
        grad_b = g.sum(0) if need_b else None  # [N]
        return grad_x, grad_w, grad_b, None


def mix_experts(
    gates: torch.Tensor, experts: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """Gate-weighted sum of expert outputs: gates [B, E], experts [E, B, H] in group-major order
    (any strides, e.g. ``StackedMLP.forward_grouped``'s view) or a sequence of E [B, H] tensors
    -> [B, H] = sum_e gates[:, e] * experts[e].

    No permuted copy of the experts and no B tiny GEMMs (what ``einsum("bn,bnh->bh")`` lowers to):
    without autograd, E fused multiply-adds over [B, H]; with it, one broadcast product and a sum
    over a tensor (whose backward is two ops, where per-expert slices would each zero-fill a full
    gradient), or a sum of products over a sequence.
    """
    dtype = experts[0].dtype
    w = gates.to(dtype).t().unsqueeze(-1)  # [E, B, 1]
    if torch.is_grad_enabled() and (
        w.requires_grad or any(experts[e].requires_grad for e in range(len(experts)))
    ):
        if isinstance(experts, torch.Tensor):
            return (experts * w).sum(0)  # [B, H]
        out = experts[0] * w[0]  # [B, H]
        for e in range(1, len(experts)):
            out = out + experts[e] * w[e]
        return out
    out = experts[0] * w[0]  # [B, H]
    for e in range(1, len(experts)):
        out = out.addcmul_(experts[e], w[e])  # [B, H]
    return out


def mix_experts_per_domain(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Every domain's gate-weighted sum: gates [B, D, E], experts [E, B, H] (any strides)
    -> [B, D, H] = sum_e gates[:, :, e] * experts[e] (broadcast over D).

    ``einsum("bdn,bnh->bdh")`` lowers to B tiny GEMMs; this is E fused multiply-adds over
    [B, D, H] without autograd, one broadcast product and a sum with it.
    """
    w = gates.to(experts.dtype).permute(2, 0, 1).unsqueeze(-1)  # [E, B, D, 1]
    if torch.is_grad_enabled() and (w.requires_grad or experts.requires_grad):
        return (w * experts.unsqueeze(2)).sum(0)  # [B, D, H]
    out = w[0] * experts[0].unsqueeze(1)  # [B, D, H]
    for e in range(1, experts.shape[0]):
        out = out.addcmul_(w[e], experts[e].unsqueeze(1))  # [B, D, H]
    return out


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
    off = switched_off(routing, e, shared)
    left = e - len(off)
    if off:
        keep = torch.ones(e, dtype=probs.dtype, device=probs.device)
        keep[list(off)] = 0.0
        probs = probs * keep
        probs = probs / probs.sum(dim=-1, keepdim=True)  # [..., E]
    if routing.top_k is None or routing.top_k == left:
        return probs, probs, None
    vals, topk_idx = probs.topk(routing.top_k, dim=-1)  # [..., k]
    gates = torch.zeros_like(probs).scatter(-1, topk_idx, vals / vals.sum(dim=-1, keepdim=True))
    return probs, gates, topk_idx


def switched_off(routing: RoutingOverride, e: int, shared: tuple[int, ...] = ()) -> set[int]:
    """The experts an override switches off among ``e`` (knocked out, plus ``shared`` ones when
    ``use_shared=False``), after checking it: ``ValueError`` for an index outside [0, e), for no
    expert left, and for ``top_k`` outside [1, experts left]."""
    off = set(routing.knocked_out) | (set() if routing.use_shared else set(shared))
    bad = sorted(i for i in off if not 0 <= i < e)
    if bad:
        raise ValueError(f"knocked_out={routing.knocked_out}: indices {bad} not in [0, {e})")
    left = e - len(off)
    if left < 1:
        raise ValueError(f"routing override leaves no expert: {e} experts, all switched off")
    if routing.top_k is not None and not 1 <= routing.top_k <= left:
        raise ValueError(f"top_k={routing.top_k} must be in [1, {left}] (experts left switched on)")
    return off


def reject_routing(routing: RoutingOverride | None, model: str) -> None:
    """Models without a gate cannot honour a routing override; say so instead of ignoring it."""
    if routing is not None and not routing.is_identity:
        raise ValueError(f"model {model!r} has no gate: routing overrides do not apply ({routing})")
