"""Reading a table and checking its values against its schema before anything is encoded: the label is binary,
numeric columns are finite, ids and times are present, every domain value is declared and every
declared domain has rows (``load_table_frame`` reads a schema's data file and checks it).  Each error names the file, the column, the bad values and the first
row holding one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cesaa.data.schema import TableSchema, domain_strings, read_frame, read_schema

_MAX_SHOWN = 10  # bad values listed in an error message


def validate_frame(df: pd.DataFrame, schema: TableSchema, source: str | Path) -> None:
    """Check ``df`` against ``schema``; ``source`` names the file in messages."""
    if len(df) == 0:
        raise ValueError(f"{source}: empty file (no rows)")
    available = [str(c) for c in df.columns]
    for col, role in schema.roles().items():
        if col not in df.columns:
            raise ValueError(
                f"{source}: {role} column {col!r} named by {schema.where} is missing; "
                f"available columns: {available}"
            )
    check_values(df, schema, source)
    _check_domains(df[schema.domain], schema, source)


def load_table_frame(
    schema: str | Path | TableSchema, data: str | Path | None = None
) -> tuple[pd.DataFrame, TableSchema]:
    """Read and validate the data file of ``schema`` (or ``data``, e.g. a new file to evaluate)."""
    if not isinstance(schema, TableSchema):
        schema = read_schema(schema)
    data_path = Path(data) if data is not None else schema.data
    if data_path is None:
        raise ValueError(f"{schema.where} has no 'data' key and no data file was given")
    str_cols = tuple(schema.categorical) + tuple(
        c for c in (schema.domain, schema.user, schema.item) if c is not None
    )
    df = read_frame(data_path, str_columns=str_cols)
    validate_frame(df, schema, data_path)
    return df, schema


def check_values(df: pd.DataFrame, schema: TableSchema, source: str | Path) -> None:
    """The checks every row of a table passes, whole or in pieces: a binary label, finite numeric
    columns, no missing user / item / time / domain value."""
    check_label(df[schema.label], schema.label, source)
    for col in schema.numeric:
        check_numeric(df[col], col, source)
    for key in ("user", "item", "time", "domain"):
        col = getattr(schema, key)
        if col is not None:
            _check_no_missing(df[col], f"{key} column {col!r}", source)


def check_declared_domains(
    s: pd.Series, col: str, declared: tuple[str, ...], source: str | Path
) -> pd.Series:
    """Every value of domain column ``col`` is one of ``declared``; returns the values as strings."""
    strs = domain_strings(s)
    bad = ~strs.isin(list(declared)).to_numpy()
    if bad.any():
        shown = list(pd.unique(strs[bad])[:_MAX_SHOWN])
        raise ValueError(
            f"{source}: domain column {col!r} has values not in the declared domains "
            f"{list(declared)}: {shown}, first at row {int(np.argmax(bad))}"
        )
    return strs


def check_label(s: pd.Series, col: str, source: str | Path) -> None:
    _check_no_missing(s, f"label column {col!r}", source, kind="NaN/missing")
    if pd.api.types.is_bool_dtype(s):
        return
    if pd.api.types.is_numeric_dtype(s):
        bad = ~s.isin([0, 1]).to_numpy()
    else:
        bad = np.ones(len(s), dtype=bool)
    if bad.any():
        shown = [_plain(v) for v in pd.unique(s[bad])[:_MAX_SHOWN]]
        raise ValueError(
            f"{source}: label column {col!r} must be binary (bool, 0/1 ints or floats in {{0, 1}}); "
            f"found values {shown}, first at row {int(np.argmax(bad))}"
        )


def check_numeric(s: pd.Series, col: str, source: str | Path) -> None:
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        first = s.iloc[0]
        raise ValueError(
            f"{source}: numeric column {col!r} is not numeric (dtype {s.dtype}, e.g. {first!r} at row 0)"
        )
    values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "NaN" if math.isnan(values[i]) else "infinite"
        raise ValueError(
            f"{source}: numeric column {col!r} has {int(bad.sum())} NaN/infinite value(s), "
            f"first at row {i} ({kind})"
        )


def _check_no_missing(s: pd.Series, what: str, source: str | Path, kind: str = "missing") -> None:
    missing = s.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{source}: {what} has {int(missing.sum())} {kind} value(s), "
            f"first at row {int(np.argmax(missing))}"
        )


def _check_domains(s: pd.Series, schema: TableSchema, source: str | Path) -> None:
    if schema.domains is None:
        return
    declared = list(schema.domains)
    strs = check_declared_domains(s, schema.domain, schema.domains, source)
    present = set(pd.unique(strs))
    empty = [d for d in declared if d not in present]
    if empty:
        raise ValueError(
            f"{source}: empty domain: declared domain(s) {empty} of column {schema.domain!r} "
            f"have no rows"
        )


def _plain(v: object) -> object:
    """numpy scalars as Python values, so messages read [2, 5] rather than [np.int64(2), ...]."""
    return v.item() if isinstance(v, np.generic) else v
