from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cesaa.data.roles import propose_roles, schema_from_roles


def _clicks(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user": rng.integers(1, 90, n),
            "item": rng.integers(1, 300, n),
            "tab": rng.choice(["home", "search", "cart"], n),
            "click": rng.integers(0, 2, n),
        }
    )


def test_user_item_tab_click_csv(tmp_path):
    path = tmp_path / "clicks.csv"
    _clicks().to_csv(path, index=False)
    df = pd.read_csv(path)
    got = {p.column: p.role for p in propose_roles(df)}
    assert got == {"user": "user", "item": "item", "tab": "domain", "click": "label"}
    assert all(p.reason for p in propose_roles(df))
    schema = schema_from_roles(got)
    assert schema == {
        "label": "click",
        "domain": "tab",
        "categorical": ["user", "item"],
        "numeric": [],
        "user": "user",
        "item": "item",
        "time": None,
    }


def test_rest_by_dtype_and_cardinality():
    n = 300
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "scenario": rng.choice(list("abcde"), n),
            "city": rng.choice(["x", "y", "z", "w", "v", "u", "t"], n),  # more values than domain
            "price": rng.random(n),
            "age": rng.integers(0, 100, n),  # many integers -> numeric
            "stars": rng.integers(1, 6, n),  # few integers -> categorical
            "constant": 1,
            "comment": [f"text {i}" for i in range(n)],
            "y": rng.integers(0, 2, n),
            "flag": rng.integers(0, 2, n),  # a second 0/1 column: y wins by its name
            "ts": np.arange(n),
        }
    )
    roles = {p.column: p for p in propose_roles(df)}
    assert {c: p.role for c, p in roles.items()} == {
        "scenario": "domain",
        "city": "categorical",
        "price": "numeric",
        "age": "numeric",
        "stars": "categorical",
        "constant": "ignore",
        "comment": "ignore",
        "y": "label",
        "flag": "categorical",
        "ts": "time",
    }
    assert "domain-like name" in roles["scenario"].reason
    assert "almost every row" in roles["comment"].reason


def test_unnamed_domain_and_label_fall_back_to_the_data():
    df = pd.DataFrame({"a": ["p", "q"] * 10, "b": list("abcdefghij") * 2, "outcome2": [0, 1] * 10})
    got = {p.column: p.role for p in propose_roles(df)}
    assert got["a"] == "domain"  # the text column with the fewest values
    assert got["outcome2"] == "label"  # the only 0/1 column


def test_schema_errors_name_the_problem():
    with pytest.raises(ValueError, match="exactly one column must be the label, got none"):
        schema_from_roles({"a": "domain", "b": "categorical"})
    with pytest.raises(ValueError, match=r"the domain, got \['a', 'b'\]"):
        schema_from_roles({"a": "domain", "b": "domain", "c": "label", "d": "numeric"})
    with pytest.raises(ValueError, match="no feature columns"):
        schema_from_roles({"a": "domain", "c": "label"})
    with pytest.raises(ValueError, match="unknown roles"):
        schema_from_roles({"a": "feature"})
    with pytest.raises(ValueError, match="no columns"):
        propose_roles(pd.DataFrame())
