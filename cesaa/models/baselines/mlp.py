"""The simplest multi-domain baseline: one MLP, with the domain as an ordinary input feature.

Shapes: B = batch, I = FeatureEmbedding width, De = ``embed_dim``.
"""

from __future__ import annotations

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows, mlp
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import reject_routing
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


@register("mlp", "Single MLP with the domain as an ordinary feature", search_space=spaces.mlp)
class DomainMLP(nn.Module):
    """logit = MLP([x, e_d]) with hidden sizes ``expert_hidden + tower_hidden``.  No gate, no experts."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_embedding = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.05)  # as FeatureEmbedding
        in_dim = self.embedding.out_dim + cfg.embed_dim
        self.net = mlp(in_dim, cfg.expert_hidden + cfg.tower_hidden, 1, cfg.dropout)

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        reject_routing(routing, "mlp")
        x = self.embedding(cat, num)  # [B, I]
        u = torch.cat([x, embedding_rows(self.domain_embedding, domain)], dim=1)  # [B, I + De]
        logit = self.net(u).squeeze(-1)  # [B]
        return ModelOutput(logit=logit, aux_loss=logit.new_zeros(()))
