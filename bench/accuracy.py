"""Ranking accuracy on MovieLens-100k (age domains): CESAA, its ablations, our baselines (incl.
AdaSparse, PEPNet, HMoE, M2M) and torch-rechub's MMoE / PLE, side by side, at their defaults (tuned
comparisons: ``cesaa bench``, ``bench.best_shot``).

Protocol (Scenario-Wise Rec benchmark): one random 8:1:1 split (split seed 0, the same for every
model and seed), embedding dim 16, Adam lr 1e-3, weight decay 1e-5, batch 1024, early stopping on
validation AUC with patience 4 (at most ``--epochs`` epochs, never before ``TrainConfig.min_steps``
optimizer steps), the best epoch's weights evaluated on test.  Model seeds 0..S-1 are shared by all
models, so differences are paired.  Runs, statistics and tables come from ``cesaa.benchmark``.

    python -m bench.accuracy            # full: 5 seeds, every model (about 10 min on 2 cores)
    python -m bench.accuracy --quick    # CI smoke run: 2 seeds, 1 epoch, 8k training rows
"""

from __future__ import annotations

from bench import _common, _report
from cesaa.benchmark.leaderboard import Leaderboard, build_leaderboard
from cesaa.benchmark.protocol import Protocol, RunTask, load_source, run_task
from cesaa.benchmark.report import TITLES, domain_rows, overall_rows
from cesaa.benchmark.runner import parallel_map

SECTION = "accuracy"
SETUP = "bench._rechub:register"  # torch-rechub adapters, in every worker


def variants(num_experts: int, top_k: int) -> list[tuple[str, str, dict]]:
    """(label, registry name, ModelConfig overrides); rows equal to the defaults are left out."""
    rows: list[tuple[str, str, dict]] = [
        (f"CESAA (defaults: E={num_experts}, k={top_k})", "cesaa", {}),
        ("CESAA without shared expert", "cesaa", {"num_shared": 0}),
        ("CESAA, alpha = 0 (no MI loss)", "cesaa", {"alpha": 0.0}),
    ]
    rows += [
        (f"CESAA, k = {k}", "cesaa", {"top_k": k})
        for k in (1, 2, 4)
        if k != top_k and k <= num_experts
    ]
    if top_k != num_experts:
        rows.append((f"CESAA, dense gate (k = E = {num_experts})", "cesaa", {"top_k": num_experts}))
    rows += [
        ("Sparse MoE (no shared, alpha 0)", "sparse_moe", {}),
        ("MMoE", "mmoe", {}),
        ("PLE", "ple", {}),
        ("STAR", "star", {}),
        ("Shared-Bottom", "shared_bottom", {}),
        ("MLP + domain feature", "mlp", {}),
        ("AdaSparse", "adasparse", {}),
        ("PEPNet", "pepnet", {}),
        ("HMoE", "hmoe", {}),
        ("M2M", "m2m", {}),
        ("torch-rechub MMoE", "rechub_mmoe", {}),
        ("torch-rechub PLE", "rechub_ple", {}),
    ]
    return rows


def protocol(epochs: int, max_train: int) -> Protocol:
    train = {"epochs": epochs, "batch_size": 1024, "lr": 1e-3, "weight_decay": 1e-5, "patience": 4}
    return Protocol(train=train, device="cpu", max_train=max_train)


def run_labelled(task: dict) -> dict:
    """``run_task`` with the row's label as the leaderboard's model name."""
    rec = run_task({k: v for k, v in task.items() if k != "label"})
    rec["registry_model"], rec["model"] = rec["model"], task["label"]
    rec["summary"] = f"test auc {rec['test']['auc']:.4f}, {rec['epochs']} epochs"
    return rec


def tasks_for(rows: list[tuple[str, str, dict]], seeds: int, proto: Protocol, source: str) -> list:
    return [
        {**RunTask(source, model, s, overrides, proto, SETUP).to_dict(), "label": label}
        for s in range(seeds)
        for label, model, overrides in rows
    ]


def tables(lb: Leaderboard) -> str:
    cols, rows = overall_rows(lb)
    parts = ["### Overall (test split)\n\n" + _report.table(cols[1:-1], [r[1:-1] for r in rows])]
    for metric, title in TITLES.items():
        parts.append(f"### Per-domain test {title}\n\n" + _report.table(*domain_rows(lb, metric)))
    return "\n\n".join(parts)


def comparisons(lb: Leaderboard) -> str:
    auc = {c.model: c for c in lb.table("overall", "auc")}
    lines = []
    peer_rows = []
    for ours, theirs in (("MMoE", "torch-rechub MMoE"), ("PLE", "torch-rechub PLE")):
        if ours in auc and theirs in auc:
            ma, mb = auc[ours].mean, auc[theirs].mean
            rel = 100 * (ma - mb) / mb
            peer_rows.append(
                [
                    ours,
                    _report.fmt(ma),
                    _report.fmt(mb),
                    f"{rel:+.2f}%",
                    "yes" if abs(rel) <= 0.5 else "no",
                ]
            )
    if peer_rows:
        lines.append(
            "### Our baselines vs torch-rechub (goal: within ±0.5% test AUC)\n\n"
            + _report.table(
                ["model", "ours AUC", "torch-rechub AUC", "ours vs theirs", "within ±0.5%"],
                peer_rows,
            )
        )
    best = lb.table("overall", "auc")[0]
    summary = [f"Best mean test AUC: {best.model} ({best.mean:.4f} ± {best.std:.4f})."]
    cesaa = next((m for m in auc if m.startswith("CESAA (defaults")), None)
    others = [c for c in lb.table("overall", "auc") if not c.model.startswith("CESAA")]
    if cesaa is not None and others:
        c, o = auc[cesaa], others[0]
        if o.is_best:
            d = (
                f"{c.diff_mean:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], Holm p {c.p_holm:.3f}; "
                f"detectable at 80 % power: {c.detectable:.4f}"
            )
        elif c.is_best:
            d = (
                f"{-o.diff_mean:+.4f} [{-o.ci_high:+.4f}, {-o.ci_low:+.4f}], Holm p "
                f"{o.p_holm:.3f}; detectable at 80 % power: {o.detectable:.4f}"
            )
        else:
            d = None
        if d is not None:
            summary.append(
                f"CESAA (defaults) minus the best non-CESAA model ({o.model}), test AUC paired by "
                f"seed, {lb.level:.0%} interval: {d}."
            )
    lines.insert(0, "### Summary\n\n" + "  ".join(summary))
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30, help="epoch cap (early stopping decides)")
    p.add_argument("--models", default="", help="comma-separated registry names to keep")
    p.add_argument("--max-train", type=int, default=0, help="use only the first N training rows")
    p.add_argument("--json", default="", help="also write every run's metrics to this file")
    args, argv = _common.parse(p, argv)
    if args.quick:
        args.seeds, args.epochs, args.max_train = 2, 1, args.max_train or 8000
    sec = _report.SectionRun(
        "Ranking accuracy: MovieLens-100k, age domains",
        "bench.accuracy",
        argv,
        args.quick,
        1 if args.jobs > 1 else None,
    )
    source = _common.ml100k_source()
    from cesaa.config import TrainConfig
    from cesaa.models import default_config

    d = default_config("cesaa")
    rows = variants(d.num_experts, d.top_k)
    missing = _common.rechub_status()
    notes = []
    if missing:
        rows = [r for r in rows if not r[1].startswith("rechub_")]
        notes.append(f"torch-rechub rows skipped: {missing}.")
    if args.models:
        keep = set(args.models.split(","))
        rows = [r for r in rows if r[1] in keep]
    proto = protocol(args.epochs, args.max_train)
    results = parallel_map(
        run_labelled,
        tasks_for(rows, args.seeds, proto, source),
        args.jobs,
        SETUP,
        _report.log,
        label=lambda t: f"{t['label']} seed {t['seed']}",
    )
    if args.json:
        import json

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    lb = build_leaderboard(results)
    data = load_source(source, 0, args.max_train)
    sizes = {name: len(getattr(data, name)) for name in ("train", "val", "test")}
    notes.insert(
        0,
        f"MovieLens-100k, domains = user age groups {', '.join(lb.domains)}; label rating > 3; "
        f"random 8:1:1 split with seed 0 ({sizes['train']} / {sizes['val']} / {sizes['test']} "
        f"rows); features user_id, item_id, gender, occupation, zip1, year (embedding dim 16) + "
        f"19 genre flags.  Adam lr 1e-3, weight decay 1e-5, batch 1024, early stopping on "
        f"validation AUC (patience 4, at most {args.epochs} epochs, not before "
        f"{TrainConfig().min_steps} optimizer steps); test metrics of the best epoch; mean ± "
        f"sample std over {args.seeds} model seeds (0..{args.seeds - 1}), {args.jobs} run(s) in "
        f"parallel.  Δ: paired by seed against the best row, {lb.level:.0%} t interval; p: paired "
        f"t-test, Holm-corrected.  GAUC weights users by impressions.  CESAA defaults: "
        f"E={d.num_experts}, k={d.top_k}, shared={d.num_shared}, alpha={d.alpha}, "
        f"fusion={d.fusion}, head={d.head}, gate_input={d.gate_input}.",
    )
    _common.write(SECTION, args, sec.body("\n\n".join(notes), tables(lb), comparisons(lb)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
