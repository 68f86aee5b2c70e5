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

        The B*k (row, expert) pairs are sorted by expert and their rows gathered once; each selected
        expert then runs on one contiguous slice, and one ``index_add`` scatters the gate-weighted
        outputs back.  Gather and scatter therefore cost O(B*k*(Din + H)) in both passes, not
        O(n*B*(Din + H)) as with one gather and one scatter-add per expert (whose backward
        zero-fills a full [B, Din] gradient per expert).
        """
        b, k = topk_idx.shape
        flat_expert = topk_idx.reshape(-1)  # [B*k], pair p = (row p // k, slot p % k)
        order = torch.argsort(flat_expert, stable=True)  # pairs grouped by expert id
        rows = torch.div(order, k, rounding_mode="floor")  # [B*k] row of each sorted pair
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()  # host sync
        grouped = x.index_select(0, rows)  # [B*k, Din], expert 0's rows first, then 1's, ...
        outputs = [
            self.forward_expert(part, e)  # [count_e, H]; an unselected expert costs nothing
            for e, part in enumerate(grouped.split(counts))
            if part.shape[0] > 0
        ]
        dtype = torch.promote_types(x.dtype, gates.dtype)
        if not outputs:  # an empty batch
            return x.new_zeros(b, self.out_dim, dtype=dtype)
        y = torch.cat(outputs)  # [B*k, H] in sorted-pair order
        g = gates.gather(1, topk_idx).reshape(-1).index_select(0, order)  # [B*k] sorted
        weighted = y.to(dtype) * g.to(dtype).unsqueeze(1)  # [B*k, H]
        return x.new_zeros(b, self.out_dim, dtype=dtype).index_add(0, rows, weighted)  # [B, H]

    def forward_dense_masked(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The oracle: sum_e gates[:, e] * expert_e(x), every expert computed.

        x: [B, Din], gates: [B, n].  Returns [B, H].
        """
        return torch.einsum("bn,bnh->bh", gates, self.forward_all(x))  # [B, H]
