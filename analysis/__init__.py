"""Routing analysis: does each domain get its own experts?  Numpy in, plain data out."""

from __future__ import annotations

from analysis.measures import (
    activation,
    domain_similarity,
    expert_load,
    gating_entropy,
    load_balance,
    mutual_information,
    mutual_information_from_assignments,
    row_entropy,
    summarize,
)
from analysis.stats import RoutingStats
from analysis.validation import RoutingArrays, check_routing_arrays

__all__ = [
    "RoutingArrays",
    "RoutingStats",
    "activation",
    "check_routing_arrays",
    "domain_similarity",
    "expert_load",
    "gating_entropy",
    "load_balance",
    "mutual_information",
    "mutual_information_from_assignments",
    "row_entropy",
    "summarize",
]
