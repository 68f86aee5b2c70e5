# ruff: noqa: F811  (the batch / stats fixtures are imported from routing_batches by name)
"""analysis.stats.RoutingStats (merge, purity, serialization) and the input validation of the
routing measures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from routing_batches import (  # noqa: F401  (fixtures are used by name)
    D,
    E,
    K,
    batch,
    one_expert_per_domain,
    random_batch,
    stats,
)

from analysis import measures
from analysis.measures import (
    activation,
    gating_entropy,
    load_balance,
    mutual_information_from_assignments,
    row_entropy,
)
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays

# ---- RoutingStats: merge, purity, serialization -------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 2**31),
    shards=st.integers(1, 4),
    data=st.data(),
)
def test_merge_of_shards_equals_whole(n, seed, shards, data):
    probs, domain, topk = random_batch(n, seed)
    labels = (np.arange(n) % 2).astype(float)
    preds = np.linspace(0, 1, n)
    part = np.array(data.draw(st.lists(st.integers(0, shards - 1), min_size=n, max_size=n)), int)
    whole = RoutingStats.from_arrays(probs, domain, D, topk_idx=topk, labels=labels, preds=preds)
    merged = RoutingStats.empty(D, E)
    for i in range(shards):
        m = part == i
        shard = RoutingStats.empty(D, E).update(
            probs[m], domain[m], topk_idx=topk[m], labels=labels[m], preds=preds[m]
        )
        merged = merged.merge(shard)
    for name in ("count", "select_count", "coact", "labeled_count"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    assert merged.isclose(whole, rtol=1e-12, atol=1e-12)


def test_update_is_pure_and_matches_from_arrays(batch):
    probs, domain, topk = batch
    empty = RoutingStats.empty(D, E)
    s = empty.update(probs, domain, topk_idx=topk)
    assert empty.rows == 0 and s.rows == 32
    assert s == RoutingStats.from_arrays(probs, domain, D, topk_idx=topk)


def test_selected_mask_and_gates_equal_topk(batch):
    probs, domain, topk = batch
    gates = np.zeros_like(probs)
    np.put_along_axis(gates, topk, np.take_along_axis(probs, topk, axis=1), axis=1)
    a = RoutingStats.from_arrays(probs, domain, D, topk_idx=topk)
    b = RoutingStats.from_arrays(probs, domain, D, selected=gates)
    c = RoutingStats.from_arrays(torch.tensor(probs), torch.tensor(domain), D, selected=gates > 0)
    assert a == b
    assert a.isclose(c)
    np.testing.assert_array_equal(np.diag(a.coact), a.select_count.sum(axis=0))


def test_to_dict_json_round_trip(stats):
    restored = RoutingStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored == stats


def test_from_dict_rejects_bad_snapshots(stats):
    data = stats.to_dict()
    with pytest.raises(ValueError, match="missing fields"):
        RoutingStats.from_dict({k: v for k, v in data.items() if k != "coact"})
    with pytest.raises(ValueError, match=r"RoutingStats.count must have shape \(3,\)"):
        RoutingStats.from_dict({**data, "count": [1, 2]})


def test_merge_rejects_other_shapes(stats):
    with pytest.raises(ValueError, match="cannot merge RoutingStats of shape"):
        stats.merge(RoutingStats.empty(D, E + 1))


def test_update_requires_labels_and_preds_together(stats, batch):
    probs, domain, _ = batch
    with pytest.raises(ValueError, match="labels and preds must be given together"):
        stats.update(probs, domain, labels=np.zeros(32))


# ---- validation messages ------------------------------------------------------------------------


PROBS = np.full((5, 4), 0.25)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"probs": np.full(5, 0.25)}, r"probs must be 2-D \[rows, experts\], got shape \(5,\)"),
        (
            {"probs": PROBS, "domain": [0, 1, 7, 0, 1], "num_domains": 3},
            r"domain has values outside \[0, 3\): \[7\]",
        ),
        (
            {"probs": np.r_[PROBS[:4], [[0.5, 0.1, 0.01, 0.01]]]},
            r"probs rows must sum to 1 \(row 4 sums to 0.62\)",
        ),
        ({"probs": np.r_[PROBS[:2], [[np.nan, 0.5, 0.25, 0.25]]]}, r"probs has NaN"),
        ({"probs": np.r_[[[-0.5, 1.0, 0.25, 0.25]], PROBS]}, "probs has negative values"),
        ({"probs": PROBS, "domain": np.zeros(4, int)}, "domain has 4 rows but probs has 5"),
        ({"domain": [0.5, 1.0]}, r"domain must hold integers, got float64 values such as \[0.5\]"),
        ({"domain": np.zeros((2, 2), int)}, r"domain must be 1-D \[rows\], got shape \(2, 2\)"),
        (
            {"probs": PROBS, "topk_idx": np.full((5, 2), 4)},
            r"topk_idx has values outside \[0, 4\): \[4\]",
        ),
        (
            {"probs": PROBS, "topk_idx": np.ones((5, 2), int)},
            "topk_idx row 0 selects expert 1 twice",
        ),
        ({"probs": PROBS, "topk_idx": np.zeros(5, int)}, r"topk_idx must be 2-D \[rows, k\]"),
        (
            {"probs": PROBS, "selected": np.ones((5, 3))},
            r"selected has 3 experts \(columns\) but probs has 4",
        ),
        ({"probs": PROBS, "num_experts": 5}, r"probs has 4 experts \(columns\) but num_experts=5"),
        ({"joint": [[1.0, -1.0]]}, r"joint has negative values: \[-1\]"),
        ({"joint": np.ones((2, 2)), "num_domains": 3}, "joint has 2 domains"),
        ({"num_domains": 0}, "num_domains must be a positive int, got 0"),
        ({"labels": [0, 2]}, r"labels must be 0/1, got values \[2\]"),
        ({"probs": [["a", "b"]]}, "probs must be a numeric array"),
    ],
)
def test_check_routing_arrays_messages(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_routing_arrays(**kwargs)


def test_public_functions_validate_their_input():
    bad = np.full((3, 2), 0.7)
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        row_entropy(bad)
    with pytest.raises(ValueError, match="probs rows must sum to 1"):
        activation(bad, domain=[0, 0, 1])
    with pytest.raises(ValueError, match=r"domain has values outside \[0, 2\)"):
        load_balance(np.full((3, 2), 0.5), domain=[0, 2, 1], num_domains=2)
    with pytest.raises(ValueError, match="raw probs need domain="):
        gating_entropy(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="expert has values outside"):
        mutual_information_from_assignments([0, 1], [0, 5], num_experts=2)


def test_check_routing_arrays_returns_clean_arrays():
    a = check_routing_arrays(torch.full((2, 2), 0.5), torch.tensor([0, 2]), topk_idx=[[0], [1]])
    assert a.probs.dtype == np.float64 and a.domain.dtype == np.int64
    assert a.num_domains == 3 and a.num_experts == 2
    assert measures.KINDS == ("soft", "hard")
