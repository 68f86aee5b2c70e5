"""Splits: random 8:1:1 and per-user temporal, as deterministic sorted index tensors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cesaa.data import make_split, random_split, temporal_split


def check_partition(parts: tuple[torch.Tensor, ...], n: int) -> None:
    for p in parts:
        assert p.dtype == torch.long
        assert torch.equal(p, p.sort().values)
    joined = torch.cat(parts)
    assert len(joined) == n and torch.equal(joined.sort().values, torch.arange(n))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 5_000), seed=st.integers(0, 2**32 - 1))
def test_random_split_sizes_are_8_1_1_and_disjoint(n: int, seed: int) -> None:
    train, val, test = random_split(n, seed=seed)
    check_partition((train, val, test), n)
    assert abs(len(train) - 0.8 * n) <= 1
    assert abs(len(val) - 0.1 * n) <= 1
    assert abs(len(test) - 0.1 * n) <= 1


def test_random_split_is_deterministic_in_the_seed() -> None:
    a, b, c = random_split(1_000, seed=3), random_split(1_000, seed=3), random_split(1_000, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[2], c[2])


def random_log(seed: int = 0, n: int = 3_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 80, n)  # about 37 rows per user; a few users get very few rows below
    user[:6] = [1000, 1000, 1001, 1002, 1002, 1002]
    time = rng.integers(0, 50, n)  # many ties
    return user, time


def test_temporal_split_orders_each_users_rows_in_time() -> None:
    user, time = random_log()
    train, val, test = temporal_split(user, time)
    check_partition((train, val, test), len(user))
    df = pd.DataFrame({"user": user, "time": time})
    df["part"] = ""
    for name, idx in (("train", train), ("val", val), ("test", test)):
        df.loc[idx.numpy(), "part"] = name
    spans = df.groupby(["user", "part"])["time"].agg(["min", "max"]).unstack("part")
    both = spans.dropna()
    assert len(both) > 50
    assert (both[("max", "train")] <= both[("min", "val")]).all()
    assert (both[("max", "train")] <= both[("min", "test")]).all()
    assert (both[("max", "val")] <= both[("min", "test")]).all()
    assert abs(len(train) / len(user) - 0.8) < 0.02
    few = df[df["user"] >= 1000]  # users with fewer than 5 rows go to train
    assert (few["part"] == "train").all()


def test_temporal_split_within_a_user_with_ten_rows() -> None:
    user = np.zeros(10, dtype=int)
    time = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4])
    train, val, test = temporal_split(user, time)
    assert time[val.numpy()].tolist() == [8] and time[test.numpy()].tolist() == [9]
    assert sorted(time[train.numpy()].tolist()) == list(range(8))


def test_temporal_split_is_deterministic_and_accepts_tensors() -> None:
    user, time = random_log(1)
    a = temporal_split(user, time)
    b = temporal_split(torch.from_numpy(user), torch.from_numpy(time))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_none_split_puts_everything_in_test() -> None:
    train, val, test = make_split("none", 7)
    assert len(train) == len(val) == 0 and test.tolist() == list(range(7))


def test_split_errors() -> None:
    with pytest.raises(
        ValueError, match=r"split='weekly' must be one of \['random', 'time', 'temporal'"
    ):
        make_split("weekly", 10)
    with pytest.raises(
        ValueError, match=r"needs a user column and a time column; missing \['time'\]"
    ):
        make_split("temporal", 3, user=np.zeros(3))
    with pytest.raises(ValueError, match=r"fractions=\(0\.5, 0\.5, 0\.5\)"):
        random_split(10, fractions=(0.5, 0.5, 0.5))


def test_time_split_puts_the_latest_rows_in_test() -> None:
    rng = np.random.default_rng(3)
    time = rng.integers(0, 50, 200)  # many ties
    train, val, test = make_split("time", 200, time=time)
    check_partition((train, val, test), 200)
    assert (len(train), len(val), len(test)) == (160, 20, 20)
    assert time[train.numpy()].max() <= time[val.numpy()].min()
    assert time[val.numpy()].max() <= time[test.numpy()].min()
    # ties keep file order: of the rows sharing the cut's time, the earlier rows train
    cut = time[val.numpy()].min()
    tied = np.flatnonzero(time == cut)
    in_train = np.isin(tied, train.numpy())
    assert not (np.diff(in_train.astype(int)) > 0).any()  # train rows come first among ties
    with pytest.raises(ValueError, match="split='time' needs a time column"):
        make_split("time", 3)
