"""MMoE (Ma et al., KDD 2018) with domains as tasks: shared experts, one softmax gate and tower per domain.

Shapes: B = batch, D = domains, n = experts, I = FeatureEmbedding width, H = ``expert_dim``.
"""

from __future__ import annotations

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import (
    StackedMLP,
    fused_linear,
    mix_experts,
    override_dense_gate,
    select_domain,
    softmax_rows,
)
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


@register(
    "mmoe",
    "MMoE: shared experts, one softmax gate and one tower per domain",
    search_space=spaces.mmoe,
)
class MMoE(nn.Module):
    """logit = tower_d(sum_i g_d(x)_i E_i(x)),  g_d = softmax(x W_d + b_d),  d = the row's domain.

    ``n = cfg.mmoe_experts`` experts, or one per domain when it is 0 (Scenario-Wise Rec setting).
    Experts, gates and towers are stacked; layer 0 of every expert and every domain's gate run as
    one GEMM over x; the D gates and towers run on every row (D is small) and each row reads its
    own domain's.  ``probs`` = ``gates`` = that gate's softmax [B, n] (dense).

    Routing overrides (inference ablations) act on the row's gate before mixing, see
    :func:`~cesaa.models.baselines.blocks.override_dense_gate`: ``knocked_out`` experts get 0 and the
    rest is renormalized (``probs``); ``top_k`` keeps the k largest of those and renormalizes them
    (``gates``, ``topk_idx``), the same k semantics as CESAA's: k = 1 weights the top expert 1, and
    k = every expert left is the dense gate as trained (bit for bit without knock-outs).  MMoE has
    no always-on shared expert, so ``use_shared`` is ignored.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        d, h = spec.num_domains, cfg.expert_dim
        self.num_experts = cfg.mmoe_experts or d
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        i = self.embedding.out_dim
        self.experts = StackedMLP(self.num_experts, i, cfg.expert_hidden, h, cfg.dropout, True)
        self.gates = StackedMLP(d, i, (), self.num_experts)  # D stacked linear gates
        self.towers = StackedMLP(d, h, cfg.tower_hidden, 1, cfg.dropout)
        if cfg.tower_init == "tied":  # every domain starts from one tower (docs/training.md)
            self.towers.tie_groups()

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        x = self.embedding(cat, num)  # [B, I]
        # layer 0 of every expert and every domain's gate: one GEMM over x
        h0, gate_logits = fused_linear(
            x, [self.experts.flat_first_layer(), self.gates.flat_first_layer()]
        )  # [B, n*H0], [B, D*n]
        experts = self.experts.forward_rest(h0)  # [n, B, H] (a strided view)
        n = self.num_experts  # the row's domain's gate: columns d*n .. d*n + n - 1
        cols = domain.unsqueeze(1) * n + torch.arange(n, device=domain.device)  # [B, n]
        logits = gate_logits.gather(1, cols)  # [B, n]
        probs = softmax_rows(logits.float())  # [B, n], fp32 softmax
        probs, gates, topk_idx = override_dense_gate(probs, routing)
        mixed = mix_experts(gates, experts)  # [B, H]
        logit = select_domain(self.towers(mixed), domain).squeeze(-1)  # [B, D, 1] -> [B]
        return ModelOutput(
            logit=logit,
            probs=probs,
            gates=gates,
            topk_idx=topk_idx,
            aux_loss=logit.new_zeros(()),
            expert_outputs=experts.transpose(0, 1) if return_expert_outputs else None,  # [B, n, H]
        )
