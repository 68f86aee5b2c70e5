"""Expert MLPs with stacked weights, and sparse dispatch of rows to the experts that selected them.

Shapes: B = batch, Din = input width, n = experts, k = experts selected per row, H = expert width.

Each expert is  Linear-ReLU per hidden width, then Linear-ReLU to H.  The ReLU on the output layer
follows the MMoE/PLE expert implementations (e.g. torch-rechub's experts are MLPs without an output
layer): an expert emits a non-negative representation, and the tower that reads it ends linearly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StackedExperts(nn.Module):
    """``n`` expert MLPs; layer l's weights are one tensor [n, d_l, d_{l+1}], biases [n, d_{l+1}].

    - ``forward_all``: every expert on every row, one batched matmul per layer.
    - ``forward_sparse``: each row only through its k selected experts, gate-weighted and summed;
      unselected experts are never computed.
    - ``forward_dense_masked``: every expert on every row, then the gate-weighted sum (test oracle).
    """

    def __init__(
        self, num_experts: int, in_dim: int, hidden: tuple[int, ...], out_dim: int
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts} must be >= 1")
        self.num_experts = num_experts
        self.out_dim = out_dim
        dims = (in_dim, *hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init, per expert
            w = torch.empty(num_experts, d_in, d_out).uniform_(-bound, bound)
            b = torch.empty(num_experts, d_out).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Dense: every expert on every row.  x: [B, Din] -> [B, n, H]."""
        h = x.unsqueeze(0).expand(self.num_experts, -1, -1)  # [n, B, Din]
        for w, b in zip(self.weights, self.biases, strict=True):
            h = F.relu(torch.baddbmm(b.unsqueeze(1), h, w))  # [n, B, d_out]
        return h.transpose(0, 1)  # [B, n, H]

    def forward_expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e`` alone on the rows ``x``: [R, Din] -> [R, H]."""
        h = x
        for w, b in zip(self.weights, self.biases, strict=True):
            h = F.relu(torch.addmm(b[e], h, w[e]))  # [R, d_out]
        return h

    def forward_sparse(
        self, x: torch.Tensor, topk_idx: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        """sum_{e in topk(x)} gates[x, e] * expert_e(x), computing only the selected pairs.

        x: [B, Din]; topk_idx: [B, k] long; gates: [B, n] (only the entries at ``topk_idx`` are
        read, so only they receive gradient).  Returns [B, H].
        """
        b, k = topk_idx.shape
        flat_expert = topk_idx.reshape(-1)  # [B*k]
        flat_row = torch.arange(b, device=x.device).repeat_interleave(k)  # [B*k]
        flat_gate = gates.gather(1, topk_idx).reshape(-1)  # [B*k]
        order = torch.argsort(flat_expert, stable=True)  # group the pairs by expert id
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()  # host sync
        rows_per_expert = flat_row[order].split(counts)  # n x [count_e]
        gates_per_expert = flat_gate[order].split(counts)  # n x [count_e]

        dtype = torch.promote_types(x.dtype, gates.dtype)
        out = x.new_zeros(b, self.out_dim, dtype=dtype)  # [B, H]
        for e, (rows, g) in enumerate(zip(rows_per_expert, gates_per_expert, strict=True)):
            if rows.numel() == 0:
                continue  # an unselected expert costs nothing
            y = self.forward_expert(x.index_select(0, rows), e)  # [count_e, H]
            out = out.index_add(0, rows, y * g.unsqueeze(1))  # [B, H]
        return out

    def forward_dense_masked(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The oracle: sum_e gates[:, e] * expert_e(x), every expert computed.

        x: [B, Din], gates: [B, n].  Returns [B, H].
        """
        return torch.einsum("bn,bnh->bh", gates, self.forward_all(x))  # [B, H]
