"""Encoders: raw DataFrame columns -> :class:`EncodedTable` tensors, fitted once, stored as JSON.

``encoders`` is a plain JSON-serializable dict (it goes into ``meta.json``), so a checkpoint re-encodes a
new file exactly as at training time::

    {
      "version": 1,
      "label": "click",
      "domain": {"column": "tab", "names": ["home", "search"]},          # index = position
      "categorical": [{"column": "city", "vocab": ["paris", "rome"]}],   # index = position + 1
      "numeric": [{"column": "price", "mean": 3.1, "std": 1.2}],         # (x - mean) / std
      "user": {"column": "user_id", "vocab": null},   # null: the categorical column's vocabulary
      "item": {"column": "item_id", "vocab": ["7", "3"]},
      "time": {"column": "ts"}
    }

Categorical values are compared as strings (``str(value)``).  Vocabularies list the most frequent value
first (ties in string order); index 0 is out-of-vocabulary or missing, so ``encode`` maps unseen categories
to 0 instead of failing.  User / item ids never collapse: an id unseen at fit time gets a fresh index
above the vocabulary (GAUC must still group its rows).  Everything is vectorized: values are factorized
once, then only the distinct values are looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from cesaa.data.schema import TableSchema, domain_strings, sorted_domain_names
from cesaa.data.table import EncodedTable
from cesaa.data.validate import check_label, check_numeric
from cesaa.features import FeatureSpec

ENCODERS_VERSION = 1


def fit_encoders(
    df: pd.DataFrame,
    schema: TableSchema,
    *,
    domains: tuple[str, ...] | None = None,
    passthrough: tuple[str, ...] = (),
) -> dict:
    """Fit vocabularies and numeric statistics on ``df`` (normally the training rows).

    ``domains``: the domain names in index order (default: the schema's, else sorted observed values).
    ``passthrough``: numeric columns kept as they are (mean 0, std 1), e.g. multi-hot genre flags.
    """
    unknown = sorted(set(passthrough) - set(schema.numeric))
    if unknown:
        raise ValueError(
            f"passthrough columns {unknown} are not numeric columns {list(schema.numeric)}"
        )
    if domains is None:
        domains = schema.domains or sorted_domain_names(df[schema.domain])
    numeric = []
    for col in schema.numeric:
        if col in passthrough:
            mean, std = 0.0, 1.0
        else:
            values = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
            mean = float(values.mean()) if len(values) else 0.0
            std = float(values.std()) if len(values) else 1.0
            if not np.isfinite(std) or std <= 0:
                std = 1.0
        numeric.append({"column": col, "mean": mean, "std": std})
    return assemble_encoders(schema, domains, numeric, lambda col: fit_vocab(df[col]))


def assemble_encoders(
    schema: TableSchema,
    domains: Sequence[str],
    numeric: list[dict],
    vocab_of: Callable[[str], list[str]],
) -> dict:
    """The JSON-serializable encoders dict, from the fitted parts (in memory or streamed).

    ``vocab_of(column)`` gives a categorical column's vocabulary, most frequent first.
    """
    encoders = {
        "version": ENCODERS_VERSION,
        "label": schema.label,
        "domain": {"column": schema.domain, "names": [str(d) for d in domains]},
        "categorical": [{"column": c, "vocab": vocab_of(c)} for c in schema.categorical],
        "numeric": numeric,
    }
    for key in ("user", "item"):
        col = getattr(schema, key)
        if col is None:
            encoders[key] = None
        else:
            shared = col in schema.categorical
            encoders[key] = {"column": col, "vocab": None if shared else vocab_of(col)}
    encoders["time"] = {"column": schema.time} if schema.time is not None else None
    return encoders


def fit_vocab(s: pd.Series) -> list[str]:
    """Distinct non-missing values of ``s`` as strings, most frequent first, ties in string order."""
    codes, strs = _factorize(s)
    counts = np.bincount(codes[codes >= 0], minlength=len(strs))
    per_value = pd.Series(counts).groupby(strs.to_numpy()).sum()  # sorted by string; merges 1 / "1"
    order = np.argsort(-per_value.to_numpy(), kind="stable")
    return [str(v) for v in per_value.index.to_numpy()[order]]


def encode(df: pd.DataFrame, encoders: dict) -> EncodedTable:
    """Encode ``df`` with fitted ``encoders``.  Unseen categories -> 0; unknown domains are an error."""
    _check_encoders(encoders)
    needed = [encoders["label"], encoders["domain"]["column"]]
    needed += [c["column"] for c in encoders["categorical"]] + [
        c["column"] for c in encoders["numeric"]
    ]
    needed += [encoders[k]["column"] for k in ("user", "item", "time") if encoders.get(k)]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ValueError(
            f"columns {missing} needed by the encoders are missing; available columns: "
            f"{[str(c) for c in df.columns]}"
        )
    n = len(df)
    vocabs = {c["column"]: pd.Index(c["vocab"], dtype=str) for c in encoders["categorical"]}
    cat = np.zeros((n, len(vocabs)), dtype=np.int64)
    for j, (col, vocab) in enumerate(vocabs.items()):
        cat[:, j] = _lookup(df[col], vocab)
    num = np.zeros((n, len(encoders["numeric"])), dtype=np.float32)
    for j, stats in enumerate(encoders["numeric"]):
        col = stats["column"]
        check_numeric(df[col], col, "encode")
        values = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
        num[:, j] = (values - stats["mean"]) / stats["std"]
    label_col = encoders["label"]
    check_label(df[label_col], label_col, "encode")
    label = df[label_col].to_numpy(dtype=np.float32)
    domain = _domain_index(df[encoders["domain"]["column"]], encoders["domain"])
    ids = {}
    for key in ("user", "item"):
        entry = encoders.get(key)
        if entry:
            col = entry["column"]
            vocab = vocabs[col] if entry["vocab"] is None else pd.Index(entry["vocab"], dtype=str)
            ids[key] = _tensor(_id_codes(df[col], vocab, f"{key} column {col!r}"))
    time = None
    if encoders.get("time"):
        time = _tensor(time_values(df[encoders["time"]["column"]]))
    return EncodedTable(
        cat=torch.from_numpy(cat),
        num=torch.from_numpy(num),
        domain=_tensor(domain),
        label=_tensor(label),
        user=ids.get("user"),
        item=ids.get("item"),
        time=time,
    )


def spec_from_encoders(encoders: dict) -> FeatureSpec:
    """The :class:`FeatureSpec` a model needs; cardinalities include index 0 (OOV)."""
    _check_encoders(encoders)
    return FeatureSpec(
        cat_names=tuple(c["column"] for c in encoders["categorical"]),
        cat_cardinalities=tuple(len(c["vocab"]) + 1 for c in encoders["categorical"]),
        num_names=tuple(c["column"] for c in encoders["numeric"]),
        domain_names=tuple(encoders["domain"]["names"]),
    )


def check_compatible(encoders: dict, schema: TableSchema) -> None:
    """Raise if ``schema`` does not describe the columns and domains the ``encoders`` were fit on."""
    _check_encoders(encoders)
    fitted = {
        "label": encoders["label"],
        "domain": encoders["domain"]["column"],
        "categorical": [c["column"] for c in encoders["categorical"]],
        "numeric": [c["column"] for c in encoders["numeric"]],
    }
    given = {
        "label": schema.label,
        "domain": schema.domain,
        "categorical": list(schema.categorical),
        "numeric": list(schema.numeric),
    }
    for key, value in fitted.items():
        if given[key] != value:
            raise ValueError(
                f"{schema.where}: {key} is {given[key]!r} but the encoders (checkpoint) were fit "
                f"with {value!r}"
            )
    names = list(encoders["domain"]["names"])
    if schema.domains is not None and list(schema.domains) != names:
        raise ValueError(
            f"{schema.where}: domains {list(schema.domains)} do not match the encoders' (checkpoint's) "
            f"domain names {names}"
        )


def time_values(s: pd.Series) -> np.ndarray:
    """A time column as int64: numbers as they are, datetimes / date strings as Unix seconds."""
    if pd.api.types.is_bool_dtype(s):
        raise ValueError(f"time column {s.name!r} is boolean; expected numbers or datetimes")
    if pd.api.types.is_numeric_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(values).all():
            i = int(np.argmax(~np.isfinite(values)))
            raise ValueError(f"time column {s.name!r} has a missing/non-finite value at row {i}")
        return (
            s.to_numpy(dtype=np.int64)
            if pd.api.types.is_integer_dtype(s)
            else values.astype(np.int64)
        )
    if not pd.api.types.is_datetime64_any_dtype(s):
        try:
            s = pd.to_datetime(s)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"time column {s.name!r} is neither numeric nor parseable as dates: {err}"
            ) from err
    if s.isna().any():
        i = int(np.argmax(s.isna().to_numpy()))
        raise ValueError(f"time column {s.name!r} has a missing value at row {i}")
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[s]").astype(np.int64)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor owning a writable copy when ``a`` is a read-only view (pandas copy-on-write)."""
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _check_encoders(encoders: dict) -> None:
    if not isinstance(encoders, dict):
        raise ValueError(
            f"encoders must be a dict from fit_encoders, got {type(encoders).__name__}"
        )
    missing = [
        k for k in ("version", "label", "domain", "categorical", "numeric") if k not in encoders
    ]
    if missing:
        raise ValueError(f"encoders are missing keys {missing}; were they made by fit_encoders?")
    if encoders["version"] != ENCODERS_VERSION:
        raise ValueError(
            f"encoders version {encoders['version']!r} is not supported (expected {ENCODERS_VERSION})"
        )


def _factorize(s: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes ([N], -1 = missing) and the distinct values as strings."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), pd.Index(uniques).astype(str)


def _lookup(s: pd.Series, vocab: pd.Index) -> np.ndarray:
    codes, strs = _factorize(s)
    table = vocab.get_indexer(strs).astype(np.int64) + 1  # unseen: -1 + 1 = 0
    return np.append(table, 0)[codes]  # missing values (code -1) hit the appended 0


def _id_codes(s: pd.Series, vocab: pd.Index, what: str) -> np.ndarray:
    codes, strs = _factorize(s)
    if (codes < 0).any():
        raise ValueError(f"{what} has missing values, first at row {int(np.argmax(codes < 0))}")
    table = vocab.get_indexer(strs).astype(np.int64) + 1
    unseen = table == 0
    if unseen.any():  # fresh ids above the vocabulary, in string order
        new = strs.to_numpy()[unseen]
        table[unseen] = len(vocab) + 1 + np.argsort(np.argsort(new, kind="stable"), kind="stable")
    return table[codes]


def _domain_index(s: pd.Series, entry: dict) -> np.ndarray:
    col, names = entry["column"], list(entry["names"])
    codes, strs = _factorize(domain_strings(s))
    if (codes < 0).any():
        raise ValueError(
            f"domain column {col!r} has missing values, first at row {int(np.argmax(codes < 0))}"
        )
    table = pd.Index(names, dtype=str).get_indexer(strs).astype(np.int64)
    if (table < 0).any():
        bad = list(strs.to_numpy()[table < 0][:10])
        first = int(np.argmax(table[codes] < 0))
        raise ValueError(
            f"domain column {col!r} has values {bad} (first at row {first}) that are not among the "
            f"encoders' domain names {names}"
        )
    return table[codes]
