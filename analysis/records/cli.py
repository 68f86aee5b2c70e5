"""``cesaa record CKPT --data SRC --out DIR``: write a checkpoint's routing record.

Plugged into ``cesaa`` through the ``cesaa.commands`` entry point (``add_record_parser``).
``cesaa record --check DIR`` validates every row of an existing record.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def add_record_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``record`` to the ``cesaa`` subcommands (its handler is ``run_record``)."""
    r = subparsers.add_parser(
        "record",
        help="write a checkpoint's routing record (Parquet rows + record.json), or check one",
        description="Run a checkpoint once over a data split and write its routing record: one "
        "row per example (domain, label, prediction, gate probabilities, selected experts, ids "
        "and raw feature values), the routing statistics of all rows and a seeded sample of "
        "expert outputs.  `cesaa report` and the dashboard open the record without the model.  "
        "See docs/record.md.",
    )
    r.add_argument("source", help="checkpoint run folder (or, with --check, a record folder)")
    r.add_argument("--data", default=None, help="data source (default: the checkpoint's own)")
    r.add_argument("--out", default=None, help="record folder (default <checkpoint>/record)")
    r.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")
    r.add_argument(
        "--sample",
        type=int,
        default=2000,
        metavar="N",
        help="rows whose expert outputs are kept for the embedding views (default 2000)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    r.add_argument("--batch-size", type=int, default=8192, help="rows per forward pass")
    r.add_argument(
        "--no-keep", action="store_true", help="do not keep user/item ids and raw feature values"
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing record")
    r.add_argument(
        "--check",
        action="store_true",
        help="validate every row of the record folder SOURCE and print its summary",
    )
    r.set_defaults(handler=run_record)
    return r


def run_record(args: argparse.Namespace) -> int:
    """Write (or check) a record; a bad record prints its named error and returns 2."""
    from analysis.records.checkpoint import record_checkpoint
    from analysis.records.format import RecordError
    from analysis.records.reader import open_record

    t0 = time.perf_counter()
    try:
        if args.check:
            rec = open_record(args.source)
            rec.validate()
            rec.sample()
        else:
            if args.sample < 0:
                raise ValueError(f"--sample must be >= 0, got {args.sample}")
            out = Path(args.out) if args.out else Path(args.source) / "record"
            command = (
                shlex.join(["cesaa", "record", *sys.argv[2:]])
                if sys.argv[1:2] == ["record"]
                else ""
            )
            rec = record_checkpoint(
                args.source,
                out,
                data=args.data,
                part=args.split,
                batch_size=args.batch_size,
                sample_size=args.sample,
                seed=args.seed,
                keep=not args.no_keep,
                command=command
                or f"cesaa record {shlex.quote(str(args.source))} --out {shlex.quote(str(out))}",
                overwrite=args.overwrite,
            )
    except RecordError as e:
        print(f"cesaa record: error: {e}", file=sys.stderr)
        return 2
    m = rec.meta
    g = m.primary
    print(
        f"record of {m.model_name}: {m.rows:,} rows, {len(m.domains)} domains, "
        f"{len(m.gates)} gate(s); primary {g.name!r}: {g.num_experts} experts"
        + (f", top-{g.top_k}" if g.top_k else ", dense")
    )
    if "auc" in m.metrics:
        print(f"  AUC {m.metrics['auc']:.4f}")
    print(
        f"  sample: {m.sample.get('size', 0)} rows with expert outputs; kept columns: "
        f"{', '.join(m.kept) or 'none'}"
    )
    print(
        ("checked" if args.check else "written")
        + f" in {time.perf_counter() - t0:.1f}s: {rec.path}"
    )
    return 0
