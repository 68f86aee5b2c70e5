"""Distance to the machine's limit: each model's training FLOP/s as a share of large-sgemm FLOP/s.

For every model (default configs, MovieLens-100k features) we count the FLOPs of one training
step's forward and backward per row with ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products only: mm, addmm, bmm, baddbmm, ...; elementwise work, embedding lookups and the Adam step
count 0).  Grouped layers are counted on one matrix product per group over that group's rows
(CESAA's sparse dispatch on its per-expert fallback, PLE's domain-grouped layers through
``exact_grouped_linear``), whose shapes are exactly the model's work: the grouped GEMM that the
timed step runs pads widths to 16 bytes (overhead, not counted), and PLE's own fallback runs every
domain's layer on every row (G times the work).  The achieved FLOP/s is FLOPs per row x
training rows/s of a full step (slice the batch, forward, BCE, backward, Adam step, as
``cesaa.train``); it is divided by the FLOP/s of a 2048^3 float32 matmul measured in the same run,
with the same threads.  Every model runs at 1 and at 2 torch threads in one run (alternating
rounds), with the speed-up.  Goals: CESAA >= 25 % at 1 thread and >= 35 % at 2 threads, batch
4096, and a 2-thread / 1-thread speed-up >= 1.6x (sgemm's is about 2x).

    python -m bench.roofline            # full (a few minutes on 2 cores)
    python -m bench.roofline --quick    # CI smoke run
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench import _common, _report, _timing
from bench._timing import train_step

SECTION = "roofline"
MODELS = ("cesaa", "sparse_moe", "mmoe", "ple", "star", "shared_bottom", "mlp")
PEERS = ("rechub_mmoe", "rechub_ple")  # torch-rechub's, when installed (bench/_rechub.py)
GOALS = (("cesaa", 1, 0.25), ("cesaa", 2, 0.35))  # (model, torch threads, share of sgemm)
GOAL_SPEEDUP = ("cesaa", 1.6)  # 2-thread rows/s over 1-thread rows/s
THREADS = (1, 2)


def sgemm_flops(n: int, reps: int) -> float:
    """Median FLOP/s of an n x n x n float32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def exact_grouped_linear(x, w, b, group, ends):
    """:func:`cesaa.models.baselines.grouped.grouped_linear` as one ``mm`` per group on its own
    rows: the same output, and matrix shapes that are exactly the model's work (the package's
    fallback runs every group on every row, G times the FLOPs; its grouped GEMM pads widths)."""
    stops = ends.tolist()
    parts = [x[s:e] @ w[g] for g, (s, e) in enumerate(zip([0, *stops[:-1]], stops, strict=True))]
    return torch.cat(parts) + b.index_select(0, group)  # [R, O]


def flops_per_row(model, table, batch: int) -> float:
    """Forward + backward FLOPs of one training step, per row, on the model's exact shapes.

    CESAA's and STAR's grouped layers count through the package's per-group fallback
    (``cesaa.grouped_gemm``), PLE's domain-grouped layers through :func:`exact_grouped_linear`
    (FlopCounterMode cannot run ``torch._grouped_mm``'s backward)."""
    from unittest import mock

    from torch.utils.flop_counter import FlopCounterMode

    from cesaa.grouped_gemm import forced_fallback
    from cesaa.models.baselines import grouped, ple

    b = table.subset(torch.arange(batch) % len(table))
    model.train()
    with (
        forced_fallback(),  # exact shapes (no 16-byte padding)
        mock.patch.object(grouped, "grouped_linear", exact_grouped_linear),
        mock.patch.object(ple, "grouped_linear", exact_grouped_linear),
        FlopCounterMode(display=False) as counter,
    ):
        out = model(b.cat, b.num, b.domain)
        loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="training steps per model per round")
    args, argv = _common.parse(p, argv)
    models, sgemm_n, sgemm_reps = MODELS, 2048, 7
    if args.quick:
        args.batch, args.rounds, args.steps = 256, 1, 1
        models, sgemm_n, sgemm_reps = ("cesaa", "mmoe"), 256, 2
    missing = None if args.quick else _common.rechub_status()
    if not args.quick and missing is None:
        models = (*models, *PEERS)
    machine = _report.machine(threads=2 if args.threads in (0, 2) else args.threads)
    t0 = time.perf_counter()
    from cesaa.data import load_data

    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    built = {}
    for name in models:
        built[name] = _timing.build(name, data.spec)  # seed 0, the trainer's optimizer
    fpr = {name: flops_per_row(m, table, args.batch) for name, (m, _) in built.items()}
    gen = torch.Generator().manual_seed(0)
    n = len(table)
    for m, opt in built.values():  # warm-up
        m.train()
        for _ in range(2):
            train_step(m, opt, table, torch.randint(n, (args.batch,), generator=gen))
    counts = THREADS if args.threads in (0, 2) else (torch.get_num_threads(),)
    peak: dict[int, list[float]] = {t: [] for t in counts}
    rps: dict[tuple[str, int], list[float]] = {(nm, t): [] for nm in built for t in counts}
    names = list(built)
    for r in range(args.rounds):
        # thread counts alternate round by round (slow phases of a shared machine hit both)
        for threads in counts if r % 2 == 0 else counts[::-1]:
            torch.set_num_threads(threads)
            peak[threads].append(sgemm_flops(sgemm_n, sgemm_reps))
            idx = [torch.randint(n, (args.batch,), generator=gen) for _ in range(args.steps)]
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                m, opt = built[name]
                train_step(m, opt, table, idx[0])  # the new thread count's first step wakes it up
                start = time.perf_counter()
                for i in idx:
                    train_step(m, opt, table, i)
                rps[name, threads].append(args.steps * args.batch / (time.perf_counter() - start))
        _report.log(
            f"round {r + 1}/{args.rounds}: sgemm "
            + ", ".join(f"{peak[t][-1] / 1e9:.0f} GFLOP/s at {t} thread(s)" for t in counts)
        )
    torch.set_num_threads(counts[-1])
    sgemm = {t: statistics.median(v) for t, v in peak.items()}
    rows = []
    share: dict[tuple[str, int], float] = {}
    speedup: dict[str, float] = {}
    for name in names:
        med = {t: statistics.median(rps[name, t]) for t in counts}
        row = [name, f"{fpr[name] / 1e3:,.1f}"]
        for t in counts:
            share[name, t] = fpr[name] * med[t] / sgemm[t]
            row += [
                f"{med[t]:,.0f}",
                f"{fpr[name] * med[t] / 1e9:,.1f}",
                f"{100 * share[name, t]:.1f} %",
            ]
        if len(counts) == 2:
            speedup[name] = med[2] / med[1]
            row.append(f"{speedup[name]:.2f}x")
        rows.append(row)
    verdicts = []
    for goal_name, threads, goal in GOALS:
        if (goal_name, threads) in share:
            got = share[goal_name, threads]
            verdicts.append(
                f"{goal_name} >= {100 * goal:.0f} % of sgemm at {threads} thread(s), batch "
                f"4096: **{'met' if got >= goal and args.batch == 4096 else 'missed'}**, "
                f"{100 * got:.1f} %"
            )
    if GOAL_SPEEDUP[0] in speedup:
        name, goal = GOAL_SPEEDUP
        got = speedup[name]
        verdicts.append(
            f"{name}'s 2-thread / 1-thread speed-up >= {goal}x (sgemm's: "
            f"{sgemm[2] / sgemm[1]:.2f}x): **{'met' if got >= goal else 'missed'}**, {got:.2f}x"
        )
    verdict = "**Goals:** " + "; ".join(verdicts) + "." if verdicts else ""
    notes = (
        f"MovieLens-100k training split, default configs, batch {args.batch}; sgemm "
        f"{sgemm_n}^3 float32 "
        + ", ".join(f"{sgemm[t] / 1e9:,.0f} GFLOP/s at {t} thread(s)" for t in counts)
        + f" (medians of {args.rounds} measurements interleaved with the training rounds); "
        f"{args.rounds} rounds of {args.steps} steps per model and thread count, model order "
        "rotating, thread counts alternating round by round (`torch.set_num_threads`; "
        "`--threads 1` measures 1 thread only).  'kFLOP / row' counts the forward and backward matrix products "
        "of one training step (FlopCounterMode), grouped layers (CESAA's and sparse MoE's "
        "experts, PLE's and STAR's per-domain layers) as one product per group on that group's "
        "own rows, without the grouped GEMM's width padding; the Adam step and elementwise work "
        "are not counted, so the share is a lower bound of the machine's use: a small model "
        "spends most of a step outside matrix products.  `rechub_mmoe` / `rechub_ple`: "
        "torch-rechub 0.9.0's MMoE and PLE through `bench/_rechub.py` (the dimensions of "
        "`bench.throughput`; their BatchNorm layers count no matrix products)."
    )
    if missing:
        notes += f"\n\ntorch-rechub rows skipped: {missing}."
    notes += "\n\n" + _report.gpu_note()
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Roofline: training FLOP/s as a share of large-sgemm FLOP/s",
                _report.command("bench.roofline", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                ["model", "kFLOP / row"]
                + [
                    f"{col}, {t} thread{'s' if t > 1 else ''}"
                    for t in counts
                    for col in ("train rows/s", "GFLOP/s", "share of sgemm")
                ]
                + (["speed-up 2 / 1"] if len(counts) == 2 else []),
                rows,
            ),
            verdict,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
