from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.collect import collect
from analysis.compare import (
    Comparison,
    activation_evolution,
    align_experts,
    aligned_activation,
    compare,
    read_routing_snapshots,
    routing_evolution,
)
from analysis.measures import activation, mutual_information
from analysis.stats import RoutingStats
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import default_config
from cesaa.train import train

D, E, N = 3, 6, 600


def routing(seed: int = 0, sharp: float = 3.0):
    """Rows whose gate prefers expert 2d or 2d+1 of their domain d; top-1 = argmax."""
    rng = np.random.default_rng(seed)
    domain = rng.integers(0, D, N)
    logits = rng.normal(size=(N, E))
    logits[np.arange(N), 2 * domain + rng.integers(0, 2, N)] += sharp
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, domain, probs.argmax(axis=1)


def test_align_experts_recovers_a_known_permutation():
    rng = np.random.default_rng(0)
    act_a = rng.dirichlet(np.ones(E), size=D)
    perm = rng.permutation(E)
    act_b = act_a[:, perm]  # b's expert j is a's expert perm[j]
    for cost in ("l1", "cosine"):
        found = align_experts(act_a, act_b, cost=cost)
        np.testing.assert_array_equal(found, np.argsort(perm))
        np.testing.assert_allclose(act_b[:, found], act_a)
    # counts work as well as probabilities (rows are normalized)
    np.testing.assert_array_equal(align_experts(act_a * 50, act_b * 7), np.argsort(perm))
    # fewer experts in b: the unmatched expert of a gets -1
    short = align_experts(act_a, act_b[:, 1:])
    assert (short == -1).sum() == 1 and short[perm[0]] == -1


def test_compare_a_relabelled_copy_agrees_fully():
    probs, domain, top1 = routing()
    perm = np.random.default_rng(1).permutation(E)
    stats_a = RoutingStats.from_arrays(probs, domain, D)
    stats_b = RoutingStats.from_arrays(probs[:, perm], domain, D)  # b's expert j = a's perm[j]
    top1_b = np.argsort(perm)[top1]
    res = compare(stats_a, stats_b, top1, top1_b)
    assert isinstance(res, Comparison)
    np.testing.assert_array_equal(res.permutation, np.argsort(perm))
    np.testing.assert_allclose(res.aligned_diff, 0, atol=1e-12)
    np.testing.assert_allclose(res.tv_distance, 0, atol=1e-12)
    assert res.routing_agreement == 1.0
    assert 0 < res.agreement_chance < 0.5
    assert res.mi_soft_a == pytest.approx(res.mi_soft_b, rel=1e-5)
    assert res.mi_hard_a == pytest.approx(res.mi_hard_b, rel=1e-5)
    json.dumps(res.to_dict())


def test_routing_agreement_has_a_known_value():
    probs, domain, top1 = routing()
    stats = RoutingStats.from_arrays(probs, domain, D)
    other = top1.copy()
    flip = np.arange(N) % 4 == 0  # a quarter of the rows choose another expert
    other[flip] = (other[flip] + 1) % E
    res = compare(stats, stats, top1, other)
    np.testing.assert_array_equal(res.permutation, np.arange(E))
    assert res.routing_agreement == pytest.approx(0.75)
    # independent choices agree about as often as chance says
    rand = np.random.default_rng(5).integers(0, E, N)
    res = compare(stats, stats, top1, rand)
    assert res.routing_agreement == pytest.approx(res.agreement_chance, abs=0.06)
    assert compare(stats, stats).routing_agreement is None


def test_aligned_difference_shows_what_changed():
    act_a = np.array([[0.6, 0.3, 0.1, 0, 0, 0], [0, 0.1, 0.6, 0.3, 0, 0], [0, 0, 0, 0.1, 0.6, 0.3]])
    act_b = act_a.copy()
    act_b[0, [0, 1]] = [0.5, 0.4]  # domain 0 moves 0.1 from expert 0 to expert 1
    perm = np.array([3, 5, 0, 1, 4, 2])
    domain = np.repeat(np.arange(D), 10)
    a = RoutingStats.from_arrays(act_a[domain], domain, D)
    b = RoutingStats.from_arrays(act_b[domain][:, perm], domain, D)
    res = compare(a, b)
    np.testing.assert_array_equal(res.permutation, np.argsort(perm))
    expected = np.zeros((D, E))
    expected[0, [0, 1]] = [-0.1, 0.1]
    np.testing.assert_allclose(res.aligned_diff, expected, atol=1e-12)
    np.testing.assert_allclose(res.tv_distance, [0.1, 0, 0], atol=1e-12)


def test_aligned_activation_puts_b_in_a_s_expert_order():
    rng = np.random.default_rng(3)
    act_a = rng.dirichlet(np.ones(E), size=D)
    perm = rng.permutation(E)
    act_b = act_a[:, perm]  # b's expert j is a's expert perm[j]
    found = align_experts(act_a, act_b)
    np.testing.assert_allclose(aligned_activation(act_b, found), act_a, atol=1e-12)
    # the aligned difference of compare is exactly aligned(b) - a
    probs, domain, _ = routing()
    sa = RoutingStats.from_arrays(probs, domain, D)
    sb = RoutingStats.from_arrays(np.roll(probs, 1, axis=1) * 0.5 + 0.5 / E, domain, D)
    res = compare(sa, sb)
    expected = aligned_activation(activation(sb, "soft"), res.permutation) - activation(sa, "soft")
    np.testing.assert_allclose(res.aligned_diff, expected, atol=1e-12)
    # an unmatched expert of a (-1) is a NaN column
    short = aligned_activation(act_b[:, 1:], align_experts(act_a, act_b[:, 1:]))
    assert short.shape == (D, E) and np.isnan(short[:, perm[0]]).all()
    with pytest.raises(ValueError, match="perm\\[0\\] = 9 is not an expert"):
        aligned_activation(act_b, [9] + [0] * (E - 1))
    with pytest.raises(ValueError, match="act_b must be 2-D"):
        aligned_activation(act_b[0], np.arange(E))
    with pytest.raises(ValueError, match="perm must be a 1-D integer array"):
        aligned_activation(act_b, np.zeros(E) + 0.5)


def test_compare_validation_errors():
    probs, domain, top1 = routing()
    a = RoutingStats.from_arrays(probs, domain, D)
    b = RoutingStats.from_arrays(probs[:, :4] / probs[:, :4].sum(1, keepdims=True), domain, D)
    with pytest.raises(ValueError, match=r"stats_b has shape \(3, 4\).*stats_a has \(3, 6\)"):
        compare(a, b)
    with pytest.raises(ValueError, match="sel_a and sel_b"):
        compare(a, a, top1)
    with pytest.raises(ValueError, match="sel_b has 10 rows but sel_a has 600"):
        compare(a, a, top1, top1[:10])
    with pytest.raises(ValueError, match=r"expert has values outside \[0, 6\)"):
        compare(a, a, top1, top1 + 6)
    with pytest.raises(ValueError, match="stats_a must be a RoutingStats or a Collection"):
        compare(probs, a)
    with pytest.raises(ValueError, match="cost must be one of"):
        compare(a, a, cost="l2")
    with pytest.raises(ValueError, match="kind must be one of"):
        compare(a, a, kind="dense")
    with pytest.raises(ValueError, match=r"act_a has no routing mass for domains \[1\]"):
        align_experts(np.array([[1.0, 0], [0, 0]]), np.eye(2))
    with pytest.raises(ValueError, match="joint has 3 domains"):
        align_experts(np.eye(2), np.ones((3, 2)))


def test_compare_collections_of_a_trained_model(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_data("synthetic:rows=4000,domains=3,seed=0")
        cfg = default_config("cesaa", alpha=0.05, expert_hidden=(16,), expert_dim=8,
                             tower_hidden=(8,), num_experts=4, top_k=2)  # fmt: skip
        tcfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, routing_snapshots=True)
        model = train(cfg, tcfg, data, tmp_path / "run").model
        # the trainer's per-epoch snapshots are what routing_evolution reads
        evolution = routing_evolution(tmp_path / "run")
        assert evolution.epoch.tolist() == [1, 2]
        assert (evolution.rows == len(data.val)).all()
        base = collect(model, data.test, num_domains=3)
        same = compare(base, collect(model, data.test, num_domains=3))
        assert same.routing_agreement == 1.0
        np.testing.assert_allclose(same.aligned_diff, 0, atol=1e-12)
        busy = int(np.bincount(base.top1).argmax())
        ko = collect(model, data.test, num_domains=3, routing=RoutingOverride(knocked_out=(busy,)))
        res = compare(base, ko)
        assert res.routing_agreement < 1.0
        assert sorted(res.permutation.tolist()) == [0, 1, 2, 3]
    finally:
        torch.set_num_threads(threads)


def write_snapshots(run, epochs):
    """Snapshots as the trainer writes them: routing/epoch_XXX.json = RoutingStats.to_dict()."""
    (run / "routing").mkdir(parents=True)
    written = {}
    for epoch, sharp in epochs:
        probs, domain, _ = routing(seed=epoch, sharp=sharp)
        stats = RoutingStats.from_arrays(probs, domain, D)
        (run / "routing" / f"epoch_{epoch:03d}.json").write_text(json.dumps(stats.to_dict()))
        written[epoch] = stats
    return written


def test_routing_evolution_reads_the_snapshots(tmp_path):
    written = write_snapshots(tmp_path, [(3, 4.0), (1, 0.0), (2, 2.0), (10, 6.0)])
    (tmp_path / "routing" / "notes.txt").write_text("ignored")
    snaps = read_routing_snapshots(tmp_path)
    assert [e for e, _ in snaps] == [1, 2, 3, 10]
    assert all(s == written[e] for e, s in snaps)
    df = routing_evolution(tmp_path)
    assert list(df.columns) == [
        "epoch", "rows", "mi_soft", "mi_hard", "mi_soft_normalized", "mi_hard_normalized"
    ]  # fmt: skip
    assert df.epoch.tolist() == [1, 2, 3, 10] and (df.rows == N).all()
    assert df.mi_soft.is_monotonic_increasing  # sharper domain preference each epoch
    assert df.mi_soft.iloc[2] == pytest.approx(mutual_information(written[3], "soft"))
    long = activation_evolution(tmp_path, "hard", domain_names=["a", "b", "c"])
    assert list(long.columns) == ["epoch", "domain", "expert", "p"]
    assert len(long) == 4 * D * E
    cube = long.p.to_numpy().reshape(4, D, E)
    np.testing.assert_allclose(cube.sum(axis=2), 1.0)
    first = long[(long.epoch == 10) & (long.domain == "b")].p.to_numpy()
    np.testing.assert_allclose(first, cube[3, 1])


def test_routing_evolution_without_snapshots_and_errors(tmp_path):
    assert routing_evolution(tmp_path).empty
    assert list(routing_evolution(tmp_path).columns)[:3] == ["epoch", "rows", "mi_soft"]
    assert activation_evolution(tmp_path).empty
    with pytest.raises(ValueError, match="is not a folder"):
        routing_evolution(tmp_path / "missing")
    (tmp_path / "routing").mkdir()
    (tmp_path / "routing" / "epoch_001.json").write_text("{not json")
    with pytest.raises(ValueError, match="epoch_001.json: not a routing snapshot"):
        routing_evolution(tmp_path)
    (tmp_path / "routing" / "epoch_001.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ValueError, match="epoch_001.json: RoutingStats dict is missing fields"):
        routing_evolution(tmp_path)
