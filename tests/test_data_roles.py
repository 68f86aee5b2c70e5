from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

from cesaa.data.roles import domain_candidates, propose_roles, schema_from_roles


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


def movielens_like(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The issue's CSV (``rating_ts,movie,viewer,gender_of_viewer,occupation,clicked``) with
    MovieLens-100k-like values (943 viewers, 1682 movies, Unix seconds of 1997-98, 21
    occupations of unequal size), drawn here: no data copied."""
    rng = np.random.default_rng(seed)
    jobs = [f"job{j:02d}" for j in range(21)]
    share = 1 / (np.arange(21) + 3.0)
    viewer_job = rng.choice(jobs, 943, p=share / share.sum())
    viewer_sex = rng.choice(["M", "F"], 943, p=[0.71, 0.29])
    viewer = rng.integers(1, 944, n)
    pop = 1 / (np.arange(1682) + 10.0)
    movie = rng.choice(1682, n, p=pop / pop.sum()) + 1
    ts = 874_724_710 + rng.integers(0, 215 * 86_400, n)  # Sep 1997 to Apr 1998
    score = 0.6 * (viewer_sex[viewer - 1] == "F") - 0.002 * movie + rng.normal(0, 1, n)
    return pd.DataFrame(
        {
            "rating_ts": ts,
            "movie": movie,
            "viewer": viewer,
            "gender_of_viewer": viewer_sex[viewer - 1],
            "occupation": viewer_job[viewer - 1],
            "clicked": (score > np.median(score)).astype(int),
        }
    )


def test_the_issue_csv_reads_ids_time_and_a_domain_from_the_values(tmp_path):
    path = tmp_path / "ratings.csv"
    movielens_like().to_csv(path, index=False)
    df = pd.read_csv(path)
    roles = {p.column: p for p in propose_roles(df)}
    assert {c: p.role for c, p in roles.items()} == {
        "rating_ts": "time",
        "movie": "item",
        "viewer": "user",
        "gender_of_viewer": "categorical",
        "occupation": "domain",
        "clicked": "label",
    }
    assert "categorical id" in roles["viewer"].reason and "categorical id" in roles["movie"].reason
    first, last = (pd.Timestamp(f(df["rating_ts"]), unit="s").date() for f in (min, max))
    assert f"Unix seconds from {first} to {last}" in roles["rating_ts"].reason
    # the alternatives, best first, with their value counts
    cands = domain_candidates(df, exclude=("rating_ts", "movie", "viewer", "clicked"))
    assert [d.column for d in cands] == ["occupation", "gender_of_viewer"]
    sex = df["gender_of_viewer"].value_counts()
    assert cands[1].counts == {"M": int(sex["M"]), "F": int(sex["F"])}
    assert cands[1].effective == pytest.approx(np.exp(entropy(sex.to_numpy())))
    assert cands[0].effective > cands[1].effective and cands[0].usable


def test_values_decide_where_names_do_not():
    n = 400
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
            "shop_id": rng.integers(1, 40, n),  # an id: repeated integers, not a quantity
            "row_id": np.arange(n),  # an id-like name but never repeated: a number
            "hashed_user_key": rng.integers(1_000_000_000, 2_000_000_000, n),  # not a time
            "minutes": rng.integers(0, 500, n),
            "clicked": rng.integers(0, 2, n),
            "tab": rng.choice(["a", "b"], n),
        }
    )
    roles = {p.column: p for p in propose_roles(df)}
    got = {c: p.role for c, p in roles.items()}
    assert got["when"] == "time" and "dates from 2024-01-01" in roles["when"].reason
    assert got["shop_id"] == "categorical" and "integer ids" in roles["shop_id"].reason
    assert got["row_id"] == "numeric"
    assert got["hashed_user_key"] == "numeric"
    assert got["minutes"] == "numeric"


def test_domain_candidates_prefer_many_balanced_values_with_rows_of_their_own():
    n = 1200
    df = pd.DataFrame(
        {
            "two": ["x", "y"] * (n // 2),  # balanced, 2 values: effective 2
            "skewed": ["p"] * (n - 40) + [f"q{i}" for i in range(40)],  # 41 values, one dominant
            "four": np.repeat(["a", "b", "c", "d"], [300, 300, 300, 300]),  # effective 4
            "tiny": np.repeat([f"t{i}" for i in range(60)], n // 60),  # 20 rows each: too few
        }
    )
    cands = domain_candidates(df)
    assert [d.column for d in cands] == ["four", "two", "tiny", "skewed"]
    assert cands[0].effective == pytest.approx(4.0)
    skew_p = np.array([n - 40] + [1] * 40) / n
    assert cands[3].effective == pytest.approx(np.exp(entropy(skew_p)))
    assert not cands[2].usable and cands[2].smallest == 20
    assert "4 values, as spread as 4.0 equal ones" in cands[0].summary()
