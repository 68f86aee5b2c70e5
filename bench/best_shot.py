"""CESAA's best shot on MovieLens-100k: every model tuned with the same Optuna budget, then trained
with fresh seeds and compared paired by seed (a thin user of ``cesaa bench``).

Models: CESAA (its search space holds every reconstructed choice: gate input, head, fusion, expert
sizes, E, k, shared experts, alpha, plus learning rate, weight decay, embedding width, dropout) and
every baseline of the registry (sparse MoE, MMoE, PLE, STAR, Shared-Bottom, MLP, AdaSparse, PEPNet,
HMoE, M2M) and torch-rechub's MMoE / PLE, each over its own declared space
(``cesaa/models/search_spaces.py``).  Goal: CESAA >= the best tuned baseline by +0.25 % test AUC,
paired by seed.  The section states the result whichever way it falls, CESAA's selected
configuration and every CESAA trial, so that a loss can be traced to a mechanism.

    python -m bench.best_shot --domains age          # 6 trials, 10 seeds, 2 jobs (hours on 2 cores)
    python -m bench.best_shot --domains occupation
    python -m bench.best_shot --quick                # CI smoke run: 2 models, 2 trials, 2 seeds

A stopped run loses nothing: rerun the same command (the studies and finished runs are in ``--out``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import _common, _report
from cesaa.benchmark.leaderboard import Leaderboard
from cesaa.benchmark.protocol import Protocol
from cesaa.benchmark.report import overall_rows, p_text, write_leaderboard
from cesaa.benchmark.runner import BenchSpec, run_benchmark
from cesaa.benchmark.stats import detectable_difference, paired_difference

SETUP = "bench._rechub:register"  # torch-rechub adapters, in every worker
MODELS = (
    "cesaa",
    "sparse_moe",
    "mmoe",
    "ple",
    "star",
    "shared_bottom",
    "mlp",
    "adasparse",
    "pepnet",
    "hmoe",
    "m2m",
    "rechub_mmoe",
    "rechub_ple",
)
GOAL = 0.0025  # CESAA - best baseline, relative to the baseline's test AUC
# CESAA's reconstructed choices, shown per trial
CHOICES = ("num_experts", "top_k", "num_shared", "alpha", "gate_input", "head", "fusion")


def verdict(runs: list[dict], lb: Leaderboard) -> tuple[str, dict]:
    """CESAA minus the best other model (by mean test AUC), paired by seed; and its numbers."""
    auc = {c.model: c for c in lb.table("overall", "auc")}
    others = [c for c in lb.table("overall", "auc") if c.model != "cesaa"]
    if "cesaa" not in auc or not others:
        return "CESAA or every baseline is missing: no comparison.", {}
    best = others[0]
    per_seed = {
        m: {r["seed"]: r["test"]["auc"] for r in runs if r["model"] == m}
        for m in ("cesaa", best.model)
    }
    d = paired_difference(per_seed["cesaa"], per_seed[best.model], lb.level)
    rel = d.mean / best.mean
    floor = detectable_difference(d.std, d.n, alpha=1.0 - lb.level)
    met = rel >= GOAL
    nums = {"baseline": best.model, "diff": d.mean, "rel": rel, "lo": d.ci_low, "hi": d.ci_high}
    nums["detectable"] = floor
    text = (
        f"**Goal (CESAA >= the best tuned baseline by +{GOAL:.2%} test AUC, paired by seed): "
        f"{'met' if met else 'missed'}.**  CESAA {auc['cesaa'].mean:.4f} ± {auc['cesaa'].std:.4f} "
        f"vs {best.model} {best.mean:.4f} ± {best.std:.4f}: CESAA − {best.model} = "
        f"{d.mean:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] ({lb.level:.0%} t interval over "
        f"{d.n} seeds, paired t-test p {p_text(d.p_value)}), {rel:+.2%} of the baseline's AUC; "
        f"the smallest difference these seeds detect at 80 % power: {floor:.4f}."
    )
    if d.ci_low <= 0 <= d.ci_high:
        text += (
            "  The interval includes 0: at this number of seeds CESAA and "
            f"{best.model} cannot be told apart."
        )
    summary = {m.model: m for m in lb.models}
    stalled = [
        f"{m} stalled in {summary[m].stalled}"
        for m in ("cesaa", best.model)
        if sum(v not in (None, "converged") for v in summary[m].ends)
    ]
    if stalled:
        text += (
            f"  **Stalled runs: {'; '.join(stalled)}**: a stalled run (a plateau, or the epoch "
            "cap while still improving) measures the training, not the architecture."
        )
    return text, nums


def per_domain(runs: list[dict], baseline: str, counts: dict[str, int], level: float) -> str:
    """CESAA minus ``baseline`` (the best baseline overall) in each domain, paired by seed; domains
    by test rows, most first; and whether the difference follows the domain's size."""
    from scipy.stats import spearmanr

    domains = list(runs[0].get("domains") or [])
    if len(domains) < 2:
        return ""
    rows, diffs, sizes = [], [], []
    ahead = behind = sure_ahead = sure_behind = 0
    for d in sorted(domains, key=lambda d: -counts.get(d, 0)):
        per_seed = {
            m: {r["seed"]: r["test"][f"auc/{d}"] for r in runs if r["model"] == m}
            for m in ("cesaa", baseline)
        }
        diff = paired_difference(per_seed["cesaa"], per_seed[baseline], level)
        ahead += diff.mean > 0
        behind += diff.mean < 0
        sure_ahead += diff.ci_low > 0
        sure_behind += diff.ci_high < 0
        diffs.append(diff.mean)
        sizes.append(counts.get(d, 0))
        mean = {m: sum(v.values()) / len(v) for m, v in per_seed.items()}
        rows.append(
            [
                d,
                f"{counts.get(d, 0):,}",
                _report.fmt(mean["cesaa"]),
                _report.fmt(mean[baseline]),
                f"{diff.mean:+.4f} [{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]",
            ]
        )
    rho = spearmanr(sizes, diffs).statistic
    summary = (
        f"CESAA − {baseline} per domain (test AUC within the domain, paired by seed, "
        f"{level:.0%} t interval, not corrected for the {len(domains)} comparisons): CESAA is "
        f"ahead in {ahead} of {len(domains)} domains ({sure_ahead} with the interval above 0) and "
        f"behind in {behind} ({sure_behind} with the interval below 0); Spearman correlation of "
        f"the difference with the domain's test rows: {rho:+.2f}."
    )
    table = _report.table(["domain", "test rows", "CESAA AUC", f"{baseline} AUC", "Δ [CI]"], rows)
    return f"### Per domain: CESAA vs {baseline}\n\n{summary}\n\n{table}"


def cesaa_trials(spec: BenchSpec) -> str:
    """Every trained CESAA trial: its reconstructed choices and its best validation AUC."""
    import optuna
    from optuna.trial import TrialState

    from cesaa.benchmark.tuning import _counts, open_storage

    study = optuna.load_study(
        study_name=spec.study("cesaa"), storage=open_storage(spec.storage_url)
    )
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not _counts(t) or "params" not in t.user_attrs:
            continue
        p = t.user_attrs["params"]
        best = max((v for v in t.intermediate_values.values()), default=float("nan"))
        rows.append(
            [
                t.number,
                {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(
                    t.state, t.state.name.lower()
                ),
                _report.fmt(t.value if t.value is not None else best),
                t.user_attrs.get("epochs", ""),
                *[p.get(c, "") for c in CHOICES],
                f"{p.get('lr', float('nan')):.2g}",
                p.get("embed_dim", ""),
            ]
        )
    return "### Every CESAA trial (validation AUC; pruned: the last reported epoch's best)\n\n" + (
        _report.table(
            [
                "trial",
                "state",
                "val AUC",
                "epochs",
                "E",
                "k",
                "shared",
                "alpha",
                "gate input",
                "head",
                "fusion",
                "lr",
                "embed",
            ],  # fmt: skip
            rows,
        )
    )


def _published(folder: str) -> str:
    """``folder`` relative to the repository when it lies inside it (as the docs link it)."""
    path = Path(folder).resolve()
    try:
        return str(path.relative_to(_common.REPO.resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--domains", default="age", choices=("age", "occupation"))
    p.add_argument("--trials", type=int, default=6, help="Optuna trials per model (default 6)")
    p.add_argument("--seeds", type=int, default=10, help="final seeds 0..N-1 (default 10)")
    p.add_argument("--epochs", type=int, default=0, help="epoch cap (0: TrainConfig's)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    p.add_argument("--out", default="", help="benchmark folder (default runs/best-shot-DOMAINS)")
    p.add_argument(
        "--publish",
        default="",
        help="also write the leaderboard files and runs.json here (e.g. docs/results/"
        "best-shot-DOMAINS, a folder kept in the repository), and point the section at it",
    )
    args, argv = _common.parse(p, argv)
    max_train = 0
    tmp = None
    if args.quick:
        args.trials, args.seeds, args.epochs, max_train = 2, 2, 1, 4000
        args.models = "cesaa,mlp"
        tmp = tempfile.TemporaryDirectory()
        args.out = tmp.name
    out = args.out or str(_common.REPO / "runs" / f"best-shot-{args.domains}")
    source = _common.ml100k_source()
    if args.domains != "age":
        source += f",domains={args.domains}"
    models = tuple(m for m in args.models.split(",") if m)
    notes = []
    missing = _common.rechub_status()
    if missing:
        models = tuple(m for m in models if not m.startswith("rechub_"))
        notes.append(f"torch-rechub rows skipped: {missing}.")
    train = {"epochs": args.epochs} if args.epochs else {}
    if args.quick:
        train["min_steps"] = 0
    sec = _report.SectionRun(
        f"CESAA's best shot: MovieLens-100k, {args.domains} domains, every model tuned",
        "bench.best_shot",
        argv,
        args.quick,
        1,
    )
    spec = BenchSpec(
        source,
        models,
        out,
        seeds=args.seeds,
        trials=args.trials,
        jobs=args.jobs,
        protocol=Protocol(train=train, max_train=max_train),
        setup=SETUP,
        command=_report.command("bench.best_shot", argv),
        machine=_report.machine(1),
    )
    lb = run_benchmark(spec, _report.log)
    assert lb is not None
    runs = json.loads((Path(out) / "runs.json").read_text(encoding="utf-8"))
    text, nums = verdict(runs, lb)
    domains_text = ""
    if nums:
        from cesaa.benchmark.protocol import load_source

        data = load_source(source, spec.protocol.split_seed, split=spec.protocol.split)
        counts = {
            name: int((data.test.domain == i).sum()) for i, name in enumerate(data.domain_names)
        }
        domains_text = per_domain(runs, nums["baseline"], counts, lb.level)
    cols, rows = overall_rows(lb)
    where = f"`{out}`"
    if args.publish:
        write_leaderboard(lb, args.publish, runs)
        where = f"`{_published(args.publish)}` (written from `{out}`)"
    notes.insert(
        0,
        f"Data: {lb.meta['data']}.  Protocol: {lb.meta['protocol']}.  Budget: "
        f"{lb.meta['budget']}.  {lb.meta['finished']}.  Δ: paired by seed against the best "
        f"model, {lb.level:.0%} t interval; p: paired t-test, Holm-corrected.  The full "
        f"leaderboard (per domain, GAUC, logloss; markdown, CSV, JSON, HTML) and every final run's "
        f"record (`runs.json`) are in {where}.",
    )
    body = sec.body(
        "\n\n".join(notes),
        "### Overall (test split)\n\n" + _report.table(cols[1:], [r[1:] for r in rows]),
        text,
        domains_text,
        cesaa_trials(spec),
    )
    _common.write(f"best_shot_{args.domains}", args, body)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
