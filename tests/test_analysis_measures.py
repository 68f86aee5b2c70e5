# ruff: noqa: F811  (the batch / stats fixtures are imported from routing_batches by name)
"""Routing measures (analysis.measures): MI, activation and load, entropy, balance, domain
similarity, summary: known values and agreement with scipy / sklearn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from routing_batches import (  # noqa: F401  (fixtures are used by name)
    D,
    E,
    K,
    batch,
    one_expert_per_domain,
    random_batch,
    stats,
)
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import mutual_info_score

from analysis.measures import (
    activation,
    domain_similarity,
    expert_load,
    gating_entropy,
    load_balance,
    mutual_information,
    mutual_information_from_assignments,
    row_entropy,
    row_entropy_by_domain,
    summarize,
)
from analysis.stats import RoutingStats
from cesaa import losses

# ---- mutual information: known values -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_mi_is_log_d_for_one_expert_per_balanced_domain(kind):
    probs, domain, topk = one_expert_per_domain()
    s = RoutingStats.from_arrays(probs, domain, 3, topk_idx=topk)
    assert mutual_information(s, kind) == pytest.approx(math.log(3), rel=1e-6)
    assert mutual_information(s, kind, normalized=True) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_mi_is_zero_when_routing_ignores_the_domain(kind):
    probs, _, topk = random_batch(12, seed=1)
    # every domain sees exactly the same rows
    s = RoutingStats.from_arrays(
        np.tile(probs, (D, 1)), np.repeat(np.arange(D), 12), D, topk_idx=np.tile(topk, (D, 1))
    )
    assert mutual_information(s, kind) == pytest.approx(0.0, abs=1e-6)
    assert mutual_information(s, kind, normalized=True) == pytest.approx(0.0, abs=1e-6)


def test_mi_of_a_joint_matrix():
    independent = np.outer([0.2, 0.3, 0.5], [0.1, 0.4, 0.5])
    assert mutual_information(independent) == pytest.approx(0.0, abs=1e-6)
    assert mutual_information(np.diag([5.0, 5.0])) == pytest.approx(math.log(2), rel=1e-6)
    # one domain: nothing to reach, so the fraction is n/a (NaN), not 0 ("ignores the domain")
    assert math.isnan(mutual_information(np.array([[3.0, 1.0]]), normalized=True))


def test_soft_mi_is_the_training_loss_function(stats, batch, monkeypatch):
    probs, domain, _ = batch
    # float32 probs: joint_domain_expert fails on float64 (index_add of .float() into a double)
    joint = losses.joint_domain_expert(torch.tensor(probs).float(), torch.tensor(domain), D)
    assert mutual_information(stats, "soft") == pytest.approx(
        float(losses.mutual_information(joint)), rel=1e-5
    )
    monkeypatch.setattr(losses, "mutual_information", lambda joint: torch.tensor(0.123))
    assert mutual_information(stats, "soft") == pytest.approx(0.123)


@pytest.mark.parametrize("seed", range(4))
def test_hard_mi_matches_sklearn_for_top1(seed):
    rng = np.random.default_rng(seed)
    n = 500
    domain = rng.integers(0, D, n)
    # experts depend weakly on the domain
    expert = np.where(rng.random(n) < 0.3, domain, rng.integers(0, E, n))
    probs = np.full((n, E), 1 / E)
    s = RoutingStats.from_arrays(probs, domain, D, topk_idx=expert[:, None])
    expected = mutual_info_score(domain, expert)
    assert mutual_information(s, "hard") == pytest.approx(expected, rel=1e-4, abs=1e-7)
    got = mutual_information_from_assignments(domain, expert)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_hard_mi_with_default_argmax_selection():
    probs, domain, _ = random_batch(200, seed=3)
    s = RoutingStats.from_arrays(probs, domain, D)  # no topk_idx: top-1 of probs
    expected = mutual_info_score(domain, probs.argmax(axis=1))
    assert mutual_information(s, "hard") == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_mi_from_raw_arrays_equals_from_stats(batch, stats):
    probs, domain, topk = batch
    assert mutual_information(probs, "hard", domain=domain, topk_idx=topk) == pytest.approx(
        mutual_information(stats, "hard")
    )


def test_mi_rejects_unknown_kind(stats):
    with pytest.raises(ValueError, match="kind must be one of"):
        mutual_information(stats, "medium")


# ---- activation / load --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_activation_rows_sum_to_one_and_load_sums_to_one(stats, kind):
    act = activation(stats, kind)
    assert act.shape == (D, E)
    np.testing.assert_allclose(act.sum(axis=1), 1.0)
    assert expert_load(stats, kind).sum() == pytest.approx(1.0)


def test_activation_known_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    topk = np.array([[0, 1], [1, 2], [2, 0]])
    s = RoutingStats.from_arrays(probs, [0, 0, 1], 2, topk_idx=topk)
    np.testing.assert_allclose(activation(s, "soft"), [[0.4, 0.4, 0.2], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(activation(s, "hard"), [[0.25, 0.5, 0.25], [0.5, 0, 0.5]])
    np.testing.assert_allclose(expert_load(s, "hard"), [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(activation(probs, "soft", domain=[0, 0, 1]), activation(s, "soft"))


def test_activation_of_a_domain_without_rows_is_nan():
    s = RoutingStats.from_arrays(np.eye(2), [0, 0], 3)
    assert np.isnan(activation(s)[1:]).all()
    assert not np.isnan(activation(s)[0]).any()


# ---- entropy ------------------------------------------------------------------------------------


def test_row_entropy_uniform_and_one_hot():
    probs = np.vstack([np.full(E, 1 / E), np.eye(E)[1]])
    np.testing.assert_allclose(row_entropy(probs), [math.log(E), 0.0], atol=1e-12)


def test_row_entropy_by_domain_keeps_rows_and_domains_with_the_bound_log_e():
    probs = np.vstack([np.full(E, 1 / E), np.eye(E)[1], np.eye(E)[0]])
    out = row_entropy_by_domain(probs, [2, 0, 2])
    np.testing.assert_allclose(out["values"], [math.log(E), 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(out["domain"], [2, 0, 2])
    assert out["domain"].dtype == np.int64
    assert out["max"] == pytest.approx(math.log(E))
    assert (out["values"] <= out["max"] + 1e-12).all()
    with pytest.raises(ValueError, match="domain has 2 rows but probs has 3"):
        row_entropy_by_domain(probs, [0, 1])


def test_gating_entropy_uniform_gate_is_one_normalized():
    s = RoutingStats.from_arrays(np.full((6, E), 1 / E), [0, 1, 2, 0, 1, 2], D)
    table = gating_entropy(s, ["a", "b", "c"])
    assert list(table.index) == ["overall", "a", "b", "c"]
    assert table.loc["overall", "row_entropy"] == pytest.approx(math.log(E))
    np.testing.assert_allclose(table["row_entropy_norm"], 1.0)
    np.testing.assert_allclose(table["marginal_entropy_norm"], 1.0)
    assert table.loc["a", "rows"] == 2


def test_gating_entropy_one_hot_gates():
    probs, domain, topk = one_expert_per_domain()
    table = gating_entropy(RoutingStats.from_arrays(probs, domain, 3, topk_idx=topk))
    np.testing.assert_allclose(table["row_entropy"], 0.0, atol=1e-12)
    np.testing.assert_allclose(table.loc["domain_0":, "marginal_entropy"], 0.0, atol=1e-12)
    # overall, the three domains use three experts evenly
    assert table.loc["overall", "marginal_entropy_norm"] == pytest.approx(1.0)


# ---- load balance -------------------------------------------------------------------------------


def test_cv_of_equal_loads_is_zero_and_of_one_expert_is_max():
    probs = np.eye(E)[np.arange(8) % E]
    lb = load_balance(RoutingStats.from_arrays(probs, np.zeros(8, int), 1))
    assert lb["cv"] == pytest.approx(0.0)
    assert lb["dead_experts"] == []
    probs = np.eye(E)[np.zeros(8, int)]
    lb = load_balance(RoutingStats.from_arrays(probs, np.zeros(8, int), 1))
    assert lb["cv"] == pytest.approx(math.sqrt(E - 1))
    assert lb["dead_experts"] == [1, 2, 3]


def test_dead_expert_threshold():
    # 1000 selections over E=4: uniform share 0.25, dead below 0.0025, i.e. fewer than 2.5 picks
    counts = [500, 497, 2, 1]  # experts 2 and 3 dead
    expert = np.repeat(np.arange(E), counts)
    s = RoutingStats.from_arrays(
        np.eye(E)[expert], np.zeros(1000, int), 1, topk_idx=expert[:, None]
    )
    lb = load_balance(s)
    assert lb["dead_threshold"] == pytest.approx(0.0025)
    assert lb["dead_experts"] == [2, 3]
    assert load_balance(s, dead_fraction=0.005)["dead_experts"] == [3]


def test_coactivation_and_top1_margin():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    topk = np.array([[0, 1], [0, 2]])
    lb = load_balance(RoutingStats.from_arrays(probs, [0, 1], 2, topk_idx=topk))
    np.testing.assert_allclose(lb["coactivation"], [[1, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    assert lb["top1_margin"] == pytest.approx(0.25)
    np.testing.assert_allclose(lb["top1_margin_per_domain"], [0.5, 0.0])


# ---- domain similarity --------------------------------------------------------------------------


def test_domain_similarity_known_values_and_scipy_agreement(stats):
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    js = domain_similarity(RoutingStats.from_arrays(probs, [0, 1, 2], 3))
    assert js[0, 1] == pytest.approx(0.0)
    assert js[0, 2] == pytest.approx(math.log(2))
    act = activation(stats)
    js = domain_similarity(stats)
    np.testing.assert_allclose(js, js.T)
    assert js[0, 2] == pytest.approx(jensenshannon(act[0], act[2]) ** 2)


def test_domain_similarity_of_a_domain_without_rows_is_nan():
    js = domain_similarity(RoutingStats.from_arrays(np.eye(2), [0, 1], 3))
    assert np.isnan(js[2]).all() and np.isnan(js[:, 2]).all()
    assert js[0, 1] == pytest.approx(math.log(2))


# ---- summary ------------------------------------------------------------------------------------


def test_summarize_is_json_safe_with_names(batch):
    probs, domain, topk = batch
    s = RoutingStats.from_arrays(
        probs, domain, D + 1, topk_idx=topk, labels=domain % 2, preds=np.full(32, 0.5)
    )
    out = summarize(s, ["a", "b", "c", "empty"], ["e0", "e1", "e2", "e3"])
    text = json.dumps(out, allow_nan=False)  # NaN of the empty domain became null
    assert json.loads(text)["activation_soft"][3] == [None] * E
    assert out["mi_hard"] == pytest.approx(mutual_information(s, "hard"))
    assert out["mean_selected_per_row"] == pytest.approx(K)
    assert out["entropy"]["a"]["rows"] == int((domain == 0).sum())
    assert out["pos_rate_per_domain"][1] == pytest.approx(1.0)


def test_summarize_rejects_wrong_number_of_names(stats):
    with pytest.raises(ValueError, match="domain_names has 2 names but there are 3 domains"):
        summarize(stats, ["a", "b"])
