from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from cesaa.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, read_meta
from cesaa.config import TrainConfig
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import default_config
from cesaa.train import predict, train


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "cesaa"
    res = train(default_config("cesaa"), TrainConfig(epochs=2, batch_size=256), small_data, out)
    return out, res


def _copy(run_dir, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def test_round_trip_gives_identical_outputs(run, small_data):
    out, res = run
    ckpt = load_checkpoint(out)
    np.testing.assert_array_equal(
        predict(res.model, small_data.test), predict(ckpt.model, small_data.test)
    )
    for routing in (RoutingOverride(top_k=1), RoutingOverride(use_shared=False)):
        np.testing.assert_array_equal(
            predict(res.model, small_data.test, routing=routing),
            predict(ckpt.model, small_data.test, routing=routing),
        )
    assert ckpt.domain_names == small_data.domain_names
    assert ckpt.model_config == default_config("cesaa")
    assert ckpt.meta["data"]["fingerprint"] == small_data.fingerprint
    assert ckpt.encoders == small_data.encoders


def test_meta_is_readable_json_with_versions(run):
    out, _ = run
    meta = read_meta(out)
    assert meta["schema_version"] == 1
    assert meta["package_version"]
    assert meta["model"]["name"] == "cesaa"
    assert meta["model"]["config"]["top_k"] == 2
    assert len(meta["weights_sha256"]) == 64


def test_unknown_schema_version(run, tmp_path):
    d = _copy(run[0], tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["schema_version"] = 99
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unsupported schema_version 99"):
        load_checkpoint(d)


def test_missing_weights(run, tmp_path):
    d = _copy(run[0], tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: file is missing"):
        load_checkpoint(d)


def test_truncated_weights(run, tmp_path):
    d = _copy(run[0], tmp_path)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(d)
    meta = json.loads((d / "meta.json").read_text())
    del meta["weights_sha256"]  # even without the checksum the truncation is caught
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(d)


def test_pickle_payload_is_refused_never_executed(run, tmp_path):
    d = _copy(run[0], tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (d / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    meta = json.loads((d / "meta.json").read_text())
    del meta["weights_sha256"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(d)
    assert not marker.exists()


def test_mismatched_shapes(run, tmp_path):
    d = _copy(run[0], tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["model"]["config"]["expert_dim"] = 7
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(d)


def test_invalid_config_in_meta(run, tmp_path):
    d = _copy(run[0], tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["model"]["config"]["top_k"] = 99
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="top_k=99"):
        load_checkpoint(d)


def test_meta_not_json(run, tmp_path):
    d = _copy(run[0], tmp_path)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(d)


def test_listing_reports_broken_runs_without_hiding_others(run, tmp_path):
    good = _copy(run[0], tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("[]")
    rows = {r["path"].name: r for r in list_checkpoints(tmp_path)}
    assert rows[good.name]["meta"]["model"]["name"] == "cesaa"
    assert "expected a JSON object" in rows["bad"]["error"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from cesaa import checkpoint

    target = tmp_path / "model.safetensors"
    checkpoint.write_tensors(target, {"a": torch.ones(3)})
    before = target.read_bytes()

    def boom(tensors, tmp, metadata=None):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_tensors(target, {"a": torch.zeros(3)})
    assert target.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
