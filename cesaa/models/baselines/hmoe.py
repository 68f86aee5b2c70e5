"""HMoE (Li et al., CIKM 2020): MMoE per domain, then a domain-aware mix of all domains' predictions.

Paper, as implemented here (domains as the paper's scenarios; d = the row's domain)::

    E_i(x)                         n shared experts                                 [B, n, H]
    g_j(x)   = softmax(W_j x + b_j)                    one expert gate per domain j  [B, D, n]
    t_j(x)   = tower_j(sum_i g_j(x)_i E_i(x))          every domain's score          [B, D]
    w_d(x)   = softmax(U_d x + c_d)                    label-space gate of domain d  [B, D]
    logit    = sum_j w_d(x)_j * t~_j(x),   t~_j = t_j if j = d else sg(t_j)

``sg`` is stop-gradient ("gradient cutting"): a row of domain d trains domain j's tower and experts
only through its own domain's path, while the mix may still borrow the other domains' predictions.

Deviations and choices, each deliberate:

- The paper ranks (its towers emit ranking scores); we mix the towers' click logits, i.e. the mix
  happens before the sigmoid.
- ``n = cfg.mmoe_experts`` experts, or one per domain when it is 0 (as our MMoE).  Expert, gate and
  tower sizes are MMoE's (``expert_hidden``, ``expert_dim``, ``tower_hidden``).
- The label-space gate reads the same feature embedding x as the expert gates.  It starts with
  weight ``hmoe_self_weight`` (0.9) on the row's own domain: with nn.Linear's init it starts near
  1/D, so 1 - 1/D of every row's logit came from other domains' towers that the row does not train,
  and HMoE stayed on the plateau of product-structured data (docs/training.md).
- Every domain's tower starts from one draw (``tower_init="tied"``, as MMoE's).
- Routing overrides (inference ablations) act on every domain's expert gate, as in MMoE; ``probs``
  and ``gates`` report the row's own domain's expert gate.  The label-space weights are returned
  in ``losses["self_weight"]`` (mean weight on the row's own domain) for logging only.

Shapes: B = batch, D = domains, n = experts, I = FeatureEmbedding width, H = ``expert_dim``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec
from cesaa.models.baselines.blocks import (
    StackedMLP,
    mix_experts_per_domain,
    override_dense_gate,
    select_domain,
)
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register
from cesaa.models.search_spaces import common


def mix_with_gradient_cut(
    scores: torch.Tensor, weights: torch.Tensor, domain: torch.Tensor
) -> torch.Tensor:
    """sum_j w_j * t~_j with t~_j = t_j on the row's own domain and sg(t_j) elsewhere.

    ``scores`` [B, D], ``weights`` [B, D] (rows sum to 1), ``domain`` [B] long -> [B].
    """
    own = torch.nn.functional.one_hot(domain, scores.shape[1]).to(scores.dtype)  # [B, D]
    cut = own * scores + (1 - own) * scores.detach()  # [B, D]: same values, other grads cut
    return (weights * cut).sum(dim=1)  # [B]


def search_space(trial: Any) -> dict[str, object]:
    """HMoE's tuning space: optimization, expert / tower sizes and the number of experts."""
    hidden = str(trial.suggest_categorical("expert_hidden", ["64", "128", "128,64"]))
    tower = str(trial.suggest_categorical("tower_hidden", ["32", "64"]))
    return {
        **common(trial),
        "expert_dim": trial.suggest_categorical("expert_dim", [16, 32, 64]),
        "expert_hidden": tuple(int(w) for w in hidden.split(",")),
        "tower_hidden": tuple(int(w) for w in tower.split(",")),
        "mmoe_experts": trial.suggest_categorical("mmoe_experts", [0, 4, 8]),
    }


@register(
    "hmoe",
    "HMoE: MMoE per domain + a label-space gate mixing every domain's prediction (Li et al. 2020)",
    search_space=search_space,
)
class HMoE(nn.Module):
    """MMoE's experts, gates and towers for every domain, then the gradient-cut label-space mix."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        d, h = spec.num_domains, cfg.expert_dim
        self.num_experts = cfg.mmoe_experts or d
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        i = self.embedding.out_dim
        self.experts = StackedMLP(self.num_experts, i, cfg.expert_hidden, h, cfg.dropout, True)
        self.gates = StackedMLP(d, i, (), self.num_experts)  # D stacked linear expert gates
        self.towers = StackedMLP(d, h, cfg.tower_hidden, 1, cfg.dropout)  # tower j reads mix j
        if cfg.tower_init == "tied":  # every domain starts from one tower (docs/training.md)
            self.towers.tie_groups()
        self.label_gates = StackedMLP(d, i, (), d)  # D stacked linear label-space gates
        w = cfg.hmoe_self_weight
        if w > 0 and d > 1:  # gate d's logit for domain d raised: softmax weight ~w on its own
            with torch.no_grad():
                own = math.log(w * (d - 1) / (1 - w))
                self.label_gates.biases[0].add_(own * torch.eye(d))

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
        experts = self.experts(x)  # [B, n, H]
        probs = torch.softmax(self.gates(x).float(), dim=-1)  # [B, D, n], fp32 softmax
        probs, gates, topk_idx = override_dense_gate(probs, routing)
        mixed = mix_experts_per_domain(gates, experts.transpose(0, 1))  # [B, D, H]
        scores = self.towers(mixed).squeeze(-1)  # [B, D]: every domain's logit
        w = torch.softmax(select_domain(self.label_gates(x), domain).float(), dim=-1)  # [B, D]
        logit = mix_with_gradient_cut(scores, w.to(scores.dtype), domain)  # [B]
        own_weight = select_domain(w, domain).mean().detach()
        return ModelOutput(
            logit=logit,
            probs=select_domain(probs, domain),
            gates=select_domain(gates, domain),
            topk_idx=None if topk_idx is None else select_domain(topk_idx, domain),
            aux_loss=logit.new_zeros(()),
            losses={"self_weight": own_weight},
            expert_outputs=experts if return_expert_outputs else None,
        )
