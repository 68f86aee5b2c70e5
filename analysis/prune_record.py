"""Pruning evidence and plans for outside models, read from a routing record (no live model).

Shapes: n = rows of the record's expert-output sample, E = experts of the primary gate, H = expert
output width, D = domains.

A record written by the hook API (``analysis.records.hooks.record`` with ``experts=`` and
``sample_size=``) keeps, for a seeded sample of rows, each expert's output and the gate's weights:
enough for the descriptive half of ``analysis.expert_evidence`` (gate weight and selections per
domain, REAP score, top-domain share, nearest expert by CKA and routing overlap) and for the plans
that need no re-run (``reap``: remove the lowest REAP scores; ``merge``: merge the clusters of
most CKA-similar experts).  What needs the model — knock-out costs, the greedy plan, dead ReLU
units, the expert-alone loss, and every measured cost — is NaN here or refused, and the plan is
exported as JSON (``ExpertPlan.to_dict``) for the model's own code to apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.collection import EmbeddingSample
from analysis.expert_evidence import evidence_table
from analysis.prune_plans import cka_clusters, reap_order
from analysis.records.collection import record_sample
from analysis.records.reader import Record
from analysis.similarity import expert_similarity
from cesaa.pruning import ExpertPlan

RECORD_CRITERIA = ("reap", "merge")


def _weights(sample: EmbeddingSample) -> np.ndarray:
    g = sample.gates if sample.gates is not None else sample.probs
    if g is None or sample.expert_outputs is None:
        raise ValueError(
            "the record's sample has no gate weights or no expert outputs: record it with "
            "experts={gate: [module names]} and sample_size > 0 (analysis.records.hooks.record)"
        )
    return g


def sample_evidence(
    sample: EmbeddingSample,
    domain_names: Sequence[str],
    expert_labels: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evidence_table`` of a record's sample; the columns that need the model are NaN."""
    g = _weights(sample)
    e = g.shape[1]
    nan = np.full(e, np.nan)
    return evidence_table(
        gates=g,
        domain=sample.domain,
        topk_idx=sample.topk_idx,
        output_norm=np.linalg.norm(sample.expert_outputs, axis=2),
        expert_outputs=sample.expert_outputs,
        dead_units=nan,
        own_logloss=nan,
        alone_logloss=nan,
        domain_names=domain_names,
        expert_labels=expert_labels,
    )


def sample_plan(sample: EmbeddingSample, keep: int, criterion: str) -> ExpertPlan:
    """The ``criterion`` plan (``"reap"`` or ``"merge"``) keeping ``keep`` experts."""
    if criterion not in RECORD_CRITERIA:
        raise ValueError(
            f"--criterion {criterion!r}: a record (no model) supports {list(RECORD_CRITERIA)}; "
            "the greedy knock-out needs the live model"
        )
    g = _weights(sample)
    e = g.shape[1]
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= e:
        raise ValueError(f"--keep {keep!r} must be in [1, {e}] (the experts the gate has)")
    if criterion == "reap":
        order = reap_order(g, np.linalg.norm(sample.expert_outputs, axis=2))
        return ExpertPlan(remove=tuple(order[: e - keep]), criterion="reap")
    levels = cka_clusters(expert_similarity(sample.expert_outputs, "cka"))
    groups = tuple(tuple(c) for c in levels[e - keep] if len(c) > 1)
    return ExpertPlan(merge=groups, criterion="merge")


def record_plan(record: Record, keep: int, criterion: str) -> ExpertPlan:
    """``sample_plan`` of the record's primary gate (``ValueError`` without a sample)."""
    sample = record_sample(record)
    if sample is None:
        raise ValueError(
            f"{record.path}: the record has no expert-output sample (record it with sample_size "
            "> 0 and experts=...)"
        )
    return sample_plan(sample, keep, criterion)
