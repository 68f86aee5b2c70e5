"""Training that does not stall: on planted multiplicative (user x item) data, where every model
first sits on a plateau, does the default early stopping wait it out?

Each model is trained three times on ``synthetic:rows=R,structure=multiplicative,per_domain=1``
(Adam lr ``--lr`` 1e-3, batch ``--batch-size`` 1024, weight decay 1e-5, at most ``--epochs``
epochs, seed 0): with patience 30 (the reference), with the default protocol (``TrainConfig``'s
patience, no stop before ``TrainConfig.min_steps`` optimizer steps) and with the old protocol (the
same patience from the first epoch, ``min_steps=0``).
Reported: epochs run, best epoch, test AUC of the best-validation epoch, and the gap to the reference
(goal: within 0.01 for every model under the default protocol).  Training is deterministic per
epoch, so a stopped run is a prefix of the reference run.

    python -m bench.plateau            # full (about 10 min on 2 idle cores)
    python -m bench.plateau --quick    # CI smoke run
"""

from __future__ import annotations

import time

from bench import _common, _report

SECTION = "plateau"
PROTOCOLS = {"patience 30": {"patience": 30}, "default": {}, "old (min_steps=0)": {"min_steps": 0}}


def run_one(task: dict) -> dict:
    from cesaa.benchmark.protocol import load_source
    from cesaa.config import TrainConfig
    from cesaa.models import default_config
    from cesaa.train import train

    data = load_source(task["source"])
    base = dict(
        epochs=task["epochs"],
        weight_decay=1e-5,
        seed=0,
        device="cpu",
        lr=task["lr"],
        batch_size=task["batch_size"],
    )
    t0 = time.perf_counter()
    res = train(default_config(task["model"]), TrainConfig(**base, **task["kw"]), data)
    val = [h["val/auc"] for h in res.history]
    return {
        "model": task["model"],
        "protocol": task["protocol"],
        "epochs": len(res.history),
        "best_epoch": res.best_epoch,
        "test_auc": float(res.test_metrics["auc"]),
        "val": val,
        "seconds": time.perf_counter() - t0,
        "summary": f"{len(val)} epochs, test auc {res.test_metrics['auc']:.4f}",
    }


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--rows", type=int, default=40_000)
    p.add_argument(
        "--epochs",
        type=int,
        default=60,
        help="epoch cap for every run (default 60: past the epoch where min_steps lets the "
        "default protocol stop, so that the comparison can fail)",
    )
    p.add_argument("--models", default="", help="comma-separated registry names (default: all)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=1024)
    args, argv = _common.parse(p, argv)
    if args.quick:
        args.rows, args.epochs = 4000, 2
    sec = _report.SectionRun(
        "Training that does not stall: planted multiplicative data",
        "bench.plateau",
        argv,
        args.quick,
        1 if args.jobs > 1 else None,
    )
    from cesaa.config import TrainConfig
    from cesaa.models import model_names

    models = args.models.split(",") if args.models else model_names()
    source = f"synthetic:rows={args.rows},structure=multiplicative,per_domain=1,seed=0"
    tasks = [
        {
            "source": source,
            "model": m,
            "protocol": name,
            "kw": kw,
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
        }
        for m in models
        for name, kw in PROTOCOLS.items()
    ]
    results = _common.run_all(
        run_one, tasks, args.jobs, label=lambda t: f"{t['model']} {t['protocol']}"
    )
    by = {(r["model"], r["protocol"]): r for r in results}
    rows = []
    for m in models:
        ref = by[(m, "patience 30")]
        row = [m]
        for name in PROTOCOLS:
            r = by[(m, name)]
            gap = "" if name == "patience 30" else f" ({r['test_auc'] - ref['test_auc']:+.4f})"
            row.append(f"{r['epochs']} / {r['best_epoch']} / {r['test_auc']:.4f}{gap}")
        rows.append(row)
    curves = [[m, " ".join(f"{v:.3f}" for v in by[(m, "patience 30")]["val"])] for m in models]
    steps = -(-int(args.rows * 0.8) // args.batch_size)
    defaults = TrainConfig()
    first_stop = max(defaults.patience, -(-defaults.min_steps // steps))  # earliest default stop
    gaps = {m: by[(m, "default")]["test_auc"] - by[(m, "patience 30")]["test_auc"] for m in models}
    worst = min(gaps, key=gaps.get)
    stopped = [m for m in models if by[(m, "default")]["epochs"] < args.epochs]
    vacuous = args.epochs <= first_stop
    verdict = "not tested" if vacuous else "met" if min(gaps.values()) >= -0.01 else "missed"
    goal = (
        f"**Goal (every model within 0.01 test AUC of its patience-30 run under the default "
        f"protocol): {verdict}.**  Largest shortfall: "
        f"{worst} {gaps[worst]:+.4f}.  The default protocol stopped {len(stopped)} of "
        f"{len(models)} models before the {args.epochs}-epoch cap"
        + (f" ({', '.join(stopped)})." if stopped else ".")
    )
    if vacuous:
        goal += (
            f"  **At this cap the comparison is vacuous**: the default protocol cannot stop "
            f"before epoch {first_stop} (min_steps {defaults.min_steps} at {steps} steps per "
            f"epoch), so it runs exactly as the reference; raise --epochs."
        )
    notes = (
        f"Data: `{source}` ({int(args.rows * 0.8)} training rows, {steps} optimizer steps per "
        f"epoch at batch {args.batch_size}, Adam lr {args.lr:g}).  Cells: epochs run / best epoch / test AUC "
        f"of the best-validation epoch (gap to the patience-30 reference).  Default protocol: "
        f"patience {TrainConfig().patience}, min_steps {TrainConfig().min_steps}; at most "
        f"{args.epochs} epochs for all."
    )
    body = sec.body(
        notes,
        _report.table(["model", *PROTOCOLS], rows),
        goal,
        "### Validation AUC per epoch (patience-30 run)\n\n"
        + _report.table(["model", "val AUC, epoch 1, 2, ..."], curves),
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
