"""The ``cesaa`` command line: ``train``, ``evaluate``, ``models``, plus plugin commands.

Plugin commands (``report`` and ``record`` from the analysis package) are discovered through the
``cesaa.commands`` entry-point group, so ``cesaa`` itself never imports ``analysis``.  An entry point
is a callable ``add(subparsers) -> parser`` that adds one subcommand and sets its ``handler``.  When
one fails to load (e.g. an ``ImportError`` inside the analysis package), its command still exists
and prints the error it hit instead of vanishing from the command list.

Errors in user input (bad data, bad ``--set`` key, broken checkpoint) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from cesaa import allocator

# cesaa.data.splits.TRAIN_SPLITS, spelled out: the CLI imports no torch before it must (a test
# checks they agree)
TRAIN_SPLITS = ("random", "time", "temporal", "files")

COMMAND_GROUP = "cesaa.commands"
DATA_HELP = (
    "data source: 'synthetic' (optionally 'synthetic:rows=50000,domains=4,seed=1'), "
    "'movielens-100k:PATH', 'movielens-1m:PATH', 'table:SCHEMA.toml|yaml' or "
    "'stream:SCHEMA.toml|yaml' (Parquet larger than memory, read row group by row group)"
)
# flags of a new run that --resume refuses (a resumed run keeps its model, split and folder)
NEW_RUN_FLAGS = {"model": "--model", "split": "--split", "data_seed": "--data-seed", "out": "--out"}


def _parser() -> argparse.ArgumentParser:
    from cesaa.models.registry import model_names
    from cesaa.train_state import RESUME_CHANGES

    p = argparse.ArgumentParser(
        prog="cesaa",
        description="Multi-domain recommendation with sparse mixtures of experts (CESAA).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model and write a checkpoint folder",
        description="Train a model.  Defaults are the benchmark protocol of docs/benchmarks.md "
        "(Adam lr 1e-3, weight decay 1e-5, batch 1024, at most 30 epochs, early stopping on "
        "validation AUC with patience 4); change any with --set.",
    )
    t.add_argument("--data", default=None, help=DATA_HELP + " (default synthetic)")
    t.add_argument(
        "--model", default=None, choices=model_names(), help="model name (default cesaa)"
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set model.top_k=2 --set train.epochs=5 (repeatable)",
    )
    t.add_argument("--out", default=None, help="run folder (default runs/<model>-<time>)")
    t.add_argument(
        "--split",
        default=None,
        choices=TRAIN_SPLITS,
        help="random (8:1:1, default), time (the latest 10%% of rows are test), temporal (per "
        "user, by time) or files (Ali-CCP's distributed train / val / test files)",
    )
    t.add_argument("--data-seed", type=int, default=None, help="seed of the data split (0)")
    t.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run (interrupted, finished or stopped early) with its own model, data and "
        f"config; --set may change only {', '.join('train.' + k for k in RESUME_CHANGES)}, "
        "--data may point at the same data moved elsewhere",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "evaluate", help="evaluate a checkpoint: overall and per-domain AUC/GAUC/logloss"
    )
    e.add_argument("checkpoint", help="run folder holding meta.json and model.safetensors")
    e.add_argument("--data", default=None, help=DATA_HELP + " (default: the checkpoint's own data)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")
    e.add_argument("--top-k", type=int, default=None, help="route with another k at inference")
    e.add_argument("--no-shared", action="store_true", help="switch the shared experts off")
    e.add_argument("--knock-out", default="", help="comma-separated expert indices to knock out")
    e.add_argument("--json", action="store_true", help="print metrics as JSON")

    sub.add_parser("models", help="list the available models")
    add_plugin_commands(sub)
    from cesaa.benchmark.cli import add_bench_parser

    add_bench_parser(sub)
    return p


def add_plugin_commands(sub: argparse._SubParsersAction) -> list[str]:
    """Add every ``cesaa.commands`` entry point's subcommand; returns their names.

    A plugin that fails to load still gets its command, whose handler prints the error.
    """
    added = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name):
        if ep.name in sub.choices:
            continue
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001  (any failure of a plugin: report, never vanish)
            _add_broken_command(sub, ep.name, ep.value, exc)
        added.append(ep.name)
    return added


def _add_broken_command(
    sub: argparse._SubParsersAction, name: str, target: str, exc: BaseException
) -> None:
    error = f"{type(exc).__name__}: {exc}"
    if name in sub.choices:  # it failed after adding its parser: replace the handler
        parser = sub.choices[name]
    else:
        parser = sub.add_parser(name, help=f"(unavailable: {error})", add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def handler(args: argparse.Namespace) -> int:
        print(
            f"cesaa {name}: error: the command could not be loaded from {target}: {error}",
            file=sys.stderr,
        )
        return 2

    parser.set_defaults(handler=handler)


def _print_metrics(metrics: dict, domain_names: tuple[str, ...], title: str) -> None:
    from cesaa.metrics import metrics_table

    print(title)
    table = metrics_table(metrics, domain_names)
    ints = {"rows": lambda v: f"{int(v):,}" if v == v else "nan"}
    print(table.to_string(float_format=lambda v: f"{v:.4f}", formatters=ints))


def _resume_configs(args: argparse.Namespace):
    """The run's own configs with the --set changes a resume allows; refuses the other flags."""
    from cesaa.checkpoint import read_meta
    from cesaa.config import ModelConfig, TrainConfig, apply_overrides, config_from_dict
    from cesaa.train_state import RESUME_CHANGES

    allowed = ", ".join("train." + k for k in RESUME_CHANGES)
    for attr, flag in NEW_RUN_FLAGS.items():
        if getattr(args, attr) is not None:
            raise ValueError(
                f"{flag} cannot be used with --resume: a resumed run keeps its own model, data "
                f"split and folder (only --set {allowed} and --data for moved data)"
            )
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if key.removeprefix("train.") not in RESUME_CHANGES or not key.startswith("train."):
            raise ValueError(
                f"--set {item} cannot be used with --resume: a resumed run may change only "
                f"{allowed}; start a new run (without --resume) to change {key}"
            )
    meta = read_meta(args.resume)
    model_cfg = config_from_dict(ModelConfig, meta["model"]["config"])
    train_cfg = config_from_dict(TrainConfig, meta["train"])
    return meta, *apply_overrides(model_cfg, train_cfg, args.set)


def _cmd_train(args: argparse.Namespace) -> int:
    from cesaa import distributed
    from cesaa.config import TrainConfig, apply_overrides
    from cesaa.data.locate import open_checkpoint_data, open_source
    from cesaa.models.registry import default_config
    from cesaa.models.usage import check_overrides_used
    from cesaa.train import train

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints
    say = print if main_rank else (lambda *a, **k: None)

    if args.resume:
        meta, model_cfg, train_cfg = _resume_configs(args)
        out = Path(args.resume)
        t0 = time.perf_counter()
        data = open_checkpoint_data(meta, out, override=args.data)
        source = args.data or meta["data"]["description"].get("source")
    else:
        model = args.model or "cesaa"
        model_cfg, train_cfg = apply_overrides(default_config(model), TrainConfig(), args.set)
        keys = [s.split("=", 1)[0].strip() for s in args.set]
        check_overrides_used(
            model_cfg, [k[len("model.") :] for k in keys if k.startswith("model.")]
        )
        source = args.data or "synthetic"
        out = Path(args.out or f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}")
        t0 = time.perf_counter()
        split = args.split or "random"
        data = open_source(source, split=split, seed=args.data_seed or 0)
    t_data = time.perf_counter() - t0
    say(
        f"data: {source} ({len(data.train)}/{len(data.val)}/{len(data.test)} rows, "
        f"domains {', '.join(data.domain_names)}) loaded in {t_data:.1f}s"
    )
    say(f"model: {model_cfg.name}  run folder: {out}" + ("  (resuming)" if args.resume else ""))
    try:
        result = train(
            model_cfg,
            train_cfg,
            data,
            out,
            resume=bool(args.resume),
            progress=not args.quiet,
            callback=None if args.quiet else _epoch_printer,
            batch_events=False,
        )
    finally:
        distributed.shutdown()
    elapsed = time.perf_counter() - t0
    if not main_rank:
        return 0
    print(
        f"done in {elapsed:.1f}s: {len(result.history)} epochs"
        + (" (early stopping)" if result.stopped_early else "")
        + f", best epoch {result.best_epoch}"
    )
    _print_metrics(result.test_metrics, data.domain_names, "test metrics (best weights):")
    print(f"checkpoint: {out}")
    if result.end is not None:  # the last line: how the run ended (cesaa.convergence)
        print(("WARNING: " if result.end.stalled else "") + "run " + result.end.message)
    return 0


def _epoch_printer(event: dict) -> None:
    if event.get("event") != "epoch":
        return
    keys = ["train/loss", "train/batch_mi", "val/auc", "val/gauc", "val/logloss"]
    parts = [f"{k}={event[k]:.4f}" for k in keys if k in event]
    print(f"epoch {event['epoch']}: " + " ".join(parts) + f" ({event['time_s']:.1f}s)", flush=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data.locate import open_checkpoint_data
    from cesaa.evaluation import evaluate
    from cesaa.models.output import RoutingOverride

    ckpt = load_checkpoint(args.checkpoint)
    data = open_checkpoint_data(ckpt.meta, ckpt.path, override=args.data)
    knocked = tuple(int(v) for v in args.knock_out.split(",") if v.strip())
    routing = RoutingOverride(top_k=args.top_k, use_shared=not args.no_shared, knocked_out=knocked)
    table = getattr(data, args.split)
    metrics = evaluate(ckpt.model, table, ckpt.domain_names, routing=routing)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics, ckpt.domain_names, f"{args.split} metrics of {args.checkpoint}:")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from cesaa.models.registry import model_description, model_names

    for name in model_names():
        print(f"{name:14s} {model_description(name)}")
    return 0


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "models": _cmd_models}


def main(argv: list[str] | None = None) -> int:
    from cesaa.monitor import NoImprovementError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    try:
        # every command keeps freed memory in the process (cesaa.allocator; no torch import)
        allocator.retain_freed_memory()
        return handler(args)
    except (ValueError, FileNotFoundError, NoImprovementError) as e:
        print(f"cesaa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
