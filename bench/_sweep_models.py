"""CESAA's ablations as registered models, so that the heterogeneity sweep tunes and ranks them
like any other model (``--setup bench._sweep_models:register``).

- ``cesaa_nomi``: no MI loss (alpha = 0);
- ``cesaa_noshared``: no shared expert (num_shared = 0);
- ``cesaa_k1``, ``cesaa_k3``, ``cesaa_k4``: 1, 3 or 4 selected experts per row (CESAA's default
  is k = 2).

Each searches CESAA's own space with its one setting pinned, so the budgets stay equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cesaa.models import registry, search_spaces
from cesaa.models.cesaa_model import CESAA

PINNED = {
    "cesaa_nomi": ("CESAA without the MI loss (alpha 0)", {"alpha": 0.0}),
    "cesaa_noshared": ("CESAA without a shared expert", {"num_shared": 0}),
    "cesaa_k1": ("CESAA with one expert per row (k 1)", {"top_k": 1}),
    "cesaa_k3": ("CESAA with three experts per row (k 3)", {"top_k": 3}),
    "cesaa_k4": ("CESAA with four experts per row (k 4)", {"top_k": 4}),
}


def _pinned_space(pin: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    def space(trial: Any) -> dict[str, Any]:
        return {**search_spaces.cesaa(trial), **pin}

    return space


def register() -> None:
    """Register the ablations (once per process)."""
    names = registry.model_names()
    for name, (description, pin) in PINNED.items():
        if name not in names:
            cls = type(f"CESAA_{name}", (CESAA,), {"__doc__": description})
            registry.register(name, description, _pinned_space(pin), **pin)(cls)
