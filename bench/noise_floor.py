"""The noise floor of a seed-paired comparison: each model's seed-to-seed spread, and the smallest
difference to the best model that 10 paired seeds detect at 80 % power.

Reads finished runs (a ``runs.json`` of ``cesaa bench`` / ``bench.best_shot``: one record per model
and seed), or makes them with a small ``cesaa bench`` run (``--source``, registry defaults, no
tuning; resumable in ``--out``).  Per model: mean test AUC ± its seed std, its paired difference to
the best model (std over seeds of the per-seed differences) and the detectable difference at
``--n`` seeds, ``(t_{.975, n-1} + t_{.8, n-1}) * paired SD / sqrt(n)``
(:func:`cesaa.benchmark.stats.detectable_difference`).  A measured gap smaller than the floor
cannot be told from zero by a 10-seed study, whatever its sign.

    python -m bench.noise_floor        # occupation from docs/results, age from a small run
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import _common, _report
from cesaa.benchmark.leaderboard import build_leaderboard
from cesaa.benchmark.protocol import Protocol
from cesaa.benchmark.runner import BenchSpec, run_benchmark
from cesaa.benchmark.stats import detectable_difference

OCCUPATION = _common.REPO / "docs" / "results" / "best-shot-occupation" / "runs.json"


def floor_rows(runs: list[dict], n: int = 10, level: float = 0.95) -> list[dict]:
    """One row per model (best first): mean and seed std of test AUC, the paired difference to
    the best model with its std, and the difference ``n`` paired seeds detect at 80 % power."""
    lb = build_leaderboard(runs, level)
    rows = []
    for c in lb.table("overall", "auc"):
        rows.append(
            {
                "model": c.model,
                "seeds": c.n,
                "mean": c.mean,
                "std": c.std,
                "diff": c.diff_mean,
                "paired_std": c.diff_std,
                "detectable": detectable_difference(c.diff_std, n, 1.0 - level),
            }
        )
    return rows


def _table(rows: list[dict], n: int) -> str:
    def f(x: float, sign: bool = False) -> str:
        return "" if not math.isfinite(x) else (f"{x:+.4f}" if sign else f"{x:.4f}")

    return _report.table(
        [
            "model",
            "seeds",
            "test AUC (mean ± seed std)",
            "Δ to the best",
            "paired std of Δ",
            f"detectable Δ at {n} seeds (80 % power)",
        ],
        [
            [
                r["model"],
                r["seeds"],
                f"{r['mean']:.4f} ± {r['std']:.4f}",
                "best" if not math.isfinite(r["diff"]) else f(r["diff"], True),
                f(r["paired_std"]),
                f(r["detectable"]),
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--runs", default=str(OCCUPATION), help="a runs.json with per-seed records")
    p.add_argument("--runs-label", default="MovieLens-100k, occupation domains, every model tuned")
    p.add_argument("--source", default="", help="also run: this data source (default: ML-100k age)")
    p.add_argument("--models", default="cesaa,m2m,mlp,shared_bottom")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--n", type=int, default=10, help="seeds of the comparison to size (10)")
    p.add_argument("--out", default=str(_common.REPO / "runs" / "noise-floor-age"))
    p.add_argument("--skip-run", action="store_true", help="only read --runs")
    args, argv = _common.parse(p, argv)
    sec = _report.SectionRun("The noise floor", "bench.noise_floor", argv, args.quick, 1)
    parts = []
    if args.runs:
        runs = json.loads(Path(args.runs).read_text(encoding="utf-8"))
        where = Path(args.runs).resolve()
        shown = where.relative_to(_common.REPO) if where.is_relative_to(_common.REPO) else where
        parts.append(
            f"### {args.runs_label} (from `{shown}`)\n\n" + _table(floor_rows(runs, args.n), args.n)
        )
    if not args.skip_run:
        source = args.source or _common.ml100k_source()
        models = tuple(m for m in args.models.split(",") if m)
        train, seeds, max_train = {}, args.seeds, 0
        if args.quick:
            models, seeds, train, max_train = ("cesaa", "mlp"), 2, {"epochs": 1}, 4000
        spec = BenchSpec(
            source,
            models,
            args.out,
            seeds=seeds,
            jobs=args.jobs,
            protocol=Protocol(train=train, max_train=max_train),
            command=_report.command("bench.noise_floor", argv),
            machine=sec.machine,
        )
        run_benchmark(spec, _report.log)
        runs = json.loads((Path(args.out) / "runs.json").read_text(encoding="utf-8"))
        parts.append(
            f"### `{source}` at the registry defaults, {seeds} seeds (runs in `{args.out}`)\n\n"
            + _table(floor_rows(runs, args.n), args.n)
        )
    notes = (
        "Δ: paired by seed against the best model of the table.  Detectable Δ: the smallest true "
        f"difference a comparison with {args.n} paired seeds detects with 80 % power in a "
        "two-sided paired t-test at 0.05, from this table's paired std "
        "(`cesaa.benchmark.stats.detectable_difference`; within 0.2 % of statsmodels' exact "
        "power solution at 10 seeds)."
    )
    _common.write("noise_floor", args, sec.body(notes, *parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
