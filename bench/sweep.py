"""Where routing pays: CESAA, its ablations and the strongest baselines over a grid of synthetic
multi-domain tables, from identical domains to disjoint mechanisms.

Grid: ``--heterogeneity`` (the generator's dial, ``cesaa.data.synthetic``: 0 = every domain draws
from one distribution, 1 = no two domains share a mechanism) x ``--domains`` x
``--rows-per-domain``.  Each cell is one ``cesaa bench`` run (``cesaa.benchmark.runner``) in
``<out>/<cell>/``: the same data seed for every cell, equal Optuna budgets per model (``--trials``,
0 = registry defaults), then the same model seeds 0..S-1 for every model (paired).  The sweep is
resumable: every finished run is a file (``<cell>/final/<model>-seed<s>.json``) and every trial
is in the cell's Optuna journal; a rerun of the same command skips what is done and only trains
what is missing.  After each cell the section is rewritten with every cell finished so far, so a
stopped sweep still publishes its partial map (and says which cells are missing).

The map, per cell: CESAA minus the best baseline (by mean test AUC), paired by seed, with its
t interval and the smallest difference these seeds detect at 80 % power; and each mechanism's
effect, CESAA minus its ablation (no MI loss, no shared expert, k = 1), paired the same way.

Full grid (the default: 3 x 3 x 2 cells, 10 models, 2 trials + 5 seeds each, about 1.1e9
training row-epochs; docs/benchmarks.md gives its time estimate from the reduced run):
``python -m bench.sweep --jobs 2``.  A reduced grid takes the same flags with fewer values, e.g.
``--heterogeneity 1,0,0.5 --domains 3 --rows-per-domain 3000 --trials 0``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from bench import _common, _report
from cesaa.benchmark.protocol import Protocol
from cesaa.benchmark.runner import BenchSpec, run_benchmark
from cesaa.benchmark.stats import detectable_difference, mean_std, paired_difference

SETUP = "bench._sweep_models:register"
CESAA = "cesaa"
ABLATIONS = {"cesaa_nomi": "MI loss", "cesaa_noshared": "shared expert", "cesaa_k1": "k 2 vs 1"}
BASELINES = ("m2m", "ple", "star", "adasparse", "mlp", "shared_bottom")
FULL = {
    "heterogeneity": (0.0, 0.5, 1.0),
    "domains": (3, 12, 40),
    "rows_per_domain": (1000, 3000),
}
DATA_SEED = 0


def cell_name(h: float, domains: int, rows_per_domain: int) -> str:
    return f"h{h:g}-d{domains}-r{rows_per_domain}"


def cell_source(h: float, domains: int, rows_per_domain: int, seed: int = DATA_SEED) -> str:
    """The synthetic source of one cell: ``domains * rows_per_domain`` rows at dial ``h``."""
    return (
        f"synthetic:rows={domains * rows_per_domain},domains={domains},heterogeneity={h:g},"
        f"seed={seed}"
    )


def _per_seed(runs: list[dict], model: str) -> dict[int, float]:
    return {r["seed"]: float(r["test"]["auc"]) for r in runs if r["model"] == model}


def cell_map(runs: list[dict], level: float = 0.95) -> dict:
    """One cell's point on the map, from its final runs (model, seed, test auc).

    ``baseline``: the non-CESAA model with the best mean test AUC; ``gap``: CESAA minus it (a
    :class:`PairedDifference` as dict) with ``detectable`` (80 % power at these seeds) and
    ``detectable_10`` (at 10 seeds, same paired SD); ``mechanisms``: ablation name -> CESAA minus
    that ablation (dict), for the ablations present; ``spread``: model -> seed-to-seed std."""
    models = sorted({r["model"] for r in runs})
    if CESAA not in models:
        raise ValueError(f"no {CESAA!r} runs in this cell (models: {models})")
    cesaa = _per_seed(runs, CESAA)
    others = [m for m in models if m != CESAA and m not in ABLATIONS]
    if not others:
        raise ValueError("no baseline runs in this cell")
    means = {m: mean_std(list(_per_seed(runs, m).values()))[0] for m in models}
    baseline = max(others, key=lambda m: (means[m], m))
    gap = paired_difference(cesaa, _per_seed(runs, baseline), level).to_dict()
    alpha = 1.0 - level
    gap["detectable"] = detectable_difference(gap["std"], gap["n"], alpha)
    gap["detectable_10"] = detectable_difference(gap["std"], 10, alpha)
    mechanisms = {}
    for name in ABLATIONS:
        if name in models:
            d = paired_difference(cesaa, _per_seed(runs, name), level).to_dict()
            d["detectable"] = detectable_difference(d["std"], d["n"], alpha)
            mechanisms[name] = d
    spread = {m: mean_std(list(_per_seed(runs, m).values())) for m in models}
    return {"baseline": baseline, "means": means, "gap": gap, "mechanisms": mechanisms,
            "spread": spread}  # fmt: skip


def _ci(d: dict) -> str:
    if not math.isfinite(d.get("ci_low", math.nan)):
        return f"{d['mean']:+.4f} [n/a]"
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def _verdict(d: dict) -> str:
    if not math.isfinite(d.get("ci_low", math.nan)):
        return "n/a"
    if d["ci_low"] > 0:
        return "ahead"
    if d["ci_high"] < 0:
        return "behind"
    return f"level (within ±{d['detectable']:.4f})"


def map_rows(points: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """The map as a table: one row per finished cell."""
    cols = [
        "cell (h, domains, rows/domain)",
        "CESAA AUC",
        "best baseline",
        "CESAA − best [95 % CI]",
        "verdict",
        "detectable Δ (these seeds / 10 seeds)",
        *(f"CESAA − no {v}" if k != "cesaa_k1" else "CESAA − k 1" for k, v in ABLATIONS.items()),
    ]
    rows = []
    for cell, p in points.items():
        g = p["gap"]
        m, s = p["spread"][CESAA]
        b = p["baseline"]
        bm, bs = p["spread"][b]
        rows.append(
            [
                cell,
                f"{m:.4f} ± {s:.4f}",
                f"{b} {bm:.4f} ± {bs:.4f}",
                _ci(g),
                _verdict(g),
                f"{g['detectable']:.4f} / {g['detectable_10']:.4f}",
                *(
                    _ci(p["mechanisms"][k]) if k in p["mechanisms"] else "not run"
                    for k in ABLATIONS
                ),
            ]
        )
    return cols, rows


def spread_rows(points: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Each model's seed-to-seed std per cell (the noise each comparison sits on)."""
    models = sorted({m for p in points.values() for m in p["spread"]})
    rows = [
        [cell, *(f"{p['spread'][m][1]:.4f}" if m in p["spread"] else "" for m in models)]
        for cell, p in points.items()
    ]
    return ["cell", *models], rows


def section(sec, args, models: tuple[str, ...], points: dict, missing: list[str]) -> str:
    """The docs section: how it was run, the map so far, the spread; the cells still missing."""
    budget = (
        f"{args.trials} Optuna trials per model and cell (TPE, median pruning; the tuned "
        f"configuration then trains with seeds 0..{args.seeds - 1})"
        if args.trials
        else f"no tuning: every model at its registry defaults, seeds 0..{args.seeds - 1}"
    )
    notes = (
        "Cells: `synthetic:rows=D*R,domains=D,heterogeneity=H,seed=0` (`cesaa.data.synthetic`, "
        f"the heterogeneity dial; data seed {DATA_SEED} in every cell).  Models: "
        f"{', '.join(models)}.  Budget: {budget}.  Protocol: TrainConfig defaults (at most 30 "
        "epochs, early stopping on validation AUC, never before min_steps).  Δ: paired by seed, "
        "95 % t interval; detectable Δ: the smallest true difference the paired seeds detect at "
        "80 % power (`cesaa.benchmark.stats.detectable_difference`).  Every run's record is in "
        f"`{args.out}/<cell>/final/`."
    )
    if missing:
        notes += f"  **Partial: cells not yet run: {', '.join(missing)}.**"
    return sec.body(
        notes,
        "### The map\n\n" + _report.table(*map_rows(points)),
        "### Seed-to-seed spread (test AUC std over seeds)\n\n"
        + _report.table(*spread_rows(points)),
    )


def _grid(args) -> list[tuple[float, int, int]]:
    if args.cells:  # explicit cells h:domains:rows_per_domain instead of the product
        return [tuple(t(v) for t, v in zip((float, int, int), c.split(":"), strict=True))
                for c in args.cells.split(",")]  # fmt: skip
    hs = [float(x) for x in args.heterogeneity.split(",")]
    ds = [int(x) for x in args.domains.split(",")]
    rs = [int(x) for x in args.rows_per_domain.split(",")]
    # fewest domains first: the small cells finish (and are published) before the large ones
    return [(h, d, r) for d, h, r in itertools.product(ds, hs, rs)]


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--heterogeneity", default=",".join(f"{h:g}" for h in FULL["heterogeneity"]))
    p.add_argument("--domains", default=",".join(str(d) for d in FULL["domains"]))
    p.add_argument("--rows-per-domain", default=",".join(str(r) for r in FULL["rows_per_domain"]))
    p.add_argument(
        "--cells",
        default="",
        help="explicit cells H:DOMAINS:ROWS_PER_DOMAIN, comma-separated (instead of the product "
        "of the three lists), e.g. 1:3:3000,1:12:1000",
    )
    p.add_argument("--models", default=",".join([CESAA, *ABLATIONS, *BASELINES]))
    p.add_argument("--seeds", type=int, default=5, help="paired model seeds 0..S-1 per cell")
    p.add_argument("--trials", type=int, default=2, help="Optuna trials per model and cell")
    p.add_argument("--out", default=str(_common.REPO / "runs" / "sweep"))
    args, argv = _common.parse(p, argv)
    grid = _grid(args)
    models = tuple(m for m in args.models.split(",") if m)
    train = {}
    if args.quick:
        grid, models, args.seeds, args.trials = grid[:1], (CESAA, "mlp"), 2, 0
        train = {"epochs": 1, "min_steps": 0}
    sec = _report.SectionRun(
        "Where routing pays: the heterogeneity sweep", "bench.sweep", argv, args.quick, 1
    )
    points: dict[str, dict] = {}
    for h, d, r in grid:
        cell = cell_name(h, d, r)
        spec = BenchSpec(
            cell_source(h, d, r),
            models,
            str(Path(args.out) / cell),
            seeds=args.seeds,
            trials=args.trials,
            jobs=args.jobs,
            study_prefix=f"sweep-{cell}",
            protocol=Protocol(train=train),
            setup=SETUP,
            command=_report.command("bench.sweep", argv),
            machine=sec.machine,
        )
        _report.log(f"cell {cell}: {spec.source}")
        run_benchmark(spec, _report.log)
        runs = json.loads((Path(spec.out) / "runs.json").read_text(encoding="utf-8"))
        points[cell] = cell_map(runs)
        missing = [cell_name(*c) for c in grid if cell_name(*c) not in points]
        _common.write("sweep", args, section(sec, args, models, points, missing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
