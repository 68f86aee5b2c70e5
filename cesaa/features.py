"""Feature specification and the shared input layer: categorical embeddings + numeric features.

Every model in :mod:`cesaa.models` starts from the same ``FeatureEmbedding`` so that baselines and CESAA see
exactly the same inputs.

Shapes: B = batch, C = categorical columns, M = numeric columns, De = ``embed_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cesaa.config import INPUT_NORMS


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
    """x = concat(embedding of each categorical column, numeric columns).  Output: [B, out_dim].

    All C columns share one table ``weight`` [sum_c cardinality_c, De]: column c owns the rows
    ``offsets[c] : offsets[c] + cardinality_c``, so one lookup ``weight[cat + offsets]`` embeds every
    column at once (one gather forward, one scatter backward, one parameter for the optimizer).
    Initialized exactly as C separate ``nn.Embedding`` re-drawn N(0, 0.05^2), consuming the random
    stream in the same order.  State dicts of the per-column layout (``embeddings.<c>.weight``, from
    checkpoints written before the fusion) are upgraded on load by :func:`fuse_embedding_state`.

    ``norm="batch"`` (``ModelConfig.input_norm``) adds a ``BatchNorm1d`` over the output columns,
    embeddings and numeric columns alike, so that every input column reaches the first layer at
    unit scale (the embeddings start at std 0.05 next to standard-normal numeric columns; on
    product-structured data that scale kept MMoE on the plateau, docs/training.md).  It draws no
    random numbers, so the embedding init is the same either way.
    """

    def __init__(
        self, spec: FeatureSpec, embed_dim: int, norm: str = "none", init_std: float = 0.05
    ) -> None:
        super().__init__()
        if norm not in INPUT_NORMS:
            raise ValueError(f"input norm {norm!r} must be one of {list(INPUT_NORMS)}")
        self.spec = spec
        cards = spec.cat_cardinalities
        self.weight = nn.Parameter(torch.empty(sum(cards), embed_dim))  # [sum cards, De]
        starts = [sum(cards[:c]) for c in range(len(cards))]
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.long), persistent=False)
        self.register_buffer("cards", torch.tensor(cards, dtype=torch.long), persistent=False)
        blocks = self.weight.data.split(list(cards))  # one [card_c, De] view per column
        with torch.no_grad():
            for block in blocks:  # nn.Embedding's own N(0, 1) draw, as the per-column modules did
                block.normal_()
            for block in blocks:
                block.normal_(std=init_std)
        self.out_dim = embed_dim * len(cards) + spec.num_numeric
        self.norm = nn.BatchNorm1d(self.out_dim) if norm == "batch" else None

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        # cat: [B, C] long, num: [B, M] float
        self._check_range(cat)
        b, c = cat.shape
        # index_select, not F.embedding: the same rows, and its backward is one index_add into
        # the table where embedding_dense_backward sorts the indices first (CPU)
        rows = (cat + self.offsets).reshape(-1)  # [B*C] rows of the fused table
        emb = self.weight.index_select(0, rows).reshape(b, c * self.weight.shape[1])  # [B, C*De]
        x = torch.cat([emb, num], dim=1) if num.shape[1] > 0 else emb  # [B, C*De + M]
        if self.norm is None:
            return x
        if self.training and b == 1:  # one row has no batch variance: use the running moments
            n = self.norm
            return nn.functional.batch_norm(
                x, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps
            )
        return self.norm(x)  # [B, C*De + M]

    def _check_range(self, cat: torch.Tensor) -> None:
        """An index outside its column's vocabulary would read another column's row: refuse it.

        A device assertion (no host sync on an accelerator, where it fails asynchronously); on
        CPU it fails at once and the error names the column, the row and the value.
        """
        ok = (cat >= 0) & (cat < self.cards)  # [B, C]
        try:
            torch._assert_async(ok.all(), "categorical index outside its column's vocabulary")
        except RuntimeError:
            row, col = (~ok).nonzero()[0].tolist()
            raise IndexError(
                f"categorical column {self.spec.cat_names[col]!r} has index "
                f"{int(cat[row, col])} at row {row}, outside "
                f"[0, {self.spec.cat_cardinalities[col]})"
            ) from None

    def column_weight(self, c: int) -> torch.Tensor:
        """Column c's embedding rows: [cardinality_c, De] (a view of ``weight``)."""
        return self.weight.split(list(self.spec.cat_cardinalities))[c]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        fuse_embedding_state(state_dict, prefix, len(self.spec.cat_cardinalities))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def embedding_rows(table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """``table(index)`` for a small table (the domain embedding): the same rows, [*index.shape, De].

    Gathered with ``index_select``, whose backward is one ``index_add`` into the table: a few
    microseconds for a handful of domains at batch 4096, where ``nn.Embedding``'s backward
    (``embedding_dense_backward``, CPU) takes about 0.2 ms and leaves a second thread idle
    (``python -m bench.thread_scaling``).  No ``padding_idx``/``max_norm`` handling: the tables
    read through it have neither.
    """
    flat = table.weight.index_select(0, index.reshape(-1))  # [N, De]
    return flat.view(*index.shape, table.weight.shape[1])


def fuse_embedding_state(state: dict, prefix: str, columns: int) -> dict:
    """Upgrade a ``FeatureEmbedding`` state dict from per-column tables to the fused one, in place.

    ``{prefix}embeddings.<c>.weight`` [card_c, De] for c < ``columns`` become
    ``{prefix}weight`` [sum card_c, De] (row-wise concatenation, column 0 first).  A state dict
    already fused, or without these keys, is left unchanged.  Returns ``state``.
    """
    keys = [f"{prefix}embeddings.{c}.weight" for c in range(columns)]
    if columns and all(k in state for k in keys) and f"{prefix}weight" not in state:
        state[f"{prefix}weight"] = torch.cat([state.pop(k) for k in keys])
    return state


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
