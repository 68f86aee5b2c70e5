"""Encoding a Parquet stream piece by piece: validation, encoders fit in one pass, stable ids.

The pieces come from ``cesaa.data.stream.ParquetSource``; everything here works on one pandas frame
at a time, so memory is bounded by a piece (plus the vocabularies being counted).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cesaa.data.encoding import assemble_encoders, encode
from cesaa.data.schema import TableSchema, domain_strings, sorted_domain_names
from cesaa.data.table import EncodedTable
from cesaa.data.validate import check_declared_domains, check_values

_ID_SPACE = 2**40  # hashed ids of unseen users / items: vocabulary size + 1 + [0, 2**40)


def fit_stream_encoders(src) -> dict:
    """``fit_encoders`` on the training rows of ``src`` (a ``ParquetSource``), in one pass that
    also validates every row."""
    schema = src.schema
    cat_cols = list(schema.categorical)
    id_cols = [c for c in (schema.user, schema.item) if c is not None and c not in cat_cols]
    counts: dict[str, pd.Series] = {c: pd.Series(dtype=np.int64) for c in cat_cols + id_cols}
    moments = {c: (0, 0.0, 0.0) for c in schema.numeric}  # n, mean, M2 (Chan et al. merge)
    domains = pd.Series(dtype=np.int64)
    n_train = 0
    for g in src.groups:
        for start, rb in src.pieces(g):
            df = src.frame(g, start, rb, schema.domains)
            domains = domains.add(domain_strings(df[schema.domain]).value_counts(), fill_value=0)
            train = df[src.codes(start, len(df)) == 0]
            n_train += len(train)
            for c in counts:
                vc = train[c].dropna().astype(str).value_counts()
                counts[c] = counts[c].add(vc, fill_value=0)
            for c in schema.numeric:
                moments[c] = _merge_moments(moments[c], train[c].to_numpy(np.float64))
    if n_train == 0:
        raise ValueError(f"split={src.split!r} leaves no training rows to fit encoders on")
    present = set(domains.index[domains > 0])
    if schema.domains is not None:
        empty = [d for d in schema.domains if d not in present]
        if empty:
            raise ValueError(
                f"{src.data}: empty domain: declared domain(s) {empty} of column "
                f"{schema.domain!r} have no rows"
            )
    names = schema.domains or sorted_domain_names(pd.Series(sorted(present)))
    numeric = []
    for c in schema.numeric:
        n, mean, m2 = moments[c]
        std = math.sqrt(m2 / n) if n else 1.0
        if not math.isfinite(std) or std <= 0:
            std = 1.0
        numeric.append({"column": c, "mean": mean if n else 0.0, "std": std})
    return assemble_encoders(schema, names, numeric, lambda col: _vocab(counts[col]))


def _vocab(counts: pd.Series) -> list[str]:
    """As ``fit_vocab``: most frequent first, ties in string order."""
    s = counts.sort_index()
    order = np.argsort(-s.to_numpy(), kind="stable")
    return [str(v) for v in s.index.to_numpy()[order]]


def _merge_moments(acc: tuple[int, float, float], x: np.ndarray) -> tuple[int, float, float]:
    n_a, mean_a, m2_a = acc
    n_b = len(x)
    if n_b == 0:
        return acc
    mean_b = float(x.mean())
    m2_b = float(((x - mean_b) ** 2).sum())
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def validate_piece(
    df: pd.DataFrame,
    schema: TableSchema,
    source: Path,
    offset: int = 0,
    domains: tuple[str, ...] | None = None,
) -> None:
    """``validate_frame``'s checks on one piece whose first row is row ``offset`` of ``source``
    (messages give file row numbers).  ``domains``: the allowed domain values (declared in the
    schema or the encoders'), None to accept any."""
    try:
        check_values(df, schema, source)
        if domains is not None:
            check_declared_domains(df[schema.domain], schema.domain, domains, source)
    except ValueError as err:
        if offset == 0:
            raise
        msg = re.sub(r"\bat row (\d+)", lambda m: f"at row {int(m.group(1)) + offset}", str(err))
        raise ValueError(msg) from None


def encode_piece(df: pd.DataFrame, encoders: dict) -> EncodedTable:
    """``encode`` one piece; unseen user / item ids get stable hashed ids (the same in any piece)."""
    df = df.reset_index(drop=True)
    t = encode(df, encoders)
    for key in ("user", "item"):
        entry = encoders.get(key)
        if not entry:
            continue
        col = entry["column"]
        vocab = entry["vocab"]
        if vocab is None:
            vocab = next(c["vocab"] for c in encoders["categorical"] if c["column"] == col)
        ids = getattr(t, key)
        fresh = (ids > len(vocab)).numpy()
        if fresh.any():
            raw = df[col].to_numpy()[fresh].astype(str).astype(object)
            hashed = pd.util.hash_array(raw).astype(np.uint64) % np.uint64(_ID_SPACE)
            ids = ids.clone()
            ids[torch.from_numpy(fresh)] = torch.from_numpy(
                hashed.astype(np.int64) + len(vocab) + 1
            )
            setattr(t, key, ids)
    return t
