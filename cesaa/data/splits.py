"""Train / validation / test splits as sorted index tensors.

- ``random``: a seeded permutation cut 8:1:1 (the Scenario-Wise Rec benchmark protocol).
- ``time``: all rows sorted by time; the earliest 80% train, the next 10% validation, the latest 10%
  test (ties keep file order): a model is judged on the future, as when it is deployed.
- ``temporal``: per user, rows sorted by time; the first 80% train, the next 10% validation, the last
  10% test (counts rounded half up per user).  Users with fewer than ``min_rows`` rows go to train.
- ``none``: every row in test (to evaluate a trained checkpoint on a new file).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

SPLITS = ("random", "time", "temporal", "none")
# what a training run may ask for: ``files`` keeps a benchmark's distributed train / val / test files
# (Ali-CCP, see cesaa.data.benchmarks); ``none`` has no training rows
TRAIN_SPLITS = ("random", "time", "temporal", "files")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # train, val, test: sorted [n_i] long


def random_split(
    n: int, *, seed: int = 0, fractions: tuple[float, ...] = DEFAULT_FRACTIONS
) -> Split:
    """Random 8:1:1 split of ``range(n)``, deterministic in ``seed`` (numpy ``default_rng``)."""
    f_train, f_val, _ = _check_fractions(fractions)
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(np.floor(n * f_train + 0.5))
    n_val = min(int(np.floor(n * f_val + 0.5)), n - n_train)
    return _as_split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])


def time_split(
    time: np.ndarray | torch.Tensor | pd.Series, *, fractions: tuple[float, ...] = DEFAULT_FRACTIONS
) -> Split:
    """Global split by time: rows sorted by time (ties in file order), the first 80% train, the
    next 10% validation, the rest test; every validation row's time is >= every training row's,
    every test row's >= every validation row's."""
    f_train, f_val, _ = _check_fractions(fractions)
    time = _as_numpy(time, "time")
    if time.ndim != 1:
        raise ValueError(f"time has shape {time.shape}; expected [N]")
    n = time.shape[0]
    order = np.argsort(time, kind="stable")
    n_train = int(np.floor(n * f_train + 0.5))
    n_val = min(int(np.floor(n * f_val + 0.5)), n - n_train)
    return _as_split(order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])


def temporal_split(
    user: np.ndarray | torch.Tensor | pd.Series,
    time: np.ndarray | torch.Tensor | pd.Series,
    *,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    min_rows: int = 5,
) -> Split:
    """Per-user temporal split: within each user, later rows go to validation, then test.

    Ties in time keep file order.  Every validation / test row of a user has a time >= all of that
    user's training rows.
    """
    _, f_val, f_test = _check_fractions(fractions)
    user = _as_numpy(user, "user")
    time = _as_numpy(time, "time")
    if user.shape != time.shape or user.ndim != 1:
        raise ValueError(f"user has shape {user.shape} and time {time.shape}; expected equal [N]")
    if min_rows < 1:
        raise ValueError(f"min_rows={min_rows} must be >= 1")
    n = user.shape[0]
    codes, _ = pd.factorize(user)
    if (codes < 0).any():
        raise ValueError(f"user has missing values, first at row {int(np.argmax(codes < 0))}")
    rows = np.arange(n)
    order = np.lexsort((rows, time, codes))  # by user, then time, then file order
    counts = np.bincount(codes, minlength=codes.max() + 1 if n else 0)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if n else counts
    sorted_codes = codes[order]
    n_user = counts[sorted_codes]  # rows of this row's user
    rank = rows - starts[sorted_codes]  # position within the user, by time
    from_end = n_user - 1 - rank
    n_test = np.floor(n_user * f_test + 0.5).astype(np.int64)
    n_val = np.floor(n_user * f_val + 0.5).astype(np.int64)
    few = n_user < min_rows
    n_test[few] = 0
    n_val[few] = 0
    is_test = from_end < n_test
    is_val = ~is_test & (from_end < n_test + n_val)
    is_train = ~is_test & ~is_val
    return _as_split(order[is_train], order[is_val], order[is_test])


def make_split(
    kind: str,
    n: int,
    *,
    seed: int = 0,
    user: np.ndarray | torch.Tensor | pd.Series | None = None,
    time: np.ndarray | torch.Tensor | pd.Series | None = None,
) -> Split:
    """Dispatch on ``kind`` in :data:`SPLITS`."""
    if kind == "random":
        return random_split(n, seed=seed)
    if kind == "time":
        if time is None:
            raise ValueError("split='time' needs a time column; the data has none")
        return time_split(time)
    if kind == "temporal":
        if user is None or time is None:
            missing = [k for k, v in (("user", user), ("time", time)) if v is None]
            raise ValueError(
                f"split='temporal' needs a user column and a time column; missing {missing}"
            )
        return temporal_split(user, time)
    if kind == "none":
        empty = np.zeros(0, dtype=np.int64)
        return _as_split(empty, empty, np.arange(n))
    raise ValueError(f"split={kind!r} must be one of {list(SPLITS)}")


def _check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions={fractions} must be 3 non-negative numbers summing to 1")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def _as_numpy(x: np.ndarray | torch.Tensor | pd.Series, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, pd.Series):
        return x.to_numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name} must be a numpy array, tensor or Series, got {type(x).__name__}")


def _as_split(*parts: np.ndarray) -> Split:
    return tuple(torch.from_numpy(np.sort(p).astype(np.int64)) for p in parts)  # type: ignore[return-value]
