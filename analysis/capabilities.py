"""What routing a model has (``cesaa.routing.capabilities``; this keeps the import path)."""

from __future__ import annotations

from cesaa.routing.capabilities import (
    MEASURES,
    expert_names,
    experts_left,
    not_applicable,
    routing_capabilities,
)

__all__ = ["MEASURES", "expert_names", "experts_left", "not_applicable", "routing_capabilities"]
