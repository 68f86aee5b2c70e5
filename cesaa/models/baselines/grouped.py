"""Rows grouped by domain: each row through its own group's weights, with nothing read back to
the host (group ends found on the device, no per-group Python loop over row counts).

Shapes: R = rows sorted by group (ascending), G = groups (domains), I = input width, O = output
width, E = experts under one gate, k = experts kept by a top-k override.

Where the installed torch runs ``torch._grouped_mm`` for the device and dtype (see
:func:`cesaa.experts.grouped_mm_available`), a grouped linear layer is one grouped GEMM over the
sorted rows; elsewhere every group runs on every row and each row keeps its own group's output
(G times the FLOPs, still no host read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cesaa.experts import StackedMLP, grouped_mm_available
from cesaa.models.baselines.blocks import select_domain, switched_off
from cesaa.models.output import RoutingOverride


def group_ends(sorted_group: torch.Tensor, groups: int) -> torch.Tensor:
    """End offset of each group's rows in ascending ``sorted_group`` [R] -> [G] int32 (on device;
    ``searchsorted``, not ``bincount``, which syncs on CUDA)."""
    ids = torch.arange(groups, device=sorted_group.device)  # [G]
    return torch.searchsorted(sorted_group, ids, right=True).to(torch.int32)


def grouped_gemm_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """:func:`cesaa.experts.grouped_mm_available`, probed with autograd on: its one-time probe runs
    a backward, which fails under ``no_grad``/``inference_mode`` and would cache "unavailable"
    (every later grouped layer falling back) for the whole process."""
    with torch.inference_mode(False), torch.enable_grad():
        return grouped_mm_available(device, dtype)


def _align(t: torch.Tensor, cols: int) -> torch.Tensor:
    """t [R, c] as a tensor of ``cols`` >= c columns (zeros after c) whose rows start on 16 bytes,
    as ``torch._grouped_mm`` needs; t itself when it already qualifies."""
    ok = (
        t.shape[1] == cols
        and t.stride(1) == 1
        and (t.stride(0) * t.element_size()) % 16 == 0
        and t.data_ptr() % 16 == 0
    )
    if ok:
        return t
    return F.pad(t, (0, cols - t.shape[1])) if cols != t.shape[1] else t.contiguous()


def grouped_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    group: torch.Tensor,
    ends: torch.Tensor,
) -> torch.Tensor:
    """Row r through group ``group[r]``'s linear map: x [R, I] (rows sorted by group), w [G, I, O],
    b [G, O], group [R] ascending, ends [G] (:func:`group_ends`) -> [R, O] = x @ w[g] + b[g].

    Widths are zero-padded to 16 bytes for the grouped GEMM (the padding stays 0 and is cut off).
    """
    i, o = w.shape[1], w.shape[2]
    if grouped_gemm_ok(x.device, x.dtype):
        align = max(1, 16 // x.element_size())
        pi, po = -(-i // align) * align, -(-o // align) * align
        w = F.pad(w, (0, po - o, 0, pi - i)) if (pi, po) != (i, o) else w.contiguous()
        out = torch._grouped_mm(_align(x, pi), w, offs=ends)[:, :o]  # [R, O]
    else:  # every group on every row, each row keeps its own
        flat = w.permute(1, 0, 2).reshape(i, -1)  # [I, G*O]
        out = select_domain((x @ flat).view(x.shape[0], -1, o), group)  # [R, O]
    return out + b.index_select(0, group)  # [R, O]


def grouped_stack(
    mlp: StackedMLP, x: torch.Tensor, group: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """Row r through group ``group[r]``'s MLP of ``mlp`` only: x [R, I] (rows sorted by group)
    -> [R, O].  A last layer of width 1 is a dot product with each row's own weights."""
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        if i == last and w.shape[2] == 1 and not mlp.out_relu:
            w_rows = w[:, :, 0].index_select(0, group)  # [R, I_i]
            return (x * w_rows).sum(-1, keepdim=True) + b.index_select(0, group)  # [R, 1]
        x = mlp._act(grouped_linear(x, w, b, group, ends), i)  # [R, O_i]
    return x


def override_dense_gate_rows(
    probs: torch.Tensor,
    routing: list[RoutingOverride | None] | None,
    group: torch.Tensor,
    shared: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`~cesaa.models.baselines.blocks.override_dense_gate` with one override per group,
    applied to each row by its group: probs [R, E], routing[g] for the rows of group g, group [R].

    The same rules (and errors) per group: knocked-out experts get 0 and the rest is renormalized
    (rows of a group without knock-outs keep their probabilities bit for bit); ``top_k`` keeps the
    k largest and renormalizes them, except in groups where k = every expert left (the dense gate:
    their ``topk_idx`` still lists their k = all non-zero experts).  Every group's ``top_k`` must be
    the same (one k per row).  Returns ``(probs, gates, topk_idx)``.
    """
    if routing is None or all(r is None or r.is_identity for r in routing):
        return probs, probs, None
    e = probs.shape[-1]
    ks = {r.top_k for r in routing if r is not None and r.top_k is not None}
    if len(ks) > 1:
        raise ValueError(f"top_k differs between groups ({sorted(ks)}): one k per row is needed")
    offs = [set() if r is None else switched_off(r, e, shared) for r in routing]  # validates
    dense = [r is None or r.top_k in (None, e - len(o)) for r, o in zip(routing, offs, strict=True)]
    dev = probs.device
    if any(offs):
        keep = torch.ones(len(routing), e, dtype=probs.dtype)  # [G, E]
        for g, off in enumerate(offs):
            keep[g, list(off)] = 0.0
        kept = probs * keep.to(dev).index_select(0, group)  # [R, E]
        knocked = torch.tensor([bool(o) for o in offs], device=dev).index_select(0, group)  # [R]
        probs = torch.where(knocked.unsqueeze(1), kept / kept.sum(-1, keepdim=True), probs)
    if all(dense):
        return probs, probs, None
    (k,) = ks
    vals, topk_idx = probs.topk(k, dim=-1)  # [R, k]
    top = torch.zeros_like(probs).scatter(-1, topk_idx, vals / vals.sum(-1, keepdim=True))
    dense_rows = torch.tensor(dense, device=dev).index_select(0, group).unsqueeze(1)  # [R, 1]
    return probs, torch.where(dense_rows, probs, top), topk_idx
