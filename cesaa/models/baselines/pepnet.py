"""PEPNet (Chang et al., KDD 2023): EPNet gates the embeddings by domain, PPNet each layer by persona.

Paper, as implemented here (one task: the click; domains enter through EPNet)::

    Gate NU   U(z)     = gamma * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2)        gamma = 2
    EPNet     delta_d  = U_ep([e_d, sg(E)])                                   [B, F], one per field
              O_ep     = delta_d (x) E                                        field f's gate scales
                                                                              field f's embedding
    PPNet     O_prior  = [E(user_id), E(item_id)]                             persona prior
              delta^l  = U_pp^l([O_prior, sg(O_ep)])                          [B, N_l]
              H^0      = O_ep;   H^{l+1} = ReLU((delta^l (x) H^l) W^l + b^l)   l = 0..L-1
              logit    = (delta^L (x) H^L) w + b

``sg`` is stop-gradient: the gates read the embeddings but do not train them through the gate path.
With gamma = 2 a gate of exactly 1 (sigmoid(0)) leaves its input unchanged, so a gate can damp or
amplify each field or hidden unit.

Deviations and choices, each deliberate:

- Fields: each categorical column is one field (its ``embed_dim`` values share one gate) and each
  numeric column is its own field.  Scenario-Wise Rec's EPNet gates every embedding dimension
  separately; the paper's delta_domain has one entry per feature.
- Domain-side features F_d: a learned embedding e_d of the domain id (our inputs have no other
  domain-side features, e.g. domain statistics).
- PPNet prior: the embeddings of the columns named by ``pepnet_prior`` (comma-separated); ``auto``
  takes ``user_id`` and ``item_id`` when the input has them, else every categorical column.  The
  paper also uses the author id, which our data does not have.  The prior shares the embedding
  tables with the DNN input.
- Single task: the paper splits delta^l into one slice per task tower; we have one tower, so each
  delta^l covers the whole layer.  Widths: ``expert_hidden + tower_hidden``.
- ``pepnet_ppnet=False`` drops PPNet's gates (every delta^l = 1): EPNet and a plain DNN, the
  ablation that shows what the gates cost on product-structured data (docs/model.md).
- Gate NU's hidden width equals its output width (the paper does not fix it; Scenario-Wise Rec's
  choice).  Scenario-Wise Rec gates each layer's output; the paper (and we) gate each layer's input,
  which also gates the output layer's input.  Scenario-Wise Rec's MLP puts a BatchNorm after each
  hidden Linear; ours (as every baseline's here) has none.

Shapes: B = batch, C = categorical columns, M = numeric columns, F = C + M fields, De = ``embed_dim``,
I = C * De + M, P = prior width, N_l = width of layer l.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows
from cesaa.models.baselines.blocks import reject_routing
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register
from cesaa.models.search_spaces import common

AUTO_PRIOR = ("user_id", "item_id")


class GateNU(nn.Module):
    """U(z) = gamma * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2): [B, in_dim] -> [B, out_dim] in (0, gamma)."""

    def __init__(self, in_dim: int, out_dim: int, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma
        self.hidden = nn.Linear(in_dim, out_dim)
        self.out = nn.Linear(out_dim, out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(z))))  # [B, out_dim]


def prior_columns(spec: FeatureSpec, prior: str) -> tuple[int, ...]:
    """Indices of the categorical columns that form PPNet's persona prior (see module docstring)."""
    names = list(spec.cat_names)
    if prior == "auto":
        picked = [n for n in AUTO_PRIOR if n in names]
        return tuple(names.index(n) for n in picked) if picked else tuple(range(len(names)))
    wanted = [n.strip() for n in prior.split(",") if n.strip()]
    missing = [n for n in wanted if n not in names]
    if not wanted or missing:
        raise ValueError(
            f"pepnet_prior={prior!r}: columns {missing or wanted} are not categorical inputs; "
            f"choose from {names} or 'auto'"
        )
    return tuple(names.index(n) for n in wanted)


def search_space(trial: Any) -> dict[str, object]:
    """PEPNet's tuning space: optimization, widths and the gate's range gamma."""
    widths = str(trial.suggest_categorical("hidden", ["64,32", "128,64", "256,128,64"]))
    hidden = tuple(int(w) for w in widths.split(","))
    return {
        **common(trial),
        "expert_hidden": hidden[:-1],
        "tower_hidden": hidden[-1:],
        "pepnet_gamma": trial.suggest_categorical("pepnet_gamma", [1.5, 2.0, 3.0]),
    }


@register(
    "pepnet",
    "PEPNet: EPNet domain gates on embeddings + PPNet persona gates on every layer (Chang et al. 2023)",
    search_space=search_space,
)
class PEPNet(nn.Module):
    """EPNet then a PPNet-gated DNN; no routing, so routing overrides are rejected."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.embed_dim = cfg.embed_dim
        self.num_cat = len(spec.cat_names)
        self.prior = prior_columns(spec, cfg.pepnet_prior)
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_embedding = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.05)  # as FeatureEmbedding
        i, de = self.embedding.out_dim, cfg.embed_dim
        fields = self.num_cat + spec.num_numeric
        self.ep_gate = GateNU(de + i, fields, cfg.pepnet_gamma)
        sizes = (i, *cfg.expert_hidden, *cfg.tower_hidden)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = nn.Linear(sizes[-1], 1)
        p = de * len(self.prior)
        self.pp_gates = (  # empty with pepnet_ppnet=False: every layer's gate is 1
            nn.ModuleList(GateNU(p + i, n, cfg.pepnet_gamma) for n in sizes)
            if cfg.pepnet_ppnet
            else nn.ModuleList()
        )
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def field_gates(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """EPNet's delta_d [B, F]: one gate per field from [e_d, sg(x)]; x [B, I]."""
        e_d = embedding_rows(self.domain_embedding, domain)  # [B, De]
        return self.ep_gate(torch.cat([e_d, x.detach()], dim=1))  # [B, F]

    def expand(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-field gates [B, F] -> per-input-value gates [B, I] (a field's De values share one)."""
        cat_part = delta[:, : self.num_cat].repeat_interleave(self.embed_dim, dim=1)  # [B, C*De]
        return torch.cat([cat_part, delta[:, self.num_cat :]], dim=1)  # [B, I]

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        reject_routing(routing, "pepnet")
        x = self.embedding(cat, num)  # [B, I]
        o_ep = self.expand(self.field_gates(x, domain)) * x  # [B, I]
        gates = self.ppnet_gates(x, o_ep)  # len(layers) + 1 x [B, N_l], or [] without PPNet
        h = o_ep  # [B, I]
        for i, layer in enumerate(self.layers):
            h = self.dropout(torch.relu(layer(gates[i] * h if gates else h)))  # [B, N_{i+1}]
        logit = self.out(gates[-1] * h if gates else h).squeeze(-1)  # [B]
        return ModelOutput(logit=logit, aux_loss=logit.new_zeros(()))

    def ppnet_gates(self, x: torch.Tensor, o_ep: torch.Tensor) -> list[torch.Tensor]:
        """PPNet's delta^l for every layer's input from z = [O_prior, sg(O_ep)]; [] when
        ``pepnet_ppnet`` is off."""
        if not self.pp_gates:
            return []
        de = self.embed_dim
        prior = [x[:, c * de : (c + 1) * de] for c in self.prior]  # P/De x [B, De]
        z = torch.cat([*prior, o_ep.detach()], dim=1)  # [B, P + I]
        return [gate(z) for gate in self.pp_gates]
