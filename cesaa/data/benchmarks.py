"""Public multi-domain benchmarks in the files their distributors publish (Scenario-Wise Rec format).

=========  ===========================================  =========  =================================
kind       file(s)                                      label      domain
=========  ===========================================  =========  =================================
kuairand   one CSV (``load_data_1k.py`` output), or      is_click   ``tab`` 0 / 1 / 2 / 4 / 6
           KuaiRand's own data folder (kuairand_raw)
aliccp     a folder of ``ali_ccp_{train,val,test}*.csv``  click      field ``301`` = 1 / 2 / 3
           (torch-rechub's ``preprocess_ali_ccp.py``)
           or one such CSV
mind       one CSV: User_ID, News_ID, label, Category,  label      ``Category``: news / lifestyle /
           SubCategory                                             sports / finance
douban     one CSV: user_id, item_id, rating (0/1),     rating     ``domain``: book / music / movie
           domain, living_place, join_time, time_bin
=========  ===========================================  =========  =================================

Features follow each dataset's Scenario-Wise Rec run script (``scripts/run_*_multi_domain.py``):
every id-like column is categorical (read as a string: "007" stays "007"), the listed dense columns
are numeric (standardized on the training rows), and the domain column is the domain, not a feature.
Dropped as in those scripts: KuaiRand's watch-time columns (play_time_ms, duration_ms,
profile_stay_time, comment_stay_time: they are measured after the click), Ali-CCP's ``purchase``
(the conversion label) and Douban's ``join_time`` (binned into ``time_bin``).

Domains are named ``tab0`` ..., ``scenario1`` ..., or by the value itself, in the order above; a file
lacking some of them has fewer domains (the KuaiRand sample only has tab 1).  KuaiRand rows in other
tabs are dropped, as Scenario-Wise Rec does (counted in ``description["dropped_rows"]``); any other
unexpected domain value is an error naming the file, the column, the value and the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cesaa.data.frame import from_frame
from cesaa.data.kuairand_raw import is_kuairand_folder, read_kuairand_folder
from cesaa.data.schema import TableSchema, read_frame
from cesaa.data.table import MultiDomainData
from cesaa.data.validate import validate_frame

DOMAIN_COLUMN = "domain_name"  # the column our loaders add: each row's domain name
ALICCP_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Benchmark:
    """How one dataset's file maps onto a :class:`TableSchema`."""

    kind: str
    label: str
    domain: str  # the column in the file
    domain_values: tuple[str, ...]  # raw values, in domain order
    domain_names: tuple[str, ...]  # names, one per value
    categorical: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    user: str | None = None
    item: str | None = None
    drop_other_domains: bool = False  # keep only rows in domain_values (KuaiRand), else an error

    def schema(self, domains: tuple[str, ...] | None, domain: str = DOMAIN_COLUMN) -> TableSchema:
        return TableSchema(
            label=self.label,
            domain=domain,
            domains=domains,
            categorical=self.categorical,
            numeric=self.numeric,
            user=self.user,
            item=self.item,
        )


_KUAIRAND_NUMERIC = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
_KUAIRAND_DROPPED = ("play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time")
_KUAIRAND_CATEGORICAL = (
    "user_id", "video_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
    "is_video_author", "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range", *(f"onehot_feat{i}" for i in range(18)), "video_type",
    "visible_status", "server_width", "server_height",
)  # fmt: skip
_ALICCP_CATEGORICAL = (
    "101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207", "210",
    "216", "508", "509", "702", "853", "109_14", "110_14", "127_14", "150_14",
)  # fmt: skip
_ALICCP_NUMERIC = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")
_KUAIRAND_TABS = ("0", "1", "2", "4", "6")

BENCHMARKS: dict[str, Benchmark] = {
    "kuairand": Benchmark(
        kind="kuairand",
        label="is_click",
        domain="tab",
        domain_values=_KUAIRAND_TABS,
        domain_names=tuple(f"tab{t}" for t in _KUAIRAND_TABS),
        categorical=_KUAIRAND_CATEGORICAL,
        numeric=_KUAIRAND_NUMERIC,
        user="user_id",
        item="video_id",
        drop_other_domains=True,
    ),
    "aliccp": Benchmark(
        kind="aliccp",
        label="click",
        domain="301",
        domain_values=("1", "2", "3"),
        domain_names=("scenario1", "scenario2", "scenario3"),
        categorical=_ALICCP_CATEGORICAL,
        numeric=_ALICCP_NUMERIC,
        user="101",
        item="205",
    ),
    "mind": Benchmark(
        kind="mind",
        label="label",
        domain="Category",
        domain_values=("news", "lifestyle", "sports", "finance"),
        domain_names=("news", "lifestyle", "sports", "finance"),
        categorical=("User_ID", "News_ID", "SubCategory"),
        user="User_ID",
        item="News_ID",
    ),
    "douban": Benchmark(
        kind="douban",
        label="rating",
        domain="domain",
        domain_values=("book", "music", "movie"),
        domain_names=("book", "music", "movie"),
        categorical=("user_id", "item_id", "living_place", "time_bin"),
        user="user_id",
        item="item_id",
    ),
}
BENCHMARK_KINDS = tuple(BENCHMARKS)


def read_benchmark(kind: str, path: str | Path) -> tuple[pd.DataFrame, TableSchema, dict]:
    """Read and validate a benchmark's file(s): ``(frame, schema, facts)``.

    ``facts``: ``files`` read, ``rows_per_file``, ``dropped_rows`` (KuaiRand's other tabs) and, for a
    KuaiRand folder as its authors distribute it (:mod:`cesaa.data.kuairand_raw`), ``unjoined_rows``
    (log rows without user or video features).  The frame has one row per interaction in file order
    plus the column ``domain_name``.
    """
    bench = _check_kind(kind)
    path = Path(path)
    facts: dict = {}
    if bench.kind == "kuairand" and is_kuairand_folder(path):
        df, files, facts["unjoined_rows"] = read_kuairand_folder(path, bench.categorical)
        frames = [(path, df)]
    else:
        files = _files(bench, path)
        frames = [(f, read_frame(f, str_columns=(*bench.categorical, bench.domain))) for f in files]
    for f, df in frames:
        _require_columns(df, bench, f)
        validate_frame(df, bench.schema(None, domain=bench.domain), f)  # rows numbered per file
    facts.update(files=[str(f) for f in files], rows_per_file=[len(d) for _, d in frames])
    kept, dropped = [], 0
    for f, df in frames:
        df, n = _assign_domains(df, bench, f)
        kept.append(df)
        dropped += n
    df = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    facts["dropped_rows"] = dropped
    if len(df) == 0:
        raise ValueError(
            f"{path}: no rows left in the domains {list(bench.domain_names)} "
            f"({dropped} rows in other {bench.domain!r} values were dropped)"
        )
    present = set(df[DOMAIN_COLUMN])
    domains = tuple(n for n in bench.domain_names if n in present)
    return df, bench.schema(domains), facts


def load_benchmark(
    kind: str,
    path: str | Path,
    *,
    split: str = "random",
    seed: int = 0,
    encoders: dict | None = None,
) -> MultiDomainData:
    """Read, validate, split and encode a benchmark (``kind`` in :data:`BENCHMARK_KINDS`).

    ``split``: ``random`` (8:1:1 from ``seed``), ``none``, or for Ali-CCP ``files``: the distributed
    train / val / test files as they are (the Scenario-Wise Rec protocol for Ali-CCP).
    """
    bench = _check_kind(kind)
    df, schema, facts = read_benchmark(kind, path)
    parts = None
    if split == "files":
        if bench.kind != "aliccp" or len(facts["files"]) != 3:
            raise ValueError(
                f"split='files' needs an Ali-CCP folder with train / val / test files; "
                f"{kind}:{path} has {len(facts['files'])} file(s)"
            )
        ends = np.cumsum([0, *facts["rows_per_file"]])
        parts = tuple(
            torch.arange(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)
        )
    description = {"kind": kind, "path": str(path), **facts}
    return from_frame(
        df,
        schema,
        split=split,
        seed=seed,
        encoders=encoders,
        description=description,
        parts=parts,
    )


def _check_kind(kind: str) -> Benchmark:
    if kind not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {kind!r}; available: {list(BENCHMARK_KINDS)}")
    return BENCHMARKS[kind]


def _files(bench: Benchmark, path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"{bench.kind} data {path} does not exist")
    if path.is_file():
        return [path]
    if bench.kind == "kuairand":
        raise FileNotFoundError(
            f"kuairand data {path} is a folder without log_standard_*.csv files; give "
            "Scenario-Wise Rec's CSV or KuaiRand's data folder"
        )
    if bench.kind != "aliccp":
        raise ValueError(f"{bench.kind} data {path} is a folder; give the CSV file itself")
    files = []
    for part in ALICCP_PARTS:
        found = sorted(path.glob(f"ali_ccp_{part}*.csv"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"Ali-CCP folder {path}: expected one ali_ccp_{part}*.csv "
                f"(ali_ccp_{part}.csv or ali_ccp_{part}_sample.csv), found {[f.name for f in found]}"
            )
        files.append(found[0])
    return files


def _require_columns(df: pd.DataFrame, bench: Benchmark, path: Path) -> None:
    needed = (bench.label, bench.domain, *bench.categorical, *bench.numeric)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: {bench.kind} columns {missing} are missing; "
            f"available columns: {[str(c) for c in df.columns]}"
        )


def _assign_domains(df: pd.DataFrame, bench: Benchmark, path: Path) -> tuple[pd.DataFrame, int]:
    """Add ``domain_name``; drop (KuaiRand) or reject rows whose domain value is not a known one."""
    raw = df[bench.domain]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{path}: domain column {bench.domain!r} is empty at row {int(np.argmax(missing))}"
        )
    values = raw.astype(str).str.strip()
    known = values.isin(bench.domain_values).to_numpy()
    if not known.all() and not bench.drop_other_domains:
        first = int(np.argmax(~known))
        shown = list(pd.unique(values[~known]))[:10]
        raise ValueError(
            f"{path}: domain column {bench.domain!r} has values {shown} (first at row {first}) that "
            f"are not {bench.kind} domains {list(bench.domain_values)}"
        )
    out = df[known].reset_index(drop=True)
    names = dict(zip(bench.domain_values, bench.domain_names, strict=True))
    out[DOMAIN_COLUMN] = values[known].map(names).to_numpy()
    return out, int((~known).sum())
