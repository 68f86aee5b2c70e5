"""The leaderboard: per model, overall and per domain, mean ± std over seeds and the paired
difference to the best model with a t interval and a Holm-corrected paired t-test.

Input: the final runs' records (:func:`cesaa.benchmark.protocol.run_task`), each with the test
metrics of its best-validation epoch.  Output: plain data (:class:`Leaderboard`, ``to_dict``) that
the writers in :mod:`cesaa.benchmark.report` and the dashboard's Leaderboard page only format.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from cesaa.benchmark.stats import detectable_difference, holm, mean_std, paired_difference
from cesaa.convergence import stalled_text

METRICS = ("auc", "gauc", "logloss")
LOWER_IS_BETTER = frozenset({"logloss"})
OVERALL = "overall"


@dataclass
class Cell:
    """One (scope, metric, model) entry.  ``diff_*`` / ``p_*``: this model minus the best model of
    that (scope, metric) over paired seeds; empty (nan) for the best model itself.  ``detectable``:
    the smallest true difference these paired seeds detect at 80 % power (the comparison's noise
    floor, :func:`cesaa.benchmark.stats.detectable_difference` of ``diff_std``)."""

    scope: str  # "overall" or a domain name
    metric: str
    model: str
    mean: float
    std: float
    n: int
    rank: int
    is_best: bool
    diff_mean: float = math.nan
    diff_std: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    p_holm: float = math.nan
    detectable: float = math.nan


@dataclass
class ModelSummary:
    model: str
    seeds: int
    params: dict[str, Any]
    best_epoch: tuple[float, float]  # mean, std over seeds
    epochs: tuple[float, float]
    train_seconds: tuple[float, float]  # per run, mean and std
    tune: dict[str, Any] = field(default_factory=dict)  # trials, pruned, seconds (when tuned)
    # how each seed's run ended (cesaa.convergence verdicts, seed order); None: not recorded
    ends: list[str | None] = field(default_factory=list)

    @property
    def stalled(self) -> str:
        """How many seeds stalled: "2 of 10 seeds (plateau 2)", "none of 5 seeds" or "n/a"."""
        return stalled_text(self.ends)


@dataclass
class Leaderboard:
    cells: list[Cell]
    models: list[ModelSummary]
    domains: list[str]
    level: float
    meta: dict[str, Any] = field(default_factory=dict)  # command, data, protocol, budget, time

    def to_dict(self) -> dict:
        return {
            "meta": self.meta,
            "level": self.level,
            "domains": self.domains,
            "models": [asdict(m) for m in self.models],
            "cells": [asdict(c) for c in self.cells],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Leaderboard:
        models = [
            ModelSummary(
                **{
                    **m,
                    **{k: tuple(m[k]) for k in ("best_epoch", "epochs", "train_seconds")},
                }
            )
            for m in d["models"]
        ]
        return cls(
            cells=[Cell(**c) for c in d["cells"]],
            models=models,
            domains=list(d["domains"]),
            level=float(d["level"]),
            meta=dict(d.get("meta", {})),
        )

    def table(self, scope: str, metric: str) -> list[Cell]:
        """The cells of one (scope, metric), best first."""
        return sorted(
            (c for c in self.cells if c.scope == scope and c.metric == metric),
            key=lambda c: c.rank,
        )


@dataclass
class DomainTally:
    """In how many domains a model is the best, statistically level with the best (its paired
    difference not significant at the leaderboard's level, Holm-corrected), or worse."""

    model: str
    best: int
    level_with_best: int
    worse: int


def domain_tally(lb: Leaderboard, metric: str) -> list[DomainTally]:
    """Per model, over the domains: best / level with the best / significantly worse on
    ``metric`` (alpha = 1 - level on the Holm-corrected paired t-test).  Ordered by domains won,
    then domains level, then overall rank.  Empty without domains."""
    alpha = 1.0 - lb.level
    counts = {m.model: [0, 0, 0] for m in lb.models}
    for c in lb.cells:
        if c.scope == OVERALL or c.metric != metric:
            continue
        if c.is_best:
            counts[c.model][0] += 1
        elif math.isfinite(c.p_holm) and c.p_holm < alpha:
            counts[c.model][2] += 1
        else:  # not significant (a nan p: too few seeds to tell) counts as level
            counts[c.model][1] += 1
    order = {m.model: i for i, m in enumerate(lb.models)}
    tally = [DomainTally(m, *v) for m, v in counts.items()] if lb.domains else []
    return sorted(tally, key=lambda t: (-t.best, -t.level_with_best, order[t.model]))


def build_leaderboard(
    runs: list[dict],
    level: float = 0.95,
    tuning: dict[str, dict] | None = None,
    meta: dict[str, Any] | None = None,
) -> Leaderboard:
    """Aggregate final runs (records with model, seed, test metrics, params, ...).

    For each scope (overall and each domain) and metric, the best model is the one with the best
    mean (highest, lowest for logloss); every other model gets its paired difference to it and a
    paired t-test, Holm-corrected over the other models of that (scope, metric).  Raises
    ``ValueError`` on no runs or on a model with two runs of one seed.
    """
    if not runs:
        raise ValueError("no runs to rank")
    by_model: dict[str, dict[int, dict]] = {}
    for r in runs:
        seeds = by_model.setdefault(r["model"], {})
        if r["seed"] in seeds:
            raise ValueError(f"model {r['model']!r} has two runs with seed {r['seed']}")
        seeds[r["seed"]] = r
    domains = list(runs[0].get("domains") or [])
    cells: list[Cell] = []
    for scope in (OVERALL, *domains):
        for metric in METRICS:
            key = metric if scope == OVERALL else f"{metric}/{scope}"
            cells += _rank(by_model, key, scope, metric, level)
    tuning = tuning or {}
    models = []
    for name, seeds in by_model.items():
        rs = list(seeds.values())
        models.append(
            ModelSummary(
                model=name,
                seeds=len(rs),
                params=rs[0].get("params", {}),
                best_epoch=mean_std([r["best_epoch"] for r in rs]),
                epochs=mean_std([r["epochs"] for r in rs]),
                train_seconds=mean_std([r["seconds"] for r in rs]),
                tune=tuning.get(name, {}),
                ends=[seeds[s].get("end") for s in sorted(seeds)],
            )
        )
    overall_auc = {c.model: c.rank for c in cells if c.scope == OVERALL and c.metric == "auc"}
    models.sort(key=lambda m: overall_auc.get(m.model, math.inf))
    return Leaderboard(cells, models, domains, level, dict(meta or {}))


def _rank(
    by_model: dict[str, dict[int, dict]], key: str, scope: str, metric: str, level: float
) -> list[Cell]:
    values = {
        m: {s: float(r["test"].get(key, math.nan)) for s, r in seeds.items()}
        for m, seeds in by_model.items()
    }
    stats = {m: mean_std(list(v.values())) for m, v in values.items()}
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    order = sorted(values, key=lambda m: (math.isnan(stats[m][0]), sign * stats[m][0], m))
    best = order[0]
    cells = []
    for rank, m in enumerate(order, start=1):
        mean, std = stats[m]
        n = sum(math.isfinite(v) for v in values[m].values())
        cell = Cell(scope, metric, m, mean, std, n, rank, m == best)
        if m != best:
            d = paired_difference(values[m], values[best], level)
            cell.diff_mean, cell.diff_std = d.mean, d.std
            cell.ci_low, cell.ci_high, cell.p_value = d.ci_low, d.ci_high, d.p_value
            cell.detectable = detectable_difference(d.std, d.n, alpha=1.0 - level)
        cells.append(cell)
    others = [c for c in cells if not c.is_best]
    for c, p in zip(others, holm([c.p_value for c in others]), strict=True):
        c.p_holm = p
    return cells
