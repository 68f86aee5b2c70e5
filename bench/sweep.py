"""Where routing pays: CESAA, its ablations and the strongest baselines over a grid of synthetic
multi-domain tables, from identical domains to disjoint mechanisms.

Grid: ``--cells H:DOMAINS:ROWS_PER_DOMAIN,...``, where H is the generator's heterogeneity dial
(``cesaa.data.synthetic``: 0 = every domain draws from one distribution, 1 = no two domains share
a mechanism).  The default (``CELLS``) is three axes through shared cells, most informative first:
the dial (h 0 / 0.5 / 1) at 12 domains x 3,000 rows; the number of domains (3 / 12 / 40) at h 1 x
3,000 rows; the rows per domain (1k / 3k / 10k / 30k / 100k) at h 1 x 3 domains.  Each cell is one
``cesaa bench`` run (``cesaa.benchmark.runner``) in ``<out>/<cell>/``: the same data seed for
every cell, equal Optuna budgets per model (``--trials``; default 0, every model at its registry
defaults), then the same model seeds 0..S-1 for every model (paired).  The sweep is resumable:
every finished run is a file (``<cell>/final/<model>-seed<s>.json``) and every trial is in the
cell's Optuna journal; a rerun of the same command skips what is done and only trains what is
missing.  After each cell the section (and its chart, ``bench._sweep_chart``) is rewritten with
every cell finished so far, so a stopped sweep still publishes its partial map (and says which
cells are missing).

The map, per cell: CESAA minus the best baseline (by mean test AUC), paired by seed, with its
t interval and the smallest difference these seeds detect at 80 % power; and each mechanism's
effect, CESAA (k = 2) minus its ablation (no MI loss, no shared expert, k = 1, 3, 4),
paired the same way.

Default (9 cells x 12 models x 5 seeds = 540 runs, no tuning): ``python -m bench.sweep --jobs 2``;
measured on the shared 2-core machine of docs/benchmarks.md: 80 min with another job competing.  A
run's cost grows far slower than its table (TrainConfig: a small table trains its 30 epochs, a
large one stops after about min_steps = 1000 steps plus patience).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import _common, _report, _sweep_chart
from cesaa.benchmark.protocol import Protocol
from cesaa.benchmark.runner import BenchSpec, run_benchmark
from cesaa.benchmark.stats import detectable_difference, mean_std, paired_difference
from cesaa.convergence import stalled_text

SETUP = "bench._sweep_models:register"
CESAA = "cesaa"
# ablation -> its column in the map (CESAA, at k = 2, minus the ablation)
ABLATIONS = {
    "cesaa_nomi": "CESAA − no MI loss",
    "cesaa_noshared": "CESAA − no shared expert",
    "cesaa_k1": "CESAA − k 1",
    "cesaa_k3": "CESAA − k 3",
    "cesaa_k4": "CESAA − k 4",
}
BASELINES = ("m2m", "ple", "star", "adasparse", "mlp", "shared_bottom")
# The default grid, (heterogeneity, domains, rows per domain), most informative first (the section
# is rewritten after every cell): the dial at 12 domains x 3,000 rows; the number of domains at
# h 1; the rows per domain at h 1 with 3 domains.
CELLS = (
    (1.0, 12, 3000),
    (0.0, 12, 3000),
    (0.5, 12, 3000),
    (1.0, 3, 3000),
    (1.0, 40, 3000),
    (1.0, 3, 1000),
    (1.0, 3, 10000),
    (1.0, 3, 30000),
    (1.0, 3, 100000),
)
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
    that ablation (dict), for the ablations present; ``spread``: model -> seed-to-seed std;
    ``stalled``: model -> how many of its runs stalled (``cesaa.convergence.stalled_text``)."""
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
    stalled = {m: stalled_text([r.get("end") for r in runs if r["model"] == m]) for m in models}
    return {"baseline": baseline, "means": means, "gap": gap, "mechanisms": mechanisms,
            "spread": spread, "stalled": stalled}  # fmt: skip


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
        "stalled runs: CESAA / best baseline",
        *ABLATIONS.values(),
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
                f"{p['stalled'][CESAA]} / {p['stalled'][b]}",
                *(
                    _ci(p["mechanisms"][k]) if k in p["mechanisms"] else "not run"
                    for k in ABLATIONS
                ),
            ]
        )
    return cols, rows


def model_rows(points: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Each model's test AUC per cell, mean ± seed-to-seed std (the noise each comparison sits
    on); CESAA and its ablations first, then the baselines."""
    seen = {m for p in points.values() for m in p["spread"]}
    models = [m for m in (CESAA, *ABLATIONS) if m in seen] + sorted(seen - {CESAA, *ABLATIONS})
    rows = [
        [
            cell,
            *(
                "{:.4f} ± {:.4f}".format(*p["spread"][m]) if m in p["spread"] else "not run"
                for m in models
            ),
        ]
        for cell, p in points.items()
    ]
    return ["cell", *models], rows


def section(
    sec, args, models: tuple[str, ...], points: dict, missing: list[str], chart: str = ""
) -> str:
    """The docs section: how it was run, the map so far (and ``chart``, a markdown image line,
    when given), the spread; the cells still missing."""
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
        "### The map\n\n" + (chart + "\n\n" if chart else "") + _report.table(*map_rows(points)),
        "### Every model's test AUC (mean ± std over seeds)\n\n"
        + _report.table(*model_rows(points)),
    )


def parse_cells(text: str) -> list[tuple[float, int, int]]:
    """``H:DOMAINS:ROWS_PER_DOMAIN,...`` -> cells; ``ValueError`` naming a malformed one."""
    cells = []
    for c in text.split(","):
        try:
            h, d, r = c.split(":")
            cells.append((float(h), int(d), int(r)))
        except ValueError:
            raise ValueError(
                f"--cells: {c!r} is not H:DOMAINS:ROWS_PER_DOMAIN (e.g. 1:3:3000)"
            ) from None
    return cells


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument(
        "--cells",
        default=",".join(f"{h:g}:{d}:{r}" for h, d, r in CELLS),
        help="cells H:DOMAINS:ROWS_PER_DOMAIN, comma-separated, run in this order "
        "(default: %(default)s)",
    )
    p.add_argument("--models", default=",".join([CESAA, *ABLATIONS, *BASELINES]))
    p.add_argument("--seeds", type=int, default=5, help="paired model seeds 0..S-1 per cell")
    p.add_argument(
        "--trials",
        type=int,
        default=0,
        help="Optuna trials per model and cell (default 0: every model at its registry defaults, "
        "an equal budget of none)",
    )
    p.add_argument("--out", default=str(_common.REPO / "runs" / "sweep"))
    p.add_argument(
        "--chart",
        default="img/sweep-map.png",
        help="the map's chart (PNG), relative to the --docs file's folder; '' for none "
        "(default: %(default)s)",
    )
    args, argv = _common.parse(p, argv)
    grid = parse_cells(args.cells)
    models = tuple(m for m in args.models.split(",") if m)
    train = {}
    if args.quick:
        grid, models, args.seeds, args.trials = grid[:1], (CESAA, "mlp"), 2, 0
        train = {"epochs": 1, "min_steps": 0}
    sec = _report.SectionRun(
        "Where routing pays: the heterogeneity sweep", "bench.sweep", argv, args.quick, 1
    )
    points: dict[tuple[float, int, int], dict] = {}
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
        points[(h, d, r)] = cell_map(runs)
        missing = [cell_name(*c) for c in grid if c not in points]
        chart = ""
        if args.chart and args.docs != "-":
            done = _sweep_chart.write_png(points, ABLATIONS, Path(args.docs).parent / args.chart)
            _report.log(f"chart: {done}")
            chart = (
                f"![CESAA − best baseline and CESAA − each ablation along each axis]({args.chart})"
                if done.startswith("wrote")
                else f"(chart {done})"
            )
        named = {cell_name(*c): p for c, p in points.items()}
        _common.write("sweep", args, section(sec, args, models, named, missing, chart))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
