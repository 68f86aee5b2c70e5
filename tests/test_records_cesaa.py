"""Records of cesaa checkpoints: the same routing as the live model, and a report from the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.collect import collect
from analysis.records.checkpoint import record_checkpoint
from analysis.records.collection import record_collection
from analysis.report import build_report
from cesaa.checkpoint import load_checkpoint

CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "cesaa"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "record"
    return record_checkpoint(CKPT, out, sample_size=200, batch_size=1024, command="test")


def test_record_has_the_live_models_routing(rec):
    from cesaa.data.locate import open_checkpoint_data

    ckpt = load_checkpoint(CKPT)
    test = open_checkpoint_data(ckpt.meta, ckpt.path).test
    live = collect(ckpt.model, test, num_domains=len(ckpt.domain_names))
    assert rec.rows == live.rows
    assert rec.stats["gate"].isclose(live.stats, rtol=1e-6, atol=1e-6)
    col = record_collection(rec)
    np.testing.assert_allclose(col.predictions, live.predictions, atol=1e-6)
    assert (col.top1 == live.top1).all() and (col.domain == live.domain).all()
    assert rec.meta.metrics["auc"] == pytest.approx(live.metrics()["auc"], abs=1e-6)


def test_record_metadata_and_kept_columns(rec):
    m = rec.meta
    assert m.model_name == "cesaa" and m.domains == tuple(load_checkpoint(CKPT).domain_names)
    assert m.primary.top_k == 2 and m.primary.num_experts == 8
    assert [e.kind for e in m.always_on] == ["shared"]
    assert {"user_id", "item_id"} <= set(m.kept)
    assert m.command == "test" and m.data["fingerprint"]
    sample = record_collection(rec).sample
    assert sample.expert_outputs.shape[:2] == (200, 8)
    assert sample.shared_outputs.shape[:2] == (200, 1)
    cols = pq.ParquetFile(rec.path / "rows.parquet").schema_arrow.names
    assert "keep.user_id" in cols and "top.gate.1" in cols


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


def test_report_from_a_record_matches_the_checkpoint_report(rec, tmp_path):
    from_rec = build_report(rec.path, sample_size=100, embedding="pca", cache_dir=tmp_path / "a")
    from_ckpt = build_report(CKPT, sample_size=100, embedding="pca", cache_dir=tmp_path / "b")
    # one lane: the checkpoint is read through its record, so every number and alarm is equal
    # (the record here was written in batches of 1024, the cached one in 8192: sums agree to
    # float rounding)
    for part in ("summary", "gates", "metrics", "entropy", "alarms"):
        _same(getattr(from_rec, part), getattr(from_ckpt, part), part)
    alike = [a for a in from_rec.alarms if a["code"] == "domains_indistinguishable"]
    assert alike == []  # the shipped default routes each of its 4 domains to experts of its own
    assert from_rec.model_card["gates"][0]["hyper"] == {"alpha": 0.01, "beta": 0.0}
    assert "needs a checkpoint" in from_rec.notes["knockout"]
    assert "needs a checkpoint" in from_rec.notes["k_curve"]
    assert from_rec.embedding is not None and len(from_rec.embedding["xy"]) == 100
    assert from_rec.command == (f"cesaa report {rec.path} --sample 100 --embedding pca --seed 0")
