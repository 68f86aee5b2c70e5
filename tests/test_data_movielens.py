"""MovieLens loaders: the real ml-100k (skipped when absent) and a tiny ml-1m written here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cesaa.data import load_data, read_movielens_1m
from cesaa.data.movielens import DOMAIN_NAMES, ML1M_GENRES, genre_column

DATA_DIR = Path(
    os.environ.get("CESAA_DATA_DIR", Path(__file__).parents[1] / ".." / "shared" / "data")
)
ML100K = DATA_DIR / "movielens-100k"


@pytest.fixture(scope="module")
def ml100k():
    if not (ML100K / "u.data").is_file():
        pytest.skip(
            f"MovieLens-100k not found at {ML100K} (set CESAA_DATA_DIR to its parent folder)"
        )
    return load_data(f"movielens-100k:{ML100K}")


def all_rows(data, name: str) -> torch.Tensor:
    return torch.cat([getattr(data.train, name), getattr(data.val, name), getattr(data.test, name)])


def test_ml100k_counts(ml100k) -> None:
    assert len(ml100k.train) + len(ml100k.val) + len(ml100k.test) == 100_000
    assert (len(ml100k.train), len(ml100k.val), len(ml100k.test)) == (80_000, 10_000, 10_000)
    assert ml100k.spec.domain_names == DOMAIN_NAMES
    assert torch.bincount(all_rows(ml100k, "domain")).tolist() == [26_551, 35_444, 38_005]
    label = all_rows(ml100k, "label")
    assert label.sum().item() == 55_375  # ratings 4 and 5: 34,174 + 21,201
    assert label.mean().item() == pytest.approx(0.554, abs=5e-4)


def test_ml100k_features(ml100k) -> None:
    spec = ml100k.spec
    assert spec.cat_names == ("user_id", "item_id", "gender", "occupation", "zip1", "year")
    assert spec.num_names[0] == "genre_unknown" and len(spec.num_names) == 19
    assert spec.cat_cardinalities[2] == 3  # M, F, OOV
    num = all_rows(ml100k, "num")
    assert set(num.unique().tolist()) == {0.0, 1.0}  # multi-hot, not standardized
    assert ml100k.train.user.max() <= 944 and ml100k.train.time.min() >= 874_000_000
    assert ml100k.description["kind"] == "movielens-100k"


def test_ml100k_via_data_dir(ml100k, monkeypatch) -> None:
    monkeypatch.setenv("CESAA_DATA_DIR", str(DATA_DIR))
    assert load_data("movielens-100k").fingerprint == ml100k.fingerprint


def test_ml100k_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    with pytest.raises(FileNotFoundError, match=r"missing \['u\.user', 'u\.item'\]"):
        load_data(f"movielens-100k:{tmp_path}")


# --- a tiny ml-1m in the original format -----------------------------------------------------------

USERS = [  # user::gender::age code::occupation::zip
    "1::F::1::10::48067",
    "2::M::56::16::70072",
    "3::M::25::15::55117",
    "4::M::45::7::02460",
    "5::M::18::20::55455-1234",
]
MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Jumanji (1995)::Adventure|Children's|Fantasy",
    "3::Café Society (1995)::Drama",
    "4::Film-Noir Thing (1947)::Film-Noir|Sci-Fi",
]
RATINGS = [  # user::item::rating::ts
    "1::1::5::978300760",
    "1::2::3::978302109",
    "2::3::4::978301968",
    "3::4::1::978300275",
    "3::1::4::978824291",
    "4::2::2::978302268",
    "5::3::5::978302039",
    "5::4::3::978300719",
    "2::1::1::978302000",
    "4::4::4::978301000",
]


def write_ml1m(folder: Path, users=USERS, movies=MOVIES, ratings=RATINGS) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "users.dat").write_text("\n".join(users) + "\n")
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n")
    return folder


def test_ml1m_domains_labels_and_genres(tmp_path: Path) -> None:
    df = read_movielens_1m(write_ml1m(tmp_path / "ml-1m"))
    assert len(df) == 10
    # age codes {1, 18} -> age<25, {25} -> age25-34, {35, 45, 50, 56} -> age35+
    by_user = df.groupby("user_id")["age_group"].first().to_dict()
    assert by_user == {1: "age<25", 2: "age35+", 3: "age25-34", 4: "age35+", 5: "age<25"}
    assert df["label"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 0, 1]  # rating > 3
    toy = df[df["item_id"] == 1].iloc[0]
    flags = {g: toy[genre_column(g)] for g in ML1M_GENRES}
    assert {g for g, v in flags.items() if v == 1} == {"Animation", "Children's", "Comedy"}
    assert df[df["item_id"] == 4].iloc[0]["genre_film_noir"] == 1
    assert df[df["item_id"] == 4].iloc[0]["genre_sci_fi"] == 1
    assert df.groupby("item_id")["year"].first().to_dict() == {
        1: "1995",
        2: "1995",
        3: "1995",
        4: "1947",
    }
    assert set(df["zip1"]) == {"4", "7", "5", "0"}


def test_ml1m_through_load_data(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_data(f"movielens-1m:{folder}", seed=0)
    assert data.spec.domain_names == DOMAIN_NAMES
    assert len(data.spec.num_names) == 18
    n = len(data.train) + len(data.val) + len(data.test)
    assert n == 10 and len(data.train) == 8
    domains = all_rows(data, "domain")
    assert torch.bincount(domains, minlength=3).tolist() == [4, 2, 4]


def test_ml1m_unknown_age_code_names_file_and_value(tmp_path: Path) -> None:
    users = USERS[:-1] + ["5::M::30::20::55455"]
    folder = write_ml1m(tmp_path / "ml-1m", users=users)
    with pytest.raises(ValueError, match=r"users\.dat: age codes \[30\] are not ml-1m age codes"):
        read_movielens_1m(folder)


def test_ml1m_unknown_genre_and_bad_line(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "a", movies=MOVIES[:-1] + ["4::X (1947)::Noir"])
    with pytest.raises(ValueError, match=r"movies\.dat: unknown genres \['Noir'\]"):
        read_movielens_1m(folder)
    folder = write_ml1m(tmp_path / "b", ratings=RATINGS[:-1] + ["4::4::four::978301000"])
    with pytest.raises(ValueError, match=r"ratings\.dat: cannot parse"):
        read_movielens_1m(folder)


def test_ml1m_rating_of_unknown_user(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m", ratings=RATINGS + ["9::1::5::978300760"])
    with pytest.raises(
        ValueError, match=r"ratings\.dat: user_id values \[9\] are not in users\.dat"
    ):
        read_movielens_1m(folder)


def test_movielens_without_path_or_data_dir(monkeypatch) -> None:
    monkeypatch.delenv("CESAA_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match=r"movielens-1m:PATH, or set CESAA_DATA_DIR"):
        load_data("movielens-1m")
