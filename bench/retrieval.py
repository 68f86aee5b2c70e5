"""Two-tower retrieval on MovieLens-100k: user tower CESAA / MMoE / MLP, item tower MLP, dot
product, in-batch softmax.  Recall@10 and Recall@50 against the full item set, overall and per
domain, mean ± std over seeds, next to the most-popular-items baseline.

    python -m bench.retrieval            # full: 5 seeds (about 3 min on 2 cores)
    python -m bench.retrieval --quick    # CI smoke run
"""

from __future__ import annotations

import time
from typing import Any

from bench import _common, _report

SECTION = "retrieval"
TOWERS = (("CESAA user tower", "cesaa"), ("MMoE user tower", "mmoe"), ("MLP user tower", "mlp"))
_CACHE: dict[str, Any] = {}


def _setup(source: str, max_train: int = 0) -> tuple[Any, tuple]:
    key = f"{source}|{max_train}"
    if key not in _CACHE:
        import dataclasses

        import torch

        from cesaa.data import load_data
        from cesaa.retrieval import EvalSet, build_catalog

        data = load_data(source, seed=0)
        if max_train and len(data.train) > max_train:
            data = dataclasses.replace(data, train=data.train.subset(torch.arange(max_train)))
        catalog = build_catalog(data.train, data.val, data.test)
        evs = (EvalSet.build(data, "val", catalog), EvalSet.build(data, "test", catalog))
        _CACHE[key] = (data, evs)
    return _CACHE[key]


def run_one(task: dict) -> dict:
    from cesaa.models import default_config
    from cesaa.retrieval import RetrievalConfig, train_retrieval

    data, evs = _setup(task["source"], task["max_train"])
    cfg = RetrievalConfig(epochs=task["epochs"], seed=task["seed"], device="cpu")
    t0 = time.perf_counter()
    res = train_retrieval(default_config(task["tower"]), cfg, data, eval_sets=evs)
    test = res.test_metrics
    return {
        "label": task["label"],
        "seed": task["seed"],
        "test": test,
        "val": res.val_metrics,
        "best_epoch": res.best_epoch,
        "seconds": time.perf_counter() - t0,
        "summary": f"recall@10 {test['recall@10']:.4f} recall@50 {test['recall@50']:.4f}",
    }


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    _common.add_jobs(p)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-train", type=int, default=0, help="use only the first N training rows")
    args, argv = _common.parse(p, argv)
    if args.quick:
        args.seeds, args.epochs, args.max_train = 2, 1, args.max_train or 8000
    # before the run, so that its load average is the one at the start
    machine = _report.machine(1 if args.jobs > 1 else None)
    t0 = time.perf_counter()
    source = _common.ml100k_source()
    tasks = [
        {
            "label": label,
            "tower": tower,
            "seed": s,
            "source": source,
            "epochs": args.epochs,
            "max_train": args.max_train,
        }
        for s in range(args.seeds)
        for label, tower in TOWERS
    ]
    results = _common.run_all(
        run_one, tasks, args.jobs, label=lambda t: f"{t['label']} seed {t['seed']}"
    )
    from cesaa.retrieval import RetrievalConfig, popularity_scores, recall_report

    data, (val_set, test_set) = _setup(source, args.max_train)
    pop = recall_report(popularity_scores(data.train, test_set.catalog), test_set, (10, 50))
    pop_row = {"label": "Most popular (train positives)", "test": pop, "seed": 0}
    domains = tuple(data.domain_names)
    rows = []
    groups = {**_common.group(results, "label"), pop_row["label"]: [pop_row]}
    for label, runs in groups.items():
        row = [label]
        for k in (10, 50):
            row.append(_report.pm([r["test"][f"recall@{k}"] for r in runs]))
        for k in (10, 50):
            row += [_report.pm([r["test"][f"recall@{k}/{d}"] for r in runs]) for d in domains]
        row.append(_report.pm([r["best_epoch"] for r in runs if "best_epoch" in r], 1))
        rows.append(row)
    trained = _common.group(results, "label")
    means = {
        lab: _report.mean_std([r["test"]["recall@10"] for r in runs])[0]
        for lab, runs in trained.items()
    }
    best = max(means, key=means.get)
    summary = f"Best mean test Recall@10: {best} ({means[best]:.4f})"
    if "CESAA user tower" in means and best != "CESAA user tower":
        summary += f"; CESAA user tower {means['CESAA user tower']:.4f}"
    summary += f"; most popular items {pop['recall@10']:.4f}."
    cols = ["model", "Recall@10", "Recall@50"]
    cols += [f"R@10 {d}" for d in domains] + [f"R@50 {d}" for d in domains] + ["best epoch"]
    rc = RetrievalConfig()
    queries = ", ".join(
        f"{d} {test_set.ground_truth[test_set.domain.numpy() == i].shape[0]}"
        for i, d in enumerate(domains)
    )
    notes = (
        f"MovieLens-100k, the accuracy section's split (random 8:1:1, seed 0).  Positives = "
        f"label 1 (rating > 3).  User tower: user_id, gender, occupation, zip1 + the domain "
        f"(age group); item tower: item_id, year, 19 genre flags.  Both towers end in a "
        f"{rc.out_dim}-d L2-normalized embedding; in-batch softmax with temperature "
        f"{rc.temperature}, logQ correction (log item frequency among training positives) and "
        f"same-item masking, batch {rc.batch_size}, Adam lr {rc.lr}, weight decay "
        f"{rc.weight_decay}; early stopping on validation Recall@10 (patience {rc.patience}, at "
        f"most {args.epochs} epochs).  Test: Recall@K of each user's test positives against all "
        f"{len(test_set.catalog)} items, excluding the user's training and validation items; "
        f"{test_set.num_queries} test users ({queries}).  Mean ± std over seeds "
        f"0..{args.seeds - 1} (the popularity baseline is deterministic)."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Retrieval: two-tower on MovieLens-100k",
                _report.command("bench.retrieval", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(cols, rows),
            summary,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
