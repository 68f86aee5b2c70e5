"""Stacked MLPs (experts, towers, gates) and sparse dispatch of rows to the experts that selected them.

Shapes: B = batch, G = stacked groups (experts or per-domain towers), I = input width, O = output
width, n = experts, k = experts selected per row, H = expert width, P = B*k (row, expert) pairs.

Every group is an MLP  Linear-ReLU-(Dropout) per hidden width, then a Linear to O, followed by a ReLU
when ``out_relu``.  Experts end with that ReLU (as in the MMoE/PLE expert implementations, e.g.
torch-rechub's experts are MLPs without an output layer): an expert emits a non-negative
representation, and the tower that reads it ends linearly.  Towers and gates end linear.

Sparse dispatch sorts the P pairs by expert and runs each layer of all selected experts as one
grouped GEMM over the sorted rows (``torch._grouped_mm``, offsets on the device: no host sync).
Where the installed torch cannot run it (its kernels take float32/bf16 with 16-byte aligned
strides; other dtypes or devices fall back), the fallback runs one ``addmm`` per selected expert on
its contiguous slice, with per-expert weights from one ``unbind`` per layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cesaa.grouped_gemm import grouped_mlp, grouped_mm_available, pack_layers

__all__ = [
    "INFERENCE_PAIRS",
    "StackedExperts",
    "StackedMLP",
    "grouped_mlp",
    "grouped_mm_available",
]

# sparse dispatch without autograd runs the (row, expert) pairs in slices of this many
INFERENCE_PAIRS = 2048


def _relu(h: torch.Tensor) -> torch.Tensor:
    """ReLU in place when autograd does not record it (inference), else out of place: an in-place
    op on a view makes autograd rebuild the base's gradient (zero fills and copies of it)."""
    return torch.relu(h) if torch.is_grad_enabled() and h.requires_grad else h.relu_()


class StackedMLP(nn.Module):
    """G independent MLPs; layer l's weights are one tensor [G, d_l, d_{l+1}], biases [G, d_{l+1}].

    - ``forward``: every group on every row (input [B, I]) or group g on ``x[:, g]`` (input
      [B, G, I]); one batched matmul per layer.  Output [B, G, O].
    - ``forward_sparse``: each row only through its k selected groups, gate-weighted and summed;
      unselected groups are never computed.  Output [B, O].
    - ``forward_dense_masked``: every group on every row, then the gate-weighted sum (test oracle).

    Initialized like ``nn.Linear``, independently per group (layer by layer: weight, then bias).
    With ``hidden=()`` this is G stacked linear layers (per-domain gates).
    """

    def __init__(
        self,
        groups: int,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int,
        dropout: float = 0.0,
        out_relu: bool = False,
    ) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"num_experts={groups} must be >= 1 (stacked groups)")
        sizes = (in_dim, *hidden, out_dim)
        self.groups = groups
        self.out_dim = out_dim
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(groups, i, o))
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(groups, o)) for o in sizes[1:])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_relu = out_relu
        self.reset_parameters()

    @property
    def num_experts(self) -> int:
        return self.groups

    def reset_parameters(self) -> None:
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])  # nn.Linear's default: U(-1/sqrt(fan_in), +)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def tie_groups(self) -> None:
        """Every group starts as group 0: its weights and biases copied to the others (the groups
        stay separate parameters and train apart).  Called after ``reset_parameters``, so the
        random stream is consumed as for independent groups."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                w.copy_(w[:1].expand_as(w))
                b.copy_(b[:1].expand_as(b))

    def _act(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        if layer < len(self.weights) - 1:
            return self.dropout(torch.relu(h))
        return torch.relu(h) if self.out_relu else h

    def _bias_in_gemm(self) -> bool:
        """The ones-column bias trick needs hidden activations that keep 1 (no active dropout)."""
        return not (self.training and isinstance(self.dropout, nn.Dropout))

    def _dropout_active(self) -> bool:
        return self.training and isinstance(self.dropout, nn.Dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, I] (shared by every group) or [B, G, I] -> [B, G, O] (possibly a strided view)."""
        return self.forward_grouped(x).transpose(0, 1)

    def forward_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` in group-major order: x [B, I] or [B, G, I] -> [G, B, O] (a view, strided).

        With a shared input, layer 0 of every group is one [B, I] x [I, G*O] GEMM
        (:meth:`flat_first_layer`) and :meth:`forward_rest` runs the other layers on its output.
        """
        if x.dim() == 2:
            w, b = self.flat_first_layer()  # [I, G*O_0], [G*O_0]
            return self.forward_rest(torch.addmm(b, x, w))  # [G, B, O]
        h = x.transpose(0, 1)  # [G, B, I] view
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = self._layer(h, w, b, i, self._dropout_active())  # [G, B, O_i]
        return h

    def flat_first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 0 of every group side by side: weight [I, G*O_0] (group g's columns
        g*O_0 .. (g+1)*O_0 - 1) and bias [G*O_0], so ``x @ w + b`` runs layer 0 of all groups in
        one GEMM (a model may concatenate several modules' into one wider GEMM)."""
        w, b = self.weights[0], self.biases[0]  # [G, I, O_0], [G, O_0]
        g, o = w.shape[0], w.shape[2]
        return w.permute(1, 0, 2).reshape(w.shape[1], g * o), b.reshape(g * o)

    def forward_rest(self, h0: torch.Tensor) -> torch.Tensor:
        """Every layer after layer 0, from layer 0's pre-activation of every group on a shared
        input: h0 [B, G*O_0] (``x @ w + b`` of :meth:`flat_first_layer`, or a column slice of a
        wider GEMM) -> [G, B, O] (a strided view).

        Later layers read h0 in place as [G, B, O_0] (strided batched GEMMs, no transposing
        copy); without autograd the ReLUs run in place, on h0 too; a last layer of width 1 is a
        multiply-and-sum rather than G matrix-vector products.
        Training with active dropout keeps the layout in which its masks were always drawn
        (contiguous [G, B, O]), so the draws are unchanged.
        """
        o = self.weights[0].shape[2]
        h = h0.view(h0.shape[0], self.groups, o).transpose(0, 1)  # [G, B, O_0] view
        drop = self._dropout_active()
        last = len(self.weights) - 1
        if drop:
            h = self._act(h.contiguous(), 0)  # [G, B, O_0] in the masks' layout
        elif last > 0 or self.out_relu:
            h = _relu(h)
        for i in range(1, last + 1):
            h = self._layer(h, self.weights[i], self.biases[i], i, drop)  # [G, B, O_i]
        return h

    def _layer(
        self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, i: int, drop: bool
    ) -> torch.Tensor:
        """Layer i of every group and its activation: h [G, B, I_i] -> [G, B, O_i]."""
        last = i == len(self.weights) - 1
        if drop:  # the ops the dropout masks were always drawn after
            return self._act(torch.baddbmm(b.unsqueeze(1), h, w), i)
        if last and w.shape[2] == 1 and not self.out_relu:  # G dot products per row
            if h.stride(1) > h.stride(0):  # rows outermost in memory: reduce in that order
                out = (h.transpose(0, 1) * w.squeeze(2)).sum(-1) + b.squeeze(1)  # [B, G]
                return out.t().unsqueeze(2)  # [G, B, 1]
            return (h * w.transpose(1, 2)).sum(-1, keepdim=True) + b.unsqueeze(1)  # [G, B, 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w)  # [G, B, O_i]
        return _relu(h) if not last or self.out_relu else h

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every group on every row: x [B, I] -> [B, G, O] (alias of ``forward``)."""
        return self(x)

    def forward_expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Group ``e`` alone on the rows ``x``: [R, I] -> [R, O]."""
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = self._act(torch.addmm(b[e], h, w[e]), i)  # [R, O_i]
        return h

    def forward_sparse(
        self,
        x: torch.Tensor,
        topk_idx: torch.Tensor,
        gates: torch.Tensor,
        pair_gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sum_{e in topk(x)} gates[x, e] * expert_e(x), computing only the selected pairs.

        x: [B, I]; topk_idx: [B, k] long; gates: [B, n] (only the entries at ``topk_idx`` are
        read, so only they receive gradient).  ``pair_gates`` [B, k]: the weight of each selected
        pair instead of ``gates.gather(1, topk_idx)`` (a row may then name one expert twice, as
        merged gate slots do).  Returns [B, O].

        The P = B*k (row, expert) pairs are sorted by expert and their rows gathered once; every
        layer of every selected expert then runs as one grouped GEMM over the sorted rows, and one
        ``index_add`` scatters the gate-weighted outputs back: gather and scatter cost O(P*(I + O))
        in both passes, and nothing is read back to the host.  Without autograd the sorted pairs
        run in consecutive slices of ``INFERENCE_PAIRS`` (each slice's experts as one grouped
        GEMM per layer): the same sums, in the same order, with buffers that fit in cache.
        """
        b, k = topk_idx.shape
        flat_expert = topk_idx.reshape(-1)  # [P], pair p = (row p // k, slot p % k)
        sorted_expert, order = torch.sort(flat_expert, stable=True)  # pairs grouped by expert
        rows = torch.div(order, k, rounding_mode="floor")  # [P] row of each sorted pair
        dtype = torch.promote_types(x.dtype, gates.dtype)
        if b == 0:
            return x.new_zeros(b, self.out_dim, dtype=dtype)
        if pair_gates is None:
            pair_gates = gates.gather(1, topk_idx)  # [B, k]
        g = pair_gates.reshape(-1).index_select(0, order)  # [P] sorted
        out = x.new_zeros(b, self.out_dim, dtype=dtype)  # [B, O]
        # without autograd, the sorted pairs in slices of INFERENCE_PAIRS (no host read): each
        # slice's gathered rows and activations stay in cache where one pass over every pair
        # streams buffers of tens of MB through memory at inference batch sizes
        step = max(rows.shape[0], 1) if torch.is_grad_enabled() else INFERENCE_PAIRS
        bias = self._bias_in_gemm()
        packed = None  # the grouped GEMM's padded weights, made once for every slice
        if grouped_mm_available(x.device, x.dtype):
            packed = pack_layers(x.shape[1], self.weights, self.biases, bias, x.element_size())
        for s in range(0, rows.shape[0], step):
            sl = slice(s, s + step)
            out = self._add_experts(x, rows[sl], sorted_expert[sl], g[sl], out, bias, packed)
        return out

    def _add_experts(
        self,
        x: torch.Tensor,
        rows: torch.Tensor,
        sorted_expert: torch.Tensor,
        g: torch.Tensor,
        out: torch.Tensor,
        bias: bool,
        packed: list | None,
    ) -> torch.Tensor:
        """``out[rows[p]] += g[p] * expert_{sorted_expert[p]}(x[rows[p]])`` for the pairs p, given
        sorted by expert: x [B, I], rows / sorted_expert / g [R], out [B, O] -> out.  ``bias``:
        layer 0's bias in the GEMM; ``packed``: :func:`pack_layers`'s weights, or None."""
        dtype = out.dtype
        # every layer of every selected expert on the rows sorted by expert (0's first, ...)
        y = grouped_mlp(
            x, rows, sorted_expert, self.weights, self.biases, self._act, bias, packed
        )  # [R, O]
        y, g = y.to(dtype), g.to(dtype).unsqueeze(1)  # [R, O], [R, 1]
        weighted = y * g if torch.is_grad_enabled() else y.mul_(g)  # [R, O]; y is fresh
        return out.index_add_(0, rows, weighted)  # [B, O]

    def forward_dense_masked(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The oracle: sum_e gates[:, e] * expert_e(x), every expert computed.

        x: [B, I], gates: [B, n].  Returns [B, O].
        """
        return torch.einsum("bn,bnh->bh", gates, self(x))  # [B, O]


class StackedExperts(StackedMLP):
    """``n`` expert MLPs (``StackedMLP`` with a ReLU on the output layer, no dropout)."""

    def __init__(
        self, num_experts: int, in_dim: int, hidden: tuple[int, ...], out_dim: int
    ) -> None:
        super().__init__(num_experts, in_dim, hidden, out_dim, out_relu=True)

    def _act(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        # every layer ends in a ReLU (no dropout); without autograd it runs in place on the fresh
        # GEMM output: one [rows, width] temporary less per layer (at inference batch sizes, each
        # new buffer costs page faults comparable to the ReLU itself)
        return torch.relu(h) if torch.is_grad_enabled() else h.relu_()

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 0 of every expert as one linear map, experts side by side:
        ``(w [I, n*O_0], b [n*O_0])``, so that ``x @ w + b`` is what ``forward_after_first_layer``
        reads (a caller may widen that GEMM with other maps of the same x)."""
        w, b = self.weights[0], self.biases[0]  # [n, I, O_0], [n, O_0]
        n, i, o = w.shape
        return w.permute(1, 0, 2).reshape(i, n * o), b.reshape(n * o)

    def forward_after_first_layer(self, pre: torch.Tensor) -> torch.Tensor:
        """``forward_all`` given layer 0's pre-activation ``x @ w + b`` ([B, n*O_0], laid out as
        ``first_layer``'s): the same operations from there on.  Returns [B, n, O].

        ``pre`` may be a column slice of a wider GEMM output; without autograd its activation
        runs in place (``pre`` is overwritten), with autograd it is left unchanged."""
        n, o = self.groups, self.weights[0].shape[2]
        if n == 1:  # [1, B, O_0] is a strided view: the batched GEMM reads it where it lies
            h = self._act(pre.unsqueeze(0), 0)  # [1, B, O_0]
        else:
            h = self._act(pre.reshape(-1, n, o).transpose(0, 1).contiguous(), 0)  # [n, B, O_0]
        for i in range(1, len(self.weights)):
            w, b = self.weights[i], self.biases[i]
            h = self._act(torch.baddbmm(b.unsqueeze(1), h, w), i)  # [n, B, O_i]
        return h.transpose(0, 1)  # [B, n, O]
