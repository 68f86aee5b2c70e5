"""CESAA up to its head: the inputs, Conditional Expert Selection and the AEA loss.

Shared by the ranking model (``cesaa.models.cesaa_model.CESAA``: head -> one logit) and the retrieval
user tower (``cesaa.retrieval.model.CESAAUserTower``: head -> an embedding), so both compute the same
function.  Shapes: B = batch, F = feature width, De = embed_dim, E = domain experts, S = shared experts,
k = experts selected per row, H = expert_dim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.experts import StackedExperts
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows
from cesaa.gating import GateOutput, NoisyTopKGate, check_routing
from cesaa.losses import balance_loss, mi_loss
from cesaa.models.baselines.blocks import fused_linear
from cesaa.models.output import RoutingOverride


@dataclass
class CESOutput:
    x: torch.Tensor  # [B, F] input features
    e_d: torch.Tensor  # [B, De] domain embedding
    h: torch.Tensor  # [B, H] (fusion=sum) or [B, 2H] (fusion=concat)
    gate: GateOutput  # probs/gates [B, E], topk_idx [B, k], load [E]
    shared_outputs: torch.Tensor | None  # [B, S, H] when computed


class CESBlock(nn.Module):
    """Feature embedding, domain embedding, the noisy top-k gate over E domain experts and the
    always-on shared experts; ``select`` fuses them into h, ``aea_loss`` is the MI (+ balance) loss."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_domains = spec.num_domains
        # set by the trainer for TrainConfig.mi_scope='global' (cesaa.distributed); not a weight
        self.joint_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.features = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_emb = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_emb.weight, std=0.05)
        f = self.features.out_dim
        self.gate = NoisyTopKGate(
            f,
            cfg.embed_dim,
            cfg.num_experts,
            spec.num_domains,
            gate_input=cfg.gate_input,
            noisy=cfg.noisy_gating,
        )
        # gate slot -> the expert it runs (merged experts share one); None: slot e runs expert e
        slots = cfg.expert_slots
        self.register_buffer(
            "slot_expert", torch.tensor(slots) if slots else None, persistent=False
        )
        n_experts = max(slots) + 1 if slots else cfg.num_experts
        self.experts = StackedExperts(n_experts, f, cfg.expert_hidden, cfg.expert_dim)
        self.shared = (
            StackedExperts(cfg.num_shared, f, cfg.expert_hidden, cfg.expert_dim)
            if cfg.num_shared > 0
            else None
        )
        self.h_dim = cfg.expert_dim * (2 if cfg.fusion == "concat" else 1)

    def select(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride,
        keep_shared_outputs: bool = False,
    ) -> CESOutput:
        """CES: route each row to k domain experts (only those run) and add the shared experts."""
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        cfg = self.cfg
        k = cfg.top_k if routing.top_k is None else routing.top_k
        knocked_out = check_routing(k, cfg.num_experts, routing.knocked_out)
        x = self.features(cat, num)  # [B, F]
        e_d = embedding_rows(self.domain_emb, domain)  # [B, De]
        # Shazeer's smooth load feeds only the balance loss: skipped when it is off or in eval
        smooth = self.training and cfg.beta > 0
        use_shared = self.shared is not None and routing.use_shared
        run_shared = self.shared is not None and (use_shared or keep_shared_outputs)
        gate_args = (k, knocked_out, None, cfg.top_k, smooth)  # k, knock-outs, gen., trained k
        stacked = self.gate.stacked_weights()
        if stacked is None:  # per-domain gate matrices: their own projection
            g = self.gate(x, e_d, domain, *gate_args)
            shared_out = self.shared.forward_all(x) if run_shared else None  # [B, S, H]
        else:
            g, shared_out = self._gate_and_shared(x, domain, stacked, run_shared, gate_args)
        # gates/probs [B, E], topk_idx [B, k]; k != cfg.top_k renormalizes over the new top-k
        h_spec = self._mix_experts(x, g)  # [B, H]
        if not use_shared:
            h_sh = torch.zeros_like(h_spec)  # [B, H]
        elif shared_out.shape[1] == 1:  # one shared expert: its output is the mean, as a view
            h_sh = shared_out[:, 0]  # [B, H]
        else:
            h_sh = shared_out.mean(dim=1)  # [B, H]
        if cfg.fusion == "sum":
            h = h_sh + h_spec  # [B, H]
        else:
            h = torch.cat([h_sh, h_spec], dim=1)  # [B, 2H]
        return CESOutput(x, e_d, h, g, shared_out)

    def _mix_experts(self, x: torch.Tensor, g: GateOutput) -> torch.Tensor:
        """sum over the selected slots e of gates[:, e] * expert_{slot_expert[e]}(x): [B, H].

        Merged slots (``cfg.expert_slots``) run their shared expert with each slot's own weight:
        sparse dispatch maps the selected slots to experts ([B, k]; one row may name an expert
        twice), dense dispatch sums the slots' gates per expert ([B, P])."""
        m = self.slot_expert
        if self.cfg.dispatch == "sparse":
            idx = g.topk_idx if m is None else m[g.topk_idx]  # [B, k] experts
            return self.experts.forward_sparse(x, idx, g.gates, pair_gates=g.topk_gates)
        gates = g.gates
        if m is not None:  # [B, E] slots -> [B, P] experts
            gates = gates.new_zeros(gates.shape[0], self.experts.groups).index_add_(1, m, gates)
        return self.experts.forward_dense_masked(x, gates)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every gate slot's expert output: x [B, F] -> [B, E, H] (merged slots repeat theirs)."""
        out = self.experts.forward_all(x)  # [B, P, H]
        return out if self.slot_expert is None else out.index_select(1, self.slot_expert)

    def _gate_and_shared(
        self,
        x: torch.Tensor,
        domain: torch.Tensor,
        stacked: tuple[torch.Tensor, torch.Tensor | None],
        run_shared: bool,
        gate_args: tuple,
    ) -> tuple[GateOutput, torch.Tensor | None]:
        """The gate's projection of x and the shared experts' first layer as one GEMM.

        The gate alone is a GEMM only E (or 2E with noise) columns wide, which runs far below
        the machine's matmul rate, forward and backward; appended to the shared experts' layer 0
        (S*H0 columns, same input x) it costs almost nothing.  The domain embedding's part of a
        "concat" gate, e_d @ W[F:], takes one of D values: a [D, n*E] table gathered per row.
        Same function as ``self.gate(x, e_d, ...)`` and ``self.shared.forward_all(x)``, to float
        rounding.  Returns the gate output and the shared outputs [B, S, H] (None unless
        ``run_shared``).
        """
        w_x, w_e = stacked  # [F, n*E], [De, n*E] or None
        parts = [(w_x, w_x.new_zeros(w_x.shape[1]))]
        if run_shared:
            parts.insert(0, self.shared.first_layer())  # [F, S*H0], [S*H0]
        # one GEMM; its backward joins the parts' gradients (no zero-filled slice gradients)
        outs = fused_linear(x, parts)  # [[B, S*H0],] [B, n*E]
        logits = outs[-1]  # [B, n*E]
        if w_e is not None:
            logits = logits + (self.domain_emb.weight @ w_e).index_select(0, domain)  # [B, n*E]
        g = self.gate.gate_from_logits(logits, *gate_args)
        if not run_shared:
            return g, None
        return g, self.shared.forward_after_first_layer(outs[0])  # [B, S, H]

    def aea_loss(
        self, g: GateOutput, domain: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """AEA: ``alpha * (-I(D;E)) + beta * balance`` and its raw terms, in training only.

        Eval returns a zero loss and no terms (nothing reads them there).  The balance term is
        computed (and logged) only when ``beta > 0``.
        """
        if not self.training:
            return torch.zeros((), device=g.probs.device), {}
        neg_mi, mi = mi_loss(g.probs, domain, self.num_domains, self.joint_reducer)
        aux_loss = self.cfg.alpha * neg_mi
        losses = {"mi": mi}
        if self.cfg.beta > 0:
            balance = balance_loss(g.gates, g.load)
            aux_loss = aux_loss + self.cfg.beta * balance
            losses["balance"] = balance.detach()
        return aux_loss, losses
