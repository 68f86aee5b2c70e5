"""Routing statistics and collections over a stream of batches (out-of-core data, several ranks).

- ``stream_routing_stats`` lives in ``cesaa.routing.collect`` (training needs it for per-epoch
  routing snapshots without importing ``analysis``).
- ``collect_stream`` lives in ``analysis.collect`` beside ``collect`` (one module, no import cycle).

This module keeps the ``analysis.stream`` import path for both.
"""

from __future__ import annotations

from analysis.collect import collect_stream
from cesaa.routing.collect import stream_routing_stats

__all__ = ["collect_stream", "stream_routing_stats"]
