"""Mergeable sufficient statistics of routing.

``RoutingStats`` lives in ``cesaa.routing.stats`` (below both training and analysis: training
writes per-epoch routing snapshots and DDP merges them without importing ``analysis``); this module
keeps the ``analysis.stats`` import path.
"""

from __future__ import annotations

from cesaa.routing.stats import SCHEMA_VERSION, RoutingStats

__all__ = ["SCHEMA_VERSION", "RoutingStats"]
