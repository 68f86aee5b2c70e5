"""M2M (Zhang et al., WSDM 2022): meta units whose weights are generated from the domain.

Paper, as implemented here (domains as the paper's scenarios, one task: the click)::

    z_s      = MLP(e_d)                               scenario knowledge               [B, H]
    z_t      = t                                      task knowledge: a learned vector  [H]
    E_i(x)   = Expert_i(x)                            n expert views                    [B, n, H]
    Meta unit  Meta_z(h) = ReLU(h W(z) + b(z)),  W(z) = reshape(A z + a) / sqrt(in), b(z) = B z + c
    Meta attention  a_i = v^T Meta_{z_s}([E_i, z_t]);   alpha = softmax(a)              [B, n]
                    r   = sum_i alpha_i E_i                                             [B, H]
    Meta tower      h^0 = r;  h^{l+1} = ReLU(h^l W_l(z_s) + b_l(z_s)) + h^l,  l < L
    logit    = w^T MLP(h^L) + b                        output MLP with ``tower_hidden``

Every weight of the attention's meta unit and of the meta tower is a function of the row's domain,
so each domain gets its own attention and tower from shared generators.  Since z_s takes one value
per domain, the generators run on the D domain vectors and each row gathers its domain's weights
(the same result as generating them row by row, at D instead of B generations per batch).

Deviations and choices, each deliberate:

- Expert module: the paper's experts read a Transformer encoding of the advertiser's behaviour
  sequence; our inputs have no sequence, so each expert is an MLP (``expert_hidden``, width
  ``expert_dim``) on the feature embedding, as in MMoE.  ``n = cfg.mmoe_experts`` or one per domain.
- Scenario knowledge reads only the domain id embedding (the paper also feeds scenario-level
  features, which our inputs do not have); with one task, z_t is a single learned vector.
- The generators are linear (A z + a); the generated weight is divided by sqrt(in) so that at
  initialization a meta layer has nn.Linear's output scale.  Scenario-Wise Rec's M2M passes the
  generated weights through a LeakyReLU and an extra Transformer; we follow the paper's equations.
- ``probs`` = ``gates`` = the meta attention alpha (dense); routing overrides act on it as on
  MMoE's gate (``knocked_out`` renormalizes, ``top_k`` keeps the k largest).

Shapes: B = batch, n = experts, I = FeatureEmbedding width, De = ``embed_dim``, H = ``expert_dim``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec, mlp
from cesaa.models.baselines.blocks import StackedMLP, mix_experts, override_dense_gate
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register
from cesaa.models.search_spaces import common


class MetaLinear(nn.Module):
    """h W(z) + b(z) with W(z) = reshape(A z + a) / sqrt(in) and b(z) = B z + c, one W per row.

    ``h`` [B, ..., in] and ``z`` [B, dz] -> [B, ..., out] (no activation).  With ``index`` [B] long,
    ``z`` [K, dz] holds K distinct knowledge vectors and row r uses ``z[index[r]]``: the same result,
    generating K weight matrices instead of B (M2M's z_s takes one value per domain).
    """

    def __init__(self, dz: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weight_gen = nn.Linear(dz, in_dim * out_dim)
        self.bias_gen = nn.Linear(dz, out_dim)

    def generate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters for each row of ``z``: W [K, in, out] and b [K, out]."""
        w = self.weight_gen(z).view(-1, self.in_dim, self.out_dim) / math.sqrt(self.in_dim)
        return w, self.bias_gen(z)

    def forward(
        self, h: torch.Tensor, z: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        w, b = self.generate(z)  # [K, in, out], [K, out]
        if index is not None:
            w, b = w[index], b[index]  # [B, in, out], [B, out]
        if h.dim() == 2:
            return torch.bmm(h.unsqueeze(1), w).squeeze(1) + b  # [B, out]
        return torch.bmm(h, w) + b[:, None]  # [B, n, out]


def search_space(trial: Any) -> dict[str, object]:
    """M2M's tuning space: optimization, expert sizes, the number of experts and tower depth."""
    hidden = str(trial.suggest_categorical("expert_hidden", ["64", "128", "128,64"]))
    tower = str(trial.suggest_categorical("tower_hidden", ["32", "64"]))
    return {
        **common(trial),
        "expert_dim": trial.suggest_categorical("expert_dim", [16, 32]),
        "expert_hidden": tuple(int(w) for w in hidden.split(",")),
        "tower_hidden": tuple(int(w) for w in tower.split(",")),
        "mmoe_experts": trial.suggest_categorical("mmoe_experts", [0, 4, 8]),
        "m2m_tower_layers": trial.suggest_int("m2m_tower_layers", 1, 3),
    }


@register(
    "m2m",
    "M2M: domain-generated meta attention over experts and a meta tower (Zhang et al. 2022)",
    search_space=search_space,
)
class M2M(nn.Module):
    """Experts, a meta attention and a residual meta tower conditioned on the domain."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        h = cfg.expert_dim
        self.num_experts = cfg.mmoe_experts or spec.num_domains
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_embedding = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.05)  # as FeatureEmbedding
        i = self.embedding.out_dim
        self.experts = StackedMLP(self.num_experts, i, cfg.expert_hidden, h, cfg.dropout, True)
        self.scenario = mlp(cfg.embed_dim, (h,))  # z_s = ReLU(W e_d + b)
        self.task = nn.Parameter(torch.randn(h) * 0.05)  # z_t, the one task's knowledge
        self.attention = MetaLinear(h, 2 * h, h)
        self.attention_v = nn.Linear(h, 1, bias=False)
        self.meta_tower = nn.ModuleList(MetaLinear(h, h, h) for _ in range(cfg.m2m_tower_layers))
        self.out = mlp(h, cfg.tower_hidden, 1, cfg.dropout)

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
        z_s = self.scenario(self.domain_embedding.weight)  # [D, H]: one z_s per domain
        experts = self.experts(x)  # [B, n, H]
        z_t = self.task.expand(experts.shape[0], experts.shape[1], -1)  # [B, n, H]
        meta_in = torch.cat([experts, z_t], dim=2)  # [B, n, 2H]
        hidden = torch.relu(self.attention(meta_in, z_s, domain))  # [B, n, H]
        scores = self.attention_v(hidden).squeeze(-1)  # [B, n]
        probs = torch.softmax(scores.float(), dim=-1)  # [B, n], fp32 softmax
        probs, gates, topk_idx = override_dense_gate(probs, routing)
        h = mix_experts(gates, experts.transpose(0, 1))  # [B, H]
        for layer in self.meta_tower:
            h = torch.relu(layer(h, z_s, domain)) + h  # [B, H], residual
        logit = self.out(h).squeeze(-1)  # [B]
        return ModelOutput(
            logit=logit,
            probs=probs,
            gates=gates,
            topk_idx=topk_idx,
            aux_loss=logit.new_zeros(()),
            expert_outputs=experts if return_expert_outputs else None,
        )
