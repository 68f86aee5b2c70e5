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
with the same threads.  Goal: CESAA >= 25 % at batch 4096.

    python -m bench.roofline            # full (a few minutes on 2 cores)
    python -m bench.roofline --quick    # CI smoke run
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench import _common, _report

SECTION = "roofline"
MODELS = ("cesaa", "sparse_moe", "mmoe", "ple", "star", "shared_bottom", "mlp")
PEERS = ("rechub_mmoe", "rechub_ple")  # torch-rechub's, when installed (bench/_rechub.py)
GOAL = ("cesaa", 0.25)


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


def _step(model, opt, table, idx: torch.Tensor) -> None:
    b = table.subset(idx)
    out = model(b.cat, b.num, b.domain)
    loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


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
    machine = _report.machine()
    t0 = time.perf_counter()
    from cesaa.data import load_data
    from cesaa.models import build_model, default_config
    from cesaa.train import make_optimizer

    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    built = {}
    for name in models:
        torch.manual_seed(0)
        m = build_model(default_config(name), data.spec)
        built[name] = (m, make_optimizer(m, lr=1e-3, weight_decay=1e-5))  # the trainer's
    fpr = {name: flops_per_row(m, table, args.batch) for name, (m, _) in built.items()}
    gen = torch.Generator().manual_seed(0)
    n = len(table)
    for m, opt in built.values():  # warm-up
        m.train()
        for _ in range(2):
            _step(m, opt, table, torch.randint(n, (args.batch,), generator=gen))
    peak: list[float] = []
    rps: dict[str, list[float]] = {name: [] for name in built}
    names = list(built)
    for r in range(args.rounds):
        peak.append(sgemm_flops(sgemm_n, sgemm_reps))
        idx = [torch.randint(n, (args.batch,), generator=gen) for _ in range(args.steps)]
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            m, opt = built[name]
            start = time.perf_counter()
            for i in idx:
                _step(m, opt, table, i)
            rps[name].append(args.steps * args.batch / (time.perf_counter() - start))
        _report.log(f"round {r + 1}/{args.rounds}: sgemm {peak[-1] / 1e9:.0f} GFLOP/s")
    sgemm = statistics.median(peak)
    rows = []
    share = {}
    for name in names:
        med = statistics.median(rps[name])
        achieved = fpr[name] * med
        share[name] = achieved / sgemm
        rows.append(
            [
                name,
                f"{fpr[name] / 1e3:,.1f}",
                f"{med:,.0f}",
                f"{achieved / 1e9:,.1f}",
                f"{100 * share[name]:.1f} %",
            ]
        )
    goal_name, goal = GOAL
    verdict = ""
    if goal_name in share:
        got = share[goal_name]
        verdict = (
            f"**Goal ({goal_name} >= {100 * goal:.0f} % of sgemm at batch 4096): "
            f"{'met' if got >= goal and args.batch == 4096 else 'missed'}, "
            f"{100 * got:.1f} %.**"
        )
    notes = (
        f"MovieLens-100k training split, default configs, batch {args.batch}; sgemm "
        f"{sgemm_n}^3 float32 {sgemm / 1e9:,.0f} GFLOP/s (median of {args.rounds} measurements "
        f"interleaved with the training rounds); {args.rounds} rounds of {args.steps} steps per "
        "model, order rotating.  'kFLOP / row' counts the forward and backward matrix products "
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
                ["model", "kFLOP / row", "train rows/s", "achieved GFLOP/s", "share of sgemm"],
                rows,
            ),
            verdict,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
