"""``cesaa prune CKPT --keep N --criterion C --out DIR``: plugged into ``cesaa.cli``.

Chooses the plan on the planning split (default val), measures its cost on the measuring split
(default test) with the edited model, and writes the edited model as a checkpoint (CESAA-family
models), optionally fine-tuned; ``--plan-json`` writes the plan for any model; ``--curve`` prints
predicted against measured cost for every criterion and budget instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SPLITS = ("train", "val", "test")


def add_prune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``prune`` to the ``cesaa`` subcommands (its handler is ``run_prune``)."""
    from analysis.prune_plans import CRITERIA

    p = subparsers.add_parser(
        "prune",
        help="remove or merge a checkpoint's experts; predicted and measured cost",
        description="Which experts a model could do without, and what that would cost.  The plan "
        "is chosen on --plan-split and its cost measured on --split with the edited model "
        "(paired row-bootstrap interval).  Criteria: knockout (greedy knock-outs by measured "
        "cost), reap (lowest router-weighted output norm), merge (average the most redundant "
        "experts, by output CKA).",
    )
    p.add_argument(
        "checkpoint",
        help="run folder holding meta.json and model.safetensors, or a routing record with an "
        "expert-output sample (an outside model: --criterion reap or merge, --plan-json only)",
    )
    p.add_argument("--keep", type=int, default=None, help="experts to keep (1..E)")
    p.add_argument("--criterion", default="knockout", help=f"one of {', '.join(CRITERIA)}")
    p.add_argument("--out", default=None, help="folder for the edited checkpoint")
    p.add_argument("--plan-json", default=None, help="also write the plan as JSON to this file")
    p.add_argument("--data", default=None, help="data source (default: the checkpoint's own)")
    p.add_argument("--plan-split", default="val", help="split that chooses the plan (val)")
    p.add_argument("--split", default="test", help="split that measures the cost (test)")
    p.add_argument(
        "--fine-tune",
        type=int,
        default=0,
        metavar="STEPS",
        help="train the edited model this many steps on the train split (0)",
    )
    p.add_argument("--reps", type=int, default=200, help="bootstrap replicates (200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and sample (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument(
        "--curve",
        action="store_true",
        help="print predicted vs measured cost for every criterion and budget",
    )
    p.set_defaults(handler=run_prune)
    return p


def _check_args(args: argparse.Namespace) -> None:
    from analysis.prune_plans import CRITERIA

    for flag, value in (("--plan-split", args.plan_split), ("--split", args.split)):
        if value not in SPLITS:
            raise ValueError(f"{flag} {value!r} must be one of {', '.join(SPLITS)}")
    if args.criterion not in CRITERIA:
        raise ValueError(f"--criterion {args.criterion!r} must be one of {', '.join(CRITERIA)}")
    if not args.curve and args.keep is None:
        raise ValueError("--keep N is required (or --curve for every budget)")
    if not args.curve and args.out is None and args.plan_json is None:
        raise ValueError("--out DIR or --plan-json FILE is required: where should the plan go?")
    if args.reps < 1:
        raise ValueError(f"--reps {args.reps} must be >= 1")
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads} must be >= 1")
    if args.fine_tune < 0:
        raise ValueError(f"--fine-tune {args.fine_tune} must be >= 0 steps")


def _markdown(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:+.4f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _print_curve(ckpt, data, args) -> int:
    from analysis.prune_plans import prediction_error, prune_curve

    t0 = time.perf_counter()
    curve = prune_curve(
        ckpt.model,
        getattr(data, args.plan_split),
        getattr(data, args.split),
        ckpt.domain_names,
        reps=args.reps,
        seed=args.seed,
    )
    shown = curve[
        [
            "criterion",
            "keep",
            "predicted_delta_auc",
            "delta_auc",
            "ci_low",
            "ci_high",
            "worst_domain",
            "worst_domain_delta_auc",
        ]
    ].copy()
    shown["parameters_saved"] = curve["parameters_saved"].map(lambda v: f"{v:,.0f}")
    shown["flops_saved_per_row"] = curve["flops_saved_per_row"].map(lambda v: f"{v:,.0f}")
    print(_markdown(shown))
    print()
    print(_markdown(prediction_error(curve)))
    print(f"\n{len(curve)} plans in {time.perf_counter() - t0:.1f}s")
    return 0


def _record_plan(args: argparse.Namespace) -> int:
    """An outside model's record: the plan from its sample, exported as JSON (no cost)."""
    from analysis.prune_record import record_plan
    from analysis.records.reader import open_record

    for flag, used in (
        ("--out", args.out),
        ("--curve", args.curve),
        ("--fine-tune", args.fine_tune),
    ):
        if used:
            raise ValueError(
                f"{flag}: {args.checkpoint} is a routing record, which has no model to edit or "
                "re-run; use --plan-json FILE and apply the plan in the model's own code"
            )
    plan = record_plan(open_record(args.checkpoint), args.keep, args.criterion)
    print(f"plan ({args.criterion}, keep {args.keep}): {json.dumps(plan.to_dict())}")
    print("cost not measured: a record has no model to evaluate with the plan applied")
    _write_plan(args.plan_json, plan)
    return 0


def _write_plan(path: str | None, plan) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(plan.to_dict(), indent=2), encoding="utf-8")
        print(f"plan: {path}")


def run_prune(args: argparse.Namespace) -> int:
    """Choose, measure and apply one plan (or print the whole curve)."""
    import torch

    from analysis.expert_pass import expert_arrays
    from analysis.prune_cost import cost_table, edited_predictions
    from analysis.prune_plans import propose
    from analysis.records.reader import is_record
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data.locate import open_checkpoint_data
    from cesaa.evaluation import evaluate, predict
    from cesaa.pruning import apply_plan, fine_tune, not_editable, save_edited_checkpoint

    _check_args(args)
    torch.set_num_threads(args.threads)
    if is_record(args.checkpoint):
        return _record_plan(args)
    ckpt = load_checkpoint(args.checkpoint)
    if args.out is not None and not_editable(ckpt.model):
        raise ValueError(f"--out: {not_editable(ckpt.model)} (use --plan-json)")
    data = open_checkpoint_data(ckpt.meta, ckpt.path, override=args.data)
    if args.curve:
        return _print_curve(ckpt, data, args)
    plan_rows, rows = getattr(data, args.plan_split), getattr(data, args.split)
    arrays = expert_arrays(ckpt.model, plan_rows, ckpt.domain_names, seed=args.seed)
    proposals = propose(
        ckpt.model, arrays, plan_rows, criteria=(args.criterion,), keeps=[args.keep]
    )
    if not proposals:
        raise ValueError(f"--criterion {args.criterion}: {not_editable(ckpt.model)}")
    _, _, plan, predicted = proposals[0]
    edited = edited_predictions(ckpt.model, plan, rows)
    steps = args.fine_tune
    model = None
    if args.out is not None:
        model = apply_plan(ckpt.model, plan)
        if steps:
            tc = ckpt.train_config
            fine_tune(
                model,
                data.train,
                steps,
                lr=tc.lr if tc else 1e-3,
                batch_size=tc.batch_size if tc else 1024,
                seed=args.seed,
            )
            edited = predict(model, rows)
    base = predict(ckpt.model, rows)
    cost = cost_table(rows, ckpt.domain_names, base, edited, reps=args.reps, seed=args.seed)
    print(f"plan ({args.criterion}, keep {args.keep}): {json.dumps(plan.to_dict())}")
    print(f"predicted ΔAUC on {args.plan_split}: {predicted:+.4f}")
    label = f"measured on {args.split}" + (f" after {steps} fine-tuning steps" if steps else "")
    print(f"{label} (paired bootstrap {args.reps} reps, 95% interval):")
    signed = {c: "{:+.4f}".format for c in cost.columns if c.startswith(("delta", "ci_"))}
    print(cost.to_string(index=False, formatters={**signed, "auc": "{:.4f}".format}))
    _write_plan(args.plan_json, plan)
    if model is not None:
        names = ckpt.domain_names
        metrics = {
            "val": evaluate(model, data.val, names),
            "test": evaluate(model, data.test, names),
        }
        extra = {
            "predicted_delta_auc": predicted,
            "plan_split": args.plan_split,
            "measured_split": args.split,
            "measured": cost.to_dict(orient="records"),
            "fine_tune_steps": steps,
        }
        out = save_edited_checkpoint(ckpt, model, plan, args.out, metrics=metrics, extra=extra)
        print(f"checkpoint: {out}")
    return 0
