from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.saturation import (
    chance_saturation,
    read_row_snapshots,
    router_saturation,
    saturation_table,
    settled_epoch,
    settled_statement,
    topk_from_probs,
    topk_overlap,
)
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.registry import default_config
from cesaa.routing_rows import row_sample
from cesaa.train import train


def test_identical_snapshots_are_fully_saturated():
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(8)[:2] for _ in range(100)])
    np.testing.assert_allclose(router_saturation([topk, topk.copy(), topk[:, ::-1]]), 1.0)


def test_relabelled_experts_give_the_closed_form_saturation():
    # E = 4, k = 2, experts relabelled e -> e + 1 (mod 4) between an epoch and the final one:
    # {0,1} -> {1,2} keeps 1 of 2, {0,2} -> {1,3} keeps 0, {1,3} -> {2,0} keeps 0,
    # {2,3} -> {3,0} keeps 1: with these rows in proportions 4:2:1:3 the saturation is
    # (4 * 1/2 + 2 * 0 + 1 * 0 + 3 * 1/2) / 10 = 0.35
    final = np.array([[0, 1]] * 4 + [[0, 2]] * 2 + [[1, 3]] + [[2, 3]] * 3)
    earlier = (final + 1) % 4
    sat = router_saturation([earlier, final])
    assert sat.tolist() == pytest.approx([0.35, 1.0])
    # a row shuffle of uniformly random top-2-of-8 sets keeps k / E = 1/4 on average
    rng = np.random.default_rng(1)
    big = np.stack([rng.permutation(8)[:2] for _ in range(20_000)])
    assert router_saturation([big[rng.permutation(len(big))], big])[0] == pytest.approx(
        0.25, abs=0.01
    )


def test_topk_helpers_and_errors():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert topk_from_probs(probs, 2).tolist() == [[1, 2], [0, 2]]
    assert topk_overlap([[0, 1]], [[1, 2]]).tolist() == [0.5]
    with pytest.raises(ValueError, match="k=4"):
        topk_from_probs(probs, 4)
    with pytest.raises(ValueError, match="shape"):
        topk_overlap([[0, 1]], [[1, 2, 0]])
    with pytest.raises(ValueError, match="empty"):
        router_saturation([])


def test_settled_epoch():
    assert settled_epoch([1, 2, 3, 4, 5], [0.3, 0.95, 0.8, 0.92, 1.0]) == 4
    assert settled_epoch([1, 2, 3], [0.95, 0.97, 1.0]) == 1
    assert settled_epoch([1, 2, 3], [0.2, 0.5, 1.0]) == 3
    assert settled_epoch([], []) is None


def _random_routing_table(e: int, k: int, epochs: int = 5, n: int = 2000) -> pd.DataFrame:
    """Saturation of routing drawn afresh at random every epoch: chance level only."""
    rng = np.random.default_rng(0)
    tops = [np.argsort(rng.random((n, e)), axis=1)[:, :k] for _ in range(epochs)]
    sat = router_saturation(tops)
    return pd.DataFrame(
        {"epoch": list(range(1, epochs + 1)), "saturation": sat, "saturation_chance": k / e}
    )


def test_settled_is_judged_beyond_chance():
    """k = E, or random routing at k/E >= 0.9, "settled at epoch 1" (saturation >= 0.9 by chance
    alone); settling is now measured from chance k/E up to 1."""
    assert chance_saturation(8, 2) == 0.25
    # random routing, fresh every epoch, at k/E = 9/10: saturation ~0.9 everywhere
    t = _random_routing_table(10, 9)
    assert t["saturation"].iloc[:-1].mean() == pytest.approx(0.9, abs=0.01)
    assert settled_epoch(t["epoch"].tolist(), t["saturation"], chance=0.9) == 5
    assert "had not settled" in settled_statement(t)
    # k = E: nothing can be said
    t = _random_routing_table(4, 4)
    assert settled_epoch(t["epoch"].tolist(), t["saturation"], chance=1.0) is None
    s = settled_statement(t)
    assert "Cannot tell" in s and "k = E" in s and "settled at epoch" not in s
    # real settling still reads as such: 0.95 of the way at E = 8, k = 2 (chance 0.25)
    t = pd.DataFrame(
        {"epoch": [1, 2, 3], "saturation": [0.3, 0.97, 1.0], "saturation_chance": 0.25}
    )
    assert "settled at epoch 2 of 3" in settled_statement(t)
    assert settled_epoch([1, 2, 3], [0.3, 0.9, 1.0], chance=0.25) == 3  # 0.9 < 0.925


def test_trainer_writes_row_snapshots_that_saturation_reads(tmp_path):
    torch.set_num_threads(1)
    data = load_data("synthetic:rows=3000,domains=3,seed=0")
    cfg = default_config(
        "cesaa", expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=4, top_k=2
    )
    tcfg = TrainConfig(epochs=3, batch_size=256, lr=1e-2, routing_snapshots=True, patience=0)
    train(cfg, tcfg, data, tmp_path / "run")
    snaps = read_row_snapshots(tmp_path / "run")
    assert [e for e, _ in snaps] == [1, 2, 3]
    want = row_sample(len(data.val))
    for _, arrays in snaps:
        assert arrays["rows"].tolist() == want.tolist()
        assert arrays["topk_idx"].shape == (len(want), 2)
        np.testing.assert_array_equal(arrays["domain"], data.val.domain.numpy()[want])
    table = saturation_table(tmp_path / "run")
    assert table["epoch"].tolist() == [1, 2, 3]
    assert table["saturation"].iloc[-1] == 1.0
    assert ((table["saturation"] >= 0) & (table["saturation"] <= 1)).all()
    assert table["mi_hard"].notna().all()
    assert (table["saturation_chance"] == 2 / 4).all()  # k / E
    assert "epoch" in settled_statement(table)
    # a sample that changes between epochs is refused, naming the file
    path = tmp_path / "run" / "routing" / "rows_epoch_002.npz"
    arrays = dict(np.load(path))
    arrays["rows"] = arrays["rows"] + 1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="rows_epoch_002.npz samples other rows"):
        read_row_snapshots(tmp_path / "run")


def test_no_snapshots(tmp_path):
    assert read_row_snapshots(tmp_path) == []
    t = saturation_table(tmp_path)
    assert t.empty and "No row-level snapshots" in settled_statement(t)
