"""Models.  Importing this package registers every model in :mod:`cesaa.models.registry`."""

from cesaa.models import baselines, cesaa_model  # noqa: F401  (registration side effect)
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import build_model, default_config, model_description, model_names

__all__ = [
    "ModelOutput",
    "RoutingOverride",
    "build_model",
    "default_config",
    "model_description",
    "model_names",
]
