"""Grouped GEMM over rows sorted by group: ``torch._grouped_mm`` where the installed torch runs it
(probed once per device and dtype), one ``addmm`` chain per group otherwise.

Shapes: G = groups (experts or domains), I = input width, O = output width, R = rows routed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}


def _pad_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def grouped_mm_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` runs here, forward and backward, and agrees with a loop of mm.

    Probed once per (device type, dtype) on a tiny problem with an empty group; cached.  The probe
    runs with gradients enabled whatever the caller's mode (a first call under ``torch.no_grad``,
    e.g. an evaluation, must not cache "unavailable" for the training steps that follow).
    """
    key = (device.type, dtype)
    if key not in _GROUPED_MM_OK:
        _GROUPED_MM_OK[key] = hasattr(torch, "_grouped_mm") and _probe_grouped_mm(device, dtype)
    return _GROUPED_MM_OK[key]


@contextlib.contextmanager
def forced_fallback(device_type: str = "cpu", dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Inside: ``grouped_mm_available`` answers False for (``device_type``, ``dtype``), so grouped
    layers take the per-group fallback (exact matrix shapes, no padding); the cached answer is
    restored on exit.  For benchmarks and tests that measure or count the fallback."""
    key = (device_type, dtype)
    saved = _GROUPED_MM_OK.get(key)
    _GROUPED_MM_OK[key] = False
    try:
        yield
    finally:
        if saved is None:
            _GROUPED_MM_OK.pop(key, None)
        else:
            _GROUPED_MM_OK[key] = saved


@torch.enable_grad()
def _probe_grouped_mm(device: torch.device, dtype: torch.dtype) -> bool:
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(6, 8, generator=g).to(device, dtype).requires_grad_(True)
        w = torch.randn(3, 8, 4, generator=g).to(device, dtype).requires_grad_(True)
        offs = torch.tensor([2, 2, 6], device=device, dtype=torch.int32)
        y = torch._grouped_mm(a, w, offs=offs)  # [6, 4]
        ref = torch.cat([a[:2] @ w[0], a[2:] @ w[2]])
        y.backward(torch.ones_like(y))
        return bool(torch.allclose(y, ref, atol=1e-2, rtol=1e-2)) and a.grad is not None
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False


def grouped_mlp(
    x: torch.Tensor,
    rows: torch.Tensor,
    sorted_group: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    act: Callable[[torch.Tensor, int], torch.Tensor],
    bias_in_gemm: bool = True,
    packed: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
) -> torch.Tensor:
    """Row ``x[rows[r]]`` through group ``sorted_group[r]``'s MLP (``sorted_group`` ascending):
    x [B, I], rows [R], sorted_group [R] -> [R, O].

    weights[l]: [G, d_l, d_{l+1}], biases[l]: [G, d_{l+1}]; ``act(h, l)`` follows layer l.  One
    grouped GEMM per layer (group ends found on the device: no host sync) where the installed
    torch runs it for this device and dtype; otherwise one ``addmm`` chain per non-empty group.
    ``bias_in_gemm`` folds layer 0's bias into its GEMM through a constant-1 input column (in the
    grouped-GEMM path; later layers gather their biases per row) instead of gathering it per row.
    ``packed``: :func:`pack_layers`'s output for these weights (a caller running several row
    slices through the same MLP pads the weights once); None: padded here.
    """
    if grouped_mm_available(x.device, x.dtype):
        if packed is None:
            packed = pack_layers(x.shape[1], weights, biases, bias_in_gemm, x.element_size())
        out_dim = weights[-1].shape[2]
        return _grouped_gemm_mlp(x, rows, sorted_group, packed, act, bias_in_gemm, out_dim)
    # fallback: reads the group sizes back to the host to split the rows
    groups = weights[0].shape[0]
    counts = torch.bincount(sorted_group, minlength=groups).tolist()
    w_parts = [w.unbind(0) for w in weights]  # one autograd node per layer, not per group
    b_parts = [b.unbind(0) for b in biases]
    outputs = []
    for g, part in enumerate(x.index_select(0, rows).split(counts)):
        if part.shape[0] == 0:
            continue  # an unselected group costs nothing
        for i, (w, b) in enumerate(zip(w_parts, b_parts, strict=True)):
            part = act(torch.addmm(b[g], part, w[g]), i)  # [count_g, O_i]
        outputs.append(part)
    if not outputs:
        return x.new_zeros(0, weights[-1].shape[2])
    return torch.cat(outputs)  # [R, O]


def pack_layers(
    d_in: int,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    bias_in_gemm: bool,
    element_size: int,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Every layer's weight [G, I', O'] (and bias [G, O'], or None when it is in the GEMM) for
    ``torch._grouped_mm``: widths zero-padded to 16 bytes (the kernel's stride rule), layer 0's
    bias as a weight row after the d_in input rows when ``bias_in_gemm``.  Differentiable."""
    align = max(1, 16 // element_size)
    p_in = _pad_to(d_in + (1 if bias_in_gemm else 0), align)
    packed: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        d_i, d_o = w.shape[1], w.shape[2]
        p_out = _pad_to(d_o, align)
        if i == 0 and bias_in_gemm:
            w = torch.cat([w, b.unsqueeze(1)], dim=1)  # [G, I + 1, O]: the bias row
            packed.append((_pad(w, p_in - d_i - 1, p_out - d_o), None))  # [G, I', O']
        else:
            packed.append((_pad(w, p_in - d_i, p_out - d_o), _pad(b, 0, p_out - d_o)))
        p_in = p_out
    return packed


def _pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``t`` (weights [G, R, C]) with ``rows`` zero rows and ``cols`` zero columns appended (a bias
    [G, C]: ``rows`` 0); ``t`` itself when both are 0 (a zero-width pad still copies, forward and
    backward)."""
    if rows == 0 and cols == 0:
        return t
    return F.pad(t, (0, cols, 0, rows) if rows else (0, cols))  # the last dim, then the one before


def _grouped_gemm_mlp(
    x: torch.Tensor,
    rows: torch.Tensor,
    sorted_group: torch.Tensor,
    packed: list[tuple[torch.Tensor, torch.Tensor | None]],
    act: Callable[[torch.Tensor, int], torch.Tensor],
    bias_in_gemm: bool,
    out_dim: int,
) -> torch.Tensor:
    """``grouped_mlp`` with ``torch._grouped_mm`` over :func:`pack_layers`'s weights.

    With ``bias_in_gemm`` the input carries a column of ones right after its d_in features (in
    the padding the stride rule needs anyway), facing layer 0's bias row.  Later layers add their
    bias gathered per row: a ones column carried through a hidden layer would widen its GEMM's
    output past an efficient width (64 -> 68 costs MKL about 15 % on a 64-wide layer).  Padding
    stays 0; the output is cut to the last layer's width.
    """
    groups = packed[0][0].shape[0]
    ids = torch.arange(groups, device=x.device)  # [G]
    # end of each group's slice; searchsorted, not bincount (which syncs on CUDA)
    offs = torch.searchsorted(sorted_group, ids, right=True).to(torch.int32)  # [G]
    extra = 1 if bias_in_gemm else 0
    d_in = x.shape[1]
    p_in = packed[0][0].shape[1]
    if p_in != d_in and not torch.is_grad_enabled():
        # inference: gather the rows straight into the padded buffer (no padded copy of x)
        h = x.new_empty(rows.shape[0], p_in)  # [R, I'] = [x[rows], 1, 0...]
        torch.index_select(x, 0, rows, out=h[:, :d_in])
        h[:, d_in : d_in + extra] = 1.0
        h[:, d_in + extra :] = 0.0
    else:
        if p_in != d_in:
            cols = [x]
            if bias_in_gemm:
                cols.append(x.new_ones(x.shape[0], 1))
            if p_in > d_in + extra:
                cols.append(x.new_zeros(x.shape[0], p_in - d_in - extra))
            x = torch.cat(cols, dim=1)  # [B, I'] = [x, 1, 0...]
        h = x.index_select(0, rows)  # [R, I'] rows grouped by group
    for i, (w, b) in enumerate(packed):
        out = torch._grouped_mm(h, w, offs=offs)  # [R, O']
        if b is not None:
            out = out.add_(b.index_select(0, sorted_group))
        h = act(out, i)  # [R, O']
    return h[:, :out_dim] if h.shape[1] != out_dim else h  # [R, O]
