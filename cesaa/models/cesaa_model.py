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

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec, mlp
from cesaa.models import search_spaces as spaces
from cesaa.models.ces import CESBlock
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


@register(
    "cesaa",
    "CESAA: noisy top-k domain experts + shared experts + MI loss",
    search_space=spaces.cesaa,
)
class CESAA(CESBlock):
    """Conditional expert selection (sparse gate + shared experts) with the mutual-information loss.

    Dropout (``cfg.dropout``) applies inside the tower(s) only, so that the sparse and dense
    dispatch paths compute the same function.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__(
            cfg, spec
        )  # inputs, gate, domain experts, shared experts (cesaa.models.ces)
        # head: the tower(s) reading the fused representation h
        if cfg.head == "shared":
            self.tower = mlp(self.h_dim + cfg.embed_dim, cfg.tower_hidden, 1, cfg.dropout)
        else:  # per_domain: e_d would only be a constant bias inside a domain's own tower
            self.towers = nn.ModuleList(
                mlp(self.h_dim, cfg.tower_hidden, 1, cfg.dropout) for _ in range(spec.num_domains)
            )
            if (
                cfg.tower_init == "tied"
            ):  # every domain starts from tower 0's draw (docs/training.md)
                for tower in self.towers[1:]:
                    tower.load_state_dict(self.towers[0].state_dict())

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        routing = routing if routing is not None else RoutingOverride()
        c = self.select(cat, num, domain, routing, keep_shared_outputs=return_expert_outputs)

        logit = self.head_logit(c.h, domain)  # [B]
        # AEA: mutual information between domains and experts (+ optional load balancing)
        aux_loss, losses = self.aea_loss(c.gate, domain)
        return ModelOutput(
            logit=logit,
            probs=c.gate.probs,
            gates=c.gate.gates,
            topk_idx=c.gate.topk_idx,
            aux_loss=aux_loss,
            losses=losses,
            expert_outputs=self.expert_outputs(c.x) if return_expert_outputs else None,
            shared_outputs=c.shared_outputs if return_expert_outputs else None,
        )

    def head_logit(self, h: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """The logit [B] from the fused representation h [B, H'] and the rows' domains [B]: the
        shared tower on [h, e_d], or each row's own domain tower on h.

        The shared tower's first layer reads [h, e_d] as ``h @ W_h + (E @ W_e + b)[domain]``: the
        domain embedding's part is a [D, O] table gathered per row, so no [B, H' + De] input is
        concatenated, and the domain embedding's gradient is one small GEMM of the table's
        (through the concatenation, a strided column slice of its gradient was scattered into
        the embedding, an operator that does not use a second thread).  The same function as
        ``tower(cat([h, e_d]))``, to float rounding.
        """
        if self.cfg.head != "shared":
            all_logits = torch.cat([t(h) for t in self.towers], dim=1)  # [B, D]
            return all_logits.gather(1, domain.unsqueeze(1)).squeeze(1)  # [B], the row's own tower
        first, hd = self.tower[0], h.shape[1]
        w = first.weight  # [O, H' + De]
        table = torch.addmm(first.bias, self.domain_emb.weight, w[:, hd:].t())  # [D, O]
        pre = torch.addmm(table.index_select(0, domain), h, w[:, :hd].t())  # [B, O]
        return self.tower[1:](pre).squeeze(-1)  # [B]


@register(
    "sparse_moe",
    "Sparse MoE: noisy top-k domain experts only (no shared expert, no MI loss)",
    search_space=spaces.sparse_moe,
    num_shared=0,
    alpha=0.0,
)
class SparseMoE(CESAA):
    """The plain sparse mixture of experts: the same network as CESAA, built with the registry
    defaults ``num_shared=0, alpha=0`` (no shared expert, no MI loss)."""
