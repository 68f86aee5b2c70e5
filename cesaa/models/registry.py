"""One registry maps a model name to its class and its config defaults.  No if/elif chains elsewhere."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec

_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {}


def register(
    name: str, description: str, **defaults: Any
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register("mmoe", "MMoE ...", num_experts=...)``.

    ``defaults`` are the ModelConfig values this model uses unless the user overrides them
    (e.g. the plain sparse MoE has ``num_shared=0, alpha=0``).
    """

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = (cls, defaults, description)
        cls.model_name = name
        return cls

    return deco


def _ensure_loaded() -> None:
    # importing the package registers every model
    import cesaa.models  # noqa: F401


def model_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_description(name: str) -> str:
    _ensure_loaded()
    return _REGISTRY[_check(name)][2]


def _check(name: str) -> str:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return name


def default_config(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig for ``name``: the dataclass defaults, the model's own defaults, then ``overrides``."""
    _, defaults, _ = _REGISTRY[_check(name)]
    return ModelConfig(**{**defaults, **overrides, "name": name})


def build_model(cfg: ModelConfig, spec: FeatureSpec) -> nn.Module:
    """Instantiate the model named by ``cfg.name`` for inputs described by ``spec``."""
    cls, _, _ = _REGISTRY[_check(cfg.name)]
    return cls(cfg, spec)


def with_defaults(cfg: ModelConfig) -> ModelConfig:
    """Re-apply the model's registry defaults on top of a config built for another model name."""
    _, defaults, _ = _REGISTRY[_check(cfg.name)]
    return dataclasses.replace(cfg, **defaults)
