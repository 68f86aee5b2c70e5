"""Open a routing record: validated metadata and statistics at once, rows on demand.

Shapes: N = rows, D = domains, E = experts of a gate, k = selected experts, n = sample rows,
H = expert output width.

``open_record`` reads ``record.json`` and the Parquet footers only, so it takes the same time for
10k and 100M rows.  It checks everything that can be checked without reading the rows: the format
and schema version, that every promised column exists, the column statistics of each row group
(domain and expert indices in range, probabilities in [0, 1]) and that the stored gate
probabilities sum to one row per row on average (``prob_sum.sum(1) == count``).  Reading rows
(``Record.read``, ``Record.sample``) validates what is read; ``Record.validate()`` reads them all.
Every problem raises a named ``RecordError`` subclass whose message names the file and column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.format import (
    META_FILE,
    ROWS_FILE,
    SAMPLE_FILE,
    GateInfo,
    RecordError,
    RecordExpertOutOfRange,
    RecordMeta,
    RecordMissingColumn,
    RecordProbabilityError,
    RecordSchemaError,
    RecordUnknownDomain,
    prob_column,
    top_column,
)
from cesaa.routing.stats import RoutingStats

ATOL = 1e-3  # per-row tolerance of sum_e p_e = 1 (float32 storage)


@dataclass
class Record:
    """An opened record: ``meta``, ``stats`` {gate: RoutingStats over all rows}, the folder, and
    ``checked``: "full" when every row was checked on opening, else "footer"."""

    path: Path
    meta: RecordMeta
    stats: dict[str, RoutingStats]
    checked: str = "footer"

    @property
    def rows(self) -> int:
        return self.meta.rows

    @property
    def domains(self) -> tuple[str, ...]:
        return self.meta.domains

    @property
    def primary(self) -> GateInfo:
        return self.meta.primary

    @property
    def has_sample(self) -> bool:
        return bool(self.meta.sample.get("size"))

    def read(self, columns: list[str] | None = None, *, limit: int | None = None) -> pa.Table:
        """The rows (all columns by default; the first ``limit`` rows), validated."""
        pf = pq.ParquetFile(self.path / ROWS_FILE)
        parts = []
        got = 0
        for i in range(pf.num_row_groups):
            if limit is not None and got >= limit:
                break
            t = pf.read_row_group(i, columns=columns)
            parts.append(t)
            got += t.num_rows
        schema = (
            pf.schema_arrow
            if columns is None
            else pa.schema([pf.schema_arrow.field(c) for c in columns])
        )
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        if limit is not None:
            table = table.slice(0, limit)
        _check_values(table, self.meta, ROWS_FILE)
        return table

    def iter_batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Row group by row group (one in memory at a time), each validated."""
        pf = pq.ParquetFile(self.path / ROWS_FILE)
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i, columns=columns)
            _check_values(t, self.meta, ROWS_FILE)
            yield t

    def gate_arrays(
        self, table: pa.Table, gate: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probs [n, E] float64, topk_idx [n, k] int64 or None) of ``gate`` from a read table."""
        g = self.meta.gate(gate) if gate else self.primary
        probs = np.column_stack(
            [table[prob_column(g.name, e)].to_numpy() for e in range(g.num_experts)]
        ).astype(np.float64)
        top = None
        if g.top_k:
            top = np.column_stack(
                [table[top_column(g.name, j)].to_numpy() for j in range(g.top_k)]
            ).astype(np.int64)
        return probs, top

    def sample(self) -> pa.Table | None:
        """The expert-output sample (``None`` when the record has none), validated."""
        if not self.has_sample:
            return None
        path = self.path / SAMPLE_FILE
        if not path.is_file():
            raise RecordMissingColumn(
                f"{path}: record.json promises a sample but the file is missing"
            )
        table = pq.read_table(path)
        need = [f"out.{e}" for e in range(self.primary.num_experts)]
        need += [f"shared.{s}" for s in range(self.meta.sample.get("shared", 0))]
        _require(
            table.schema.names,
            ["row", *self.meta.columns()[1:4], *self.meta.primary.columns(), *need],
            path,
        )
        _check_values(
            table,
            self.meta,
            SAMPLE_FILE,
            columns=[c for c in table.schema.names if not c.startswith(("out.", "shared."))],
        )
        return table

    def validate(self) -> None:
        """Read every row group and check every value (O(N); ``open_record`` is O(1))."""
        for _ in self.iter_batches():
            pass


def is_record(path: str | Path) -> bool:
    """Whether ``path`` is a record folder (holds record.json or rows.parquet), not a checkpoint."""
    p = Path(path)
    return p.is_dir() and ((p / META_FILE).is_file() or (p / ROWS_FILE).is_file())


FULL_CHECK_ROWS = 1_000_000  # check="auto" reads and checks every row of records up to this size


def open_record(path: str | Path, check: str = "auto") -> Record:
    """Open the record folder ``path``; raises a ``RecordError`` subclass naming the problem.

    ``check``: "footer" reads only record.json and the Parquet footers (constant time); "full"
    also reads and checks every row; "auto" (default) is "full" up to ``FULL_CHECK_ROWS`` rows and
    "footer" above (then row-level checks happen as rows are read).  ``Record.checked`` says which.
    """
    if check not in ("auto", "footer", "full"):
        raise ValueError(f"check must be 'auto', 'footer' or 'full', got {check!r}")
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise RecordSchemaError(f"{path}: not a folder (a record is a folder with {META_FILE})")
    if not meta_path.is_file():
        raise RecordSchemaError(
            f"{meta_path}: missing (an unfinished record, or not a record folder)"
        )
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecordSchemaError(f"{meta_path}: not readable JSON ({err})") from None
    meta = RecordMeta.from_dict(raw, where=str(meta_path))

    rows_path = path / ROWS_FILE
    if not rows_path.is_file():
        raise RecordMissingColumn(f"{rows_path}: missing (record.json promises {meta.rows} rows)")
    try:
        pf = pq.ParquetFile(rows_path)
    except (OSError, pa.ArrowInvalid) as err:
        raise RecordSchemaError(f"{rows_path}: not a readable Parquet file ({err})") from None
    _require(pf.schema_arrow.names, meta.columns(), rows_path)
    if pf.metadata.num_rows != meta.rows:
        raise RecordSchemaError(
            f"{rows_path}: holds {pf.metadata.num_rows} rows but record.json says {meta.rows}"
        )
    _check_footer(pf, meta, rows_path)
    stats = _stats(meta, meta_path)
    rec = Record(path=path, meta=meta, stats=stats)
    if check == "full" or (check == "auto" and meta.rows <= FULL_CHECK_ROWS):
        rec.validate()
        rec.sample()
        rec.checked = "full"
    return rec


def _require(have: list[str], need: list[str], where: Path) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        shown = missing[:5] + (["..."] if len(missing) > 5 else [])
        raise RecordMissingColumn(f"{where}: missing column(s) {shown}")


def _stats(meta: RecordMeta, where: Path) -> dict[str, RoutingStats]:
    out = {}
    for g in meta.gates:
        if g.name not in meta.stats:
            raise RecordSchemaError(f"{where}: stats has no entry for gate {g.name!r}")
        try:
            st = RoutingStats.from_dict(meta.stats[g.name])
        except ValueError as err:
            raise RecordSchemaError(f"{where}: stats of gate {g.name!r}: {err}") from None
        if st.shape != (len(meta.domains), g.num_experts):
            raise RecordSchemaError(
                f"{where}: stats of gate {g.name!r} have shape {st.shape} (domains, experts) but "
                f"the record names {len(meta.domains)} domains and {g.num_experts} experts"
            )
        if st.rows != meta.rows:
            raise RecordSchemaError(
                f"{where}: stats of gate {g.name!r} count {st.rows} rows but rows={meta.rows}"
            )
        sums = st.prob_sum.sum(axis=1)
        bad = np.abs(sums - st.count) > ATOL * np.maximum(st.count, 1)
        if bad.any():
            d = int(np.flatnonzero(bad)[0])
            raise RecordProbabilityError(
                f"{where}: gate {g.name!r} probabilities of domain {meta.domains[d]!r} sum to "
                f"{sums[d]:.6g} over {int(st.count[d])} rows (each row must sum to 1)"
            )
        out[g.name] = st
    return out


def _check_footer(pf: pq.ParquetFile, meta: RecordMeta, where: Path) -> None:
    """Range checks from the row groups' min/max statistics (no row is read)."""
    names = pf.schema_arrow.names
    md = pf.metadata
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        for j in range(rg.num_columns):
            col = rg.column(j)
            st = col.statistics
            if st is None or not st.has_min_max:
                continue
            _check_range(names[j], st.min, st.max, meta, f"{where} (row group {i})")


def _check_range(column: str, lo: float, hi: float, meta: RecordMeta, where: str) -> None:
    if column == "domain" and (lo < 0 or hi >= len(meta.domains)):
        bad = lo if lo < 0 else hi
        raise RecordUnknownDomain(
            f"{where}: column domain has index {bad}, but record.json names "
            f"{len(meta.domains)} domains {list(meta.domains)[:10]}"
        )
    parts = column.split(".")
    if len(parts) == 3 and parts[0] in ("p", "top"):
        try:
            g = meta.gate(parts[1])
        except KeyError:
            return
        if parts[0] == "top" and (lo < 0 or hi >= g.num_experts):
            bad = lo if lo < 0 else hi
            raise RecordExpertOutOfRange(
                f"{where}: column {column} has expert index {bad} outside [0, {g.num_experts}) "
                f"of gate {g.name!r}"
            )
        if parts[0] == "p" and (lo < -ATOL or hi > 1 + ATOL):
            bad = lo if lo < 0 else hi
            raise RecordProbabilityError(
                f"{where}: column {column} has probability {bad:.6g} outside [0, 1]"
            )


def _check_values(
    table: pa.Table, meta: RecordMeta, where: str, columns: list[str] | None = None
) -> None:
    """Per-row checks of a read table: ranges and rows of every gate summing to 1."""
    import pyarrow.compute as pc

    names = table.schema.names if columns is None else columns
    if table.num_rows == 0:
        return
    for c in names:
        t = table[c].type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            mm = pc.min_max(table[c])
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if lo is None:
                continue
            _check_range(c, lo, hi, meta, where)
    for g in meta.gates:
        cols = [prob_column(g.name, e) for e in range(g.num_experts)]
        if not all(c in table.schema.names for c in cols):
            continue
        sums = np.sum([table[c].to_numpy(zero_copy_only=False) for c in cols], axis=0)
        off = np.abs(sums - 1.0) > ATOL
        if off.any():
            r = int(np.flatnonzero(off)[0])
            row = int(table["row"][r].as_py()) if "row" in table.schema.names else r
            raise RecordProbabilityError(
                f"{where}: gate {g.name!r} probabilities of row {row} sum to {sums[r]:.6g} "
                "(each row must sum to 1)"
            )


__all__ = ["Record", "RecordError", "is_record", "open_record"]
