"""What a plan costs: the edited model's predictions and their cost against the unedited model.

Shapes: N = rows.  ``delta_*`` = edited - unedited (``delta_auc`` < 0: the plan loses AUC).

The edited model is ``cesaa.pruning.apply_plan`` of the plan; for a model that cannot be edited
(not CESAA-family) a removal is evaluated as the equivalent knock-out
(``RoutingOverride(knocked_out=...)``, k clipped to the experts left) and a merge is refused.
The cost comes with the paired row-bootstrap interval of the AUC difference
(``analysis.bootstrap``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from torch import nn

from analysis.bootstrap import bootstrap_weights, percentile_interval, weighted_auc
from analysis.capabilities import routing_capabilities
from cesaa.data.table import EncodedTable
from cesaa.evaluation import predict
from cesaa.metrics import evaluate_predictions
from cesaa.models.output import RoutingOverride
from cesaa.pruning import ExpertPlan, apply_plan, not_editable

COST_COLUMNS = [
    "scope",
    "auc",
    "delta_auc",
    "ci_low",
    "ci_high",
    "delta_gauc",
    "delta_logloss",
    "rows",
]


def knockout_routing(model: nn.Module, removed: Sequence[int]) -> RoutingOverride:
    """The knock-out equal to removing ``removed`` (k clipped to the experts left)."""
    caps = routing_capabilities(model)
    left = caps["num_experts"] - len(removed)
    k = caps["top_k"]
    return RoutingOverride(
        top_k=left if k is not None and k > left else None, knocked_out=tuple(removed)
    )


def edited_predictions(
    model: nn.Module, plan: ExpertPlan, rows: EncodedTable, batch_size: int = 8192
) -> np.ndarray:
    """Predictions [N] of ``model`` with ``plan`` applied (a knock-out for removals from a model
    that cannot be edited; ``ValueError`` for its merges)."""
    if not_editable(model) is None:
        return predict(apply_plan(model, plan), rows, batch_size)
    if plan.merge:
        raise ValueError(
            f"merging needs a CESAA-family model ({not_editable(model)}); it is not measured"
        )
    return predict(model, rows, batch_size, knockout_routing(model, plan.remove))


def _user(rows: EncodedTable) -> np.ndarray | None:
    return rows.user.numpy() if rows.user is not None else None


@dataclass
class Baseline:
    """The unedited predictions of some rows, their metrics and, per scope, the bootstrap draws
    and each draw's AUC: what the cost of every plan on those rows compares against."""

    pred: np.ndarray  # [N]
    metrics: dict
    draws: dict  # scope -> (mask [N], weights [R, n] or None, AUC of each draw [R] or None)


def _metrics(rows: EncodedTable, names: tuple[str, ...], p: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return evaluate_predictions(
            rows.label.numpy(), p, rows.domain.numpy(), user=_user(rows), domain_names=names
        )


def baseline(
    rows: EncodedTable,
    domain_names: Sequence[str],
    base: np.ndarray,
    *,
    reps: int = 200,
    seed: int = 0,
    domains: bool = True,
) -> Baseline:
    """``Baseline`` of the unedited predictions ``base`` of ``rows`` (scopes: ``"overall"``, then
    each domain when ``domains``; every scope's draws from ``numpy`` seed ``seed``)."""
    names = tuple(domain_names)
    y, d = rows.label.numpy(), rows.domain.numpy()
    scopes = {"overall": np.ones_like(d, dtype=bool)}
    if domains:
        scopes.update({n: d == i for i, n in enumerate(names)})
    draws = {}
    for scope, mask in scopes.items():
        w = bootstrap_weights(int(mask.sum()), reps, seed) if reps and mask.any() else None
        auc0 = weighted_auc(y[mask], base[mask], w) if w is not None else None
        draws[scope] = (mask, w, auc0)
    return Baseline(base, _metrics(rows, names, base), draws)


def cost_table(
    rows: EncodedTable,
    domain_names: Sequence[str],
    base: np.ndarray,
    edited: np.ndarray,
    *,
    reps: int = 200,
    seed: int = 0,
    domains: bool = True,
    against: Baseline | None = None,
) -> pd.DataFrame:
    """The measured cost of ``edited`` predictions against ``base`` on ``rows``: one row per
    scope (``"overall"``, then each domain when ``domains``), ``COST_COLUMNS``; ``ci_low`` /
    ``ci_high`` the paired bootstrap interval (``reps`` replicates) of ``delta_auc``; ``reps=0``
    skips it (NaN).  A metric undefined on ``rows`` (one class) is NaN in the table, without the
    warning ``cesaa.metrics`` gives (a curve evaluates hundreds of plans on the same rows).
    ``against``: ``baseline(rows, domain_names, base, reps=reps, seed=seed, domains=domains)``
    when already made (a curve makes it once for every plan; the same numbers)."""
    names = tuple(domain_names)
    y = rows.label.numpy()
    if against is None:
        against = baseline(rows, names, base, reps=reps, seed=seed, domains=domains)
    m0, m1 = against.metrics, _metrics(rows, names, edited)
    out = []
    for scope, (mask, w, auc0) in against.draws.items():
        key = "" if scope == "overall" else f"/{scope}"
        lo, hi = (np.nan, np.nan)
        if w is not None:
            lo, hi = percentile_interval(weighted_auc(y[mask], edited[mask], w) - auc0)
        gauc = m1.get(f"gauc{key}", np.nan) - m0.get(f"gauc{key}", np.nan)
        out.append(
            (
                scope,
                m1[f"auc{key}"],
                m1[f"auc{key}"] - m0[f"auc{key}"],
                lo,
                hi,
                gauc,
                m1[f"logloss{key}"] - m0[f"logloss{key}"],
                int(mask.sum()),
            )
        )
    return pd.DataFrame(out, columns=COST_COLUMNS)


def plan_cost(
    model: nn.Module,
    plan: ExpertPlan,
    rows: EncodedTable,
    domain_names: Sequence[str],
    *,
    reps: int = 200,
    seed: int = 0,
    batch_size: int = 8192,
) -> pd.DataFrame:
    """The measured cost of ``plan`` on ``rows``, overall and per domain (``cost_table``)."""
    base = predict(model, rows, batch_size)
    edited = edited_predictions(model, plan, rows, batch_size)
    return cost_table(rows, domain_names, base, edited, reps=reps, seed=seed)


def single_knockouts(
    model: nn.Module,
    rows: EncodedTable,
    domain_names: Sequence[str],
    base: np.ndarray,
    batch_size: int = 8192,
) -> pd.DataFrame:
    """Each expert knocked out alone (``knockout_routing``), its cost against ``base`` (the
    unedited predictions of ``rows``): ``cost_table`` rows without intervals, plus ``expert``."""
    e = routing_capabilities(model)["num_experts"]
    against = baseline(rows, domain_names, base, reps=0)
    parts = []
    for i in range(e):
        edited = predict(model, rows, batch_size, knockout_routing(model, [i]))
        part = cost_table(rows, domain_names, base, edited, reps=0, against=against)
        part.insert(0, "expert", i)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
