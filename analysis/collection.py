"""What one pass of a model over a table produced: a ``Collection`` and its ``EmbeddingSample``.

Shapes: N = rows of the table, n = rows in the embedding sample, D = domains, E = selectable experts,
k = experts selected per row, S = shared experts, H = expert width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.alarms import prediction_std_per_domain
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride
from cesaa.routing.stats import RoutingStats

NO_LABELS = (
    "No labels in this record: it holds routing without a 0/1 label per row (a language model's "
    "tokens, say), so AUC, logloss and the label columns do not apply."
)


@dataclass
class EmbeddingSample:
    """A seeded random subsample of rows, kept row by row (``n`` = the sample size).

    - ``rows``: [n] int64 positions in the table, ascending.
    - ``domain``: [n] int64; ``label``: [n] float; ``prediction``: [n] predicted probability.
    - ``probs``: [n, E] dense gate probabilities; ``gates``: [n, E] the weights that mixed the
      experts (k non-zeros per row for top-k gates); ``topk_idx``: [n, k] selected experts (top-k
      gates only); ``expert``: [n] the top-1 expert.  ``None`` for models without a gate.
    - ``expert_outputs``: [n, E, H] every selectable expert's output (``None`` when the model does
      not return them); ``shared_outputs``: [n, S, H] every shared expert's output, or ``None``.
    """

    rows: np.ndarray
    domain: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    probs: np.ndarray | None = None
    gates: np.ndarray | None = None
    topk_idx: np.ndarray | None = None
    expert: np.ndarray | None = None
    expert_outputs: np.ndarray | None = None
    shared_outputs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of nested lists (``None`` for what is missing)."""
        return {
            name: (None if getattr(self, name) is None else getattr(self, name).tolist())
            for name in self.__dataclass_fields__
        }


@dataclass
class Collection:
    """What one pass of a model over a table produced.

    - ``stats``: the routing statistics (with labels and predictions), or ``None`` when the model
      has no gate; then ``has_routing`` is False and ``no_routing_reason`` says why.
    - ``predictions`` [N] float32 predicted probabilities (as ``cesaa.train.predict``);
      ``labels`` [N] float32 (NaN, with ``has_labels`` False, in a record without labels: then
      ``metrics()`` raises ``ValueError(NO_LABELS)``); ``domain`` [N] int64.
    - ``top1`` [N] int64 the top-1 expert of every row (``None`` without a gate).
    - ``sample``: the embedding sample, or ``None`` when ``sample_size=0``.
    - ``capabilities``: ``routing_capabilities(model)``; ``routing``: the override used.
    """

    stats: RoutingStats | None
    predictions: np.ndarray
    labels: np.ndarray
    domain: np.ndarray
    top1: np.ndarray | None
    sample: EmbeddingSample | None
    num_domains: int
    capabilities: dict[str, Any]
    routing: RoutingOverride | None = None
    domain_names: tuple[str, ...] | None = None
    has_labels: bool = True
    has_routing: bool = field(init=False)
    no_routing_reason: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.has_routing = self.stats is not None
        self.no_routing_reason = (
            None
            if self.has_routing
            else f"model {self.capabilities.get('name')!r} has no gate: there is no routing to "
            "analyse (only its predictions were collected)"
        )

    @property
    def rows(self) -> int:
        return int(self.predictions.shape[0])

    def metrics(self, domain_names: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
        """Overall and per-domain AUC / logloss of the collected predictions (flat keys, as
        ``cesaa.train.evaluate``); names default to ``domain_names`` or ``domain_<d>``."""
        if not self.has_labels:
            raise ValueError(NO_LABELS)
        names = domain_names if domain_names is not None else self.domain_names
        if names is None:
            names = tuple(f"domain_{d}" for d in range(self.num_domains))
        return evaluate_predictions(self.labels, self.predictions, self.domain, domain_names=names)

    def prediction_std_per_domain(self) -> np.ndarray:
        """[D] standard deviation of the predictions within each domain (NaN without rows)."""
        return prediction_std_per_domain(self.predictions, self.domain, self.num_domains)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary: capabilities, rows, the stats' sums and the sample's size."""
        return {
            "rows": self.rows,
            "num_domains": self.num_domains,
            "domain_names": None if self.domain_names is None else list(self.domain_names),
            "capabilities": dict(self.capabilities),
            "routing": None if self.routing is None else _routing_dict(self.routing),
            "has_routing": self.has_routing,
            "no_routing_reason": self.no_routing_reason,
            "stats": None if self.stats is None else self.stats.to_dict(),
            "sample_size": 0 if self.sample is None else len(self.sample),
        }


def _routing_dict(r: RoutingOverride) -> dict[str, Any]:
    return {"top_k": r.top_k, "use_shared": r.use_shared, "knocked_out": list(r.knocked_out)}
