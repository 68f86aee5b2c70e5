"""AdaSparse (Yang et al., CIKM 2022): a domain-adaptive pruner zeroes neurons per row and domain.

Paper, as implemented here (l = 0 is the input embedding, l = 1..L the hidden layers)::

    v^l   = W_p^l [e_d, h^l]                        one bias-free linear layer per pruned layer
    s^l   = sigmoid(alpha * v^l)                     "binarization"  (alpha annealed upwards)
          = beta * sigmoid(v^l)                      "scaling"       (beta >= 1 amplifies or damps)
          = beta * sigmoid(alpha * v^l)              "fusion"        (the paper's best; default)
    pi^l  = s^l * 1[s^l >= epsilon]                  weighting factor; below epsilon: pruned (0)
    h~^l  = pi^l * h^l                               the layer's neurons after pruning
    h^0   = x (the feature embedding);  h^{l+1} = ReLU(W^l [e_d, h~^0] or W^l h~^l + b^l)
    logit = w^T h~^L + b
    alpha_t = alpha_0 + t * delta_alpha              t = training steps so far

Flexible sparsity regularization (off by default, as in Scenario-Wise Rec's benchmark)::

    r^l   = mean(1[pi^l = 0])                        layer l's pruned fraction (hard, for the band)
    r~^l  = mean(1 - s^l / s_max)                    its differentiable proxy (s_max = 1 or beta)
    aux   = lambda * sum_l 1[r^l outside [r_min, r_max]] * |r~^l - (r_min + r_max) / 2|

Deviations and choices, each deliberate:

- e_d is a learned embedding of the domain id (the paper's domain-aware features may also include
  domain-side statistics; our inputs have none).  The DNN's input is [e_d, pi^0 * x], so the domain
  reaches the DNN directly as well as through the pruner, as in the paper's figure.
- pi = s * 1[s >= epsilon] sets pruned neurons to exactly 0.  Scenario-Wise Rec's ``Pruner`` computes
  ``s * sign(s - epsilon)``, which turns small factors into *negative* ones (-s) instead of 0; we
  follow the paper.  The indicator has no gradient, so pruned neurons get none (as in the paper).
- alpha is a buffer that grows only in training forward passes (Scenario-Wise Rec also grows it in
  evaluation); it is saved with the weights, so a reloaded checkpoint prunes identically.
- The regularizer's band test uses the hard fraction r^l and its gradient the soft proxy r~^l;
  the paper states the band penalty on r^l without saying how it is made differentiable.
- No batch normalization in the DNN (Scenario-Wise Rec adds one per layer; the paper's equations do
  not have it) so that evaluation does not depend on batch composition.

Shapes: B = batch, I = FeatureEmbedding width, De = ``embed_dim``, N_l = width of layer l.
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


def weighting_factor(
    v: torch.Tensor, form: str, alpha: float | torch.Tensor, beta: float, epsilon: float
) -> torch.Tensor:
    """AdaSparse's pi from the pruner's pre-activation ``v`` [..., N]: ``s * 1[s >= epsilon]``.

    ``form``: ``binarization`` s = sigmoid(alpha v) in (0, 1); ``scaling`` s = beta sigmoid(v) in
    (0, beta); ``fusion`` s = beta sigmoid(alpha v) in (0, beta).  Factors below ``epsilon`` are
    exactly 0.  Returns a tensor shaped like ``v``.
    """
    if form == "binarization":
        s = torch.sigmoid(alpha * v)
    elif form == "scaling":
        s = beta * torch.sigmoid(v)
    elif form == "fusion":
        s = beta * torch.sigmoid(alpha * v)
    else:
        raise ValueError(f"form={form!r} must be one of ['binarization', 'scaling', 'fusion']")
    return s * (s >= epsilon).to(s.dtype)


def band_penalty(
    pi: torch.Tensor, soft_off: torch.Tensor, r_min: float, r_max: float
) -> torch.Tensor:
    """One layer's sparsity penalty: |mean(soft_off) - mid| when the pruned fraction is off-band.

    ``pi`` [B, N] the weighting factors (pruned = 0); ``soft_off`` [B, N] in [0, 1] the
    differentiable proxy of being pruned.  0 when mean(pi == 0) is within [r_min, r_max].
    """
    r = (pi == 0).float().mean()
    outside = (r < r_min) | (r > r_max)
    return outside.to(soft_off.dtype) * (soft_off.mean() - (r_min + r_max) / 2).abs()


def search_space(trial: Any) -> dict[str, object]:
    """AdaSparse's tuning space: optimization, widths and the weighting factor's form and scale."""
    widths = str(trial.suggest_categorical("hidden", ["64,32", "128,64", "256,128,64"]))
    hidden = tuple(int(w) for w in widths.split(","))
    return {
        **common(trial),
        "expert_hidden": hidden[:-1],
        "tower_hidden": hidden[-1:],
        "adasparse_form": trial.suggest_categorical(
            "adasparse_form", ["binarization", "scaling", "fusion"]
        ),
        "adasparse_epsilon": trial.suggest_categorical("adasparse_epsilon", [0.001, 0.01, 0.05]),
        "adasparse_beta": trial.suggest_categorical("adasparse_beta", [1.0, 2.0, 3.0]),
        "adasparse_sparsity": trial.suggest_categorical("adasparse_sparsity", [0.0, 0.01, 0.1]),
    }


@register(
    "adasparse",
    "AdaSparse: a domain-aware pruner zeroes each layer's neurons per row (Yang et al. 2022)",
    search_space=search_space,
)
class AdaSparse(nn.Module):
    """The DNN (widths ``expert_hidden + tower_hidden``) with a pruner on the input and each hidden layer.

    ``forward`` reports ``losses["pruned"]``: the mean over pruned layers of the fraction of factors
    that are exactly 0 in this batch; ``aux_loss`` is the sparsity regularizer (0 when off).
    """

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_embedding = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.05)  # as FeatureEmbedding
        i, de = self.embedding.out_dim, cfg.embed_dim
        widths = (*cfg.expert_hidden, *cfg.tower_hidden)
        sizes = (de + i, *widths)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = nn.Linear(sizes[-1], 1)
        # pruner l reads [e_d, h^l] and scores each of h^l's neurons
        self.pruners = nn.ModuleList(nn.Linear(de + n, n, bias=False) for n in (i, *widths))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.register_buffer("alpha", torch.tensor(float(cfg.adasparse_alpha)))

    def prune(
        self, layer: int, e_d: torch.Tensor, h: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighting factors pi [B, N] of ``h`` [B, N] for pruned layer ``layer`` and the proxy off-mass."""
        cfg = self.cfg
        v = self.pruners[layer](torch.cat([e_d, h], dim=1))  # [B, N]
        pi = weighting_factor(v, cfg.adasparse_form, alpha, cfg.adasparse_beta,
                              cfg.adasparse_epsilon)  # fmt: skip
        slope = 1.0 if cfg.adasparse_form == "scaling" else alpha
        soft_off = 1 - torch.sigmoid(slope * v)  # [B, N] in (0, 1)
        return pi, soft_off

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        reject_routing(routing, "adasparse")
        cfg = self.cfg
        x = self.embedding(cat, num)  # [B, I]
        e_d = embedding_rows(self.domain_embedding, domain)  # [B, De]
        alpha = self.alpha.clone()  # this step's slope (the buffer is annealed in place below)
        pi, soft = self.prune(0, e_d, x, alpha)  # [B, I] each
        factors, softs = [pi], [soft]
        h = torch.cat([e_d, pi * x], dim=1)  # [B, De + I]
        for i, layer in enumerate(self.layers):
            z = self.dropout(torch.relu(layer(h)))  # [B, N_l]
            pi, soft = self.prune(i + 1, e_d, z, alpha)  # [B, N_l] each
            factors.append(pi)
            softs.append(soft)
            h = pi * z  # [B, N_l]
        logit = self.out(h).squeeze(-1)  # [B]
        pruned = torch.stack([(p == 0).float().mean() for p in factors]).mean()
        aux = logit.new_zeros(())
        if cfg.adasparse_sparsity > 0:
            pens = [band_penalty(p, s, cfg.adasparse_r_min, cfg.adasparse_r_max)
                    for p, s in zip(factors, softs, strict=True)]  # fmt: skip
            aux = cfg.adasparse_sparsity * torch.stack(pens).sum()
        if self.training:
            with torch.no_grad():
                self.alpha.add_(cfg.adasparse_alpha_step)  # anneal the slope, one step per batch
        return ModelOutput(logit=logit, aux_loss=aux, losses={"pruned": pruned.detach()})
