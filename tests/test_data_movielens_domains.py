"""MovieLens domains by age (default), occupation (21) and genre (first listed genre)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_data_movielens import ML100K, USERS, all_rows, write_ml1m

from cesaa.data import load_data, read_movielens_1m
from cesaa.data.movielens import ML100K_GENRES, ML100K_OCCUPATIONS, load_movielens


@pytest.fixture(scope="module")
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100k not found at {ML100K}")
    return ML100K


def counts(data) -> dict[str, int]:
    n = torch.bincount(all_rows(data, "domain"), minlength=data.spec.num_domains).tolist()
    return dict(zip(data.spec.domain_names, n, strict=True))


def test_ml100k_occupation_domains(ml100k_path) -> None:
    data = load_data(f"movielens-100k:{ml100k_path},domains=occupation")
    assert data.spec.domain_names == ML100K_OCCUPATIONS and len(ML100K_OCCUPATIONS) == 21
    c = counts(data)
    assert sum(c.values()) == 100_000
    # ratings per occupation (u.user joined to u.data)
    assert (c["student"], c["other"], c["educator"], c["homemaker"], c["doctor"]) == (
        21_957, 10_663, 9_442, 299, 540,
    )  # fmt: skip
    assert data.spec.cat_names == ("user_id", "item_id", "gender", "zip1", "year", "age_group")
    assert data.description["domains"] == "occupation"


def test_ml100k_genre_domains(ml100k_path) -> None:
    data = load_movielens(ml100k_path, domains="genre")
    assert data.spec.domain_names == ML100K_GENRES  # all 19 occur
    c = counts(data)
    assert sum(c.values()) == 100_000
    assert (c["Drama"], c["Action"], c["Comedy"], c["unknown"], c["Fantasy"]) == (
        27_050, 25_589, 22_796, 10, 1,
    )  # fmt: skip
    assert "age_group" in data.spec.cat_names and "occupation" in data.spec.cat_names


def test_age_default_is_unchanged(ml100k_path) -> None:
    default = load_data(f"movielens-100k:{ml100k_path}")
    explicit = load_data(f"movielens-100k:{ml100k_path},domains=age")
    assert default.fingerprint == explicit.fingerprint
    assert counts(default) == {"age<25": 26_551, "age25-34": 35_444, "age35+": 38_005}


def test_ml1m_occupation_names_from_codes(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_data(f"movielens-1m:{folder},domains=occupation")
    # users' codes 10, 16, 15, 7, 20; two ratings each; domains in code order, absent ones left out
    assert data.spec.domain_names == (
        "executive/managerial", "K-12 student", "scientist", "self-employed", "writer",
    )  # fmt: skip
    assert list(counts(data).values()) == [2, 2, 2, 2, 2]
    df = read_movielens_1m(folder)
    assert df.groupby("user_id")["occupation"].first().to_dict()[1] == "10"  # feature: raw code


def test_ml1m_genre_is_the_first_listed(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_data(f"movielens-1m:{folder}", domains="genre")
    # Toy Story Animation|Children's|Comedy -> Animation (3 ratings); Jumanji -> Adventure (2);
    # Cafe Society -> Drama (2); Film-Noir|Sci-Fi -> Film-Noir (3)
    assert counts(data) == {"Adventure": 2, "Animation": 3, "Drama": 2, "Film-Noir": 3}


def test_bad_domain_option_and_occupation_code(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    with pytest.raises(ValueError, match=r"domains='zip' must be one of \['age', 'occupation'"):
        load_data(f"movielens-1m:{folder},domains=zip")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['domain'\]"):
        load_data(f"movielens-1m:{folder},domain=genre")
    users = USERS[:-1] + ["5::M::18::21::55455"]
    write_ml1m(folder, users=users)
    with pytest.raises(ValueError, match=r"users\.dat: occupation codes \['21'\] are not ml-1m"):
        read_movielens_1m(folder)
