"""Which experts a model could do without: plans per criterion, their predicted and measured cost.

Shapes: E = experts (gate slots), N = rows.  Costs are differences to the unedited model
(``delta_auc`` < 0: the plan loses AUC).

A plan is chosen and its cost **predicted** on one set of rows (the planning rows, e.g. the
validation split) and its cost **measured** on another (e.g. the test split) by evaluating the
edited model (``cesaa.pruning.apply_plan``; for a model that cannot be edited, a removal is
measured as the equivalent knock-out and a merge is not measured).  Criteria, for a budget of
``keep`` experts:

- ``knockout``: greedy knock-outs by measured cost: repeatedly remove the expert whose removal,
  with those already removed, costs the least AUC on the planning rows.  Predicted cost: that
  joint cost on the planning rows.
- ``reap``: remove the experts with the lowest REAP score (``analysis.expert_evidence``; never
  selected first).  Predicted cost: the sum of each removed expert's single knock-out cost on the
  planning rows (additivity assumed).
- ``merge``: merge the most redundant experts: average-linkage clustering of the experts by the
  linear CKA of their outputs, cut at ``keep`` clusters; each cluster's experts are averaged into
  one (CESAA-family models).  Predicted cost: the sum over clusters of merging that cluster alone.

The measured cost comes with the paired row-bootstrap interval of the AUC difference
(``analysis.bootstrap``), plus the parameters and gate + expert FLOPs per row saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.capabilities import routing_capabilities
from analysis.expert_evidence import reap_scores
from analysis.expert_pass import ExpertArrays, expert_arrays
from analysis.prune_cost import (
    baseline,
    cost_table,
    edited_predictions,
    knockout_routing,
)
from analysis.similarity import expert_similarity
from cesaa.data.table import EncodedTable
from cesaa.evaluation import predict
from cesaa.metrics import auc
from cesaa.pruning import (
    ExpertPlan,
    apply_plan,
    count_parameters,
    expert_flops_per_row,
    not_editable,
)

CRITERIA = ("knockout", "reap", "merge")
CURVE_COLUMNS = [
    "criterion",
    "keep",
    "plan",
    "predicted_delta_auc",
    "delta_auc",
    "ci_low",
    "ci_high",
    "delta_gauc",
    "delta_logloss",
    "worst_domain",
    "worst_domain_delta_auc",
    "parameters_saved",
    "flops_saved_per_row",
]


def _check_criteria(criteria: Sequence[str]) -> tuple[str, ...]:
    crit = tuple(criteria)
    bad = [c for c in crit if c not in CRITERIA]
    if bad or not crit:
        raise ValueError(f"criterion {bad or list(crit)} unknown: choose from {list(CRITERIA)}")
    return crit


def _greedy(model: nn.Module, rows: EncodedTable, batch_size: int) -> list[tuple[int, float]]:
    """Greedy knock-outs on ``rows``: [(expert removed at step i, joint ΔAUC after it)]."""
    e = routing_capabilities(model)["num_experts"]
    y = rows.label.numpy()
    a0 = auc(y, predict(model, rows, batch_size))
    removed: list[int] = []
    steps = []
    for _ in range(e - 1):
        best = None
        for c in (c for c in range(e) if c not in removed):
            a = auc(y, predict(model, rows, batch_size, knockout_routing(model, [*removed, c])))
            if best is None or a > best[1]:
                best = (c, a)
        removed.append(best[0])
        steps.append((best[0], best[1] - a0))
    return steps


def cka_clusters(similarity: np.ndarray) -> list[list[list[int]]]:
    """Average-linkage clusterings of the experts by similarity [E, E] (NaN = 0): element j holds
    E - j clusters (j = 0: every expert alone), each a sorted list of experts."""
    s = np.nan_to_num(similarity, nan=0.0)
    groups = [[i] for i in range(s.shape[0])]
    levels = [[list(g) for g in groups]]
    while len(groups) > 1:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                link = s[np.ix_(groups[a], groups[b])].mean()
                if best is None or link > best[0]:
                    best = (link, a, b)
        _, a, b = best
        groups = [g for i, g in enumerate(groups) if i not in (a, b)] + [
            sorted(groups[a] + groups[b])
        ]
        levels.append([list(g) for g in groups])
    return levels


def reap_order(gates: np.ndarray, output_norm: np.ndarray) -> list[int]:
    """Experts by REAP score, lowest (the first to remove) first; never-routed experts first."""
    score = np.nan_to_num(reap_scores(gates, output_norm), nan=-np.inf)
    return [int(i) for i in np.argsort(score, kind="stable")]


def _single_costs(arrays: ExpertArrays, cost, experts: list[int]) -> dict[int, float]:
    """Each expert's removal cost: the knock-outs ``arrays`` holds, else ``cost`` of each."""
    ko = arrays.knockout
    if ko is None:
        return {i: cost(ExpertPlan(remove=(i,))) for i in experts}
    overall = ko[ko["scope"] == "overall"].set_index("expert")["delta_auc"]
    return {i: float(overall[i]) for i in experts}


def propose(
    model: nn.Module,
    arrays: ExpertArrays,
    rows: EncodedTable,
    *,
    criteria: Sequence[str] = CRITERIA,
    keeps: Sequence[int] | None = None,
    batch_size: int = 8192,
) -> list[tuple[str, int, ExpertPlan, float]]:
    """Each criterion's plan and predicted ΔAUC for each budget in ``keeps`` (default 1..E),
    chosen on ``rows`` (whose ``expert_arrays`` are ``arrays``): [(criterion, keep, plan,
    predicted)].  ``merge`` is skipped for a model that cannot be edited."""
    crit = _check_criteria(criteria)
    e = routing_capabilities(model)["num_experts"]
    keeps = list(range(1, e + 1)) if keeps is None else list(keeps)
    bad = [k for k in keeps if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= e]
    if bad or not keeps:
        raise ValueError(f"--keep {bad or keeps} must be in [1, {e}] (the experts the model has)")
    y = rows.label.numpy()
    base = predict(model, rows, batch_size)
    a0 = auc(y, base)

    def cost(plan: ExpertPlan) -> float:
        return auc(y, edited_predictions(model, plan, rows, batch_size)) - a0

    out = []
    if "knockout" in crit:
        steps = _greedy(model, rows, batch_size)
        for k in keeps:
            removed = [c for c, _ in steps[: e - k]]
            pred = steps[e - k - 1][1] if k < e else 0.0
            out.append(
                ("knockout", k, ExpertPlan(remove=tuple(removed), criterion="knockout"), pred)
            )
    if "reap" in crit:
        order = reap_order(arrays.gates, arrays.output_norm)
        single = _single_costs(arrays, cost, order[: e - min(keeps)])
        for k in keeps:
            removed = order[: e - k]
            pred = float(sum(single[i] for i in removed))
            out.append(("reap", k, ExpertPlan(remove=tuple(removed), criterion="reap"), pred))
    if "merge" in crit and not_editable(model) is None:
        levels = cka_clusters(expert_similarity(arrays.sample_outputs, "cka"))
        alone: dict[tuple[int, ...], float] = {}
        for k in keeps:
            groups = [tuple(g) for g in levels[e - k] if len(g) > 1]
            for g in groups:
                if g not in alone:
                    alone[g] = cost(ExpertPlan(merge=(g,)))
            pred = float(sum(alone[g] for g in groups))
            out.append(("merge", k, ExpertPlan(merge=tuple(groups), criterion="merge"), pred))
    return out


def _saved(model: nn.Module, plan: ExpertPlan) -> tuple[float, float]:
    if not_editable(model) is not None:
        return float("nan"), float("nan")
    edited = apply_plan(model, plan)
    return (
        float(count_parameters(model) - count_parameters(edited)),
        float(expert_flops_per_row(model) - expert_flops_per_row(edited)),
    )


def curve_budgets(num_experts: int, most: int = 16) -> list[int]:
    """The budgets (experts kept) a cost curve evaluates: every one of 1..E when E <= ``most``,
    else about ``most`` geometrically spaced ones plus E - 1 and E (the measured side evaluates
    each budget's plan of every criterion on the measuring rows)."""
    e = int(num_experts)
    if e < 1 or most < 2:
        raise ValueError(f"num_experts={e} must be >= 1 and most={most} >= 2")
    if e <= most:
        return list(range(1, e + 1))
    spaced = np.round(np.geomspace(1, e, most)).astype(int)
    return sorted({int(k) for k in spaced} | {e - 1, e})


def planning_sample(rows: EncodedTable, size: int | None, seed: int = 0) -> EncodedTable:
    """At most ``size`` of ``rows`` (a seeded sample, in their order); all when ``size`` is None.

    The greedy knock-out re-runs the model E(E - 1)/2 times on the planning rows: the dashboard and
    the report plan on a sample so that 32 experts take seconds, not minutes."""
    if size is None or len(rows) <= size:
        return rows
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"plan sample size must be a positive int, got {size!r}")
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
    return rows.subset(torch.from_numpy(idx))


def prune_curve(
    model: nn.Module,
    plan_rows: EncodedTable,
    measure_rows: EncodedTable,
    domain_names: Sequence[str],
    *,
    criteria: Sequence[str] = CRITERIA,
    keeps: Sequence[int] | None = None,
    reps: int = 200,
    seed: int = 0,
    batch_size: int = 8192,
    arrays: ExpertArrays | None = None,
) -> pd.DataFrame:
    """Cost against experts kept: for each criterion and budget, the plan (chosen on
    ``plan_rows``), its predicted ΔAUC (on ``plan_rows``) and its measured cost on
    ``measure_rows`` (``CURVE_COLUMNS``; ``plan`` as the JSON-ready dict, the worst domain by
    ΔAUC).  ``arrays``: ``expert_arrays`` of ``plan_rows`` when already gathered."""
    names = tuple(domain_names)
    if arrays is None:
        arrays = expert_arrays(model, plan_rows, names, batch_size=batch_size)
    base = predict(model, measure_rows, batch_size)
    against = baseline(measure_rows, names, base, reps=reps, seed=seed)
    rows = []
    for crit, k, plan, pred in propose(
        model, arrays, plan_rows, criteria=criteria, keeps=keeps, batch_size=batch_size
    ):
        edited = edited_predictions(model, plan, measure_rows, batch_size)
        c = cost_table(measure_rows, names, base, edited, reps=reps, seed=seed, against=against)
        overall, per = c.iloc[0], c.iloc[1:].dropna(subset=["delta_auc"])
        worst = per.loc[per["delta_auc"].idxmin()] if len(per) else None
        params, flops = _saved(model, plan)
        rows.append(
            (
                crit,
                k,
                plan.to_dict(),
                pred,
                overall["delta_auc"],
                overall["ci_low"],
                overall["ci_high"],
                overall["delta_gauc"],
                overall["delta_logloss"],
                worst["scope"] if worst is not None else "",
                worst["delta_auc"] if worst is not None else np.nan,
                params,
                flops,
            )
        )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def prediction_error(curve: pd.DataFrame) -> pd.DataFrame:
    """Per criterion: mean absolute error of the predicted against the measured ΔAUC over the
    budgets below E, the mean signed error (predicted - measured; > 0 = optimistic) and the
    fewest experts kept whose measured ΔAUC is >= -0.001.  Sorted by mean absolute error: the
    first row's criterion predicts its cost best."""
    e = int(curve["keep"].max())
    out = []
    for crit, g in curve.groupby("criterion", sort=False):
        part = g[g["keep"] < e]
        err = part["predicted_delta_auc"] - part["delta_auc"]
        ok = g[g["delta_auc"] >= -0.001]["keep"]
        out.append(
            (
                crit,
                float(err.abs().mean()),
                float(err.mean()),
                int(ok.min()) if len(ok) else e,
            )
        )
    cols = ["criterion", "mean_abs_error", "mean_error", "min_keep_within_0.001"]
    frame = pd.DataFrame(out, columns=cols)
    return frame.sort_values("mean_abs_error", kind="stable").reset_index(drop=True)


def describe_plan(plan: dict, expert_labels: Sequence[str] | None = None) -> str:
    """A plan's JSON dict in words: ``"remove expert 1, expert 6; merge expert 2 + expert 3"``
    (``"keep every expert"`` for the empty plan)."""
    p = ExpertPlan.from_dict(plan)

    def name(i: int) -> str:
        return expert_labels[i] if expert_labels is not None else f"expert {i}"

    parts = []
    if p.remove:
        parts.append("remove " + ", ".join(name(i) for i in p.remove))
    if p.merge:
        parts.append("merge " + ", ".join(" + ".join(name(i) for i in g) for g in p.merge))
    return "; ".join(parts) or "keep every expert"
