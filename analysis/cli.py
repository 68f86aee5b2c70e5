"""``cesaa report CKPT --data SRC --out DIR``: the report subcommand, plugged into ``cesaa.cli``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DATA_HELP = (
    "data source (default: the checkpoint's own data), e.g. 'synthetic:rows=50000,domains=4' "
    "or 'movielens-100k:PATH'"
)


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``report`` to the ``cesaa`` subcommands (its handler is ``run_report``)."""
    r = subparsers.add_parser(
        "report",
        help="write an HTML/JSON/CSV report of a checkpoint's routing and metrics",
        description="Analyse a checkpoint: per-domain metrics, routing, mutual information, load, "
        "gate entropy, knock-out, k curve, expert-output embedding, planted-truth recovery and "
        "alarms.  Writes report.html (self-contained, opens offline), report.json, CSV tables "
        "and, when a Chromium is installed, PNG figures and report.pdf.",
    )
    r.add_argument(
        "checkpoint",
        help="run folder holding meta.json and model.safetensors, or a routing record folder "
        "(record.json + rows.parquet; see `cesaa record`)",
    )
    r.add_argument("--data", default=None, help=DATA_HELP)
    r.add_argument("--out", default=None, help="output folder (default <checkpoint>/report)")
    r.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")
    r.add_argument(
        "--sample",
        type=int,
        default=2000,
        metavar="N",
        help="rows sampled for entropy distributions and the embedding (default 2000)",
    )
    r.add_argument(
        "--embedding",
        default="auto",
        choices=["pca", "umap", "auto"],
        help="projection of expert outputs; auto = UMAP when umap-learn is installed (cached in "
        "<checkpoint>/embeddings/), else PCA",
    )
    r.add_argument("--no-static", action="store_true", help="skip PNG/PDF export")
    r.add_argument("--seed", type=int, default=0, help="seed of the row sample (default 0)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(handler=run_report)
    return r


def _fmt(v: object, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def run_report(args: argparse.Namespace) -> int:
    """Build and write the report; print the headline numbers, the time and the paths."""
    from analysis.report import build_report, write_report

    if args.sample < 0:
        raise ValueError(f"--sample must be >= 0, got {args.sample}")
    t0 = time.perf_counter()
    report = build_report(
        args.checkpoint,
        args.data,
        split=args.split,
        sample_size=args.sample,
        embedding=args.embedding,
        seed=args.seed,
        progress=not args.quiet,
    )
    out = Path(args.out) if args.out else Path(args.checkpoint) / "report"
    written = write_report(report, out, static=() if args.no_static else ("png", "pdf"))
    elapsed = time.perf_counter() - t0

    h = report.headline()
    card = report.model_card
    print(
        f"report of {card['name']} on {report.settings['data']} ({report.settings['split']}, "
        f"{card['data']['rows']} rows)"
    )
    print(f"  AUC {_fmt(h['auc'])}")
    if report.summary is not None:
        print(
            f"  I(D;E) soft {_fmt(h['mi_soft'])} nats, hard {_fmt(h['mi_hard'])} nats; "
            f"fraction of ceiling soft {_fmt(h['mi_soft_normalized'], '.3f')} "
            f"(of {_fmt(h['mi_soft_ceiling'])}), hard {_fmt(h['mi_hard_normalized'], '.3f')} "
            f"(of {_fmt(h['mi_hard_ceiling'])})"
        )
    else:
        print("  no gate: no routing measures")
    levels = [a["level"] for a in report.alarms]
    detail = ", ".join(f"{levels.count(lv)} {lv}" for lv in dict.fromkeys(levels))
    print(f"  alarms: {len(levels)}" + (f" ({detail})" if detail else ""))
    if h["recovery_score"] is not None:
        print(
            f"  planted-truth recovery score {_fmt(h['recovery_score'], '.3f')} "
            f"(ceiling {_fmt(h['recovery_score_ceiling'], '.3f')}), domain-set Jaccard "
            f"{_fmt(h['recovery_set_jaccard'], '.3f')} "
            f"(ceiling {_fmt(h['recovery_set_jaccard_ceiling'], '.3f')})"
        )
    emb = report.embedding
    if emb:
        print(
            f"  embedding: {emb['method']}"
            + (" (cached)" if emb["cached"] else "")
            + (f"; {emb['note']}" if emb.get("note") else "")
        )
    print(f"done in {elapsed:.1f}s")
    for name, value in written.items():
        print(f"  {name}: {value}")
    return 0
