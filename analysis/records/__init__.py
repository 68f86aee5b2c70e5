"""Routing records: write any gated model's routing once, read it anywhere (see docs/record.md).

- ``format``: the on-disk layout, ``RecordMeta`` and the named ``RecordError`` subclasses.
- ``writer.RecordWriter``: append rows in Parquet row groups; statistics as mergeable sums.
- ``sample``: the expert-output sample, a bottom-n sketch of a seeded hash of row positions.
- ``reader.open_record``: validated metadata and statistics at once, rows on demand.
- ``merge.merge_records``: parts written by several ranks/shards -> the record one writer writes.
- ``hooks.record``: record any PyTorch model through forward hooks on named modules.
- ``adapters``: ready specs for torch-rechub's MMOE and PLE, and cesaa checkpoints.
"""

from __future__ import annotations

from analysis.records.format import (
    ExpertInfo,
    GateInfo,
    RecordError,
    RecordExpertOutOfRange,
    RecordMeta,
    RecordMissingColumn,
    RecordProbabilityError,
    RecordSchemaError,
    RecordUnknownDomain,
)
from analysis.records.hooks import GateSpec, record
from analysis.records.merge import merge_records
from analysis.records.reader import Record, open_record
from analysis.records.writer import RecordWriter

__all__ = [
    "ExpertInfo",
    "GateInfo",
    "GateSpec",
    "Record",
    "RecordError",
    "RecordExpertOutOfRange",
    "RecordMeta",
    "RecordMissingColumn",
    "RecordProbabilityError",
    "RecordSchemaError",
    "RecordUnknownDomain",
    "RecordWriter",
    "merge_records",
    "open_record",
    "record",
]
