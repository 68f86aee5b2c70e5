"""Feature specification and the shared input layer: categorical embeddings + numeric features.

Every model in :mod:`cesaa.models` starts from the same ``FeatureEmbedding`` so that baselines and CESAA see
exactly the same inputs.

Shapes: B = batch, C = categorical columns, M = numeric columns, De = ``embed_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureSpec:
    """What the model needs to know about its inputs (written to ``meta.json``).

    ``cat_cardinalities[i]`` includes index 0, reserved for out-of-vocabulary / unseen values.
    """

    cat_names: tuple[str, ...]
    cat_cardinalities: tuple[int, ...]
    num_names: tuple[str, ...] = field(default_factory=tuple)
    domain_names: tuple[str, ...] = field(default_factory=lambda: ("domain_0",))

    def __post_init__(self) -> None:
        if len(self.cat_names) != len(self.cat_cardinalities):
            raise ValueError(
                f"cat_names has {len(self.cat_names)} entries but cat_cardinalities has "
                f"{len(self.cat_cardinalities)}"
            )
        for name, card in zip(self.cat_names, self.cat_cardinalities, strict=True):
            if card < 1:
                raise ValueError(
                    f"cardinality of categorical feature {name!r} must be >= 1, got {card}"
                )
        if len(self.domain_names) < 1:
            raise ValueError("domain_names must name at least one domain")

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    @property
    def num_numeric(self) -> int:
        return len(self.num_names)

    def to_dict(self) -> dict:
        return {
            "cat_names": list(self.cat_names),
            "cat_cardinalities": list(self.cat_cardinalities),
            "num_names": list(self.num_names),
            "domain_names": list(self.domain_names),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(
            cat_names=tuple(d["cat_names"]),
            cat_cardinalities=tuple(int(c) for c in d["cat_cardinalities"]),
            num_names=tuple(d.get("num_names", ())),
            domain_names=tuple(d["domain_names"]),
        )


class FeatureEmbedding(nn.Module):
    """x = concat(embedding of each categorical column, numeric columns).  Output: [B, out_dim]."""

    def __init__(self, spec: FeatureSpec, embed_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, embed_dim) for card in spec.cat_cardinalities
        )
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
        self.out_dim = embed_dim * len(spec.cat_cardinalities) + spec.num_numeric

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        # cat: [B, C] long, num: [B, M] float
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]  # C x [B, De]
        if num.shape[1] > 0:
            parts.append(num)
        return torch.cat(parts, dim=1)  # [B, C*De + M]


def mlp(
    in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None, dropout: float = 0.0
) -> nn.Sequential:
    """A plain ReLU MLP: Linear-ReLU-(Dropout) per hidden size, then an optional final Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)
