"""Tuning CESAA's free choices on the MovieLens-100k validation split only (the test split is never
read): alpha, E, k, shared experts, fusion, head.

Stage 1 varies one choice at a time around the current package defaults (seeds 0..S-1).  A value
replaces the default only when it beats it on mean validation AUC by more than one standard error
of the per-seed (paired) differences.  Stage 2 trains the combination of the stage-1 winners and
the defaults on fresh seeds (100..) and recommends the combination only if it wins there too.
Same protocol as ``bench.accuracy`` (split seed 0, Adam 1e-3, weight decay 1e-5, patience 4).

    python -m bench.tune            # full: 3 + 5 seeds (about 8 min on 2 cores)
    python -m bench.tune --quick    # CI smoke run
"""

from __future__ import annotations

import math
import time

from bench import _common, _report
from bench.accuracy import run_one

SECTION = "tuning"
AXES: dict[str, list] = {
    "alpha": [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3],
    "num_experts": [4, 8, 16],
    "top_k": [1, 2, 4],
    "num_shared": [0, 1, 2],
    "fusion": ["sum", "concat"],
    "head": ["shared", "per_domain"],
}
QUICK_AXES: dict[str, list] = {"alpha": [0.0, 0.1], "top_k": [1, 2]}
STAGE2_SEED0 = 100


def _key(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "defaults"


def _tasks(configs: list[dict], seeds: range, args, source: str) -> list[dict]:
    return [
        {
            "label": _key(o),
            "model": "cesaa",
            "overrides": o,
            "seed": s,
            "source": source,
            "epochs": args.epochs,
            "max_train": args.max_train,
        }
        for s in seeds
        for o in configs
    ]


def _paired(a: list[dict], b: list[dict]) -> tuple[float, float, int]:
    """Mean and standard error of the per-seed val AUC difference a - b."""
    va = {r["seed"]: r["val"]["auc"] for r in a}
    vb = {r["seed"]: r["val"]["auc"] for r in b}
    d = [va[s] - vb[s] for s in sorted(set(va) & set(vb))]
    m, s = _report.mean_std(d)
    return m, (s / math.sqrt(len(d)) if len(d) > 1 else math.inf), len(d)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--seeds", type=int, default=3, help="stage-1 seeds")
    p.add_argument("--confirm-seeds", type=int, default=5, help="stage-2 seeds")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-train", type=int, default=0)
    args, argv = _common.parse(p, argv)
    axes = AXES
    if args.quick:
        axes = QUICK_AXES
        args.seeds, args.confirm_seeds, args.epochs = 2, 2, 1
        args.max_train = args.max_train or 8000
    # before the run, so that its load average is the one at the start
    machine = _report.machine(1 if args.jobs > 1 else None)
    t0 = time.perf_counter()
    source = _common.ml100k_source()
    from cesaa.models import default_config

    base = default_config("cesaa")
    configs: list[dict] = [{}]
    for axis, values in axes.items():
        for v in values:
            o = {} if getattr(base, axis) == v else {axis: v}
            if axis == "top_k" and v > base.num_experts:
                continue
            if o not in configs:
                configs.append(o)
    stage1 = _common.run_all(
        run_one,
        _tasks(configs, range(args.seeds), args, source),
        args.jobs,
        label=lambda t: f"stage 1 {t['label']} seed {t['seed']}",
    )
    by = _common.group(stage1, "label")
    default_runs = by["defaults"]

    rows = []
    winners: dict = {}
    for axis, values in axes.items():
        best = (0.0, None)
        for v in values:
            o = {} if getattr(base, axis) == v else {axis: v}
            runs = by.get(_key(o))
            if runs is None:
                continue
            m, se, _ = _paired(runs, default_runs)
            flag = "(default)" if not o else ""
            if o and m > se and m > best[0]:
                best = (m, v)
            rows.append(
                [
                    axis,
                    f"{v} {flag}".strip(),
                    _report.pm([r["val"]["auc"] for r in runs]),
                    _report.pm([r["val"]["gauc"] for r in runs]),
                    _report.pm([r["val"]["logloss"] for r in runs]),
                    "" if not o else f"{m:+.4f} ± {se:.4f}",
                    _report.pm([r["best_epoch"] for r in runs], 1),
                ]
            )
        if best[1] is not None:
            winners[axis] = best[1]
    if "top_k" in winners or "num_experts" in winners:
        e = winners.get("num_experts", base.num_experts)
        if winners.get("top_k", base.top_k) > e:
            winners.pop("top_k")
    parts = [
        "### Stage 1: one choice at a time (validation split)\n\n"
        f"Mean ± std over seeds 0..{args.seeds - 1}; 'vs default' is the mean paired difference "
        "of validation AUC ± its standard error.\n\n"
        + _report.table(
            ["choice", "value", "val AUC", "val GAUC", "val logloss", "vs default", "best epoch"],
            rows,
        )
    ]

    decision = (
        "keep the current defaults: no single change beat them by more than one standard error."
    )
    if winners:
        seeds2 = range(STAGE2_SEED0, STAGE2_SEED0 + args.confirm_seeds)
        stage2 = _common.run_all(
            run_one,
            _tasks([{}, dict(winners)], seeds2, args, source),
            args.jobs,
            label=lambda t: f"stage 2 {t['label']} seed {t['seed']}",
        )
        by2 = _common.group(stage2, "label")
        new, old = by2[_key(winners)], by2["defaults"]
        m, se, n = _paired(new, old)
        parts.append(
            f"### Stage 2: the stage-1 winners together vs the defaults (fresh seeds "
            f"{seeds2.start}..{seeds2.stop - 1})\n\n"
            + _report.table(
                ["config", "val AUC", "val GAUC", "val logloss", "best epoch"],
                [
                    [
                        label,
                        _report.pm([r["val"]["auc"] for r in runs]),
                        _report.pm([r["val"]["gauc"] for r in runs]),
                        _report.pm([r["val"]["logloss"] for r in runs]),
                        _report.pm([r["best_epoch"] for r in runs], 1),
                    ]
                    for label, runs in by2.items()
                ],
            )
            + f"\n\nPaired difference (winners - defaults), val AUC: {m:+.4f} ± {se:.4f} "
            f"(standard error, {n} seeds)."
        )
        if m > se:
            decision = (
                f"change the defaults to {_key(winners)} (validation AUC {m:+.4f} ± {se:.4f})."
            )
        else:
            decision = (
                f"keep the current defaults: the stage-1 winners ({_key(winners)}) did not beat "
                f"them on fresh seeds ({m:+.4f} ± {se:.4f})."
            )
    notes = (
        "CESAA on MovieLens-100k, selection on the validation split only (test never read).  "
        f"Current defaults: E={base.num_experts}, k={base.top_k}, shared={base.num_shared}, "
        f"alpha={base.alpha}, fusion={base.fusion}, head={base.head}.  Protocol as in the "
        f"accuracy section (at most {args.epochs} epochs).\n\n**Recommendation: {decision}**"
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Tuning CESAA's defaults (validation split)",
                _report.command("bench.tune", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            *parts,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
