"""The one input check every public analysis function goes through.

It lives in ``cesaa.routing.validation`` (below both ``cesaa`` training and ``analysis``, so that
training can compute routing statistics without importing ``analysis``); this module keeps the
``analysis.validation`` import path.
"""

from __future__ import annotations

from cesaa.routing.validation import MAX_INFERRED, RoutingArrays, check_routing_arrays, to_numpy

__all__ = ["MAX_INFERRED", "RoutingArrays", "check_routing_arrays", "to_numpy"]
