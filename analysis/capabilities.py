"""What routing a model has (``cesaa.routing.capabilities``; this keeps the import path)."""

from __future__ import annotations

from cesaa.routing.capabilities import routing_capabilities

__all__ = ["routing_capabilities"]
