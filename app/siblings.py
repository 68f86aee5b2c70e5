"""Ablation siblings: the checkpoints that differ from a selected one only in alpha (the Ablations
page compares them side by side)."""

from __future__ import annotations

from loaders import checkpoint


def _config_without_alpha(meta: dict) -> dict:
    """The model config with every default filled in (checkpoints written before a config field
    existed compare equal to new ones at its default), alpha removed."""
    from dataclasses import asdict

    from cesaa.config import ModelConfig, config_from_dict

    cfg = asdict(config_from_dict(ModelConfig, dict(meta["model"]["config"])))
    cfg.pop("alpha", None)
    return cfg


def alpha_siblings(path: str, entries: list[dict]) -> list[dict]:
    """Checkpoints that differ from ``path`` only in alpha (same model, data and other settings),
    sorted by alpha: ``[{path, label, alpha}]`` (``path`` itself included)."""
    meta = checkpoint(path).meta
    want = (_config_without_alpha(meta), meta["data"].get("fingerprint"))
    out = []
    for e in entries:
        m = e.get("meta")
        if m is None or m.get("status") != "complete":
            continue
        if (_config_without_alpha(m), m["data"].get("fingerprint")) == want:
            out.append(
                {"path": e["path"], "label": e["label"], "alpha": m["model"]["config"]["alpha"]}
            )
    return sorted(out, key=lambda r: (r["alpha"], r["path"] != path))
