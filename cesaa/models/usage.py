"""Which ``ModelConfig`` fields a model actually uses, so an override it would ignore is an error.

``used_config_keys(cfg)`` builds the model named ``cfg.name`` on a tiny feature spec with a config
that records every field read, and runs one training-mode and one eval-mode forward pass: the
fields read are the ones the model uses *with this configuration* (e.g. MMoE never reads
``alpha``).  No per-model list to keep in sync: the model's own code is the source.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar

import torch

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec

_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig)) - {"name"}
_READS: ContextVar[set[str] | None] = ContextVar("cesaa_config_reads", default=None)
_SPEC = FeatureSpec(
    cat_names=("c0", "c1"),
    cat_cardinalities=(5, 4),
    num_names=("n0",),
    domain_names=("d0", "d1", "d2"),
)


class _RecordingConfig(ModelConfig):
    """A ``ModelConfig`` that notes each field read while a recording is active."""

    def __getattribute__(self, name: str):
        if name in _FIELDS:
            reads = _READS.get()
            if reads is not None:
                reads.add(name)
        return super().__getattribute__(name)


def used_config_keys(cfg: ModelConfig) -> tuple[str, ...]:
    """The ``ModelConfig`` fields (without ``name``) that model ``cfg.name`` reads, sorted."""
    from cesaa.models.registry import build_model

    recording = _RecordingConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    reads: set[str] = set()
    token = _READS.set(reads)
    try:
        model = build_model(recording, _SPEC)
        gen = torch.Generator().manual_seed(0)
        cat = torch.stack([torch.randint(0, n, (6,), generator=gen) for n in (5, 4)], dim=1)
        num = torch.randn(6, 1, generator=gen)
        domain = torch.tensor([0, 1, 2, 0, 1, 2])
        with torch.random.fork_rng():
            model.train()
            model(cat, num, domain)
            model.eval()
            with torch.no_grad():
                model(cat, num, domain)
    finally:
        _READS.reset(token)
    return tuple(sorted(reads))


def check_overrides_used(cfg: ModelConfig, keys: list[str] | tuple[str, ...]) -> None:
    """``ValueError`` when a ``model.<key>`` override names a field ``cfg.name`` does not use."""
    if not keys:
        return
    used = used_config_keys(cfg)
    unused = [k for k in keys if k not in used]
    if unused:
        raise ValueError(
            f"model {cfg.name!r} does not use {', '.join('model.' + k for k in unused)} (the "
            f"override would be ignored); the model.* keys it uses: "
            f"{', '.join('model.' + k for k in used)}"
        )
