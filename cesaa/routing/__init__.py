"""Routing statistics below both training and analysis.

``cesaa`` (training, DDP) and ``analysis`` both need the mergeable routing sums; they live here so
that data flows one way (cesaa -> routing record -> analysis -> app) and ``cesaa`` never imports
``analysis``:

- ``validation.check_routing_arrays``: the one input check for routing arrays.
- ``stats.RoutingStats``: per-domain sums (memory independent of the row count), mergeable.
- ``capabilities.routing_capabilities``: which routing a model has (read from its attributes).
- ``collect.stream_routing_stats``: one gradient-free pass of a model over batches -> stats.
"""

from __future__ import annotations

from cesaa.routing.capabilities import routing_capabilities
from cesaa.routing.collect import stream_routing_stats
from cesaa.routing.stats import RoutingStats
from cesaa.routing.validation import RoutingArrays, check_routing_arrays

__all__ = [
    "RoutingArrays",
    "RoutingStats",
    "check_routing_arrays",
    "routing_capabilities",
    "stream_routing_stats",
]
