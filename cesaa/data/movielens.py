"""MovieLens-100k and MovieLens-1M as multi-domain ranking data (Scenario-Wise Rec protocol).

- Domains (``domains=``): ``age`` (default) user age groups "age<25", "age25-34", "age35+": ml-1m age
  codes {1, 18} -> 0, {25} -> 1, {35, 45, 50, 56} -> 2; ml-100k raw ages < 25, 25-34, >= 35 (the same
  bins).  ``occupation``: the user's occupation, 21 domains (ml-100k's names; ml-1m's codes 0-20
  named as in its README), in that order.  ``genre``: the movie's first listed genre (the order of
  the genre flags in u.item / of the "|" list in movies.dat; ml-100k's "unknown" only when a movie has
  no other genre), in the genre order; a multi-genre movie thus counts in exactly one domain.
  Domains with no rows are left out (a small file may lack some occupations or genres).
- Label: rating > 3.
- Categorical features: user_id, item_id, gender, occupation, zip1 (first character of the zip code: the
  US ZIP national area, ten coarse regions; longer prefixes leave most values with a handful of users),
  year (release year, from the release date in ml-100k and from "Title (1995)" in ml-1m; missing -> 0).
  The domain attribute is not a feature: with ``age`` domains occupation is a feature and age is not;
  with ``occupation`` domains the age group replaces occupation; with ``genre`` domains the age group
  is added (the genre flags stay: the first genre is the domain, the others are informative).
- Numeric: one 0/1 column per genre (19 in ml-100k incl. "unknown", 18 in ml-1m), kept unstandardized.
- user = user_id (for GAUC), item = item_id, time = timestamp (Unix seconds).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cesaa.data.frame import from_frame
from cesaa.data.schema import TableSchema
from cesaa.data.table import MultiDomainData
from cesaa.data.validate import validate_frame

DOMAIN_NAMES = ("age<25", "age25-34", "age35+")
ML1M_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)  # fmt: skip
ML100K_GENRES = ("unknown",) + ML1M_GENRES  # the order of u.genre and of u.item's flags
ML1M_AGE_DOMAIN = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}
FILES = {"100k": ("u.data", "u.user", "u.item"), "1m": ("ratings.dat", "users.dat", "movies.dat")}
VERSIONS = tuple(FILES)
CATEGORICAL = ("user_id", "item_id", "gender", "occupation", "zip1", "year")
DOMAIN_KINDS = ("age", "occupation", "genre")
DOMAIN_COLUMNS = {"age": "age_group", "occupation": "occupation_name", "genre": "genre"}
ML100K_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
# ml-1m README: occupation code i -> ML1M_OCCUPATIONS[i]
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


def genre_column(genre: str) -> str:
    """``"Children's"`` -> ``"genre_childrens"``, ``"Sci-Fi"`` -> ``"genre_sci_fi"``."""
    return "genre_" + re.sub(r"[^a-z0-9]+", "_", genre.lower().replace("'", "")).strip("_")


def domain_names(version: str, domains: str = "age") -> tuple[str, ...]:
    """Every possible domain name of ``domains`` for ``version``, in domain order."""
    genres = ML100K_GENRES if _check_version(version) == "100k" else ML1M_GENRES
    occupations = ML100K_OCCUPATIONS if version == "100k" else ML1M_OCCUPATIONS
    return {"age": DOMAIN_NAMES, "occupation": occupations, "genre": genres}[
        _check_domains(domains)
    ]


def movielens_schema(
    version: str, domains: str = "age", present: tuple[str, ...] | None = None
) -> TableSchema:
    """The column roles of the frames returned by :func:`read_movielens_100k` / ``_1m``.

    ``present``: the domain names that occur (default: all of :func:`domain_names`), kept in order.
    """
    genres = ML100K_GENRES if _check_version(version) == "100k" else ML1M_GENRES
    names = domain_names(version, domains)
    if present is not None:
        names = tuple(n for n in names if n in set(present))
    column = DOMAIN_COLUMNS[domains]
    categorical = tuple(c for c in CATEGORICAL if domains != "occupation" or c != "occupation")
    if domains != "age":
        categorical += ("age_group",)
    return TableSchema(
        label="label",
        domain=column,
        domains=names,
        categorical=categorical,
        numeric=tuple(genre_column(g) for g in genres),
        user="user_id",
        item="item_id",
        time="timestamp",
    )


def read_movielens_100k(path: str | Path) -> pd.DataFrame:
    """One row per rating of an ml-100k folder (``u.data``, ``u.user``, ``u.item``), in file order."""
    folder = _check_folder(path, "100k")
    names = ["user_id", "item_id", "rating", "timestamp"]
    ratings = _read(folder / "u.data", "\t", names, ints=tuple(names))
    names = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = _read(folder / "u.user", "|", names, ints=("user_id", "age"))
    _require(users, folder / "u.user", names)
    genres = [genre_column(g) for g in ML100K_GENRES]
    names = ["item_id", "title", "release_date", "video_release_date", "url", *genres]
    items = _read(folder / "u.item", "|", names, ints=("item_id", *genres), encoding="latin-1")
    age = users["age"]
    users["age_group"] = np.select([age < 25, age < 35], DOMAIN_NAMES[:2], DOMAIN_NAMES[2])
    users["occupation_name"] = users["occupation"]
    items["year"] = items["release_date"].str.extract(r"(\d{4})\s*$", expand=False)
    items["genre"] = _first_genre(items[genres].to_numpy(), ML100K_GENRES)
    return _join(
        (ratings, folder / "u.data"),
        (users, folder / "u.user"),
        (items, folder / "u.item"),
        ML100K_GENRES,
    )


def read_movielens_1m(path: str | Path) -> pd.DataFrame:
    """One row per rating of an ml-1m folder (``ratings.dat``, ``users.dat``, ``movies.dat``)."""
    folder = _check_folder(path, "1m")
    names = ["user_id", "item_id", "rating", "timestamp"]
    ratings = _read(folder / "ratings.dat", "::", names, ints=tuple(names))
    names = ["user_id", "gender", "age", "occupation", "zip_code"]
    users = _read(folder / "users.dat", "::", names, ints=("user_id", "age"))
    _require(users, folder / "users.dat", names)
    names = ["item_id", "title", "genres"]
    movies = _read(folder / "movies.dat", "::", names, ints=("item_id",), encoding="latin-1")
    _require(movies, folder / "movies.dat", names)
    age = users["age"]
    group = age.map(ML1M_AGE_DOMAIN)
    if group.isna().any():
        bad = sorted(int(a) for a in pd.unique(age[group.isna()]))
        raise ValueError(
            f"{folder / 'users.dat'}: age codes {bad} are not ml-1m age codes {sorted(ML1M_AGE_DOMAIN)}"
        )
    users["age_group"] = np.asarray(DOMAIN_NAMES)[group.to_numpy(dtype=np.int64)]
    code = pd.to_numeric(users["occupation"], errors="coerce")
    bad = ~code.isin(range(len(ML1M_OCCUPATIONS)))
    if bad.any():
        raise ValueError(
            f"{folder / 'users.dat'}: occupation codes {sorted(pd.unique(users['occupation'][bad]))} "
            f"are not ml-1m occupation codes 0-{len(ML1M_OCCUPATIONS) - 1}"
        )
    users["occupation_name"] = np.asarray(ML1M_OCCUPATIONS)[code.to_numpy(dtype=np.int64)]
    movies["year"] = movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False)
    flags = movies["genres"].str.get_dummies(sep="|")
    unknown = sorted(set(flags.columns) - set(ML1M_GENRES))
    if unknown:
        raise ValueError(
            f"{folder / 'movies.dat'}: unknown genres {unknown}; expected {list(ML1M_GENRES)}"
        )
    movies["genre"] = movies["genres"].str.split("|").str[0]
    flags = flags.reindex(columns=list(ML1M_GENRES), fill_value=0)
    flags.columns = [genre_column(g) for g in ML1M_GENRES]
    movies = pd.concat([movies, flags], axis=1)
    return _join(
        (ratings, folder / "ratings.dat"),
        (users, folder / "users.dat"),
        (movies, folder / "movies.dat"),
        ML1M_GENRES,
    )


def load_movielens(
    path: str | Path,
    *,
    version: str = "100k",
    split: str = "random",
    seed: int = 0,
    encoders: dict | None = None,
    domains: str = "age",
) -> MultiDomainData:
    """Read, validate, split and encode a MovieLens folder (``version`` "100k" or "1m").

    ``domains``: ``age`` (default), ``occupation`` or ``genre`` (see the module docstring).
    """
    version = _check_version(version)
    _check_domains(domains)
    reader = read_movielens_100k if version == "100k" else read_movielens_1m
    df = reader(path)
    present = None if domains == "age" else tuple(pd.unique(df[DOMAIN_COLUMNS[domains]]))
    schema = movielens_schema(version, domains, present)
    validate_frame(df, schema, Path(path))
    genres = tuple(schema.numeric)
    description = {"kind": f"movielens-{version}", "path": str(path), "domains": domains}
    return from_frame(
        df,
        schema,
        split=split,
        seed=seed,
        encoders=encoders,
        description=description,
        passthrough=genres,
    )


def _first_genre(flags: np.ndarray, genres: tuple[str, ...]) -> np.ndarray:
    """Each row's first flagged genre; ml-100k's leading "unknown" only when nothing else is set."""
    flags = flags.astype(bool)
    rest = flags[:, 1:]
    first = np.where(rest.any(axis=1), rest.argmax(axis=1) + 1, 0)  # 0 = "unknown"
    return np.asarray(genres)[first]


def _check_domains(domains: str) -> str:
    if domains not in DOMAIN_KINDS:
        raise ValueError(f"MovieLens domains={domains!r} must be one of {list(DOMAIN_KINDS)}")
    return domains


def _check_version(version: str) -> str:
    if version not in FILES:
        raise ValueError(f"MovieLens version={version!r} must be one of {list(VERSIONS)}")
    return version


def _check_folder(path: str | Path, version: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens-{version} folder {folder} does not exist")
    missing = [f for f in FILES[version] if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"MovieLens-{version} folder {folder} is missing {missing} "
            f"(expected files: {list(FILES[version])})"
        )
    return folder


def _read(
    path: Path, sep: str, names: list[str], ints: tuple[str, ...] = (), encoding: str = "utf-8"
) -> pd.DataFrame:
    """Read a header-less file whose lines have exactly ``len(names)`` fields; ``ints`` as int64."""
    raw = path.read_bytes()
    if (
        sep == "::"
    ):  # the C parser wants one character; \x1f (unit separator) never occurs in MovieLens
        raw, sep = raw.replace(b"::", b"\x1f"), "\x1f"
    if not raw.strip():
        raise ValueError(f"{path}: empty file")
    dtype = {i: ("int64" if name in ints else str) for i, name in enumerate(names)}
    try:
        df = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=None,
            dtype=dtype,
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
        )
    except (ValueError, UnicodeDecodeError) as err:  # ParserError is a ValueError
        raise ValueError(
            f"{path}: cannot parse as {len(names)} fields per line ({', '.join(names)}), "
            f"with integer {list(ints)}: {err}"
        ) from err
    if df.shape[1] != len(names):
        raise ValueError(
            f"{path}: expected {len(names)} fields per line ({', '.join(names)}), found {df.shape[1]}"
        )
    df.columns = names
    return df


def _require(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    for col in columns:
        missing = df[col].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"{path}: column {col!r} is empty at line {int(np.argmax(missing)) + 1}"
            )


def _join(
    ratings: tuple[pd.DataFrame, Path],
    users: tuple[pd.DataFrame, Path],
    items: tuple[pd.DataFrame, Path],
    genres: tuple[str, ...],
) -> pd.DataFrame:
    """Ratings (in file order) with their user's and item's columns; each part is (frame, file)."""
    out, ratings_path = ratings[0].copy(), ratings[1]
    for (table, path), key, cols in (
        (
            users,
            "user_id",
            ["age", "age_group", "gender", "occupation", "occupation_name", "zip_code"],
        ),
        (items, "item_id", ["year", "genre"] + [genre_column(g) for g in genres]),
    ):
        index = pd.Index(table[key])
        if not index.is_unique:
            dup = sorted(set(index[index.duplicated()].tolist()))[:10]
            raise ValueError(f"{path}: {key} values {dup} appear more than once")
        pos = index.get_indexer(out[key])
        if (pos < 0).any():
            bad = sorted(set(out[key][pos < 0].tolist()))[:10]
            raise ValueError(f"{ratings_path}: {key} values {bad} are not in {path.name}")
        for col in cols:
            out[col] = table[col].to_numpy()[pos]
    out["label"] = (out["rating"] > 3).astype(np.int64)
    out["zip1"] = out.pop("zip_code").str[:1]
    for g in genres:
        out[genre_column(g)] = out[genre_column(g)].astype(np.float32)
    return out
