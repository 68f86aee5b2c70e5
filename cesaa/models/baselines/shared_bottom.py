"""Shared-Bottom: one MLP shared by every domain, then one tower per domain.

Shapes: B = batch, D = domains, I = FeatureEmbedding width, H = ``expert_dim``.
"""

from __future__ import annotations

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec, mlp
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import StackedMLP, reject_routing, select_domain
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


@register(
    "shared_bottom",
    "Shared-Bottom: one shared MLP, one tower per domain",
    search_space=spaces.shared_bottom,
)
class SharedBottom(nn.Module):
    """h = bottom(x) (shaped like one expert: I -> expert_hidden -> H, ReLU); logit = tower_d(h).

    The D towers are stacked: all run on every row (D is small) and each row reads its own domain's.
    ``expert_outputs`` (when requested) is the bottom output as a single expert: [B, 1, H].
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        sizes = cfg.expert_hidden + (cfg.expert_dim,)
        self.bottom = mlp(self.embedding.out_dim, sizes, None, cfg.dropout)
        self.towers = StackedMLP(spec.num_domains, cfg.expert_dim, cfg.tower_hidden, 1, cfg.dropout)
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
        reject_routing(routing, "shared_bottom")
        x = self.embedding(cat, num)  # [B, I]
        h = self.bottom(x)  # [B, H]
        logit = select_domain(self.towers(h), domain).squeeze(-1)  # [B, D, 1] -> [B]
        return ModelOutput(
            logit=logit,
            aux_loss=logit.new_zeros(()),
            expert_outputs=h.unsqueeze(1) if return_expert_outputs else None,  # [B, 1, H]
        )
