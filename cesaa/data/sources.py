"""``load_data``: one entry point for every data source the CLI accepts.

Source strings::

    synthetic                               planted synthetic data, default size
    synthetic:rows=50000,domains=4,seed=1   options: see SYNTHETIC_OPTIONS
    movielens-100k:PATH                     an ml-100k folder (PATH optional when CESAA_DATA_DIR is set)
    movielens-1m:PATH                       an ml-1m folder
    movielens-100k:PATH,domains=occupation  domains by age (default), occupation or genre
    kuairand:PATH                           KuaiRand-1K, Scenario-Wise Rec CSV (domains = tab)
    aliccp:PATH                             Ali-CCP folder of train/val/test CSVs (domain field 301)
    mind:PATH                               MIND, Scenario-Wise Rec CSV (4 categories)
    douban:PATH                             Douban, Scenario-Wise Rec CSV (book / music / movie)
    table:SCHEMA_PATH                       a CSV / Parquet file described by a TOML / YAML schema
"""

from __future__ import annotations

import os
from pathlib import Path

from cesaa.data.benchmarks import BENCHMARK_KINDS, load_benchmark
from cesaa.data.frame import from_frame
from cesaa.data.movielens import DOMAIN_KINDS, load_movielens
from cesaa.data.synthetic import make_planted
from cesaa.data.table import MultiDomainData
from cesaa.data.validate import load_table_frame

SOURCE_KINDS = ("synthetic", "movielens-100k", "movielens-1m", "table", *BENCHMARK_KINDS)
SOURCE_FORMS = (
    "synthetic[:rows=N,domains=D,seed=S,...]",
    "movielens-100k:PATH[,domains=age|occupation|genre]",
    "movielens-1m:PATH[,domains=age|occupation|genre]",
    "table:SCHEMA_PATH",
    *(f"{kind}:PATH" for kind in BENCHMARK_KINDS),
)
# not a kind of load_data (an in-memory table), but of the commands that train (cesaa.data.stream)
STREAM_FORM = "stream:SCHEMA_PATH"
MOVIELENS_OPTIONS = ("domains",)
DATA_DIR_ENV = "CESAA_DATA_DIR"  # default parent folder of movielens-100k/ and movielens-1m/
# source option -> (make_planted argument, type)
SYNTHETIC_OPTIONS = {
    "rows": ("num_rows", int),
    "domains": ("num_domains", int),
    "mechanisms": ("num_mechanisms", int),
    "per_domain": ("mechanisms_per_domain", int),
    "seed": ("seed", int),
    "strength": ("strength", float),
    "noise": ("noise", float),
    "base_rate": ("base_rate", float),
    "structure": ("structure", str),
    "heterogeneity": ("heterogeneity", float),
    "groups": ("groups", int),
}
TABLE_OPTIONS = ("data",)


def parse_source(source: str) -> tuple[str, str | None]:
    """``"kind:rest"`` -> ``(kind, rest or None)``; unknown kinds raise listing the valid forms."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"data source must be a non-empty string, one of {list(SOURCE_FORMS)}")
    kind, _, rest = source.strip().partition(":")
    if kind == "stream":
        raise ValueError(
            f"{source!r} is a stream (read row group by row group), not an in-memory table: "
            "open it with cesaa.data.stream.open_stream"
        )
    if kind not in SOURCE_KINDS:
        raise ValueError(
            f"unknown data source kind {kind!r} in {source!r}; valid: {list(SOURCE_FORMS)}, "
            f"or {STREAM_FORM!r} (Parquet larger than memory) where the command streams"
        )
    return kind, (rest.strip() or None)


def load_data(
    source: str,
    *,
    split: str = "random",
    seed: int = 0,
    encoders: dict | None = None,
    **opts: object,
) -> MultiDomainData:
    """Load, split (``random`` 8:1:1 from ``seed``, ``time`` with the latest rows as test,
    ``temporal`` per user, or ``none``) and encode.

    ``encoders`` (from a checkpoint's meta.json): encode with them instead of fitting; unseen categories
    become 0, and the domain names must match.  ``opts``: synthetic options (as in the source string,
    which they override), for ``table`` ``data=PATH`` to read another file with the same schema, for
    MovieLens ``domains=age|occupation|genre``.  ``split="files"`` keeps Ali-CCP's distributed
    train / val / test files.  For synthetic data the generation seed is the ``seed`` option when
    given, else ``seed``.
    """
    kind, rest = parse_source(source)
    description = {"source": source, "kind": kind}
    if kind == "synthetic":
        kwargs = _synthetic_kwargs(rest, opts, source)
        kwargs.setdefault("seed", seed)
        data = make_planted(**kwargs, split=split, split_seed=seed, encoders=encoders)
        data.description = {**description, **data.description}
        return data
    if kind == "table":
        _reject_unknown(opts, TABLE_OPTIONS, source)
        if rest is None:
            raise ValueError(f"{source!r}: give the schema file, e.g. table:data/clicks.toml")
        df, schema = load_table_frame(rest, opts.get("data"))
        data_path = opts.get("data") or schema.data
        description.update(path=rest, data=str(data_path), schema=schema.to_dict())
        return from_frame(
            df, schema, split=split, seed=seed, encoders=encoders, description=description
        )
    if kind in BENCHMARK_KINDS:
        _reject_unknown(opts, (), source)
        if rest is None:
            raise ValueError(f"{source!r}: give the data path, e.g. {kind}:PATH")
        data = load_benchmark(kind, rest, split=split, seed=seed, encoders=encoders)
        data.description = {**description, **data.description}
        return data
    rest, ml_opts = _movielens_options(rest)
    ml_opts.update(opts)
    _reject_unknown(ml_opts, MOVIELENS_OPTIONS, source)
    domains = str(ml_opts.get("domains", "age"))
    if domains not in DOMAIN_KINDS:
        raise ValueError(f"{source!r}: domains={domains!r} must be one of {list(DOMAIN_KINDS)}")
    version = kind.split("-", 1)[1]
    path = rest if rest is not None else _default_folder(kind, source)
    data = load_movielens(
        path, version=version, split=split, seed=seed, encoders=encoders, domains=domains
    )
    data.description = {**description, **data.description}
    return data


def _synthetic_kwargs(rest: str | None, opts: dict, source: str) -> dict:
    raw: dict[str, object] = {}
    for item in (rest or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{source!r}: synthetic option {item!r} must be KEY=VALUE")
        raw[key.strip()] = value.strip()
    raw.update(opts)
    _reject_unknown(raw, tuple(SYNTHETIC_OPTIONS), source)
    kwargs = {}
    for key, value in raw.items():
        arg, typ = SYNTHETIC_OPTIONS[key]
        try:
            kwargs[arg] = typ(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{source!r}: synthetic option {key}={value!r} must be {typ.__name__}"
            ) from None
    return kwargs


def _movielens_options(rest: str | None) -> tuple[str | None, dict]:
    """``"PATH,domains=genre"`` -> ``("PATH", {"domains": "genre"})``; trailing KEY=VALUE items only."""
    if rest is None:
        return None, {}
    items = rest.split(",")
    opts: dict[str, object] = {}
    while items and "=" in items[-1]:
        key, _, value = items.pop().partition("=")
        opts[key.strip()] = value.strip()
    path = ",".join(items).strip()
    return (path or None), opts


def _reject_unknown(opts: dict, valid: tuple[str, ...], source: str) -> None:
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"{source!r}: unknown option(s) {unknown}; valid options: {list(valid)}")


def _default_folder(kind: str, source: str) -> Path:
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        raise ValueError(f"{source!r}: give the folder, e.g. {kind}:PATH, or set {DATA_DIR_ENV}")
    return Path(root) / kind
