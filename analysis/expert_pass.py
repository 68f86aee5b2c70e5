"""Run a live model over rows once and gather what the per-expert evidence needs.

Shapes: N = rows, E = experts (gate slots), k = experts selected per row, H = expert width,
n = rows whose expert outputs are kept for the similarity (a seeded sample).

The model-facing half of ``analysis.expert_evidence`` (which holds the math): one gradient-free
pass for the gates, the experts' output norms and the predictions; then, per expert, its own rows
through its ReLU layers (dead units, CESAA-family models) and through the model with the expert
alone (underfitting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.capabilities import expert_names, not_applicable, routing_capabilities
from analysis.expert_evidence import dead_unit_share, evidence_table
from analysis.prune_cost import single_knockouts
from cesaa.data.table import EncodedTable
from cesaa.evaluation import predict
from cesaa.metrics import logloss
from cesaa.models.ces import CESBlock
from cesaa.models.output import RoutingOverride


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    return float(logloss(y, p)) if y.size else float("nan")


@torch.no_grad()
def _pass(model: nn.Module, table: EncodedTable, batch_size: int, sample: np.ndarray):
    gates, topk, norms, outs = [], [], [], []
    in_sample = np.zeros(len(table), dtype=bool)
    in_sample[sample] = True
    start = 0
    for b in table.batches(batch_size):
        o = model(b.cat, b.num, b.domain, return_expert_outputs=True)
        if o.expert_outputs is None or o.gates is None:
            raise ValueError(
                f"{type(model).__name__} returns no gates or expert outputs: the per-expert "
                "evidence needs both"
            )
        gates.append(o.gates.float())
        if o.topk_idx is not None:
            topk.append(o.topk_idx)
        norms.append(o.expert_outputs.float().norm(dim=2))  # [B, E]
        keep = torch.from_numpy(in_sample[start : start + len(b)])
        outs.append(o.expert_outputs.float()[keep])
        start += len(b)
    cat = lambda xs: torch.cat(xs).numpy() if xs else None  # noqa: E731
    return cat(gates), cat(topk), cat(norms), cat(outs)


@torch.no_grad()
def _relu_layers(model: CESBlock, table: EncodedTable, slot: int) -> list[np.ndarray]:
    """The post-ReLU outputs of every layer of the expert slot ``slot`` runs, on ``table``."""
    x = model.features(table.cat, table.num)  # [n, F]
    p = slot if model.slot_expert is None else int(model.slot_expert[slot])
    out = []
    for w, b in zip(model.experts.weights, model.experts.biases, strict=True):
        x = torch.relu(torch.addmm(b[p], x, w[p]))  # [n, O_l]
        out.append(x.numpy())
    return out


@dataclass(frozen=True)
class ExpertArrays:
    """What one pass over N rows gathered (see the module doc); per expert: [E] arrays."""

    names: tuple[str, ...]  # domain names
    labels: tuple[str, ...]  # expert names
    domain: np.ndarray  # [N]
    gates: np.ndarray  # [N, E] mixing weights
    topk_idx: np.ndarray | None  # [N, k], None for a dense gate
    output_norm: np.ndarray  # [N, E]
    sample_outputs: np.ndarray  # [n, E, H]
    pred: np.ndarray  # [N]
    dead_units: np.ndarray  # [E]
    own_logloss: np.ndarray  # [E]
    alone_logloss: np.ndarray  # [E]
    knockout: pd.DataFrame | None = None  # analysis.prune_cost.single_knockouts

    def evidence(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``analysis.expert_evidence.evidence_table`` of these arrays."""
        return evidence_table(
            gates=self.gates,
            domain=self.domain,
            topk_idx=self.topk_idx,
            output_norm=self.output_norm,
            expert_outputs=self.sample_outputs,
            dead_units=self.dead_units,
            own_logloss=self.own_logloss,
            alone_logloss=self.alone_logloss,
            domain_names=self.names,
            expert_labels=self.labels,
            knockout=self.knockout,
        )


def expert_arrays(
    model: nn.Module,
    table: EncodedTable,
    domain_names: Sequence[str],
    *,
    sample_size: int = 2000,
    seed: int = 0,
    batch_size: int = 8192,
) -> ExpertArrays:
    """Gather the per-expert arrays of ``model`` on ``table`` (its ``evidence()`` is the table).

    The CKA similarity reads ``min(sample_size, N)`` rows drawn with ``numpy`` seed ``seed``.
    Dead units need the expert's layers (CESAA-family models; NaN for others).  Raises
    ``ValueError`` for a model without a gate or with one expert per row.
    """
    if not isinstance(table, EncodedTable) or len(table) == 0:
        raise ValueError("table must be a non-empty EncodedTable")
    caps = routing_capabilities(model)
    reason = not_applicable(caps, "knockout")
    if reason:
        raise ValueError(f"expert evidence: {reason}")
    names = tuple(domain_names)
    e = caps["num_experts"]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(table), size=min(sample_size, len(table)), replace=False))
    was_training = model.training
    model.eval()
    try:
        gates, topk, norms, outs = _pass(model, table, batch_size, sample)
        y = table.label.numpy()
        pred = predict(model, table, batch_size)
        routed = np.zeros_like(gates, dtype=bool)
        if topk is not None:
            np.put_along_axis(routed, topk, True, axis=1)
        else:
            routed = gates > 0
        dead, own, alone = np.full(e, np.nan), np.full(e, np.nan), np.full(e, np.nan)
        for i in range(e):
            rows = np.flatnonzero(routed[:, i])
            if rows.size == 0:
                continue
            sub = table.subset(torch.from_numpy(rows))
            if isinstance(model, CESBlock):
                dead[i] = dead_unit_share(_relu_layers(model, sub, i))
            own[i] = _logloss(y[rows], pred[rows])
            others = tuple(j for j in range(e) if j != i)
            solo = RoutingOverride(top_k=1, knocked_out=others)
            alone[i] = _logloss(y[rows], predict(model, sub, batch_size, solo))
        knockout = single_knockouts(model, table, names, pred, batch_size)
    finally:
        model.train(was_training)
    return ExpertArrays(
        names,
        tuple(expert_names(caps, names)),
        table.domain.numpy(),
        gates,
        topk,
        norms,
        outs,
        pred,
        dead,
        own,
        alone,
        knockout,
    )
