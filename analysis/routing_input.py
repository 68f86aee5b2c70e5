"""Shared input handling for the routing measures: one ``RoutingStats`` from either a stats object
or raw arrays, the soft/hard joint, and small numeric helpers (nats, 0 log 0 = 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.stats import RoutingStats

KINDS = ("soft", "hard")


def routing_stats(
    source: Any,
    domain: Any = None,
    topk_idx: Any = None,
    selected: Any = None,
    num_domains: int | None = None,
) -> RoutingStats:
    if isinstance(source, RoutingStats):
        if domain is not None or topk_idx is not None or selected is not None:
            raise ValueError("domain/topk_idx/selected go with raw probs, not with a RoutingStats")
        return source
    if domain is None:
        raise ValueError("raw probs need domain= (one domain index per row)")
    return RoutingStats.from_arrays(
        source, domain, num_domains, topk_idx=topk_idx, selected=selected
    )


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def normalize_rows(m: np.ndarray) -> np.ndarray:
    total = m.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, m / np.where(total > 0, total, 1.0), np.nan)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """-sum p log p along ``axis`` (nats; 0 log 0 = 0; NaN stays NaN)."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=axis)


def joint_of(stats: RoutingStats, kind: str) -> np.ndarray:
    return stats.prob_sum if check_kind(kind) == "soft" else stats.select_count.astype(np.float64)


def names_or_default(names: list[str] | None, n: int, arg: str, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}_{i}" for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{arg} has {len(names)} names but there are {n} {prefix}s")
    return names
