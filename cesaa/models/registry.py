"""One registry maps a model name to its class and its config defaults.  No if/elif chains elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec

_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {}
SearchSpace = Callable[[Any], dict[str, Any]]
_SPACES: dict[str, SearchSpace] = {}


def register(
    name: str, description: str, search_space: SearchSpace | None = None, **defaults: Any
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register("mmoe", "MMoE ...", search_space=spaces.mmoe, num_experts=...)``.

    ``defaults`` are the ModelConfig values this model uses unless the user overrides them
    (e.g. the plain sparse MoE has ``num_shared=0, alpha=0``).  ``search_space(trial) -> dict``
    declares what tuning may vary (see :mod:`cesaa.models.search_spaces`).
    """

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = (cls, defaults, description)
        if search_space is not None:
            _SPACES[name] = search_space
        cls.model_name = name
        return cls

    return deco


def model_search_space(name: str) -> SearchSpace | None:
    """The model's ``search_space(trial) -> dict`` callable, or None when it declares none."""
    return _SPACES.get(_check(name))


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
