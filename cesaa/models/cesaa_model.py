"""CESAA: Adaptive Conditional Expert Selection Network (Dong et al. 2024, arXiv 2411.06826).

Our reconstruction (``shared/paper-notes.md``; each uncertain choice is a ``ModelConfig`` switch):

    x      = FeatureEmbedding(cat, num)                       [B, F]
    e_d    = domain embedding                                 [B, De]
    CES    : noisy top-k gate over E domain experts, input [x, e_d] (or per-domain W_g, or x alone)
             h_spec = sum_{e in TopK} G_e * Expert_e(x)        only the selected experts run
             h_sh   = mean_j Shared_j(x)                       always on (0 when num_shared = 0)
             h      = h_sh + h_spec   (or [h_sh, h_spec])
    head   : one tower on [h, e_d]  (or one tower per domain on h)  -> logit
    AEA    : aux_loss = alpha * (-I(D; E)) + beta * (CV(importance)^2 + CV(load)^2), training only

Shapes: B = batch, F = feature width, De = embed_dim, D = domains, E = domain experts, S = shared
experts, k = experts selected per row, H = expert_dim.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.experts import StackedExperts
from cesaa.features import FeatureEmbedding, FeatureSpec, mlp
from cesaa.gating import NoisyTopKGate, check_routing
from cesaa.losses import balance_loss, mi_loss
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


@register("cesaa", "CESAA: noisy top-k domain experts + shared experts + MI loss")
class CESAA(nn.Module):
    """Conditional expert selection (sparse gate + shared experts) with the mutual-information loss.

    Dropout (``cfg.dropout``) applies inside the tower(s) only, so that the sparse and dense
    dispatch paths compute the same function.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_domains = spec.num_domains
        # set by the trainer for TrainConfig.mi_scope='global' (cesaa.distributed); not a weight
        self.joint_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.features = FeatureEmbedding(spec, cfg.embed_dim)
        self.domain_emb = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_emb.weight, std=0.05)
        f = self.features.out_dim

        # CES: the sparse gate, the selectable domain experts and the always-on shared experts
        self.gate = NoisyTopKGate(
            f,
            cfg.embed_dim,
            cfg.num_experts,
            spec.num_domains,
            gate_input=cfg.gate_input,
            noisy=cfg.noisy_gating,
        )
        self.experts = StackedExperts(cfg.num_experts, f, cfg.expert_hidden, cfg.expert_dim)
        self.shared = (
            StackedExperts(cfg.num_shared, f, cfg.expert_hidden, cfg.expert_dim)
            if cfg.num_shared > 0
            else None
        )

        # head: the tower(s) reading the fused representation h
        h_dim = cfg.expert_dim * (2 if cfg.fusion == "concat" else 1)
        if cfg.head == "shared":
            self.tower = mlp(h_dim + cfg.embed_dim, cfg.tower_hidden, 1, cfg.dropout)
        else:  # per_domain: e_d would only be a constant bias inside a domain's own tower
            self.towers = nn.ModuleList(
                mlp(h_dim, cfg.tower_hidden, 1, cfg.dropout) for _ in range(spec.num_domains)
            )

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        cfg = self.cfg
        routing = routing if routing is not None else RoutingOverride()
        k = cfg.top_k if routing.top_k is None else routing.top_k
        knocked_out = check_routing(k, cfg.num_experts, routing.knocked_out)

        x = self.features(cat, num)  # [B, F]
        e_d = self.domain_emb(domain)  # [B, De]

        # CES: conditional expert selection
        g = self.gate(x, e_d, domain, k, knocked_out)  # gates/probs [B, E], topk_idx [B, k]
        if cfg.dispatch == "sparse":
            h_spec = self.experts.forward_sparse(x, g.topk_idx, g.gates)  # [B, H]
        else:
            h_spec = self.experts.forward_dense_masked(x, g.gates)  # [B, H]
        use_shared = self.shared is not None and routing.use_shared
        shared_out = None
        if self.shared is not None and (use_shared or return_expert_outputs):
            shared_out = self.shared.forward_all(x)  # [B, S, H]
        if use_shared:
            h_sh = shared_out.mean(dim=1)  # [B, H]
        else:
            h_sh = torch.zeros_like(h_spec)  # [B, H]
        if cfg.fusion == "sum":
            h = h_sh + h_spec  # [B, H]
        else:
            h = torch.cat([h_sh, h_spec], dim=1)  # [B, 2H]

        # head
        if cfg.head == "shared":
            logit = self.tower(torch.cat([h, e_d], dim=1)).squeeze(-1)  # [B]
        else:
            all_logits = torch.cat([t(h) for t in self.towers], dim=1)  # [B, D]
            logit = all_logits.gather(1, domain.unsqueeze(1)).squeeze(1)  # [B], the row's own tower

        # AEA: mutual information between domains and experts (+ optional load balancing)
        reduce = self.joint_reducer if self.training else None  # global MI under DDP (training)
        neg_mi, mi = mi_loss(g.probs, domain, self.num_domains, reduce)
        balance = balance_loss(g.gates, g.load)
        if self.training:
            aux_loss = cfg.alpha * neg_mi + cfg.beta * balance
        else:
            aux_loss = torch.zeros((), device=logit.device)

        return ModelOutput(
            logit=logit,
            probs=g.probs,
            gates=g.gates,
            topk_idx=g.topk_idx,
            aux_loss=aux_loss,
            losses={"mi": mi, "balance": balance.detach()},
            expert_outputs=self.experts.forward_all(x) if return_expert_outputs else None,
            shared_outputs=shared_out if return_expert_outputs else None,
        )


@register(
    "sparse_moe",
    "Sparse MoE: noisy top-k domain experts only (no shared expert, no MI loss)",
    num_shared=0,
    alpha=0.0,
)
class SparseMoE(CESAA):
    """The plain sparse mixture of experts: the same network as CESAA, built with the registry
    defaults ``num_shared=0, alpha=0`` (no shared expert, no MI loss)."""
