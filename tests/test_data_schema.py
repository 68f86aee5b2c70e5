"""Table schemas (TOML / YAML), CSV / Parquet loading, validation errors and encoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cesaa.data import (
    encode,
    fit_encoders,
    load_data,
    load_table_frame,
    read_schema,
    spec_from_encoders,
)
from cesaa.data.schema import TableSchema

TOML = """\
data = "{data}"
label = "click"
domain = "tab"
domains = ["home", "search"]
categorical = ["user_id", "item_id", "city"]
numeric = ["price", "score"]
user = "user_id"
item = "item_id"
time = "ts"
"""

YAML = """\
data: {data}
label: click
domain: tab
domains: [home, search]
categorical: [user_id, item_id, city]
numeric: [price, score]
user: user_id
item: item_id
time: ts
"""


def clicks(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": [f"u{i:03d}" for i in rng.integers(0, 12, n)],
            "item_id": rng.integers(100, 120, n),
            "city": rng.choice(["paris", "rome", "oslo", "007"], n),
            "price": rng.normal(10, 3, n),
            "score": rng.integers(0, 5, n).astype(float),
            "click": rng.integers(0, 2, n),
            "tab": rng.choice(["home", "search"], n),
            "ts": 1_000 + rng.permutation(n),
        }
    )


def write(
    tmp_path: Path,
    df: pd.DataFrame,
    data: str = "clicks.csv",
    schema: str = TOML,
    ext: str = ".toml",
) -> Path:
    """Write ``df`` to ``data`` (format from the extension) and a schema naming it; return the schema."""
    if data.endswith(".parquet"):
        df.to_parquet(tmp_path / data, index=False)
    elif data.endswith(".csv"):
        df.to_csv(tmp_path / data, index=False)
    path = tmp_path / (Path(data).stem + ext)
    path.write_text(schema.format(data=data))
    return path


def assert_tables_equal(a, b) -> None:
    for name in ("cat", "num", "domain", "label", "user", "item", "time"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name


# --- round trips ---------------------------------------------------------------------------------


def test_csv_and_parquet_give_identical_encoded_tables(tmp_path: Path) -> None:
    df = clicks()
    a = load_data(f"table:{write(tmp_path, df, 'clicks.csv')}")
    b = load_data(f"table:{write(tmp_path, df, 'clicks.parquet')}")
    assert a.fingerprint == b.fingerprint
    for part in ("train", "val", "test"):
        assert_tables_equal(getattr(a, part), getattr(b, part))
    assert a.encoders == b.encoders
    assert a.spec.domain_names == ("home", "search")
    assert a.spec.cat_names == ("user_id", "item_id", "city")
    assert a.description["kind"] == "table" and a.description["rows"] == 60


def test_csv_keeps_leading_zeros_in_categorical_values(tmp_path: Path) -> None:
    data = load_data(f"table:{write(tmp_path, clicks())}")
    assert "007" in data.encoders["categorical"][2]["vocab"]


def test_yaml_and_toml_schemas_are_equivalent(tmp_path: Path) -> None:
    df = clicks()
    toml_path = write(tmp_path, df, "clicks.csv", TOML)
    yaml_path = write(tmp_path, df, "clicks.csv", YAML, ".yaml")
    a, b = read_schema(toml_path), read_schema(yaml_path)
    assert a.to_dict() == b.to_dict()
    assert a.data == tmp_path / "clicks.csv"
    assert (
        load_data(f"table:{toml_path}").fingerprint == load_data(f"table:{yaml_path}").fingerprint
    )


@pytest.mark.parametrize(
    "label", [[0, 1, 1, 0], [False, True, True, False], [0.0, 1.0, 1.0, 0.0]], ids=str
)
def test_label_may_be_bool_int_or_float(tmp_path: Path, label: list) -> None:
    df = clicks(4).assign(click=label, tab=["home", "search", "home", "search"])
    df.to_parquet(tmp_path / "c.parquet", index=False)
    frame, schema = load_table_frame(write(tmp_path, df, "c.parquet"))
    table = encode(frame, fit_encoders(frame, schema))
    assert table.label.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert table.label.dtype == torch.float32


def test_encoders_are_json_serializable_and_reencode_exactly(tmp_path: Path) -> None:
    data = load_data(f"table:{write(tmp_path, clicks())}")
    restored = json.loads(json.dumps(data.encoders))
    frame, _ = load_table_frame(tmp_path / "clicks.toml")
    assert_tables_equal(encode(frame, restored), encode(frame, data.encoders))
    assert spec_from_encoders(restored) == data.spec


def test_default_domains_are_sorted_observed_values_numerically(tmp_path: Path) -> None:
    df = clicks(30).assign(tab=[10, 2, 1] * 10)
    schema = TOML.replace('domains = ["home", "search"]\n', "")
    data = load_data(f"table:{write(tmp_path, df, 'clicks.csv', schema)}")
    assert data.spec.domain_names == ("1", "2", "10")


# --- encoding ------------------------------------------------------------------------------------


def test_unseen_category_at_eval_maps_to_zero(tmp_path: Path) -> None:
    train = clicks()
    data = load_data(f"table:{write(tmp_path, train)}")
    new = clicks(5, seed=1).assign(
        city=["berlin"] * 5, user_id=["new_b", "new_a", "new_b", "u001", "x"]
    )
    new.to_csv(tmp_path / "new.csv", index=False)
    frame, _ = load_table_frame(tmp_path / "clicks.toml", tmp_path / "new.csv")
    table = encode(frame, data.encoders)
    assert table.cat[:, 2].tolist() == [0] * 5  # city "berlin" is out of vocabulary
    n_users = len(data.encoders["categorical"][0]["vocab"])
    assert table.cat[:, 0].tolist()[:3] == [0, 0, 0]
    # user ids never collapse: unseen users get distinct fresh ids above the vocabulary (for GAUC)
    user = table.user.tolist()
    assert user[0] == user[2] != user[1] and min(user[0], user[1], user[4]) > n_users
    assert 1 <= user[3] <= n_users  # u001 was seen


def test_evaluating_a_checkpoint_on_a_new_file(tmp_path: Path) -> None:
    data = load_data(f"table:{write(tmp_path, clicks())}")
    clicks(20, seed=3).to_csv(tmp_path / "new.csv", index=False)
    ev = load_data(
        f"table:{tmp_path / 'clicks.toml'}",
        split="none",
        encoders=data.encoders,
        data=tmp_path / "new.csv",
    )
    assert len(ev.test) == 20 and len(ev.train) == 0
    assert ev.spec == data.spec
    assert ev.description["data"] == str(tmp_path / "new.csv")


def test_checkpoint_encoders_with_other_domains_are_rejected(tmp_path: Path) -> None:
    data = load_data(f"table:{write(tmp_path, clicks())}")
    schema = TOML.replace('["home", "search"]', '["home", "video"]')
    df = clicks().assign(tab="video")
    df.loc[0, "tab"] = "home"
    path = write(tmp_path, df, "other.csv", schema)
    with pytest.raises(ValueError, match=r"domains \['home', 'video'\] do not match"):
        load_data(f"table:{path}", encoders=data.encoders)
    frame, _ = load_table_frame(path)
    with pytest.raises(ValueError, match=r"domain column 'tab' has values \['video'\]"):
        encode(frame, data.encoders)


@settings(max_examples=30, deadline=None)
@given(
    train=st.lists(st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"])), min_size=1),
    new=st.lists(st.one_of(st.integers(-9, 9), st.sampled_from(["a", "z"]), st.none()), min_size=1),
)
def test_encode_indices_are_within_cardinality(train: list, new: list) -> None:
    schema = TableSchema(label="y", domain="d", categorical=("c",), numeric=("x",))

    def frame(values: list) -> pd.DataFrame:
        n = len(values)
        col = pd.Series(values, dtype=object)
        return pd.DataFrame(
            {"c": col, "x": np.arange(n, dtype=float), "y": [0] * n, "d": ["a"] * n}
        )

    encoders = fit_encoders(frame(train), schema)
    card = spec_from_encoders(encoders).cat_cardinalities[0]
    seen = encode(frame(train), encoders).cat[:, 0]
    assert card == len({str(v) for v in train}) + 1
    assert seen.min() >= 1 and seen.max() < card
    idx = encode(frame(new), encoders).cat[:, 0]
    assert idx.min() >= 0 and idx.max() < card
    known = {str(v) for v in train}
    expect_zero = [v is None or str(v) not in known for v in new]
    assert [(i == 0) for i in idx.tolist()] == expect_zero


def test_vocabulary_is_most_frequent_first() -> None:
    schema = TableSchema(label="y", domain="d", categorical=("c",))
    df = pd.DataFrame({"c": ["b", "a", "c", "c", "a", "c"], "y": [0] * 6, "d": ["x"] * 6})
    assert fit_encoders(df, schema)["categorical"][0]["vocab"] == ["c", "a", "b"]


# --- validation errors ---------------------------------------------------------------------------


def test_missing_column_names_file_column_and_available(tmp_path: Path) -> None:
    path = write(tmp_path, clicks().drop(columns=["price"]))
    with pytest.raises(ValueError, match=r"clicks\.csv: numeric column 'price'.*missing.*'score'"):
        load_data(f"table:{path}")


def test_non_binary_label_shows_values_and_row(tmp_path: Path) -> None:
    df = clicks()
    df.loc[7, "click"] = 5
    with pytest.raises(
        ValueError, match=r"clicks\.csv: label column 'click'.*\[5\], first at row 7"
    ):
        load_data(f"table:{write(tmp_path, df)}")


def test_nan_label(tmp_path: Path) -> None:
    df = clicks().astype({"click": float})
    df.loc[3, "click"] = np.nan
    with pytest.raises(ValueError, match=r"clicks\.csv: label column 'click' has 1 NaN.*row 3"):
        load_data(f"table:{write(tmp_path, df)}")


def test_nan_numeric(tmp_path: Path) -> None:
    df = clicks()
    df.loc[4, "score"] = np.nan
    with pytest.raises(ValueError, match=r"clicks\.csv: numeric column 'score'.*row 4 \(NaN\)"):
        load_data(f"table:{write(tmp_path, df)}")


def test_domain_not_in_declared_set_shows_values(tmp_path: Path) -> None:
    df = clicks()
    df.loc[9, "tab"] = "video"
    with pytest.raises(
        ValueError, match=r"clicks\.csv: domain column 'tab'.*\['video'\], first at row 9"
    ):
        load_data(f"table:{write(tmp_path, df)}")


def test_declared_domain_without_rows_is_an_empty_domain(tmp_path: Path) -> None:
    path = write(tmp_path, clicks().assign(tab="home"))
    with pytest.raises(ValueError, match=r"clicks\.csv: empty domain.*\['search'\]"):
        load_data(f"table:{path}")


@pytest.mark.parametrize("content", ["", "user_id,item_id,city,price,score,click,tab,ts\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, clicks())
    (tmp_path / "clicks.csv").write_text(content)
    with pytest.raises(ValueError, match=r"clicks\.csv: empty file"):
        load_data(f"table:{path}")


def test_truncated_parquet_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, clicks(), "clicks.parquet")
    raw = (tmp_path / "clicks.parquet").read_bytes()
    (tmp_path / "clicks.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"clicks\.parquet: cannot read it as Parquet"):
        load_data(f"table:{path}")


def test_unknown_schema_key(tmp_path: Path) -> None:
    path = write(tmp_path, clicks(), schema=TOML + 'lable = "click"\n')
    with pytest.raises(ValueError, match=r"clicks\.toml: unknown schema key\(s\) \['lable'\]"):
        read_schema(path)


def test_unsupported_data_extension(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(TOML.format(data="clicks.xlsx"))
    (tmp_path / "clicks.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"clicks\.xlsx: unsupported file extension"):
        load_data(f"table:{path}")


def test_unsupported_schema_extension(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"schema\.json: unsupported extension '\.json'"):
        read_schema(path)


def test_schema_missing_required_key_and_bad_types(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("data: x.csv\nlabel: click\ncategorical: [a]\n")
    with pytest.raises(ValueError, match=r"s\.yaml: missing required key 'domain'"):
        read_schema(path)
    path.write_text("label: click\ndomain: tab\ncategorical: a\n")
    with pytest.raises(ValueError, match=r"s\.yaml: categorical must be a list"):
        read_schema(path)


def test_label_cannot_be_a_feature() -> None:
    with pytest.raises(ValueError, match=r"label column 'y' cannot also be a feature"):
        TableSchema(label="y", domain="d", categorical=("y",))


def test_unknown_source_kind_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown data source kind 'criteo'.*movielens-100k:PATH"):
        load_data("criteo:/x")


def test_a_stream_source_is_not_read_into_memory_by_load_data() -> None:
    with pytest.raises(
        ValueError, match=r"'stream:/x\.toml' is a stream .*cesaa.data.stream.open_stream"
    ):
        load_data("stream:/x.toml")


def test_unknown_table_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rows'\]"):
        load_data(f"table:{write(tmp_path, clicks())}", rows=3)


def test_rows_with_more_fields_than_the_header_are_an_error(tmp_path) -> None:
    """pandas reads such a file without a word, using the first fields as an index and shifting
    every value one column to the right; the reader must refuse it, naming the file."""
    from cesaa.data.schema import read_frame

    path = tmp_path / "clicks.csv"
    path.write_text("user,bucket,click\n1,(0,10],1\n2,(10,20],0\n")
    with pytest.raises(ValueError, match=r"clicks\.csv: the rows have more fields than the header"):
        read_frame(path)
