from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from analysis.collect import Collection, EmbeddingSample, collect
from analysis.stats import RoutingStats
from cesaa.checkpoint import build_meta, save_checkpoint
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import build_model, default_config
from cesaa.train import predict, train

SOURCE = "synthetic:rows=4000,domains=3,seed=0"
TINY = dict(expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), num_experts=4, top_k=2)


@pytest.fixture(scope="module")
def trained():
    """A tiny CESAA trained for 2 epochs on 4,000 synthetic rows (about a second)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_data(SOURCE)
    cfg = default_config("cesaa", alpha=0.05, **TINY)
    tcfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, seed=0)
    res = train(cfg, tcfg, data)
    yield data, res.model, cfg, tcfg
    torch.set_num_threads(threads)


def _nbytes(stats: RoutingStats) -> int:
    return sum(getattr(stats, f.name).nbytes for f in dataclasses.fields(stats))


def test_collect_gives_stats_predictions_and_top1(trained):
    data, model, _, _ = trained
    c = collect(model, data.test, num_domains=3, batch_size=100)
    n = len(data.test)
    assert isinstance(c, Collection) and c.has_routing and c.no_routing_reason is None
    assert c.stats.shape == (3, 4)
    assert c.stats.rows == n == c.rows
    np.testing.assert_array_equal(c.stats.count, np.bincount(data.test.domain.numpy(), minlength=3))
    assert c.stats.select_count.sum() == 2 * n  # k = 2 selections per row
    assert c.stats.labeled_count.sum() == n
    assert c.stats.label_sum.sum() == pytest.approx(float(data.test.label.sum()))
    np.testing.assert_array_equal(c.predictions, predict(model, data.test, batch_size=100))
    assert c.top1.shape == (n,)
    # the top-1 expert of every row is one of its selected experts: its count is bounded
    assert (np.bincount(c.top1, minlength=4) <= c.stats.select_count.sum(0)).all()
    assert c.sample is None
    assert c.metrics(data.domain_names)["auc"] == pytest.approx(
        c.metrics(tuple(f"x{i}" for i in range(3)))["auc"]
    )
    json.dumps(c.to_dict())


def test_stats_of_whole_table_equal_merge_of_two_halves(trained):
    data, model, _, _ = trained
    n = len(data.test)
    half = n // 2 - (n // 2) % 40  # both halves batched exactly as in the whole pass
    whole = collect(model, data.test, num_domains=3, batch_size=40).stats
    first = collect(model, data.test.subset(torch.arange(0, half)), num_domains=3, batch_size=40)
    rest = collect(model, data.test.subset(torch.arange(half, n)), num_domains=3, batch_size=40)
    merged = first.stats.merge(rest.stats)
    assert merged.isclose(whole)
    for name in ("count", "select_count", "coact", "labeled_count"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    assert merged.rows == n
    # the batch size does not matter either (up to float32 rounding of the forward pass)
    other = collect(model, data.test, num_domains=3, batch_size=7).stats
    assert other.isclose(whole, rtol=1e-5, atol=1e-5)


def test_stats_memory_does_not_depend_on_rows(trained):
    data, model, _, _ = trained
    small = collect(model, data.test.subset(torch.arange(10)), num_domains=3).stats
    large = collect(model, data.train, num_domains=3).stats
    assert large.rows > 100 * small.rows
    assert _nbytes(small) == _nbytes(large)
    assert len(json.dumps(small.to_dict())) < 5_000


def test_sample_is_seeded_and_holds_expert_outputs(trained):
    data, model, cfg, _ = trained
    c = collect(model, data.test, num_domains=3, batch_size=64, sample_size=30, seed=3)
    s = c.sample
    assert isinstance(s, EmbeddingSample) and len(s) == 30
    assert np.all(np.diff(s.rows) > 0) and s.rows.max() < len(data.test)
    np.testing.assert_array_equal(s.domain, data.test.domain.numpy()[s.rows])
    np.testing.assert_array_equal(s.expert, c.top1[s.rows])
    np.testing.assert_allclose(s.prediction, c.predictions[s.rows])
    assert s.probs.shape == (30, 4) and s.topk_idx.shape == (30, 2)
    assert ((s.gates > 0).sum(axis=1) == 2).all()
    np.testing.assert_allclose(s.gates.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(s.topk_idx[:, 0], s.expert)
    assert s.expert_outputs.shape == (30, 4, cfg.expert_dim)
    assert s.shared_outputs.shape == (30, cfg.num_shared, cfg.expert_dim)
    # the outputs are the experts' outputs on exactly those rows
    sub = data.test.subset(torch.as_tensor(s.rows))
    with torch.no_grad():
        ref = model(sub.cat, sub.num, sub.domain, return_expert_outputs=True)
    np.testing.assert_allclose(s.expert_outputs, ref.expert_outputs.numpy(), atol=1e-6)
    again = collect(model, data.test, num_domains=3, sample_size=30, seed=3).sample
    np.testing.assert_array_equal(again.rows, s.rows)
    other = collect(model, data.test, num_domains=3, sample_size=30, seed=4).sample
    assert not np.array_equal(other.rows, s.rows)
    everything = collect(model, data.test.subset(torch.arange(20)), num_domains=3, sample_size=50)
    np.testing.assert_array_equal(everything.sample.rows, np.arange(20))
    json.dumps(s.to_dict())


def test_routing_override_at_trained_k_reproduces_predictions(trained):
    data, model, _, _ = trained
    base = collect(model, data.test, num_domains=3)
    same = collect(model, data.test, num_domains=3, routing=RoutingOverride(top_k=2))
    np.testing.assert_array_equal(same.predictions, base.predictions)
    assert same.stats == base.stats
    k1 = collect(model, data.test, num_domains=3, routing=RoutingOverride(top_k=1))
    assert k1.stats.select_count.sum() == len(data.test)
    ko = collect(model, data.test, num_domains=3, routing=RoutingOverride(knocked_out=(0,)))
    assert ko.stats.select_count[:, 0].sum() == 0 and ko.stats.prob_sum[:, 0].sum() == 0


def test_model_without_gate_has_no_routing(trained):
    data, _, _, _ = trained
    mlp = build_model(default_config("mlp", **TINY), data.spec)
    c = collect(mlp, data.test, num_domains=3, sample_size=5, progress=True)
    assert not c.has_routing and c.stats is None and c.top1 is None
    assert "no gate" in c.no_routing_reason
    assert c.predictions.shape == (len(data.test),)
    assert len(c.sample) == 5 and c.sample.probs is None and c.sample.expert is None


def test_dense_gate_model_uses_argmax_selection(trained):
    data, _, _, _ = trained
    torch.manual_seed(0)
    mmoe = build_model(default_config("mmoe", **TINY), data.spec)
    c = collect(mmoe, data.test, num_domains=3)
    assert c.stats.shape == (3, 3)  # one MMoE expert per domain
    assert c.stats.select_count.sum() == len(data.test)  # one (argmax) selection per row


def test_collect_validates_its_inputs(trained):
    data, model, _, _ = trained
    with pytest.raises(ValueError, match=r"domain has values outside \[0, 2\)"):
        collect(model, data.test, num_domains=2)
    with pytest.raises(ValueError, match="num_domains must be an int >= 1"):
        collect(model, data.test, num_domains=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        collect(model, data.test, num_domains=3, batch_size=0)
    with pytest.raises(ValueError, match="sample_size must be an int >= 0"):
        collect(model, data.test, num_domains=3, sample_size=-1)
    with pytest.raises(ValueError, match="table must be an EncodedTable"):
        collect(model, data, num_domains=3)
    with pytest.raises(ValueError, match="routing must be a RoutingOverride"):
        collect(model, data.test, num_domains=3, routing={"top_k": 1})
    with pytest.raises(ValueError, match="top_k=9 must be in"):
        collect(model, data.test, num_domains=3, routing=RoutingOverride(top_k=9))


def test_a_checkpoint_opens_as_its_record(trained, tmp_path):
    """One lane: a checkpoint's as-trained routing is its cached record, equal to the live pass."""
    from analysis.opened import open_path

    data, model, cfg, tcfg = trained
    meta = build_meta(
        cfg, tcfg, data.spec, data.description, data.fingerprint, data.encoders, data.truth
    )
    save_checkpoint(tmp_path / "run", model, meta)
    for part in ("test", "val"):
        op = open_path(tmp_path / "run", data=SOURCE, split=part, cache_dir=tmp_path / "c")
        ref = collect(model, getattr(data, part), num_domains=3)
        col = op.collection()
        np.testing.assert_allclose(col.predictions, ref.predictions, atol=1e-6)
        assert col.stats.isclose(ref.stats, rtol=1e-6, atol=1e-6)
        assert op.has_model and op.domains == list(data.domain_names)
    again = open_path(tmp_path / "run", data=SOURCE, split="val", cache_dir=tmp_path / "c")
    assert again.record.path == op.record.path  # made once, then reused
    with pytest.raises(ValueError, match="part must be one of"):
        open_path(tmp_path / "run", data=SOURCE, split="dev", cache_dir=tmp_path / "c")
