"""CES layer speed: sparse dispatch vs the dense "run all experts, mask" oracle, forward + backward.

``cesaa.experts.StackedExperts`` with CESAA's MovieLens-100k shapes (input 115 = 6 embeddings of 16
+ 19 genre flags, one hidden layer of 64, output 32), batch 4096, E in {8, 16, 32}, k in {1, 2, 4}.
Gates come from random logits (softmax over the top k; roughly balanced load), as a leaf that
receives gradient like a real gate.  One step = forward, backward of a fixed random output
gradient.  The implementations run alternately (the order rotates every repetition), so slow
phases of a shared machine hit all of them; we report medians and the time ratio sparse/dense next
to the FLOP ratio k/E.  Goals: time ratio <= 1.3x the FLOP ratio at E=16, k=2 and <= 1.6x at
E=32, k=1.

``sparse`` is the package's dispatch (one grouped GEMM per layer over the rows sorted by expert);
``looped`` its fallback where ``torch._grouped_mm`` cannot run (one addmm chain per expert, weights
from one ``unbind`` per layer); ``previous`` the dispatch before the grouped GEMM (one ``w[e]`` per
expert, whose backward zero-fills and accumulates a full [E, d_in, d_out] gradient per expert, and
a ``tolist`` host read), kept here to show what the change bought.  The profile table breaks one
sparse step at E=16, k=2 down by operator.

Two smaller tables: GAUC on 200k rows (the timing formerly asserted in a test), and Recall@K
ranking against a 1M-item catalog in blocks (``cesaa.retrieval.top_k_items``): peak memory vs the
[queries, items] float32 matrix the dense path would need.

    python -m bench.speed            # full (a few minutes on 2 cores)
    python -m bench.speed --kernels avx2,default   # also the goals with narrower vector units
    python -m bench.speed --quick    # CI smoke run
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import _common, _kernels, _report
from bench._dispatch import (
    GOALS,
    HIDDEN,
    IN_DIM,
    OUT_DIM,
    goal_ratios,
    make_case,
    profile_sparse,
    time_case,
)

SECTION = "speed"


def gauc_timing(n: int, users: int, reps: int) -> list:
    """Median seconds of ``cesaa.metrics.gauc`` on n random rows of ``users`` users."""
    import numpy as np

    from cesaa.metrics import gauc

    rng = np.random.default_rng(0)
    user, y, p = rng.integers(0, users, n), rng.integers(0, 2, n), rng.random(n)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        gauc(y, p, user)
        times.append(time.perf_counter() - t0)
    return [f"{n:,}", f"{users:,}", f"{statistics.median(times) * 1e3:.0f}"]


def retrieval_memory(queries: int, items: int, dim: int, k: int) -> list:
    """Peak resident memory added by ranking ``items`` for ``queries`` in blocks (a subprocess, so
    the high-water mark is this ranking's), next to the dense [Q, I] float32 matrix's size."""
    import subprocess
    import sys

    code = f"""
import resource, time, torch
torch.manual_seed(0)
users, items = torch.randn({queries}, {dim}), torch.randn({items}, {dim})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from cesaa.retrieval import top_k_items
t0 = time.perf_counter()
pos, val = top_k_items(users, items, {k})
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) / 1024, dt)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_report.REPO
    ).stdout.split()
    added_mib, seconds = float(out[0]), float(out[1])
    dense_mib = queries * items * 4 / 2**20
    return [
        f"{queries:,}",
        f"{items:,}",
        str(k),
        f"{added_mib:,.0f}",
        f"{dense_mib:,.0f}",
        f"{seconds:.1f}",
    ]


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--reps", type=int, default=25)
    p.add_argument(
        "--no-reference", action="store_true", help="skip the looped and previous dispatches"
    )
    p.add_argument(
        "--kernels",
        default="",
        help="also run the goal cases with torch's and MKL's kernels restricted to each of these "
        f"instruction sets, comma-separated ({', '.join(_kernels.MKL_FOR)}; e.g. avx2,default)",
    )
    args, argv = _common.parse(p, argv)
    kernel_sets = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in kernel_sets if k not in _kernels.MKL_FOR]
    if unknown:
        p.error(f"--kernels: unknown kernel set(s) {unknown}; use {sorted(_kernels.MKL_FOR)}")
    es, ks = (8, 16, 32), (1, 2, 4)
    warmup = 3
    gauc_n, ret_q, ret_i = 200_000, 2000, 1_000_000
    if args.quick:
        args.batch, args.reps, warmup = 512, 2, 1
        es, ks = (16, 32), (1, 2)
        gauc_n, ret_q, ret_i = 20_000, 64, 20_000
    kinds = ("sparse", "dense")
    if not args.no_reference:
        kinds += ("looped", "previous")
    t0 = time.perf_counter()
    machine = _report.machine()
    rows = []
    verdicts = []
    as_run: dict = {"requested": "as run above", "kernels": torch.backends.cpu.get_cpu_capability()}
    for e in es:
        for k in ks:
            times = time_case(make_case(e, k, args.batch), kinds, args.reps, warmup)
            med = {kind: statistics.median(v) * 1e3 for kind, v in times.items()}
            pair = statistics.median(
                s / d for s, d in zip(times["sparse"], times["dense"], strict=True)
            )
            flop = k / e
            row = [
                e,
                k,
                f"{flop:.3f}",
                f"{med['sparse']:.1f}",
                f"{med['dense']:.1f}",
                f"{med['sparse'] / med['dense']:.3f}",
                f"{pair:.3f}",
                f"{pair / flop:.2f}x",
            ]
            for kind in kinds[2:]:
                ratio = statistics.median(
                    a / d for a, d in zip(times[kind], times["dense"], strict=True)
                )
                row += [f"{med[kind]:.1f}", f"{ratio / flop:.2f}x"]
            rows.append(row)
            for ge, gk, limit in GOALS:
                if (e, k) == (ge, gk):
                    got = pair / flop
                    as_run[f"E{e}k{k}"] = got
                    verdicts.append(
                        f"E={e}, k={k}: **{'met' if got <= limit else 'missed'}**, "
                        f"{got:.2f}x (goal <= {limit}x)"
                    )
            _report.log(f"E={e} k={k}: " + ", ".join(f"{n} {v:.1f} ms" for n, v in med.items()))
    cols = [
        "E",
        "k",
        "FLOP ratio k/E",
        "sparse ms",
        "dense ms",
        "time ratio (medians)",
        "time ratio (median of pairs)",
        "time ratio / FLOP ratio",
    ]
    for kind in kinds[2:]:
        cols += [f"{kind} ms", f"{kind}: ratio / FLOP ratio"]
    pe, pk = (16, 2) if 16 in es else (es[0], ks[0])
    prof_rows = profile_sparse(make_case(pe, pk, args.batch), 2 if args.quick else 8)
    gauc_row = gauc_timing(gauc_n, max(gauc_n // 40, 10), 1 if args.quick else 5)
    ret_row = retrieval_memory(ret_q, ret_i, 32, 50)
    threads_now = torch.get_num_threads()
    by_threads = []  # the goal cases at 1 and 2 threads, side by side in this process
    for th in (1, 2):
        if th == threads_now:
            by_threads.append({"threads": th, **{k: v for k, v in as_run.items() if k[0] == "E"}})
            continue
        torch.set_num_threads(th)
        by_threads.append({"threads": th, **goal_ratios(args.batch, args.reps, warmup)})
        torch.set_num_threads(threads_now)
        _report.log(f"goals at {th} threads: {by_threads[-1]}")
    threads_text = "### The goals at 1 and 2 threads\n\n" + _report.table(
        ["torch threads", *[f"E={e}, k={k} (goal <= {limit}x)" for e, k, limit in GOALS]],
        [[r["threads"], *[f"{r[f'E{e}k{k}']:.2f}x" for e, k, _ in GOALS]] for r in by_threads],
    )
    kernels_text = ""
    if kernel_sets:
        results = [as_run]
        for ks_name in kernel_sets:
            r = _kernels.goal_ratios_under(
                ks_name, args.batch, args.reps, warmup, torch.get_num_threads()
            )
            results.append({"requested": ks_name, **r})
            _report.log(f"kernels {ks_name}: {r}")
        kernels_text = _kernels.kernel_table(results, GOALS)
    notes = (
        f"Batch {args.batch}, input {IN_DIM}, hidden {HIDDEN[0]}, output {OUT_DIM}; "
        f"{args.reps} alternating repetitions after {warmup} warm-up rounds; float32 on CPU.  "
        "'time ratio / FLOP ratio' uses the median of per-repetition sparse/dense ratios (each "
        "pair measured back to back; robust to load drift).  Lower is better; 1.00x means the "
        "sparse step costs exactly its FLOP share of the dense one.  'sparse' is the package's "
        "`StackedExperts.forward_sparse` (one `torch._grouped_mm` per layer over the rows sorted "
        "by expert, no host read); 'looped' its fallback where the grouped GEMM cannot run "
        "(one addmm chain per selected expert, weights from one `unbind` per layer); 'previous' "
        "the dispatch before this change (`w[e]` per expert, whose backward zero-fills and "
        "accumulates a full [E, d_in, d_out] gradient per expert, and a `tolist` host read)."
    )
    notes += "\n\n" + _report.gpu_note()
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "CES layer: sparse dispatch vs dense masked (forward + backward)",
                _report.command("bench.speed", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(cols, rows),
            f"**Goals (time ratio / FLOP ratio, {threads_now} torch thread"
            f"{'s' if threads_now > 1 else ''}):** " + "; ".join(verdicts) + ".",
            threads_text,
            *([kernels_text] if kernels_text else []),
            f"### Where a sparse step's time goes (E={pe}, k={pk}, batch {args.batch}), at 1 and 2 "
            "threads\n\nEvery ATen call of sparse steps (forward and backward) timed where it runs, "
            "summed by operator per step, median over steps (`bench.thread_scaling`'s method); ms "
            "per step.\n\n"
            + _report.table(
                ["operator", "calls", "1 thread", "2 threads", "speed-up", "share at 2"],
                prof_rows,
            ),
            "### GAUC (`cesaa.metrics.gauc`, vectorized: one sort, no loop over users)\n\n"
            + _report.table(["rows", "users", "ms (median)"], [gauc_row]),
            "### Recall@K ranking against a large catalog (`cesaa.retrieval.top_k_items`)\n\n"
            "Random 32-d embeddings; blocks of 1,024 queries x 65,536 items, each block's top k "
            "merged into the running top k.  'added peak MiB' is the growth of the process's "
            "peak resident memory during the ranking (a fresh subprocess); the dense path would "
            "first build the float32 [queries, items] matrix (and `recall_at_k` a float64 copy).\n\n"
            + _report.table(
                ["queries", "items", "k", "added peak MiB", "dense matrix MiB", "seconds"],
                [ret_row],
            ),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
