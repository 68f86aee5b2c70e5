"""Table schemas: which columns of a CSV / Parquet file play which role.

A schema is a small TOML or YAML file next to the data::

    data = "clicks.parquet"          # relative to the schema file
    label = "click"                  # bool, 0/1 ints or floats in {0, 1}
    domain = "tab"
    domains = ["home", "search"]     # optional; default: sorted observed values
    categorical = ["user_id", "item_id", "city"]
    numeric = ["price"]
    user = "user_id"                 # optional, for GAUC
    item = "item_id"                 # optional
    time = "ts"                      # optional, for the temporal split

Every problem is a ``ValueError`` naming the file, the column and the bad value.  Row numbers count
data rows from 0 (the CSV header is not a row).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the tomli package (a dependency there)
    import tomli as tomllib

SCHEMA_KEYS = (
    "data",
    "label",
    "domain",
    "domains",
    "categorical",
    "numeric",
    "user",
    "item",
    "time",
)
CSV_EXTENSIONS = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
DATA_EXTENSIONS = CSV_EXTENSIONS + PARQUET_EXTENSIONS
SCHEMA_EXTENSIONS = (".toml", ".yaml", ".yml")
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    yaml.YAMLError,
    UnicodeDecodeError,
    tomllib.TOMLDecodeError,
)


@dataclass(frozen=True)
class TableSchema:
    """The role of each column.  ``data`` is the data file, ``path`` the schema file (for messages)."""

    label: str
    domain: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    domains: tuple[str, ...] | None = None
    user: str | None = None
    item: str | None = None
    time: str | None = None
    data: Path | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        where = self.where
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        if self.domains is not None:
            object.__setattr__(self, "domains", tuple(str(d) for d in self.domains))
            dup = _duplicates(self.domains)
            if dup:
                raise ValueError(f"{where}: domains lists {dup} more than once")
            if not self.domains:
                raise ValueError(f"{where}: domains is empty; omit it to use the observed values")
        if not self.categorical and not self.numeric:
            raise ValueError(
                f"{where}: no feature columns; name at least one in categorical or numeric"
            )
        for key in ("categorical", "numeric"):
            dup = _duplicates(getattr(self, key))
            if dup:
                raise ValueError(f"{where}: {key} lists {dup} more than once")
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"{where}: {both} listed as both categorical and numeric")
        features = set(self.categorical) | set(self.numeric)
        for key in ("label", "domain"):
            col = getattr(self, key)
            if col in features:
                raise ValueError(
                    f"{where}: the {key} column {col!r} cannot also be a feature column"
                )
        if self.label == self.domain:
            raise ValueError(f"{where}: label and domain are the same column {self.label!r}")

    @property
    def where(self) -> str:
        return f"schema {self.path}" if self.path is not None else "schema"

    def roles(self) -> dict[str, str]:
        """Column -> role, for every column the schema names (first role wins for user_id etc.)."""
        out: dict[str, str] = {self.label: "label", self.domain: "domain"}
        for c in self.categorical:
            out.setdefault(c, "categorical")
        for c in self.numeric:
            out.setdefault(c, "numeric")
        for key in ("user", "item", "time"):
            col = getattr(self, key)
            if col is not None:
                out.setdefault(col, key)
        return out

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "domain": self.domain,
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "domains": list(self.domains) if self.domains is not None else None,
            "user": self.user,
            "item": self.item,
            "time": self.time,
            "data": str(self.data) if self.data is not None else None,
        }


def read_schema(path: str | Path) -> TableSchema:
    """Read a TOML or YAML schema file; ``data`` is resolved relative to the schema's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schema file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SCHEMA_EXTENSIONS:
        raise ValueError(
            f"schema file {path}: unsupported extension {suffix!r}; use one of {list(SCHEMA_EXTENSIONS)}"
        )
    try:
        if suffix == ".toml":
            with path.open("rb") as f:
                raw = tomllib.load(f)
        else:
            with path.open(encoding="utf-8") as f:
                raw = yaml.safe_load(f)
    except _PARSE_ERRORS as err:
        raise ValueError(f"schema file {path}: cannot parse: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"schema file {path}: expected a table of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SCHEMA_KEYS))
    if unknown:
        raise ValueError(
            f"schema file {path}: unknown schema key(s) {unknown}; valid keys: {list(SCHEMA_KEYS)}"
        )
    for key in ("label", "domain"):
        if key not in raw:
            raise ValueError(f"schema file {path}: missing required key {key!r}")
    for key in ("data", "label", "domain", "user", "item", "time"):
        if key in raw and not isinstance(raw[key], str):
            raise ValueError(f"schema file {path}: {key} must be a string, got {raw[key]!r}")
    for key in ("categorical", "numeric"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f"schema file {path}: {key} must be a list of column names, got {value!r}"
            )
    domains = raw.get("domains")
    if domains is not None:
        if not isinstance(domains, list) or not all(
            isinstance(d, (str, int)) and not isinstance(d, bool) for d in domains
        ):
            raise ValueError(
                f"schema file {path}: domains must be a list of names, got {domains!r}"
            )
    data = raw.get("data")
    return TableSchema(
        label=raw["label"],
        domain=raw["domain"],
        categorical=tuple(raw.get("categorical", [])),
        numeric=tuple(raw.get("numeric", [])),
        domains=tuple(str(d) for d in domains) if domains is not None else None,
        user=raw.get("user"),
        item=raw.get("item"),
        time=raw.get("time"),
        data=(path.parent / data) if data is not None else None,
        path=path,
    )


def read_frame(path: str | Path, *, str_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet file.  CSV columns in ``str_columns`` are read as strings (keeps "007")."""
    path = Path(path)
    name = path.name.lower()
    if not any(name.endswith(ext) for ext in DATA_EXTENSIONS):
        raise ValueError(
            f"data file {path}: unsupported file extension; use one of {list(DATA_EXTENSIONS)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if any(name.endswith(ext) for ext in PARQUET_EXTENSIONS):
        try:
            df = pd.read_parquet(path)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise ValueError(
                f"data file {path}: cannot read it as Parquet (truncated or not Parquet?): {err}"
            ) from err
    else:
        sep = "\t" if ".tsv" in name else ","
        try:
            with warnings.catch_warnings():
                # index_col=False: never take extra leading fields as an index; pandas warns
                # when the rows have more fields than the header, which is an error here
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(
                    path, sep=sep, dtype={c: str for c in str_columns}, index_col=False
                )
        except pd.errors.EmptyDataError as err:
            raise ValueError(f"data file {path}: empty file (no header, no rows)") from err
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"data file {path}: cannot parse as CSV: {err}") from err
        except pd.errors.ParserWarning as err:
            # by default pandas would silently turn the extra leading fields into an index and
            # shift every value into the wrong column
            raise ValueError(
                f"data file {path}: the rows have more fields than the header "
                f"(an unquoted separator in a value?): {err}"
            ) from err
    if len(df) == 0:
        raise ValueError(f"data file {path}: empty file (header only, no rows)")
    return df


def domain_strings(values: pd.Series) -> pd.Series:
    """Raw domain values as strings (ints in Parquet and "1" in CSV both become "1")."""
    return values.astype(str)


def sorted_domain_names(values: pd.Series) -> tuple[str, ...]:
    """Observed domain values, sorted numerically when they are all integers, else as strings."""
    names = pd.unique(domain_strings(values.dropna()))
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


def _duplicates(names: tuple[str, ...]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})
