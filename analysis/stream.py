"""``stream_routing_stats`` (one gradient-free pass over batches -> routing sums) lives in
``cesaa.routing.collect``, where training needs it for per-epoch snapshots; this module keeps the
``analysis.stream`` import path.  A stream split is analysed through its record
(``analysis.records.checkpoint.record_checkpoint`` reads it one row-group piece at a time)."""

from __future__ import annotations

from cesaa.routing.collect import stream_routing_stats

__all__ = ["stream_routing_stats"]
