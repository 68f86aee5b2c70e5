"""Training and inference throughput (rows/s) on MovieLens-100k: every model in our code vs
torch-rechub's MMoE and PLE with the same dimensions, measured in one run, alternating.

Every model gets the same batches of the training split (batch 1024; a training step = slicing
the in-memory batch, forward, BCE, backward, an Adam step with the trainer's optimizer
``cesaa.train.make_optimizer``, for every model).  A round runs ``--steps`` steps of every model,
in an order that rotates every round, so load changes on a shared machine hit all models alike;
a process's rows/s is its median over rounds.  Inference: eval mode, no gradient, batches of 8192
over the training split.

The rounds run in ``--processes`` fresh processes, one after the other: on a shared virtual
machine the same script's speed changes from one process to the next (the published ranges show
by how much), so one process's ratio is one draw.  Ratios are ours / theirs from each process's
medians; the table gives their median over processes and their range, and a goal is met when the
median is.

    python -m bench.throughput            # full (about 3 min on 2 cores)
    python -m bench.throughput --quick    # CI smoke run
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench import _allocator_cmp, _common, _e2e, _report
from bench._speedup import ratio_cell, summarize, verdicts
from bench._timing import build, infer, train_steps

SECTION = "throughput"
MODELS = (
    ("CESAA", "cesaa"),
    ("MMoE (ours)", "mmoe"),
    ("PLE (ours)", "ple"),
    ("STAR", "star"),
    ("Shared-Bottom", "shared_bottom"),
    ("MLP", "mlp"),
    ("torch-rechub MMoE", "rechub_mmoe"),
    ("torch-rechub PLE", "rechub_ple"),
)
# (ours, theirs, training goal, inference goal)
GOALS = (
    ("MMoE (ours)", "torch-rechub MMoE", 2.0, 1.5),
    ("PLE (ours)", "torch-rechub PLE", 2.0, 1.5),
    ("CESAA", "torch-rechub MMoE", 1.5, 1.5),
)


@dataclass(frozen=True)
class Plan:
    """What one measuring process runs: ``models`` as (label, registry name) pairs."""

    models: tuple[tuple[str, str], ...]
    rounds: int
    steps: int
    batch: int
    eval_batch: int
    warmup: int
    quick: bool


def measure(plan: Plan) -> dict:
    """One process's rounds: ``{"train": {label: [rows/s per round]}, "infer": {...},
    "params": {label: parameter count}}``."""
    from cesaa.data import load_data

    if any(name.startswith("rechub_") for _, name in plan.models):
        _common.rechub_status()  # registers the adapters in this process
    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    if plan.quick:
        table = table.subset(torch.arange(min(len(table), 4 * plan.eval_batch)))
    built = {label: build(name, data.spec) for label, name in plan.models}
    gen = torch.Generator().manual_seed(0)
    n = len(table)

    def batches(k: int) -> list[torch.Tensor]:
        return [torch.randint(n, (plan.batch,), generator=gen) for _ in range(k)]

    for m, opt in built.values():  # warm-up: allocator, first-call overheads
        train_steps(m, opt, table, batches(plan.warmup))
        infer(m, table, plan.eval_batch)
    labels = list(built)
    train_rps: dict[str, list[float]] = {label: [] for label in labels}
    infer_rps: dict[str, list[float]] = {label: [] for label in labels}
    # CESAA's inference again with its sparse pairs in one pass (before or after the others,
    # alternately): what the slices of cesaa.experts.INFERENCE_PAIRS buy inside the model
    one_pass: list[float] | None = [] if "CESAA" in built else None
    for r in range(plan.rounds):
        shift = r % len(labels)
        order = labels[shift:] + labels[:shift]
        round_batches = batches(plan.steps)  # the same rows for every model in this round
        for label in order:
            m, opt = built[label]
            seconds = train_steps(m, opt, table, round_batches)
            train_rps[label].append(plan.steps * plan.batch / seconds)
        if one_pass is not None and r % 2 == 0:
            one_pass.append(_one_pass_rps(built["CESAA"][0], table, plan.eval_batch))
        for label in order:
            infer_rps[label].append(n / infer(built[label][0], table, plan.eval_batch))
        if one_pass is not None and r % 2 == 1:
            one_pass.append(_one_pass_rps(built["CESAA"][0], table, plan.eval_batch))
        _report.log(
            f"round {r + 1}/{plan.rounds}: "
            + ", ".join(f"{lab} {train_rps[lab][-1]:,.0f}" for lab in labels)
        )
    params = {label: sum(p.numel() for p in m.parameters()) for label, (m, _) in built.items()}
    return {
        "train": train_rps,
        "infer": infer_rps,
        "params": params,
        "rows": n,
        "cesaa_one_pass": one_pass,
    }


def _one_pass_rps(model, table, batch: int) -> float:
    """Inference rows/s of a CESAA model with every (row, expert) pair in one slice."""
    from cesaa import experts

    saved = experts.INFERENCE_PAIRS
    experts.INFERENCE_PAIRS = 1 << 62
    try:
        return len(table) / infer(model, table, batch)
    finally:
        experts.INFERENCE_PAIRS = saved


def measure_in_processes(
    plan: Plan, processes: int, threads: int, allocator_choice: str, spawn: bool = False
) -> list[dict]:
    """``measure(plan)`` in ``processes`` fresh spawned processes, one after the other (none
    competes with another), each with ``threads`` torch threads and ``allocator_choice``
    (``--allocator``); one process and not ``spawn``: in this process (whose allocator is set)."""
    if processes <= 1 and not spawn:
        return [measure(plan)]
    out = []
    for i in range(processes):
        out.append(
            _common.in_fresh_process(
                measure, plan, threads=threads, allocator_choice=allocator_choice
            )
        )
        _report.log(f"process {i + 1}/{processes} ({allocator_choice} allocator) done")
    return out


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9, help="rounds per process")
    p.add_argument("--steps", type=int, default=20, help="training steps per model per round")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--eval-batch", type=int, default=8192)
    p.add_argument(
        "--processes",
        type=int,
        default=3,
        help="fresh processes measuring in turn (default: %(default)s; --quick: 1)",
    )
    p.add_argument(
        "--compare-allocator",
        action="store_true",
        help="then measure as many processes with the other --allocator setting and add a table",
    )
    p.add_argument(
        "--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end training runs"
    )
    args, argv = _common.parse(p, argv)
    if args.processes < 1:
        p.error(f"--processes {args.processes} must be >= 1")
    warmup = 3
    if args.quick:
        args.rounds, args.steps, warmup, args.processes = 2, 2, 1, 1
    machine = _report.machine()  # before the run: its load average at the start
    t0 = time.perf_counter()
    missing = _common.rechub_status()
    plan = Plan(
        models=tuple(m for m in MODELS if not (missing and m[1].startswith("rechub_"))),
        rounds=args.rounds,
        steps=args.steps,
        batch=args.batch,
        eval_batch=args.eval_batch,
        warmup=warmup,
        quick=args.quick,
    )
    threads = torch.get_num_threads()
    results = measure_in_processes(plan, args.processes, threads, args.allocator)
    s = summarize(results)
    labels = list(s["train"])
    params = results[0]["params"]
    rows = [
        [
            lab,
            f"{params[lab]:,}",
            f"{s['train'][lab]:,.0f}",
            "{:,.0f} – {:,.0f}".format(*s["train_range"][lab]),
            f"{s['infer'][lab]:,.0f}",
        ]
        for lab in labels
    ]
    parts = [
        _report.table(
            [
                "model",
                "parameters",
                "train rows/s (median)",
                "train rows/s (range)",
                "inference rows/s",
            ],
            rows,
        )
    ]
    if s["ratios"]:
        ratio_rows = [
            [f"{ours} / {theirs}", ratio_cell(r["train"]), ratio_cell(r["infer"])]
            for (ours, theirs), r in s["ratios"].items()
        ]
        parts.append(
            "### Speed-up over torch-rechub (ours / theirs)\n\n"
            + _report.table(["pair", "training", "inference"], ratio_rows)
            + "\n\n**Goals**\n\n"
            + "\n".join(verdicts(s["ratios"], GOALS))
        )
    if "slices_speedup" in s:
        from cesaa.experts import INFERENCE_PAIRS

        parts.append(
            "**CESAA inference, sparse pairs in slices vs in one pass** (the same model, "
            f"alternating): {s['infer']['CESAA']:,.0f} rows/s with slices of {INFERENCE_PAIRS:,} "
            f"(`cesaa.experts.INFERENCE_PAIRS`), {s['cesaa_one_pass']:,.0f} rows/s in one pass: "
            f"speed-up {ratio_cell(s['slices_speedup'])}."
        )
    if args.compare_allocator:
        other = "default" if args.allocator == "retain" else "retain"
        o = summarize(measure_in_processes(plan, args.processes, threads, other, spawn=True))
        alone = _allocator_cmp.inference_alone(plan, (args.allocator, other), threads)
        parts.append(
            _allocator_cmp.section(s, o, alone, (args.allocator, other), args.processes, GOALS)
        )
    if args.e2e and not missing:
        from cesaa.data import load_data

        parts.append(_e2e.end_to_end(load_data(_common.ml100k_source(), seed=0), args.quick))
    k = len(results)
    notes = (
        f"MovieLens-100k training split ({results[0]['rows']:,} rows), embedding dim 16, experts "
        "115 -> 64 -> 32, towers 32 -> 1, MMoE with one expert per domain (3), PLE with 1 level, "
        "2 specific + 1 shared experts per domain, CESAA, STAR, Shared-Bottom and MLP defaults; "
        "torch-rechub 0.9.0 models through the adapter of `bench/_rechub.py` (their MLPs add "
        "BatchNorm after every linear layer, part of their architecture).  Batch "
        f"{args.batch}, {args.steps} steps per model per round, {args.rounds} rounds after "
        f"{warmup} warm-up steps, in each of {k} fresh process{'es' if k > 1 else ''} run one "
        f"after the other; inference batch {args.eval_batch}.  Rows/s: the median over processes "
        "of each process's median over rounds (range: every round of every process); ratios: "
        "from each process's medians, their median"
        + (" (and range) over the processes." if k > 1 else ".")
    )
    if missing:
        notes += f"\n\ntorch-rechub rows skipped: {missing}."
    notes += "\n\n" + _report.gpu_note()
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Throughput: training and inference rows/s vs torch-rechub",
                _report.command("bench.throughput", argv),
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
