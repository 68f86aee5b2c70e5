"""PLE (Tang et al., RecSys 2020) with domains as tasks: stacked CGC levels, then one tower per domain.

Shapes: B = batch, D = domains, S = ``ple_specific`` experts per domain, Sh = ``ple_shared`` shared
experts, R = S + Sh experts under one domain gate, G = D * S + Sh experts of one level (the global
expert index), I = level input width, H = ``expert_dim``.

Global expert index (what ``probs``, ``gates``, ``topk_idx``, ``expert_outputs`` and
``RoutingOverride.knocked_out`` refer to): expert ``d * S + j`` is domain d's j-th specific expert,
expert ``D * S + j`` the j-th shared expert, all of the last level.  Every index is one network, so
P(expert | domain), knock-outs and pictures per expert mean one thing; ``expert_kinds()`` labels each
index ``"domain:<d>"`` or ``"shared"``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import (
    StackedMLP,
    mix_experts,
    override_dense_gate,
    select_domain,
    softmax_rows,
)
from cesaa.models.baselines.grouped import (
    group_ends,
    grouped_linear,
    grouped_stack,
    override_dense_gate_rows,
)
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


class CGCOutput(NamedTuple):
    """What one CGC level computed, for every domain's path (local gate columns)."""

    out_dom: torch.Tensor  # [B, D, H] each domain's gated mixture (next level's / towers' input)
    out_sh: torch.Tensor | None  # [B, H] shared gate's mixture (next level's shared input) or None
    probs: torch.Tensor  # [B, D, R] every domain gate's softmax (after any knock-out)
    gates: torch.Tensor  # [B, D, R] the weights used to mix (after any top-k)
    topk_idx: torch.Tensor | None  # [B, D, k] only under a top_k override
    experts: torch.Tensor  # [B, D, R, H] the experts under each domain's gate


class OwnOutput(NamedTuple):
    """What one CGC level computed on each row's own domain path (rows grouped by domain)."""

    out: torch.Tensor  # [B, H] the row's domain's gated mixture
    probs: torch.Tensor  # [B, R] the row's domain gate (local columns: S specific, Sh shared)
    gates: torch.Tensor  # [B, R]
    topk_idx: torch.Tensor | None  # [B, k] local columns, only under a top_k override
    experts: torch.Tensor | None  # [B, R, H], only when asked for (``return_experts``)


class CGCLevel(nn.Module):
    """One Customized Gate Control level.

    - D*S specific experts: domain d's read domain d's input; Sh shared experts read the shared input.
    - gate of domain d: softmax over [its S specific, the Sh shared] experts, from domain d's input;
      it starts with total weight ``ple_shared_weight`` (0.8) on the shared experts, the only ones
      every domain trains (with nn.Linear's init, about Sh / (S + Sh): PLE then stayed on the
      plateau of product-structured data longer, docs/training.md).
    - shared gate (levels that feed another level, when Sh > 0): softmax over all D*S + Sh experts,
      from the shared input; its mixture is the next level's shared input.

    ``forward`` computes every domain's path for every row (needed where a shared gate mixes all
    specific experts; otherwise the oracle of ``forward_own``, which computes each row's own path).
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
        w = cfg.ple_shared_weight
        if w > 0 and sh and s:  # shared columns raised: total softmax weight ~w on the shared
            with torch.no_grad():
                self.gates.biases[0][:, s:] += math.log(w * s / ((1 - w) * sh))
        self.shared_gate = nn.Linear(in_dim, d * s + sh) if shared_gate and sh else None

    def forward(
        self, h_dom: torch.Tensor, h_sh: torch.Tensor | None, routing: RoutingOverride | None
    ) -> CGCOutput:
        """h_dom [B, D, I] each domain's input; h_sh [B, I] the shared input (None when Sh = 0).
        ``routing`` acts on every domain's gate with local columns (0..S-1 specific, S.. shared)."""
        b, d, _ = h_dom.shape
        spec = self.specific(h_dom.repeat_interleave(self.s, dim=1))  # [B, D*S, H]
        parts = [spec.view(b, d, self.s, -1)]  # [B, D, S, H]
        shared = self.shared(h_sh) if self.shared is not None else None  # [B, Sh, H]
        if shared is not None:
            parts.append(shared.unsqueeze(1).expand(-1, d, -1, -1))  # [B, D, Sh, H]
        experts = torch.cat(parts, dim=2)  # [B, D, R, H]
        probs = torch.softmax(self.gates(h_dom).float(), dim=-1)  # [B, D, R], fp32 softmax
        shared_idx = tuple(range(self.s, self.s + self.sh))
        probs, gates, topk_idx = override_dense_gate(probs, routing, shared=shared_idx)
        out_dom = torch.einsum("bde,bdeh->bdh", gates.to(experts.dtype), experts)  # [B, D, H]
        out_sh = None
        if self.shared_gate is not None and shared is not None:
            every = torch.cat([spec, shared], dim=1)  # [B, D*S + Sh, H]
            g = torch.softmax(self.shared_gate(h_sh).float(), dim=-1)  # [B, D*S + Sh]
            out_sh = torch.einsum("be,beh->bh", g.to(every.dtype), every)  # [B, H]
        return CGCOutput(out_dom, out_sh, probs, gates, topk_idx, experts)

    def forward_own(
        self,
        h: torch.Tensor,
        h_sh: torch.Tensor | None,
        domain: torch.Tensor,
        ends: torch.Tensor,
        routing: list[RoutingOverride | None] | None,
        return_experts: bool = False,
    ) -> OwnOutput:
        """Each row's own domain path only.  Rows are sorted by domain: ``domain`` [B] ascending,
        ``ends`` [D] the end of each domain's rows (:func:`group_ends`); h [B, I] the row's domain
        input, h_sh [B, I] the shared input (None when Sh = 0).  ``routing[d]``: domain d's
        override in local columns; ``return_experts``: also return the row's R expert outputs.
        Levels with a shared gate need every domain's path and must use ``forward``.

        Layer 0 of the domain's S specific experts and its gate run as one grouped GEMM over the
        sorted rows (weights [D, I, S*O_0 + R]), later layers as one grouped GEMM per specific
        expert; the shared experts run on every row.  Nothing is read back to the host."""
        if self.shared_gate is not None:
            raise ValueError("a CGC level with a shared gate needs every domain's path (forward)")
        spec, s, d = self.specific, self.s, self.gates.groups
        w0, b0 = spec.weights[0], spec.biases[0]  # [D*S, I, O_0], [D*S, O_0]
        i, o0 = w0.shape[1], w0.shape[2]
        w = torch.cat(
            [w0.view(d, s, i, o0).transpose(1, 2).reshape(d, i, s * o0), self.gates.weights[0]],
            dim=2,
        )  # [D, I, S*O_0 + R]: domain d's specific experts side by side, then its gate
        b = torch.cat([b0.view(d, s * o0), self.gates.biases[0]], dim=1)  # [D, S*O_0 + R]
        y = grouped_linear(h, w, b, domain, ends)  # [B, S*O_0 + R]
        experts = []
        for j in range(s):  # the row's domain's j-th specific expert
            e = spec._act(y[:, j * o0 : (j + 1) * o0], 0)  # [B, O_0]
            for layer in range(1, len(spec.weights)):
                wl, bl = spec.weights[layer], spec.biases[layer]  # [D*S, I_l, O_l], [D*S, O_l]
                wj = wl.view(d, s, *wl.shape[1:])[:, j]  # [D, I_l, O_l]
                bj = bl.view(d, s, -1)[:, j]  # [D, O_l]
                e = spec._act(grouped_linear(e, wj, bj, domain, ends), layer)  # [B, O_l]
            experts.append(e)
        if self.shared is not None and h_sh is not None:
            experts.extend(self.shared.forward_grouped(h_sh).unbind(0))  # Sh x [B, H]
        probs = softmax_rows(y[:, s * o0 :].float())  # [B, R], fp32 softmax
        shared_idx = tuple(range(self.s, self.s + self.sh))
        probs, gates, topk_idx = override_dense_gate_rows(probs, routing, domain, shared_idx)
        out = mix_experts(gates, experts)  # [B, H]
        stacked = torch.stack(experts, dim=1) if return_experts else None  # [B, R, H]
        return OwnOutput(out, probs, gates, topk_idx, stacked)


@register(
    "ple",
    "PLE: domain-specific + shared experts, per-domain gates, stacked CGC levels",
    search_space=spaces.ple,
)
class PLE(nn.Module):
    """``ple_levels`` CGC levels; the last level's domain outputs feed one tower per domain.

    Level 1 reads x for every path; level l+1 reads level l's outputs.  Rows are grouped by domain
    and each row runs only its own domain's path (specific experts, gate, tower) — except levels
    that feed a shared gate (``ple_levels`` >= 2 with shared experts), whose shared gate mixes every
    domain's specific experts, so those levels compute every path (``forward_every_domain`` is the
    all-paths oracle, to the last level too).  The grouping happens on the device (rows sorted by
    domain, grouped GEMMs with group ends from ``searchsorted``): nothing is read back to the host.
    With dropout in training, the masks are drawn in this grouped layout (the same distribution as
    the per-domain loop before, not the same draws).

    ``probs``/``gates`` [B, G] are the last level's gate of the row's domain in the global expert
    index (module docstring): a row of domain d has non-zeros only on domain d's specific experts
    and the shared ones.  ``expert_outputs`` [B, G, H] holds the row's R experts (zeros elsewhere:
    a row never runs another domain's specific experts).

    Routing overrides act on the last level's gates, global indices: a knocked-out specific expert
    changes only its domain's rows; ``top_k`` keeps the k largest of the row's gate (k <= R, every
    domain); ``use_shared=False`` knocks out the shared experts.
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.num_domains = d = spec.num_domains
        self.s, self.sh = cfg.ple_specific, cfg.ple_shared
        self.num_experts = d * self.s + self.sh
        last = cfg.ple_levels - 1
        dims = [self.embedding.out_dim] + [cfg.expert_dim] * last
        self.levels = nn.ModuleList(CGCLevel(cfg, d, dims[i], i < last) for i in range(last + 1))
        self.towers = StackedMLP(d, cfg.expert_dim, cfg.tower_hidden, 1, cfg.dropout)
        if cfg.tower_init == "tied":  # every domain starts from one tower (docs/training.md)
            self.towers.tie_groups()
        cols = [[i * self.s + j for j in range(self.s)] for i in range(d)]
        shared = list(range(d * self.s, self.num_experts))
        # [D, R] global index of each domain gate's columns (a buffer not saved: old checkpoints load)
        self.register_buffer("columns", torch.tensor([c + shared for c in cols]), persistent=False)

    def expert_kinds(self) -> tuple[str, ...]:
        """One label per global expert: ``"domain:<d>"`` (only domain d's gate can weigh it) or
        ``"shared"`` (every domain's gate can)."""
        spec = tuple(f"domain:{i}" for i in range(self.num_domains) for _ in range(self.s))
        return spec + ("shared",) * self.sh

    def local_routing(self, routing: RoutingOverride | None) -> list[RoutingOverride | None] | None:
        """The override of each domain's gate in its local columns (0..S-1 specific, S.. shared).

        Raises ``ValueError`` for global indices outside [0, G), for a domain left without experts
        and for ``top_k`` larger than a domain's experts left."""
        if routing is None or routing.is_identity:
            return None
        g, s, d = self.num_experts, self.s, self.num_domains
        bad = sorted(i for i in routing.knocked_out if not 0 <= i < g)
        if bad:
            raise ValueError(
                f"knocked_out={routing.knocked_out}: indices {bad} not in [0, {g}) "
                f"(PLE experts: {d}x{s} domain-specific, then {self.sh} shared)"
            )
        out = []
        for dom in range(d):
            local = {i - dom * s for i in routing.knocked_out if dom * s <= i < (dom + 1) * s}
            local |= {s + i - d * s for i in routing.knocked_out if i >= d * s}
            if not routing.use_shared:
                local |= set(range(s, s + self.sh))
            left = s + self.sh - len(local)
            if left < 1:
                raise ValueError(
                    f"routing override leaves domain {dom} no expert (knocked_out="
                    f"{routing.knocked_out}, use_shared={routing.use_shared})"
                )
            if routing.top_k is not None and not 1 <= routing.top_k <= left:
                raise ValueError(
                    f"top_k={routing.top_k} must be in [1, {left}]: domain {dom}'s gate has "
                    f"{s + self.sh} experts, {left} left switched on"
                )
            out.append(RoutingOverride(routing.top_k, True, tuple(sorted(local))))
        return out

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        local = self.local_routing(routing)
        x = self.embedding(cat, num)  # [B, I]
        full = len(self.levels) - 1 if self.sh else 0  # levels that feed a shared gate
        h_dom = x.unsqueeze(1).expand(-1, self.num_domains, -1)  # [B, D, I] level 1: x everywhere
        h_sh: torch.Tensor | None = x  # [B, I]
        for level in self.levels[:full]:
            out = level(h_dom, h_sh, None)
            h_dom, h_sh = out.out_dom, out.out_sh  # [B, D, H], [B, H] or None
        h = x if full == 0 else select_domain(h_dom, domain)  # [B, I] the row's own path input

        sorted_domain, order = torch.sort(domain, stable=True)  # rows grouped by domain
        ends = group_ends(sorted_domain, self.num_domains)  # [D] on the device: no host read
        h = h.index_select(0, order)  # [B, I]
        h_sh = None if h_sh is None else h if full == 0 else h_sh.index_select(0, order)
        last = len(self.levels) - 1
        for i in range(full, last + 1):
            own = self.levels[i].forward_own(
                h, h_sh, sorted_domain, ends, local if i == last else None, return_expert_outputs
            )
            h, h_sh = own.out, None  # [B, H]; own-path levels have no shared gate
        logit = grouped_stack(self.towers, h, sorted_domain, ends)[:, 0]  # [B] sorted
        b = order.shape[0]
        inverse = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=order.device))
        cols = self.columns[domain]  # [B, R] global index of the row's gate columns
        zeros = x.new_zeros(x.shape[0], self.num_experts, dtype=own.probs.dtype)  # [B, G]
        experts = None
        if return_expert_outputs:
            e = own.experts[inverse]  # [B, R, H]
            experts = e.new_zeros(e.shape[0], self.num_experts, e.shape[2]).scatter(
                1, cols.unsqueeze(-1).expand(-1, -1, e.shape[2]), e
            )  # [B, G, H]
        topk = None if own.topk_idx is None else cols.gather(1, own.topk_idx[inverse])  # [B, k]
        return ModelOutput(
            logit=logit[inverse],  # [B]
            probs=zeros.scatter(1, cols, own.probs[inverse]),  # [B, G]
            gates=zeros.scatter(1, cols, own.gates[inverse]),  # [B, G]
            topk_idx=topk,
            aux_loss=x.new_zeros(()),
            expert_outputs=experts,
        )

    def forward_every_domain(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
    ) -> ModelOutput:
        """The oracle: every domain's path for every row, each row reading its own at the end.
        ``probs``/``gates``/``topk_idx`` in local columns [B, R]; ``routing`` acts on every domain's
        gate with local columns.  ``forward`` computes the same logits (to float rounding)."""
        x = self.embedding(cat, num)  # [B, I]
        h_dom = x.unsqueeze(1).expand(-1, self.num_domains, -1)  # [B, D, I]
        h_sh: torch.Tensor | None = x  # [B, I]
        last = len(self.levels) - 1
        for i, level in enumerate(self.levels):
            out = level(h_dom, h_sh, routing if i == last else None)
            h_dom, h_sh = out.out_dom, out.out_sh  # [B, D, H], [B, H] or None
        logit = select_domain(self.towers(h_dom), domain).squeeze(-1)  # [B, D, 1] -> [B]
        topk_idx = None if out.topk_idx is None else select_domain(out.topk_idx, domain)  # [B, k]
        return ModelOutput(
            logit=logit,
            probs=select_domain(out.probs, domain),  # [B, R]
            gates=select_domain(out.gates, domain),  # [B, R]
            topk_idx=topk_idx,
            aux_loss=logit.new_zeros(()),
            expert_outputs=select_domain(out.experts, domain),  # [B, R, H]
        )
