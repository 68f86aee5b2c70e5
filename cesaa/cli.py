"""The ``cesaa`` command line: ``train``, ``evaluate``, ``models`` (and ``report`` from the analysis package).

Errors in user input (bad data, bad ``--set`` key, broken checkpoint) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

DATA_HELP = (
    "data source: 'synthetic' (optionally 'synthetic:rows=50000,domains=4,seed=1'), "
    "'movielens-100k:PATH', 'movielens-1m:PATH', 'table:SCHEMA.toml|yaml' or "
    "'stream:SCHEMA.toml|yaml' (Parquet larger than memory, read row group by row group)"
)


def _load(source: str, split: str, seed: int, encoders: dict | None = None):
    """``load_data``, or ``open_stream`` for a ``stream:`` source."""
    from cesaa.data import load_data
    from cesaa.data.stream import is_stream_source, open_stream

    if is_stream_source(source):
        return open_stream(source, split=split, seed=seed, encoders=encoders)
    return load_data(source, split=split, seed=seed, encoders=encoders)


def _parser() -> argparse.ArgumentParser:
    from cesaa.models.registry import model_names

    p = argparse.ArgumentParser(
        prog="cesaa",
        description="Multi-domain recommendation with sparse mixtures of experts (CESAA).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a checkpoint folder")
    t.add_argument("--data", default="synthetic", help=DATA_HELP)
    t.add_argument(
        "--model", default="cesaa", choices=model_names(), help="model name (default cesaa)"
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
        "--split", default="random", choices=["random", "temporal"], help="8:1:1 split kind"
    )
    t.add_argument("--data-seed", type=int, default=0, help="seed of the data split (default 0)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
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
    from cesaa.benchmark.cli import add_bench_parser

    add_bench_parser(sub)
    _add_report(sub)
    return p


def _add_report(sub: argparse._SubParsersAction) -> None:
    try:
        from analysis.cli import add_report_parser
    except ImportError:
        return
    add_report_parser(sub)


def _print_metrics(metrics: dict, domain_names: tuple[str, ...], title: str) -> None:
    from cesaa.metrics import metrics_table

    print(title)
    table = metrics_table(metrics, domain_names)
    ints = {"rows": lambda v: f"{int(v):,}" if v == v else "nan"}
    print(table.to_string(float_format=lambda v: f"{v:.4f}", formatters=ints))


def _cmd_train(args: argparse.Namespace) -> int:
    from cesaa import distributed
    from cesaa.checkpoint import read_meta
    from cesaa.config import ModelConfig, TrainConfig, apply_overrides, config_from_dict
    from cesaa.models.registry import default_config
    from cesaa.train import train

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints
    say = print if main_rank else (lambda *a, **k: None)

    if args.resume:
        meta = read_meta(args.resume)
        model_cfg = config_from_dict(ModelConfig, meta["model"]["config"])
        train_cfg = config_from_dict(TrainConfig, meta["train"])
        desc = meta["data"]["description"]
        source, split, data_seed = desc["source"], desc.get("split", "random"), desc.get("seed", 0)
        out = Path(args.resume)
    else:
        model_cfg, train_cfg = apply_overrides(default_config(args.model), TrainConfig(), args.set)
        source, split, data_seed = args.data, args.split, args.data_seed
        out = Path(args.out or f"runs/{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    data = _load(source, split, data_seed)
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
    return 0


def _epoch_printer(event: dict) -> None:
    if event.get("event") != "epoch":
        return
    keys = ["train/loss", "train/mi", "val/auc", "val/gauc", "val/logloss"]
    parts = [f"{k}={event[k]:.4f}" for k in keys if k in event]
    print(f"epoch {event['epoch']}: " + " ".join(parts) + f" ({event['time_s']:.1f}s)", flush=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cesaa.checkpoint import load_checkpoint
    from cesaa.models.output import RoutingOverride
    from cesaa.train import evaluate

    ckpt = load_checkpoint(args.checkpoint)
    desc = ckpt.meta["data"]["description"]
    source = args.data or desc["source"]
    data = _load(source, desc.get("split", "random"), desc.get("seed", 0), ckpt.encoders)
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    try:
        return handler(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"cesaa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
