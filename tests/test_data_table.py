"""EncodedTable.subset: the rows asked for, in the order asked for, every field (numpy as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cesaa.data.table import EncodedTable


def _table(n: int = 11) -> tuple[EncodedTable, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    cols = {
        "cat": rng.integers(0, 50, size=(n, 3)),
        "num": rng.normal(size=(n, 2)).astype(np.float32),
        "domain": rng.integers(0, 4, size=n),
        "label": rng.integers(0, 2, size=n).astype(np.float32),
        "user": rng.integers(0, 9, size=n),
        "item": rng.integers(0, 9, size=n),
        "time": np.arange(n) * 60,
    }
    return EncodedTable(**{k: torch.from_numpy(v) for k, v in cols.items()}), cols


def test_subset_takes_the_rows_in_the_order_given_for_every_field() -> None:
    table, cols = _table()
    rows = np.array([7, 0, 7, 10, 3])  # repeats and any order, as a shuffled batch or a bootstrap
    sub = table.subset(torch.from_numpy(rows))
    assert len(sub) == 5
    for name, full in cols.items():
        np.testing.assert_array_equal(getattr(sub, name).numpy(), full[rows], err_msg=name)


def test_subset_of_a_boolean_mask_and_of_no_rows() -> None:
    table, cols = _table()
    mask = cols["label"] > 0.5
    sub = table.subset(torch.from_numpy(mask))
    np.testing.assert_array_equal(sub.cat.numpy(), cols["cat"][np.flatnonzero(mask)])
    empty = table.subset(torch.zeros(0, dtype=torch.long))
    assert len(empty) == 0 and empty.cat.shape == (0, 3) and empty.num.shape == (0, 2)


def test_subset_keeps_missing_optional_fields_missing() -> None:
    table, _ = _table()
    bare = EncodedTable(cat=table.cat, num=table.num, domain=table.domain, label=table.label)
    sub = bare.subset(torch.tensor([1, 2]))
    assert sub.user is None and sub.item is None and sub.time is None


def test_subset_refuses_bad_positions_by_name() -> None:
    table, _ = _table()
    with pytest.raises(IndexError, match="out of range"):
        table.subset(torch.tensor([0, 11]))
    with pytest.raises(IndexError, match=r"boolean mask of shape \(3,\) for 11 rows"):
        table.subset(torch.tensor([True, False, True]))
