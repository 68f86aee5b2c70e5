"""Out-of-core Parquet: a dataset larger than memory, read row group by row group with pyarrow.

Source string ``stream:SCHEMA_PATH``: the table schema of ``cesaa.data.schema`` whose ``data`` is a
Parquet file or a folder of Parquet files (read in sorted name order as one table).  Memory is
bounded by one read piece (``read_rows`` rows of one row group) plus one batch, whatever N is.

- **Split**: a row's split is a seeded hash of its position (``split="random"``: each row
  independently train / val / test with probability 0.8 / 0.1 / 0.1; ``"none"``: every row in
  test, to evaluate a checkpoint on a new file).  It needs no permutation of the whole file and
  does not depend on the row-group layout; it is not the exact 8:1:1 cut of the ``table:`` source.
- **Encoders**: fit in one streaming pass (vocabulary counts and Welford-merged mean / std over the
  training rows; memory grows with the vocabularies, not with N).  They equal ``fit_encoders`` on
  the same rows (numeric statistics up to float rounding), or come from a checkpoint.
- **Validation**: every piece is checked as ``validate_frame`` checks a whole file, with the same
  messages and file row numbers (missing columns, empty files and truncated files at open).
- **Training** (``cesaa.train.train(..., data=StreamingData)``): each epoch permutes the row groups
  with the epoch's generator; rank r of W reads a contiguous share of the training rows in that
  order (shares differ by at most one row), rows are shuffled within each piece and batches are cut
  across pieces.  Every rank runs min_r ceil(rows_r / b_r) steps (b_r: its slice of the global
  batch), so under DDP at most one local batch per rank is skipped per epoch.  The shuffle is
  coarser than the in-memory permutation: write files with many row groups.
- **Evaluation** (``eval_batches``, ``chunks``): contiguous, independent of the row-group layout.
- Unseen user / item ids get a stable hashed id above the vocabulary (so GAUC groups one id across
  pieces); unseen categories encode as 0, as in ``encode``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cesaa.data.encoding import check_compatible, spec_from_encoders
from cesaa.data.schema import TableSchema, read_schema
from cesaa.data.stream_batching import FIELDS, concat, rebatch
from cesaa.data.stream_encoding import encode_piece, fit_stream_encoders
from cesaa.data.stream_source import READ_ROWS, SPLIT_CUTS, ParquetSource, _Group, split_codes
from cesaa.data.table import EncodedTable
from cesaa.distributed import shard_range
from cesaa.features import FeatureSpec

PREFIX = "stream:"
PARTS = ("train", "val", "test")
__all__ = [
    "PARTS",
    "PREFIX",
    "READ_ROWS",
    "SPLIT_CUTS",
    "ParquetPart",
    "ParquetSource",
    "StreamingData",
    "concat",
    "is_stream_source",
    "open_stream",
    "rebatch",
    "split_codes",
]


def is_stream_source(source: object) -> bool:
    return isinstance(source, str) and source.strip().startswith(PREFIX)


class ParquetPart:
    """One split (train, val or test) of a ``ParquetSource``, encoded piece by piece.

    Usable wherever the trainer and the analysis take an ``EncodedTable``: ``len``, ``batches``,
    plus ``chunks`` / ``eval_batches`` (contiguous) and ``train_batches`` (shuffled, per rank).
    """

    def __init__(self, source: ParquetSource, part: str, encoders: dict) -> None:
        self.source, self.part, self.encoders = source, part, encoders
        self.code = PARTS.index(part)
        self.rows = sum(g.part_rows[self.code] for g in source.groups)

    def __len__(self) -> int:
        return self.rows

    @property
    def has_user(self) -> bool:
        return bool(self.encoders.get("user"))

    def _segments(self, order: list[int], rank: int, world: int) -> list[tuple[_Group, int, int]]:
        """This rank's rows: ``(group, a, b)`` = part rows [a, b) of each group in ``order``."""
        lo, hi = shard_range(self.rows, rank, world)
        out, offset = [], 0
        for gi in order:
            g = self.source.groups[gi]
            n = g.part_rows[self.code]
            a, b = max(lo - offset, 0), min(hi - offset, n)
            if a < b:
                out.append((g, a, b))
            offset += n
        return out

    def _read(
        self, segments: list[tuple[_Group, int, int]], generator: torch.Generator | None = None
    ) -> Iterator[EncodedTable]:
        names = tuple(self.encoders["domain"]["names"])
        for g, a, b in segments:
            seen = 0  # part rows of g before the current piece
            for start, rb in self.source.pieces(g):
                mine = np.flatnonzero(self.source.codes(start, rb.num_rows) == self.code)
                take = mine[max(a - seen, 0) : max(b - seen, 0)]
                seen += len(mine)
                if len(take):
                    df = self.source.frame(g, start, rb, names)
                    t = encode_piece(df.iloc[take], self.encoders)
                    if generator is not None:
                        t = t.subset(torch.randperm(len(t), generator=generator))
                    yield t
                if seen >= b:
                    break

    def chunks(self, rank: int = 0, world: int = 1) -> Iterator[EncodedTable]:
        """This rank's share of the rows, in file order, one encoded piece at a time."""
        return self._read(self._segments(list(range(len(self.source.groups))), rank, world))

    def eval_batches(
        self, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[EncodedTable]:
        """This rank's share in file order, cut into batches of ``batch_size`` rows."""
        return rebatch(self.chunks(rank, world), batch_size)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[EncodedTable]:
        """As ``EncodedTable.batches``: contiguous, or shuffled (see ``train_batches``)."""
        if not shuffle:
            return self.eval_batches(batch_size)
        gen = generator or torch.Generator().manual_seed(0)
        return (b for b, _ in self.train_batches(batch_size, gen))

    def column(self, name: str) -> np.ndarray:
        """One encoded field (e.g. ``"user"`` for GAUC) of every row, in order: one pass, O(N)."""
        if name not in FIELDS:
            raise ValueError(f"name={name!r} must be one of {list(FIELDS)}")
        parts = [getattr(t, name) for t in self.chunks()]
        if not parts or parts[0] is None:
            return None
        return torch.cat(parts).numpy()

    def sample_table(self, rows: int, seed: int = 0) -> EncodedTable:
        """An in-memory ``EncodedTable`` of ``min(rows, len(self))`` rows drawn uniformly without
        replacement (in file order) from ``default_rng(seed)``: bounded input for analyses that
        need several passes (knock-out, k curve)."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"rows={rows!r} must be an int >= 0")
        keep = np.sort(
            np.random.default_rng(seed).choice(self.rows, size=min(rows, self.rows), replace=False)
        )
        picked, start = [], 0
        for chunk in self.chunks():
            lo, hi = np.searchsorted(keep, [start, start + len(chunk)])
            if hi > lo:
                picked.append(chunk.subset(torch.from_numpy(keep[lo:hi] - start)))
            start += len(chunk)
        if not picked:
            raise ValueError("sample_table(rows=0) or an empty split: no rows to sample")
        return concat(picked)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[EncodedTable, int]]:
        """``(this rank's batch, rows of the global batch)`` for one epoch (see the module doc)."""
        if batch_size < world:
            raise ValueError(f"batch_size={batch_size} must be >= the number of processes {world}")
        order = torch.randperm(len(self.source.groups), generator=generator).tolist()
        share = [shard_range(self.rows, r, world) for r in range(world)]
        rows = [hi - lo for lo, hi in share]
        local = [hi - lo for lo, hi in (shard_range(batch_size, r, world) for r in range(world))]
        steps = min(math.ceil(n / b) for n, b in zip(rows, local, strict=True))
        pieces = self._read(self._segments(order, rank, world), generator)
        for step, batch in zip(range(steps), rebatch(pieces, local[rank]), strict=False):
            n_global = sum(max(0, min(b, n - step * b)) for n, b in zip(rows, local, strict=True))
            yield batch, n_global


@dataclass
class StreamingData:
    """``MultiDomainData``'s interface over Parquet streams: what ``train`` and ``evaluate`` take."""

    train: ParquetPart
    val: ParquetPart
    test: ParquetPart
    spec: FeatureSpec
    encoders: dict = field(default_factory=dict)
    description: dict = field(default_factory=dict)
    fingerprint: str = ""
    truth: dict | None = None

    @property
    def domain_names(self) -> tuple[str, ...]:
        return self.spec.domain_names


def open_stream(
    source: str | Path | TableSchema,
    *,
    split: str = "random",
    seed: int = 0,
    encoders: dict | None = None,
    data: str | Path | None = None,
    read_rows: int = READ_ROWS,
) -> StreamingData:
    """Open ``stream:SCHEMA_PATH`` (or a schema path / ``TableSchema``) without loading the rows.

    Without ``encoders`` one streaming pass validates every row and fits them on the training rows;
    with ``encoders`` (a checkpoint's) rows are validated as they are read.  ``data`` overrides the
    schema's data path (a Parquet file or a folder of them).
    """
    text = str(source) if not isinstance(source, TableSchema) else None
    schema = source
    if not isinstance(source, TableSchema):
        path = text[len(PREFIX) :] if text.startswith(PREFIX) else text
        schema = read_schema(path.strip())
    data_path = Path(data) if data is not None else schema.data
    if data_path is None:
        raise ValueError(f"{schema.where} has no 'data' key and no data file was given")
    src = ParquetSource(schema, data_path, split=split, seed=seed, read_rows=read_rows)
    if encoders is None:
        encoders = fit_stream_encoders(src)
    else:
        check_compatible(encoders, schema)
    train, val, test = (ParquetPart(src, p, encoders) for p in PARTS)
    description = {
        "source": text if text and text.startswith(PREFIX) else f"{PREFIX}{schema.path}",
        "kind": "stream",
        "path": str(schema.path),
        "data": str(data_path),
        "schema": schema.to_dict(),
        "rows": src.rows,
        "split": split,
        "seed": seed,
    }
    return StreamingData(
        train=train,
        val=val,
        test=test,
        spec=spec_from_encoders(encoders),
        encoders=encoders,
        description=description,
        fingerprint=src.fingerprint(encoders),
    )
