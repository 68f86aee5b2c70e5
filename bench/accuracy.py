"""Ranking accuracy on MovieLens-100k (age domains): CESAA, its ablations, our baselines and
torch-rechub's MMoE / PLE, side by side.

Protocol (Scenario-Wise Rec benchmark): one random 8:1:1 split (split seed 0, the same for every
model and seed), embedding dim 16, Adam lr 1e-3, weight decay 1e-5, batch 1024, early stopping on
validation AUC with patience 4 (at most ``--epochs`` epochs), the best epoch's weights evaluated on
test.  Model seeds 0..S-1 (initialization, shuffling, gate noise) are shared by all models, so
differences are paired.  Reports mean ± sample std over seeds of overall and per-domain test AUC,
GAUC and logloss.

    python -m bench.accuracy            # full: 5 seeds, every model (about 10 min on 2 cores)
    python -m bench.accuracy --quick    # CI smoke run: 2 seeds, 1 epoch, 8k training rows
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from bench import _common, _report

SECTION = "accuracy"
_DATA: dict[tuple, Any] = {}


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
        ("torch-rechub MMoE", "rechub_mmoe", {}),
        ("torch-rechub PLE", "rechub_ple", {}),
    ]
    return rows


def _data(source: str, max_train: int) -> Any:
    key = (source, max_train)
    if key not in _DATA:
        from cesaa.data import load_data

        data = load_data(source, seed=0)
        if max_train and len(data.train) > max_train:
            import torch

            data = dataclasses.replace(data, train=data.train.subset(torch.arange(max_train)))
        _DATA[key] = data
    return _DATA[key]


def run_one(task: dict) -> dict:
    """Train one (model, overrides, seed) and return its test / validation metrics."""
    from bench import _rechub

    _rechub.register()
    from cesaa.config import TrainConfig
    from cesaa.models import default_config
    from cesaa.train import train

    data = _data(task["source"], task["max_train"])
    cfg = default_config(task["model"], **task["overrides"])
    tcfg = TrainConfig(
        epochs=task["epochs"],
        batch_size=1024,
        lr=1e-3,
        weight_decay=1e-5,
        patience=4,
        monitor=task.get("monitor", "auc"),
        seed=task["seed"],
        device="cpu",
    )
    t0 = time.perf_counter()
    res = train(cfg, tcfg, data)
    elapsed = time.perf_counter() - t0
    test = {k: float(v) for k, v in res.test_metrics.items()}
    val = {k: float(v) for k, v in res.val_metrics.items()}
    return {
        **{k: task[k] for k in ("label", "model", "seed")},
        "overrides": task["overrides"],
        "test": test,
        "val": val,
        "best_epoch": res.best_epoch,
        "epochs": len(res.history),
        "seconds": elapsed,
        "summary": f"test auc {test['auc']:.4f}, val auc {val['auc']:.4f}, "
        f"{len(res.history)} epochs",
    }


def tasks_for(rows: list[tuple[str, str, dict]], seeds: int, args: Any, source: str) -> list[dict]:
    return [
        {
            "label": label,
            "model": model,
            "overrides": overrides,
            "seed": s,
            "source": source,
            "epochs": args.epochs,
            "max_train": args.max_train,
        }
        for s in range(seeds)
        for label, model, overrides in rows
    ]


def _col(runs: list[dict], part: str, key: str) -> list[float]:
    return [r[part].get(key, math.nan) for r in runs]


def tables(results: list[dict], domains: tuple[str, ...]) -> str:
    by = _common.group(results, "label")
    parts = []
    rows = []
    for label, runs in by.items():
        rows.append(
            [
                label,
                _report.pm(_col(runs, "test", "auc")),
                _report.pm(_col(runs, "test", "gauc")),
                _report.pm(_col(runs, "test", "logloss")),
                _report.pm(_col(runs, "val", "auc")),
                _report.pm([r["best_epoch"] for r in runs], 1),
                _report.pm([r["seconds"] for r in runs], 1),
            ]
        )
    parts.append(
        "### Overall (test split)\n\n"
        + _report.table(
            ["model", "AUC", "GAUC", "logloss", "val AUC", "best epoch", "train s"], rows
        )
    )
    for metric, title in (("auc", "AUC"), ("gauc", "GAUC"), ("logloss", "logloss")):
        rows = [
            [label] + [_report.pm(_col(runs, "test", f"{metric}/{d}")) for d in domains]
            for label, runs in by.items()
        ]
        parts.append(f"### Per-domain test {title}\n\n" + _report.table(["model", *domains], rows))
    return "\n\n".join(parts)


def _paired(a: list[dict], b: list[dict], key: str = "auc") -> tuple[float, float, int]:
    """Mean and std of the per-seed difference a - b of test ``key`` (paired by seed)."""
    sa = {r["seed"]: r["test"][key] for r in a}
    sb = {r["seed"]: r["test"][key] for r in b}
    d = [sa[s] - sb[s] for s in sorted(set(sa) & set(sb))]
    m, s = _report.mean_std(d)
    return m, s, len(d)


def comparisons(results: list[dict]) -> str:
    by = _common.group(results, "label")
    labels = {r["model"]: r["label"] for r in results if not r["overrides"]}
    lines = []
    peer_rows = []
    for ours, theirs, name in (("mmoe", "rechub_mmoe", "MMoE"), ("ple", "rechub_ple", "PLE")):
        if ours in labels and theirs in labels:
            a, b = by[labels[ours]], by[labels[theirs]]
            ma, _ = _report.mean_std(_col(a, "test", "auc"))
            mb, _ = _report.mean_std(_col(b, "test", "auc"))
            rel = 100 * (ma - mb) / mb
            peer_rows.append(
                [
                    name,
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
    cesaa = next((lab for lab, runs in by.items() if lab.startswith("CESAA (defaults")), None)
    if cesaa is not None:
        rows = []
        for label, runs in by.items():
            if label == cesaa:
                continue
            m, s, n = _paired(by[cesaa], runs)
            rows.append([label, f"{m:+.4f} ± {s:.4f}", n])
        lines.append(
            "### CESAA (defaults) minus each other model, test AUC, paired by seed\n\n"
            "Positive: CESAA better.  With 5 seeds a difference smaller than about one std is "
            "not evidence either way.\n\n"
            + _report.table(["other model", "AUC difference (mean ± std)", "seeds"], rows)
        )
    ranked = sorted(by, key=lambda lab: -_report.mean_std(_col(by[lab], "test", "auc"))[0])
    summary = [
        f"Best mean test AUC: {ranked[0]} ({_report.pm(_col(by[ranked[0]], 'test', 'auc'))})."
    ]
    if cesaa is not None:
        others = [lab for lab in ranked if not lab.startswith("CESAA")]
        if others:
            m, s, n = _paired(by[cesaa], by[others[0]])
            se = s / math.sqrt(n) if n > 1 else math.inf
            verdict = "better" if m > 2 * se else "worse" if m < -2 * se else "not distinguishable"
            summary.append(
                f"CESAA (defaults) vs the best non-CESAA model ({others[0]}): {m:+.4f} ± {se:.4f} "
                f"test AUC (paired mean ± standard error): {verdict} at two standard errors."
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
    # before the run, so that its load average is the one at the start
    machine = _report.machine(1 if args.jobs > 1 else None)
    t0 = time.perf_counter()
    source = _common.ml100k_source()
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
    results = _common.run_all(
        run_one,
        tasks_for(rows, args.seeds, args, source),
        args.jobs,
        label=lambda t: f"{t['label']} seed {t['seed']}",
    )
    if args.json:
        import json

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    data = _data(source, args.max_train)
    domains = tuple(data.domain_names)
    sizes = {name: len(getattr(data, name)) for name in ("train", "val", "test")}
    notes.insert(
        0,
        f"MovieLens-100k, domains = user age groups {', '.join(domains)}; label rating > 3; "
        f"random 8:1:1 split with seed 0 ({sizes['train']} / {sizes['val']} / {sizes['test']} "
        f"rows); features user_id, item_id, gender, occupation, zip1, year (embedding dim 16) + "
        f"19 genre flags.  Adam lr 1e-3, weight decay 1e-5, batch 1024, early stopping on "
        f"validation AUC (patience 4, at most {args.epochs} epochs); test metrics of the best "
        f"epoch; mean ± sample std over {args.seeds} model seeds (0..{args.seeds - 1}), "
        f"{args.jobs} run(s) in parallel.  GAUC weights users by impressions.  CESAA defaults: "
        f"E={d.num_experts}, k={d.top_k}, shared={d.num_shared}, alpha={d.alpha}, "
        f"fusion={d.fusion}, head={d.head}, gate_input={d.gate_input}.",
    )
    if args.quick:
        notes.append("**Quick mode: a smoke run, these numbers mean nothing.**")
    body = "\n\n".join(
        [
            _report.header(
                "Ranking accuracy: MovieLens-100k, age domains",
                _report.command("bench.accuracy", argv),
                machine,
                time.perf_counter() - t0,
                "\n\n".join(notes),
            ),
            tables(results, domains),
            comparisons(results),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
