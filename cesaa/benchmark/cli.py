"""``cesaa bench``: the command-line face of :func:`cesaa.benchmark.runner.run_benchmark`."""

from __future__ import annotations

import argparse
import shlex
import sys

from cesaa.benchmark.protocol import TRAIN_FIELDS, Protocol

EXAMPLE = (
    "cesaa bench --data movielens-100k:PATH --models cesaa,mmoe,ple,mlp --seeds 10 "
    "--trials 20 --jobs 4 --out runs/bench"
)


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``cesaa`` command's subparsers (handler in ``args.handler``)."""
    b = sub.add_parser(
        "bench",
        help="compare models on any data: tuned with an equal budget, ranked over seeds",
        description="Tune every model with the same Optuna budget on the validation split, train "
        "the selected configurations with seeds 0..S-1 and write a leaderboard (markdown, CSV, "
        f"JSON, HTML) with paired, Holm-corrected comparisons.  Example: {EXAMPLE}",
    )
    b.add_argument("--data", required=True, help="data source, as for `cesaa train --data`")
    b.add_argument("--models", required=True, help="comma-separated registry names")
    b.add_argument("--seeds", type=int, default=3, help="final seeds 0..N-1 (default 3)")
    b.add_argument(
        "--trials", type=int, default=0, help="Optuna trials per model (0: registry defaults)"
    )
    b.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    b.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: journal:PATH, sqlite:///PATH or postgresql://... "
        "(default: journal file in --out)",
    )
    b.add_argument("--study-prefix", default="cesaa-bench", help="study name prefix")
    b.add_argument(
        "--stage",
        default="all",
        choices=["all", "tune", "final"],
        help="tune: only run trials (one per machine against a shared --storage); final: read "
        "the studies and train the seeds; all: both (default)",
    )
    b.add_argument("--epochs", type=int, default=None, help="epoch cap (default: TrainConfig's)")
    b.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    b.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="train.KEY=VALUE",
        help="protocol override for every run, e.g. --set train.weight_decay=1e-5 (repeatable)",
    )
    b.add_argument("--max-train", type=int, default=0, help="use only the first N training rows")
    b.add_argument("--data-seed", type=int, default=0, help="seed of the 8:1:1 split (default 0)")
    b.add_argument(
        "--split",
        default="random",
        choices=("random", "temporal", "files"),
        help="random (8:1:1, default), temporal (per user, by time) or files (Ali-CCP's "
        "distributed train / val / test files)",
    )
    b.add_argument("--device", default="cpu", help="torch device of every run (default cpu)")
    b.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    b.add_argument(
        "--setup",
        default=None,
        metavar="MODULE:FUNCTION",
        help="called in every process first, e.g. to register extra models",
    )
    b.add_argument("--out", required=True, help="output folder")
    b.set_defaults(handler=cmd_bench)
    return b


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """``--epochs``, ``--patience`` and ``--set train.K=V`` -> a validated :class:`Protocol`."""
    from cesaa.config import TrainConfig, _parse_value

    train: dict = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.patience is not None:
        train["patience"] = args.patience
    base = TrainConfig()
    for item in args.set:
        key, eq, raw = item.partition("=")
        name = key.strip().removeprefix("train.")
        if not eq or not key.strip().startswith("train.") or name not in TRAIN_FIELDS:
            raise ValueError(
                f"--set {item!r}: expected train.KEY=VALUE with KEY one of {sorted(TRAIN_FIELDS)}"
            )
        train[name] = _parse_value(raw, getattr(base, name), key)
    return Protocol(
        train=train,
        device=args.device,
        max_train=args.max_train,
        split_seed=args.data_seed,
        split=args.split,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from cesaa.benchmark.runner import BenchSpec, run_benchmark

    spec = BenchSpec(
        source=args.data,
        models=tuple(args.models.split(",")),
        out=args.out,
        seeds=args.seeds,
        trials=args.trials,
        jobs=args.jobs,
        storage=args.storage,
        study_prefix=args.study_prefix,
        stage=args.stage,
        level=args.level,
        protocol=protocol_from_args(args),
        setup=args.setup,
        command=command_line(args),
        machine=_machine(),
    )
    try:
        lb = run_benchmark(spec, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ImportError as e:  # optuna missing: one clear line, exit 2
        raise ValueError(str(e)) from None
    if lb is None:
        print(f"tuning done: studies {spec.study_prefix}-* in {spec.storage_url}")
        return 0
    from cesaa.benchmark.report import FILES, overall_rows

    cols, rows = overall_rows(lb)
    print("  ".join(cols[:6]))
    for r in rows:
        print("  ".join(r[:6]))
    print(f"wrote {', '.join(FILES)} and runs.json to {args.out}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The exact command, rebuilt from the parsed arguments (every option spelled out)."""
    parts = ["cesaa", "bench", "--data", args.data, "--models", args.models]
    parts += ["--seeds", str(args.seeds), "--trials", str(args.trials), "--jobs", str(args.jobs)]
    for flag, value in (
        ("--storage", args.storage),
        ("--epochs", args.epochs),
        ("--patience", args.patience),
        ("--setup", args.setup),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.stage != "all":
        parts += ["--stage", args.stage]
    if args.study_prefix != "cesaa-bench":
        parts += ["--study-prefix", args.study_prefix]
    for item in args.set:
        parts += ["--set", item]
    if args.max_train:
        parts += ["--max-train", str(args.max_train)]
    if args.data_seed:
        parts += ["--data-seed", str(args.data_seed)]
    if args.split != "random":
        parts += ["--split", args.split]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.level != 0.95:
        parts += ["--level", str(args.level)]
    return shlex.join([*parts, "--out", args.out])


def _machine() -> str:
    import os
    import platform

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
