"""Tuning CESAA's free choices on the MovieLens-100k validation split only (the test split is never
read): its declared search space (``cesaa.models.search_spaces.cesaa``: gate input, head, fusion,
expert sizes, E, k, shared experts, alpha, learning rate, weight decay, embedding width, dropout).

Stage 1 is one Optuna study (TPE, median pruning on validation AUC per epoch; ``cesaa.benchmark``)
of ``--trials`` trials.  Stage 2 trains the best trial's configuration and the package defaults on
fresh seeds (100..) and recommends the configuration only if it beats the defaults there by more
than one standard error of the paired validation differences.  Protocol as in ``bench.accuracy``.

    python -m bench.tune            # full: 20 trials + 5 seeds (about 10 min on 2 cores)
    python -m bench.tune --quick    # CI smoke run
"""

from __future__ import annotations

import math
import tempfile

from bench import _common, _report
from bench.accuracy import protocol
from cesaa.benchmark.protocol import RunTask, run_task
from cesaa.benchmark.runner import BenchSpec, parallel_map, tune_models
from cesaa.benchmark.stats import paired_difference
from cesaa.benchmark.tuning import params_from_json, study_summary

SECTION = "tuning"
STAGE2_SEED0 = 100


def _key(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def _val_run(task: dict) -> dict:
    rec = run_task(task)
    rec["summary"] = f"val auc {rec['val']['auc']:.4f}, {rec['epochs']} epochs"
    return rec


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--trials", type=int, default=20, help="Optuna trials (stage 1)")
    p.add_argument("--confirm-seeds", type=int, default=5, help="stage-2 seeds")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: a temp journal)")
    args, argv = _common.parse(p, argv)
    if args.quick:
        args.trials, args.confirm_seeds, args.epochs = 2, 2, 1
        args.max_train = args.max_train or 8000
    sec = _report.SectionRun(
        "Tuning CESAA's defaults (validation split)",
        "bench.tune",
        argv,
        args.quick,
        1 if args.jobs > 1 else None,
    )
    source = _common.ml100k_source()
    proto = protocol(args.epochs, args.max_train)
    with tempfile.TemporaryDirectory(prefix="cesaa-tune-") as tmp:
        spec = BenchSpec(
            source,
            ("cesaa",),
            tmp,
            trials=args.trials,
            jobs=args.jobs,
            storage=args.storage,
            study_prefix="bench-tune",
            protocol=proto,
        )
        tune_models(spec, _report.log)
        best = study_summary(spec.study("cesaa"), spec.storage_url)
    params = params_from_json(best["params"])
    seeds = range(STAGE2_SEED0, STAGE2_SEED0 + args.confirm_seeds)
    tasks = [
        RunTask(source, "cesaa", s, config, proto).to_dict()
        for s in seeds
        for config in ({}, params)
    ]
    runs = parallel_map(
        _val_run,
        tasks,
        args.jobs,
        None,
        _report.log,
        label=lambda t: f"stage 2 {'tuned' if t['params'] else 'defaults'} seed {t['seed']}",
    )
    by = {
        "defaults": [r for r in runs if not r["params"]],
        "tuned": [r for r in runs if r["params"]],
    }
    val = {k: {r["seed"]: r["val"]["auc"] for r in v} for k, v in by.items()}
    d = paired_difference(val["tuned"], val["defaults"])
    se = d.std / math.sqrt(d.n) if d.n > 1 else math.inf
    stage1 = (
        f"### Stage 1: {args.trials} Optuna trials (validation split, model seed 10000)\n\n"
        f"{best['complete']} complete, {best['pruned']} pruned, {best['failed']} failed; "
        f"{best['epochs']} epochs trained in {best['seconds']:.0f} s.  Best validation AUC "
        f"{best['best_value']:.4f} with: {_key(params)}."
    )
    stage2 = (
        f"### Stage 2: the best trial vs the defaults (fresh seeds {seeds.start}..{seeds.stop - 1})"
        "\n\n"
        + _report.table(
            ["config", "val AUC", "val GAUC", "val logloss", "best epoch"],
            [
                [
                    name,
                    _report.pm([r["val"]["auc"] for r in rs]),
                    _report.pm([r["val"]["gauc"] for r in rs]),
                    _report.pm([r["val"]["logloss"] for r in rs]),
                    _report.pm([r["best_epoch"] for r in rs], 1),
                ]
                for name, rs in by.items()
            ],
        )
        + f"\n\nPaired difference (tuned - defaults), val AUC: {d.mean:+.4f} ± {se:.4f} "
        f"(standard error, {d.n} seeds)."
    )
    if d.mean > se:
        decision = (
            f"change the defaults to {_key(params)} (validation AUC {d.mean:+.4f} ± {se:.4f})."
        )
    else:
        decision = (
            f"keep the current defaults: the best trial did not beat them on fresh seeds "
            f"({d.mean:+.4f} ± {se:.4f})."
        )
    notes = (
        "CESAA on MovieLens-100k, selection on the validation split only (test never read).  "
        f"Protocol as in the accuracy section (at most {args.epochs} epochs).\n\n"
        f"**Recommendation: {decision}**"
    )
    _common.write(SECTION, args, sec.body(notes, stage1, stage2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
