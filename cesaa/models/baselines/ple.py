"""PLE (Tang et al., RecSys 2020) with domains as tasks: stacked CGC levels, then one tower per domain.

Shapes: B = batch, D = domains, S = ``ple_specific`` experts per domain, Sh = ``ple_shared`` shared
experts, E = S + Sh experts under one domain gate, I = level input width, H = ``expert_dim``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import StackedMLP, override_dense_gate, select_domain
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


class CGCOutput(NamedTuple):
    """What one CGC level computed, for every domain's path."""

    out_dom: torch.Tensor  # [B, D, H] each domain's gated mixture (next level's / towers' input)
    out_sh: torch.Tensor | None  # [B, H] shared gate's mixture (next level's shared input) or None
    probs: torch.Tensor  # [B, D, E] every domain gate's softmax (after any knock-out)
    gates: torch.Tensor  # [B, D, E] the weights used to mix (after any top-k)
    topk_idx: torch.Tensor | None  # [B, D, k] only under a top_k override
    experts: torch.Tensor  # [B, D, E, H] the experts under each domain's gate


class CGCLevel(nn.Module):
    """One Customized Gate Control level, computed for every domain's path at once (D is small).

    - D*S specific experts: domain d's read domain d's input; Sh shared experts read the shared input.
    - gate of domain d: softmax over [its S specific, the Sh shared] experts, from domain d's input.
    - shared gate (levels that feed another level, when Sh > 0): softmax over all D*S + Sh experts,
      from the shared input; its mixture is the next level's shared input.
    """

    def __init__(self, cfg: ModelConfig, num_domains: int, in_dim: int, shared_gate: bool) -> None:
        super().__init__()
        d, s, sh, h = num_domains, cfg.ple_specific, cfg.ple_shared, cfg.expert_dim
        self.s, self.sh = s, sh
        self.specific = StackedMLP(d * s, in_dim, cfg.expert_hidden, h, cfg.dropout, True)
        self.shared = (
            StackedMLP(sh, in_dim, cfg.expert_hidden, h, cfg.dropout, True) if sh else None
        )
        self.gates = StackedMLP(d, in_dim, (), s + sh)  # D stacked linear gates
        self.shared_gate = nn.Linear(in_dim, d * s + sh) if shared_gate and sh else None

    def forward(
        self, h_dom: torch.Tensor, h_sh: torch.Tensor | None, routing: RoutingOverride | None
    ) -> CGCOutput:
        """h_dom [B, D, I] each domain's input; h_sh [B, I] the shared input (None when Sh = 0)."""
        b, d, _ = h_dom.shape
        spec = self.specific(h_dom.repeat_interleave(self.s, dim=1))  # [B, D*S, H]
        parts = [spec.view(b, d, self.s, -1)]  # [B, D, S, H]
        shared = self.shared(h_sh) if self.shared is not None else None  # [B, Sh, H]
        if shared is not None:
            parts.append(shared.unsqueeze(1).expand(-1, d, -1, -1))  # [B, D, Sh, H]
        experts = torch.cat(parts, dim=2)  # [B, D, E, H]
        probs = torch.softmax(self.gates(h_dom).float(), dim=-1)  # [B, D, E], fp32 softmax
        shared_idx = tuple(range(self.s, self.s + self.sh))
        probs, gates, topk_idx = override_dense_gate(probs, routing, shared=shared_idx)
        out_dom = torch.einsum("bde,bdeh->bdh", gates.to(experts.dtype), experts)  # [B, D, H]
        out_sh = None
        if self.shared_gate is not None and shared is not None:
            every = torch.cat([spec, shared], dim=1)  # [B, D*S + Sh, H]
            g = torch.softmax(self.shared_gate(h_sh).float(), dim=-1)  # [B, D*S + Sh]
            out_sh = torch.einsum("be,beh->bh", g.to(every.dtype), every)  # [B, H]
        return CGCOutput(out_dom, out_sh, probs, gates, topk_idx, experts)


@register(
    "ple",
    "PLE: domain-specific + shared experts, per-domain gates, stacked CGC levels",
    search_space=spaces.ple,
)
class PLE(nn.Module):
    """``ple_levels`` CGC levels; the last level's domain outputs feed one tower per domain.

    Level 1 reads x for every path; level l+1 reads level l's outputs.  Every domain's path is computed
    for every row, and each row reads its own domain's at the end.  ``probs``/``gates`` are the last
    level's gate of the row's domain [B, S + Sh]: columns 0..S-1 are that domain's specific experts,
    S..S+Sh-1 the shared ones (``expert_outputs`` [B, S + Sh, H] in the same order).

    Routing overrides act on the last level's gates (as for MMoE: knock-out renormalizes, ``top_k``
    keeps the k largest); ``use_shared=False`` knocks out the shared columns S..S+Sh-1.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim)
        self.num_domains = d = spec.num_domains
        last = cfg.ple_levels - 1
        dims = [self.embedding.out_dim] + [cfg.expert_dim] * last
        self.levels = nn.ModuleList(CGCLevel(cfg, d, dims[i], i < last) for i in range(last + 1))
        self.towers = StackedMLP(d, cfg.expert_dim, cfg.tower_hidden, 1, cfg.dropout)

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
        h_dom = x.unsqueeze(1).expand(-1, self.num_domains, -1)  # [B, D, I] level 1: x everywhere
        h_sh: torch.Tensor | None = x  # [B, I]
        last = len(self.levels) - 1
        for i, level in enumerate(self.levels):
            out = level(h_dom, h_sh, routing if i == last else None)
            h_dom, h_sh = out.out_dom, out.out_sh  # [B, D, H], [B, H] or None
        logit = select_domain(self.towers(h_dom), domain).squeeze(-1)  # [B, D, 1] -> [B]
        topk_idx = None if out.topk_idx is None else select_domain(out.topk_idx, domain)  # [B, k]
        return ModelOutput(
            logit=logit,
            probs=select_domain(out.probs, domain),  # [B, E]
            gates=select_domain(out.gates, domain),  # [B, E]
            topk_idx=topk_idx,
            aux_loss=logit.new_zeros(()),
            expert_outputs=select_domain(out.experts, domain) if return_expert_outputs else None,
        )
