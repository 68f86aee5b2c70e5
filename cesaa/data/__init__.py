"""Data: one table schema, encoders stored as JSON, built-in synthetic data, MovieLens, splits.

Entry point: :func:`load_data` (``"synthetic"``, ``"movielens-100k:PATH"``, ``"movielens-1m:PATH"``,
``"kuairand:PATH"``, ``"aliccp:PATH"``, ``"mind:PATH"``, ``"douban:PATH"``, ``"table:SCHEMA_PATH"``).
To evaluate a checkpoint on a new file: ``load_table_frame`` then ``encode(df, encoders)``, or
``load_data(source, split="none", encoders=encoders)``.
"""

from __future__ import annotations

from cesaa.data.benchmarks import BENCHMARK_KINDS, load_benchmark, read_benchmark
from cesaa.data.encoding import check_compatible, encode, fit_encoders, spec_from_encoders
from cesaa.data.frame import fingerprint, from_frame
from cesaa.data.movielens import load_movielens, read_movielens_1m, read_movielens_100k
from cesaa.data.schema import TableSchema, read_frame, read_schema
from cesaa.data.sources import SOURCE_KINDS, load_data, parse_source
from cesaa.data.splits import SPLITS, make_split, random_split, temporal_split
from cesaa.data.synthetic import PlantedFrame, make_planted, make_planted_frame
from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.data.validate import load_table_frame

__all__ = [
    "BENCHMARK_KINDS",
    "SOURCE_KINDS",
    "SPLITS",
    "EncodedTable",
    "MultiDomainData",
    "PlantedFrame",
    "TableSchema",
    "check_compatible",
    "encode",
    "fingerprint",
    "fit_encoders",
    "from_frame",
    "load_benchmark",
    "load_data",
    "load_movielens",
    "load_table_frame",
    "make_planted",
    "make_planted_frame",
    "make_split",
    "parse_source",
    "random_split",
    "read_benchmark",
    "read_frame",
    "read_movielens_100k",
    "read_movielens_1m",
    "read_schema",
    "spec_from_encoders",
    "temporal_split",
]
