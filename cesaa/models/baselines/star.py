"""STAR (Sheng et al., CIKM 2021): partitioned normalization, star-topology FCN, auxiliary network.

Shapes: B = batch, D = domains, I = FeatureEmbedding width, De = ``embed_dim``, O = a layer's width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.experts import grouped_mlp
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows, mlp
from cesaa.models import search_spaces as spaces
from cesaa.models.baselines.blocks import reject_routing, select_domain
from cesaa.models.baselines.grouped import grouped_gemm_ok
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import register


class PartitionedNorm(nn.Module):
    """PN:  z' = (gamma * gamma_d) * (z - mu_d) / sqrt(var_d + eps) + (beta + beta_d),  d = row's domain.

    STAR trains on single-domain batches, so its batch moments are the domain's moments.  With mixed
    batches we keep that meaning: in training mu_d, var_d are the moments of domain d's rows in the
    batch (a domain with < 2 rows falls back to its running moments), and they update per-domain
    running moments (BatchNorm's momentum, unbiased variance); eval uses the running moments only.
    """

    def __init__(
        self, dim: int, num_domains: int, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.domain_gamma = nn.Parameter(torch.ones(num_domains, dim))
        self.domain_beta = nn.Parameter(torch.zeros(num_domains, dim))
        self.register_buffer("running_mean", torch.zeros(num_domains, dim))  # [D, I]
        self.register_buffer("running_var", torch.ones(num_domains, dim))  # [D, I]

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        # x: [B, I], domain: [B] long
        mean, var = self.moments(x, domain)  # [D, I] each
        x_hat = (x - mean[domain]) / torch.sqrt(var[domain] + self.eps)  # [B, I]
        scale = self.gamma * self.domain_gamma[domain]  # [B, I]
        return scale * x_hat + self.beta + self.domain_beta[domain]  # [B, I]

    def moments(self, x: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu_d, var_d [D, I]: the batch's per domain in training (updating the running ones),
        the running ones in eval."""
        if self.training:
            return self._batch_moments(x, domain)
        return self.running_mean, self.running_var

    def affine(self, x: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PN as one affine map per domain: PN(x) = x * a_d + c_d on a row of domain d, with
        a_d = gamma * gamma_d / sqrt(var_d + eps) and c_d = beta + beta_d - mu_d * a_d, [D, I] each
        (moments as in ``forward``, which this replaces when a linear layer follows: see
        :meth:`StarFCN.forward`'s ``norm``)."""
        mean, var = self.moments(x, domain)  # [D, I] each
        a = self.gamma * self.domain_gamma / torch.sqrt(var + self.eps)  # [D, I]
        return a, self.beta + self.domain_beta - mean * a  # [D, I] each

    def _batch_moments(
        self, x: torch.Tensor, domain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.running_mean.shape[0]
        ones = torch.ones(domain.shape[0], 1, dtype=x.dtype, device=x.device)  # [B, 1]
        count = x.new_zeros(d, 1).index_add_(0, domain, ones)  # [D, 1]; bincount syncs on CUDA
        mean = x.new_zeros(d, x.shape[1]).index_add(0, domain, x) / count.clamp_min(1)  # [D, I]
        sq = x.new_zeros(d, x.shape[1]).index_add(0, domain, (x - mean[domain]) ** 2)  # [D, I]
        var = sq / count.clamp_min(1)  # [D, I] biased, as BatchNorm normalizes
        seen = count >= 2  # [D, 1]
        with torch.no_grad():
            m = self.momentum
            unbiased = sq / (count - 1).clamp_min(1)
            new_mean = (1 - m) * self.running_mean + m * mean
            new_var = (1 - m) * self.running_var + m * unbiased
            self.running_mean.copy_(torch.where(seen, new_mean, self.running_mean))
            self.running_var.copy_(torch.where(seen, new_var, self.running_var))
        return torch.where(seen, mean, self.running_mean), torch.where(seen, var, self.running_var)


class StarFCN(nn.Module):
    """Layer l of domain d: weight W_l ⊙ W_{l,d}, bias b_l + b_{l,d}; ReLU between layers, linear output.

    W_{l,d} start at ones and b_{l,d} at zeros, so every domain starts from the shared FCN.  Each
    row runs through its own domain's path only (rows grouped by domain).
    """

    def __init__(self, num_domains: int, sizes: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(i, o)) for i, o in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(o)) for _, o in pairs)
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[0])  # nn.Linear's default init
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        d = num_domains
        self.domain_weights = nn.ParameterList(nn.Parameter(torch.ones(d, i, o)) for i, o in pairs)
        self.domain_biases = nn.ParameterList(nn.Parameter(torch.zeros(d, o)) for _, o in pairs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def paths(
        self, norm: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every domain's layers: weights [D, I_l, O_l] = W_l * W_{l,d}, biases [D, O_l].

        ``norm = (a, c)`` [D, I] each folds a per-domain affine map of the input (x * a_d + c_d,
        :meth:`PartitionedNorm.affine`) into layer 0: weight a_d * W_0d (row-scaled), bias
        b_0d + c_d @ W_0d, so the normalized input is never materialized."""
        weights = [w * dw for w, dw in zip(self.weights, self.domain_weights, strict=True)]
        biases = [b + db for b, db in zip(self.biases, self.domain_biases, strict=True)]
        if norm is not None:
            a, c = norm  # [D, I] each
            biases[0] = biases[0] + torch.einsum("di,dio->do", c, weights[0])  # [D, O_0]
            weights[0] = a.unsqueeze(2) * weights[0]  # [D, I, O_0]
        return weights, biases

    def forward(
        self,
        x: torch.Tensor,
        domain: torch.Tensor,
        norm: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: [B, I], domain: [B] long -> [B], each row through its own domain's path only;
        ``norm`` (a, c) [D, I]: the input is x * a_d + c_d (folded into layer 0, see ``paths``).

        Rows are sorted by domain and each layer runs as one grouped GEMM (``grouped_mlp``).  In
        training with dropout, every path runs on every row instead (``forward_all_paths``), so
        the dropout draws are those of the layout the model was trained with.
        """
        if self.training and isinstance(self.dropout, nn.Dropout):
            return self.forward_all_paths(x, domain, norm)
        weights, biases = self.paths(norm)
        grouped_gemm_ok(x.device, x.dtype)  # probe with autograd on, even when called without
        sorted_domain, order = torch.sort(domain, stable=True)  # rows grouped by domain
        h = grouped_mlp(x, order, sorted_domain, weights, biases, self._act)  # [B, 1] sorted
        return x.new_empty(x.shape[0]).index_copy(0, order, h.squeeze(1))  # [B], input order

    def _act(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self.dropout(torch.relu(h)) if layer < len(self.weights) - 1 else h

    def forward_all_paths(
        self,
        x: torch.Tensor,
        domain: torch.Tensor,
        norm: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Every domain's path on every row, then each row's own: [B, I] -> [B] (the oracle)."""
        h = x  # [B, I], fanned out to every domain's path by the first layer
        weights, biases = self.paths(norm)
        last = len(weights) - 1
        for i in range(last + 1):
            w, b = weights[i], biases[i]  # [D, I, O], [D, O]
            eq = "bi,dio->bdo" if h.dim() == 2 else "bdi,dio->bdo"
            h = torch.einsum(eq, h, w) + b  # [B, D, O]
            if i < last:
                h = self.dropout(torch.relu(h))
        return select_domain(h, domain).squeeze(-1)  # [B, D, 1] -> [B]


@register(
    "star",
    "STAR: partitioned norm, star-topology FCN, auxiliary domain network",
    search_space=spaces.star,
)
class STAR(nn.Module):
    """logit = StarFCN_d(PN_d(x)) + aux([e_d, x]); FCN widths ``star_hidden`` then 1, aux ``tower_hidden``."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        d = spec.num_domains
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        i = self.embedding.out_dim
        self.norm = PartitionedNorm(i, d)
        self.fcn = StarFCN(d, (i, *cfg.star_hidden, 1), cfg.dropout)
        self.domain_embedding = nn.Embedding(d, cfg.embed_dim)
        nn.init.normal_(self.domain_embedding.weight, std=0.05)  # as FeatureEmbedding
        self.aux = mlp(cfg.embed_dim + i, cfg.tower_hidden, 1, cfg.dropout)

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long
        reject_routing(routing, "star")
        x = self.embedding(cat, num)  # [B, I]
        main = self.fcn(x, domain, norm=self.norm.affine(x, domain))  # [B]: FCN_d(PN_d(x))
        aux = self.aux(
            torch.cat([embedding_rows(self.domain_embedding, domain), x], dim=1)
        ).squeeze(-1)  # [B]
        logit = main + aux  # [B]
        return ModelOutput(logit=logit, aux_loss=logit.new_zeros(()))
