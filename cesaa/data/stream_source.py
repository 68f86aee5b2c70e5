"""The Parquet files of a stream: their row groups, each row's hashed split, validated pieces.

A row's split is a seeded hash of its position in the whole dataset (files in sorted name order):
independent of the row-group layout and needing no permutation of the file.  See
:mod:`cesaa.data.stream` for how the parts are read for training and evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cesaa.data.schema import PARQUET_EXTENSIONS, TableSchema
from cesaa.data.stream_encoding import validate_piece

SPLIT_CUTS = (0.8, 0.9)  # hash quantile < 0.8: train, < 0.9: val, else test
READ_ROWS = 65_536


def split_codes(positions: np.ndarray, seed: int) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) for each row position: splitmix64 of (seed, position)."""
    with np.errstate(over="ignore"):
        x = np.asarray(positions, dtype=np.uint64) + np.uint64(
            (seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % 2**64
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    return np.searchsorted(np.asarray(SPLIT_CUTS), u, side="right").astype(np.int8)


@dataclass(frozen=True)
class _Group:
    file: int  # index into the source's files
    row_group: int
    start: int  # position of its first row in the whole dataset
    rows: int
    part_rows: tuple[int, int, int]  # rows in train / val / test


class ParquetSource:
    """The files, their row groups and how each row is split; reads validated, encoded pieces."""

    def __init__(
        self,
        schema: TableSchema,
        data: Path,
        *,
        split: str = "random",
        seed: int = 0,
        read_rows: int = READ_ROWS,
    ) -> None:
        if split not in ("random", "none"):
            raise ValueError(
                f"split={split!r}: a Parquet stream supports 'random' (hashed 8:1:1) or 'none'"
            )
        if isinstance(read_rows, bool) or not isinstance(read_rows, int) or read_rows < 1:
            raise ValueError(f"read_rows={read_rows!r} must be an int >= 1")
        self.schema, self.data, self.split, self.seed = schema, Path(data), split, seed
        self.read_rows = read_rows
        self.files = _parquet_files(self.data)
        self.columns = list(schema.roles())
        self._files = [_open(path) for path in self.files]  # footers parsed once
        self.groups: list[_Group] = []
        self.file_starts: list[int] = []
        start = 0
        for i, path in enumerate(self.files):
            self.file_starts.append(start)
            meta = self._files[i].metadata
            names = list(self._files[i].schema_arrow.names)
            for col, role in schema.roles().items():
                if col not in names:
                    raise ValueError(
                        f"{path}: {role} column {col!r} named by {schema.where} is missing; "
                        f"available columns: {names}"
                    )
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n == 0:
                    continue
                counts = self._part_counts(start, n)
                self.groups.append(_Group(i, g, start, n, counts))
                start += n
        self.rows = start
        if self.rows == 0:
            raise ValueError(f"data file {self.data}: empty file (header only, no rows)")

    def _part_counts(self, start: int, n: int) -> tuple[int, int, int]:
        if self.split == "none":
            return (0, 0, n)
        c = np.bincount(split_codes(np.arange(start, start + n), self.seed), minlength=3)
        return (int(c[0]), int(c[1]), int(c[2]))

    def codes(self, start: int, n: int) -> np.ndarray:
        if self.split == "none":
            return np.full(n, 2, np.int8)
        return split_codes(np.arange(start, start + n), self.seed)

    def pieces(self, group: _Group) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(position of the first row, record batch) for each piece of ``group``, unvalidated."""
        path = self.files[group.file]
        start = group.start
        try:
            for rb in self._files[group.file].iter_batches(
                batch_size=self.read_rows, row_groups=[group.row_group], columns=self.columns
            ):
                yield start, rb
                start += rb.num_rows
        except (pa.ArrowException, OSError) as err:
            raise ValueError(
                f"data file {path}: cannot read it as Parquet (truncated or not Parquet?): {err}"
            ) from err

    def frame(
        self, group: _Group, start: int, rb: pa.RecordBatch, domains: tuple[str, ...] | None
    ) -> pd.DataFrame:
        """The piece as a validated frame (messages count rows from the start of its file)."""
        df = rb.to_pandas()
        offset = start - self.file_starts[group.file]
        validate_piece(df, self.schema, self.files[group.file], offset, domains)
        return df

    def fingerprint(self, encoders: dict) -> str:
        """16 hex digits over file names, sizes, row groups, split and encoders (not the bytes)."""
        h = hashlib.sha256()
        for path, pf in zip(self.files, self._files, strict=True):
            meta = pf.metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            h.update(f"{path.name}:{path.stat().st_size}:{sizes};".encode())
        h.update(f"{self.split}:{self.seed};".encode())
        h.update(json.dumps(encoders, sort_keys=True).encode())
        return h.hexdigest()[:16]


def _parquet_files(data: Path) -> list[Path]:
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.name.lower().endswith(PARQUET_EXTENSIONS))
        if not files:
            raise ValueError(f"data folder {data}: no Parquet files ({list(PARQUET_EXTENSIONS)})")
        return files
    if not data.name.lower().endswith(PARQUET_EXTENSIONS):
        raise ValueError(
            f"data file {data}: streaming reads Parquet only ({list(PARQUET_EXTENSIONS)}); "
            "convert the file or use the in-memory 'table:' source"
        )
    if not data.is_file():
        raise FileNotFoundError(f"data file {data} does not exist")
    return [data]


def _open(path: Path) -> pq.ParquetFile:
    """Parse the footer; a truncated or foreign file is a ValueError naming it."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(
            f"data file {path}: cannot read it as Parquet (truncated or not Parquet?): {err}"
        ) from err
