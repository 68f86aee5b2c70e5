"""Safe checkpoints: ``model.safetensors`` (weights) + ``meta.json`` (everything needed to rebuild the model).

A run folder holds::

    meta.json            schema version, package version, model + train config, data description,
                         fingerprint, encoders, domain names, metrics, sha256 of the weights, and
                         data.location: each data file resolved (absolute, relative to the run
                         folder; see cesaa.data.locate)
    model.safetensors    best weights (what ``load_checkpoint`` returns)
    metrics.jsonl        one JSON line per completed epoch
    last.safetensors     weights after the last completed epoch   } for ``--resume``
    optimizer.safetensors  Adam state after the last completed epoch }
    train_state.json     epoch counter and early-stopping state (written last: the commit point)

Nothing is ever unpickled: weights and optimizer tensors are safetensors, everything else is JSON.  Every
write goes to a temporary file in the same folder and is renamed into place (atomic on POSIX).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cesaa.config import ModelConfig, TrainConfig, config_from_dict
from cesaa.features import FeatureSpec

SCHEMA_VERSION = 1
META = "meta.json"
WEIGHTS = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.
    The file gets the mode a plain ``open`` gives (0666 less the umask), as the files written
    beside it do (mkstemp's 0600 would lock others out of a shared record or checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=True)

    _atomic_write(Path(path), w)


def write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated, corrupt or another format): {e}"
        ) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(path: str | Path) -> dict:
    """Read and check ``meta.json`` of a run folder (cheap: used by listings)."""
    run = Path(path)
    meta_path = run / META if run.is_dir() or not run.name.endswith(".json") else run
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: file is missing (is {run} a cesaa run folder?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{meta_path}: unsupported schema_version {version!r} (this cesaa reads {SCHEMA_VERSION})"
        )
    for key in ("model", "data"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: missing key {key!r}")
    return meta


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode plus what it was trained on."""

    path: Path
    model: nn.Module
    model_config: ModelConfig
    train_config: TrainConfig | None
    spec: FeatureSpec
    meta: dict

    @property
    def domain_names(self) -> tuple[str, ...]:
        return self.spec.domain_names

    @property
    def encoders(self) -> dict:
        return self.meta["data"].get("encoders", {})


def build_meta(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    spec: FeatureSpec,
    data_description: dict,
    fingerprint: str,
    encoders: dict,
    truth: dict | None = None,
) -> dict:
    from cesaa import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "model": {"name": model_cfg.name, "config": asdict(model_cfg)},
        "train": asdict(train_cfg),
        "data": {
            "description": data_description,
            "fingerprint": fingerprint,
            "spec": spec.to_dict(),
            "encoders": encoders,
            "truth": truth,
        },
        "status": "running",
        "metrics": {},
    }


def save_checkpoint(run_dir: str | Path, model: nn.Module, meta: dict) -> None:
    """Write best weights then ``meta.json`` (with the weights' sha256), both atomically."""
    run = Path(run_dir)
    write_tensors(run / WEIGHTS, model.state_dict(), metadata={"format": "pt"})
    meta = {**meta, "weights_sha256": sha256_file(run / WEIGHTS)}
    write_json(run / META, meta)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model strictly from ``meta.json`` and load ``model.safetensors``.

    Raises :class:`CheckpointError` for an unknown schema version, a missing, truncated or tampered
    file, a config that no longer validates, or weights whose names/shapes do not match the model.
    """
    from cesaa.models.registry import build_model

    run = Path(path)
    meta = read_meta(run)
    weights_path = run / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: file is missing")
    expected = meta.get("weights_sha256")
    if expected is not None and sha256_file(weights_path) != expected:
        raise CheckpointError(
            f"{weights_path}: sha256 does not match meta.json (file truncated or replaced)"
        )
    try:
        model_cfg = config_from_dict(ModelConfig, meta["model"]["config"])
        train_cfg = config_from_dict(TrainConfig, meta["train"]) if "train" in meta else None
        spec = FeatureSpec.from_dict(meta["data"]["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run / META}: invalid configuration: {e}") from None
    state = read_tensors(weights_path)
    try:
        model = build_model(model_cfg, spec)
    except ValueError as e:
        raise CheckpointError(f"{run / META}: {e}") from None
    state = upgrade_state_dict(model, state)  # older layouts -> the current one
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{weights_path}: weights do not match the model in meta.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]})"
        )
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return Checkpoint(run, model, model_cfg, train_cfg, spec, meta)


def upgrade_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Bring weights saved by older code to the model's current layout (a copy; in place below).

    - per-column categorical embeddings (``<m>.embeddings.<c>.weight``) -> one fused table
      (``<m>.weight``), see :func:`cesaa.features.fuse_embedding_state`.
    """
    from cesaa.features import FeatureEmbedding, fuse_embedding_state

    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, FeatureEmbedding):
            prefix = f"{name}." if name else ""
            fuse_embedding_state(state, prefix, len(module.spec.cat_cardinalities))
    return state


def list_checkpoints(root: str | Path) -> list[dict]:
    """Every run folder under ``root`` (recursively) as ``{"path", "meta"}`` or ``{"path", "error"}``.

    Reads only ``meta.json`` files, so it is cheap; a broken one is listed with its error instead of
    hiding the others.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for meta_path in sorted(root.rglob(META)):
        run = meta_path.parent
        try:
            out.append({"path": run, "meta": read_meta(run)})
        except CheckpointError as e:
            out.append({"path": run, "error": str(e)})
    return out
