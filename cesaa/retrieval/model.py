"""Two-tower retrieval: a multi-domain user tower (CESAA, MMoE or an MLP) and an item tower MLP.

The paper's second setting: CES/AEA inside the user tower of a two-tower model, dot-product score,
in-batch softmax (see ``cesaa.retrieval.train``).  The towers are built from the same parts as the
ranking models (CESAA's ``CESBlock``: inputs, CES and the AEA loss; MMoE's ``StackedMLP``
experts, gates and towers), read the same ``ModelConfig`` fields, and end in an embedding instead
of a logit.

Shapes: B = batch, Fu / Fi = user / item feature width, De = ``embed_dim``, D = domains,
E = selectable experts, k = experts selected per row, H = ``expert_dim``, d = ``out_dim``.

    u = user_tower(user features, domain)    [B, d]   (CESAA / MMoE / MLP)
    v = item_tower(item features)            [B, d]   (MLP)
    u, v L2-normalized when ``normalize``;  score(u, v) = <u, v>

The forward takes whole table rows (``cat``, ``num``, ``domain``) like every ranking model and splits
the columns between the towers, so ``predict``/``analysis.collect`` run on a ``TwoTower`` too (its
``logit`` is the score of each row's own user-item pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows, mlp
from cesaa.models.baselines.blocks import (
    StackedMLP,
    override_dense_gate,
    reject_routing,
    select_domain,
)
from cesaa.models.ces import CESBlock
from cesaa.models.output import ModelOutput, RoutingOverride

USER_TOWERS = ("cesaa", "mmoe", "mlp")
# MovieLens: what describes the user (the rest -- item_id, year, genres -- describes the item)
MOVIELENS_USER_FEATURES = ("user_id", "gender", "occupation", "zip1")


@dataclass(frozen=True)
class TowerSplit:
    """Which table columns feed which tower: positions in ``cat`` / ``num`` and the sub-specs."""

    user_cat: tuple[int, ...]
    user_num: tuple[int, ...]
    item_cat: tuple[int, ...]
    item_num: tuple[int, ...]
    user_spec: FeatureSpec
    item_spec: FeatureSpec


def split_features(spec: FeatureSpec, user_features: Sequence[str]) -> TowerSplit:
    """Columns named in ``user_features`` go to the user tower, every other column to the item tower.

    Raises ``ValueError`` for unknown names or when a tower would get no categorical column.
    """
    names = set(spec.cat_names) | set(spec.num_names)
    unknown = sorted(set(user_features) - names)
    if unknown:
        raise ValueError(
            f"user_features {unknown} are not columns of the data; columns: "
            f"{[*spec.cat_names, *spec.num_names]}"
        )
    is_user = set(user_features)
    uc = tuple(i for i, n in enumerate(spec.cat_names) if n in is_user)
    ic = tuple(i for i, n in enumerate(spec.cat_names) if n not in is_user)
    un = tuple(i for i, n in enumerate(spec.num_names) if n in is_user)
    inum = tuple(i for i, n in enumerate(spec.num_names) if n not in is_user)
    if not uc or not ic:
        raise ValueError(
            f"each tower needs a categorical column: user gets {[spec.cat_names[i] for i in uc]}, "
            f"item gets {[spec.cat_names[i] for i in ic]}"
        )

    def sub(cat: tuple[int, ...], num: tuple[int, ...]) -> FeatureSpec:
        return FeatureSpec(
            cat_names=tuple(spec.cat_names[i] for i in cat),
            cat_cardinalities=tuple(spec.cat_cardinalities[i] for i in cat),
            num_names=tuple(spec.num_names[i] for i in num),
            domain_names=spec.domain_names,
        )

    return TowerSplit(uc, un, ic, inum, sub(uc, un), sub(ic, inum))


@dataclass
class TowerOutput:
    """A user tower's embedding [B, d] and, for gated towers, its routing (as ``ModelOutput``)."""

    embedding: torch.Tensor
    probs: torch.Tensor | None = None
    gates: torch.Tensor | None = None
    topk_idx: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None


class CESAAUserTower(CESBlock):
    """CESAA's inputs, CES and AEA (``cesaa.models.ces.CESBlock``, shared with the ranking model)
    with a head whose last layer outputs ``out_dim`` values instead of one logit."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec, out_dim: int) -> None:
        super().__init__(cfg, spec)
        if cfg.head == "shared":
            self.head = mlp(self.h_dim + cfg.embed_dim, cfg.tower_hidden, out_dim, cfg.dropout)
        else:  # per_domain: e_d would only be a constant bias inside a domain's own head
            self.heads = StackedMLP(
                spec.num_domains, self.h_dim, cfg.tower_hidden, out_dim, cfg.dropout
            )
            if cfg.tower_init == "tied":  # as the ranking model's per-domain towers
                self.heads.tie_groups()

    def forward(
        self, cat: torch.Tensor, num: torch.Tensor, domain: torch.Tensor, routing: RoutingOverride
    ) -> TowerOutput:
        # cat: [B, Cu] long, num: [B, Mu], domain: [B] long
        c = self.select(cat, num, domain, routing)  # h [B, H|2H], gate probs/gates [B, E]
        if self.cfg.head == "shared":
            emb = self.head(torch.cat([c.h, c.e_d], dim=1))  # [B, d]
        else:
            emb = select_domain(self.heads(c.h), domain)  # [B, D, d] -> [B, d]
        aux, losses = self.aea_loss(c.gate, domain)
        return TowerOutput(emb, c.gate.probs, c.gate.gates, c.gate.topk_idx, aux, losses)


class MMoEUserTower(nn.Module):
    """MMoE (``cesaa.models.baselines.mmoe``) ending in a per-domain embedding tower."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec, out_dim: int) -> None:
        super().__init__()
        d, h = spec.num_domains, cfg.expert_dim
        self.num_experts = cfg.mmoe_experts or d
        self.features = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        i = self.features.out_dim
        self.experts = StackedMLP(self.num_experts, i, cfg.expert_hidden, h, cfg.dropout, True)
        self.gates = StackedMLP(d, i, (), self.num_experts)  # D stacked linear gates
        self.towers = StackedMLP(d, h, cfg.tower_hidden, out_dim, cfg.dropout)
        if cfg.tower_init == "tied":  # as the ranking MMoE's (docs/training.md)
            self.towers.tie_groups()

    def forward(
        self, cat: torch.Tensor, num: torch.Tensor, domain: torch.Tensor, routing: RoutingOverride
    ) -> TowerOutput:
        x = self.features(cat, num)  # [B, Fu]
        experts = self.experts(x)  # [B, n, H]
        probs = torch.softmax(select_domain(self.gates(x), domain).float(), dim=-1)  # [B, n]
        probs, gates, topk_idx = override_dense_gate(probs, routing)
        mixed = torch.einsum("bn,bnh->bh", gates.to(experts.dtype), experts)  # [B, H]
        emb = select_domain(self.towers(mixed), domain)  # [B, D, d] -> [B, d]
        return TowerOutput(emb, probs, gates, topk_idx, emb.new_zeros(()), {})


class MLPUserTower(nn.Module):
    """One MLP on [user features, domain embedding] (``cesaa.models.baselines.mlp``)."""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec, out_dim: int) -> None:
        super().__init__()
        self.features = FeatureEmbedding(spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std)
        self.domain_emb = nn.Embedding(spec.num_domains, cfg.embed_dim)
        nn.init.normal_(self.domain_emb.weight, std=0.05)
        in_dim = self.features.out_dim + cfg.embed_dim
        self.net = mlp(in_dim, cfg.expert_hidden + cfg.tower_hidden, out_dim, cfg.dropout)

    def forward(
        self, cat: torch.Tensor, num: torch.Tensor, domain: torch.Tensor, routing: RoutingOverride
    ) -> TowerOutput:
        reject_routing(None if routing.is_identity else routing, "mlp")
        x = torch.cat(
            [self.features(cat, num), embedding_rows(self.domain_emb, domain)], dim=1
        )  # [B, Fu + De]
        emb = self.net(x)  # [B, d]
        return TowerOutput(emb, aux_loss=emb.new_zeros(()), losses={})


_TOWERS = {"cesaa": CESAAUserTower, "mmoe": MMoEUserTower, "mlp": MLPUserTower}


class TwoTower(nn.Module):
    """User tower ``cfg.name`` in {cesaa, mmoe, mlp} and an item-tower MLP, dot-product score.

    ``user_features``: names of the columns describing the user (default: MovieLens'); all other
    columns describe the item.  The item tower is ``mlp(item features, expert_hidden +
    tower_hidden, out_dim)``, the same depth as the MLP user tower.  With ``normalize`` both
    embeddings are L2-normalized (cosine score; pair it with a softmax temperature, see
    ``cesaa.retrieval.train``).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        spec: FeatureSpec,
        *,
        user_features: Sequence[str] = MOVIELENS_USER_FEATURES,
        out_dim: int = 32,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if cfg.name not in _TOWERS:
            raise ValueError(f"user tower {cfg.name!r} must be one of {list(USER_TOWERS)}")
        if out_dim < 1:
            raise ValueError(f"out_dim={out_dim} must be >= 1")
        self.cfg = cfg
        self.spec = spec
        self.model_name = f"two_tower_{cfg.name}"
        self.columns = split_features(spec, user_features)
        self.out_dim = out_dim
        self.normalize = normalize
        self.user_tower = _TOWERS[cfg.name](cfg, self.columns.user_spec, out_dim)
        item_spec = self.columns.item_spec
        self.item_features = FeatureEmbedding(
            item_spec, cfg.embed_dim, cfg.input_norm, cfg.embed_init_std
        )
        hidden = cfg.expert_hidden + cfg.tower_hidden
        self.item_net = mlp(self.item_features.out_dim, hidden, out_dim, cfg.dropout)
        cols = self.columns
        for name, idx in (
            ("user_cat", cols.user_cat),
            ("user_num", cols.user_num),
            ("item_cat", cols.item_cat),
            ("item_num", cols.item_num),
        ):  # column positions, moved with the model by .to(device)
            self.register_buffer(f"_{name}", torch.tensor(idx, dtype=torch.long), persistent=False)

    def _norm(self, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e, dim=-1) if self.normalize else e

    def user_embedding(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
    ) -> TowerOutput:
        """The user tower on whole table rows (the item columns are ignored).  embedding [B, d]."""
        out = self.user_tower(
            cat.index_select(1, self._user_cat),
            num.index_select(1, self._user_num),
            domain,
            routing if routing is not None else RoutingOverride(),
        )
        out.embedding = self._norm(out.embedding)
        return out

    def item_embedding(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """The item tower on whole table rows (the user columns are ignored): [B, d]."""
        x = self.item_features(
            cat.index_select(1, self._item_cat), num.index_select(1, self._item_num)
        )
        return self._norm(self.item_net(x))  # [B, d]

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        """Score of each row's own (user, item) pair: ``logit`` [B] = <u, v>; ``embedding`` = u."""
        if return_expert_outputs:
            raise ValueError("TwoTower does not return expert outputs")
        u = self.user_embedding(cat, num, domain, routing)
        v = self.item_embedding(cat, num)  # [B, d]
        return ModelOutput(
            logit=(u.embedding * v).sum(dim=-1),  # [B]
            probs=u.probs,
            gates=u.gates,
            topk_idx=u.topk_idx,
            aux_loss=u.aux_loss,
            losses=u.losses or {},
            embedding=u.embedding,
        )
