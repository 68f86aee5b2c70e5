"""Where the second core goes: a training step at 1 and 2 torch threads, operator by operator.

For each model (default configs, MovieLens-100k features, batch 4096, the trainer's fused Adam and
allocator setting) the script measures

- the whole training step (slice the batch, forward, BCE + auxiliary loss, backward, Adam) at 1
  and at 2 threads, in alternating blocks of steps (slow phases of a shared machine hit both);
- the fixed cost of a step: the same step at batch 64, where the arithmetic is negligible, so its
  time is Python, autograd and operator dispatch;
- every ATen operator the step runs (forward, backward and optimizer), timed where it runs inside
  real training steps at 1 and at 2 threads (a ``TorchDispatchMode`` around each call; median
  over steps).  Summed by operator: which ones use the second core and which do not.  The
  step's time minus the operators' sum is the part outside operators (Python, autograd
  bookkeeping, dispatch).

Models: ``cesaa`` (k = 2 of 8 experts + 1 shared: 3 experts active per row), ``mmoe`` (one
expert per domain, 3 on MovieLens-100k age domains: equal active expert FLOPs per row) and
``mmoe-9`` (9 experts: CESAA's 8 domain experts + 1 shared, equal parameters).

The fair efficiency claim: the three models again at wider experts (``--widths``, hidden ->
output width of every expert; default 64 -> 32, the defaults, then 256 -> 64 and 512 -> 128),
models and thread counts alternating round by round, with CESAA's rows/s as a multiple of each
dense MoE's: where the sparse dispatch's fixed and memory-bound costs stop mattering.

    python -m bench.thread_scaling            # full (a few minutes on 2 cores)
    python -m bench.thread_scaling --quick    # CI smoke run
"""

from __future__ import annotations

import collections
import statistics
import time

import torch

from bench import _common, _report
from bench._efficiency import MODELS, WIDTHS, parse_widths, width_rows
from bench._timing import build, train_step
from bench.roofline import flops_per_row

SECTION = "thread-scaling"
PROFILED = ("cesaa", "mmoe")  # the per-operator tables


def record_ops(fn) -> list[tuple]:
    """Every ATen call of ``fn()`` (forward, backward, optimizer): [(op, args, kwargs)], in order."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: list[tuple] = []

    class _Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            calls.append((func, args, kwargs))
            return func(*args, **kwargs)

    with _Record():
        fn()
    return calls


def time_ops(fn, rounds: int) -> dict[str, list[float]]:
    """Every ATen call of ``fn()`` (one step: forward, backward, optimizer) timed where it runs,
    inside the real step: {op name: [calls per step, s at 1 thread, s at 2 threads]}, the
    seconds the median over ``rounds`` steps per thread count of that operator's summed time in
    the step.  Thread counts alternate step by step, each timed step after an untimed one at the
    same count (the workers started and awake).  The timer's own bookkeeping runs between
    operators, outside their timed spans; operators an operator calls are inside its span."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Timer(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.spent: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            row = self.spent[func.overloadpacket.__name__]
            row[1] += time.perf_counter() - t0
            row[0] += 1
            return out

    threads_before = torch.get_num_threads()
    steps: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(2 * rounds):
        threads = 1 + r % 2
        torch.set_num_threads(threads)
        fn()
        with _Timer() as timer:
            fn()
        steps[threads].append(dict(timer.spent))
    torch.set_num_threads(threads_before)
    names = {name for per_thread in steps.values() for step in per_thread for name in step}
    return {
        name: [
            max(step.get(name, (0, 0.0))[0] for per in steps.values() for step in per),
            *(statistics.median(step.get(name, (0, 0.0))[1] for step in steps[t]) for t in (1, 2)),
        ]
        for name in names
    }


def step_times(
    model, opt, table, batches: tuple[int, ...], rounds: int, steps: int, gen
) -> dict[tuple[int, int], float]:
    """Median seconds of a training step at 1 and at 2 threads for each batch size:
    {(threads, batch): s}.  Thread counts alternate block by block and the batch sizes
    alternate within each block, so a slow phase of a shared machine hits every cell."""
    n = len(table)
    got: dict[tuple[int, int], list[float]] = {(t, b): [] for t in (1, 2) for b in batches}
    for r in range(rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            for batch in batches:
                train_step(model, opt, table, torch.randint(n, (batch,), generator=gen))  # wake-up
                for _ in range(steps):
                    idx = torch.randint(n, (batch,), generator=gen)
                    t0 = time.perf_counter()
                    train_step(model, opt, table, idx)
                    got[(threads, batch)].append(time.perf_counter() - t0)
    return {key: statistics.median(v) for key, v in got.items()}


def beyond_fixed(step: dict[int, float], fixed: dict[int, float]) -> str:
    """The second thread's speed-up on the part of a step above its fixed cost,
    (step - fixed) at 1 thread / (step - fixed) at 2; "n/a" when a part is not positive."""
    rest1, rest2 = step[1] - fixed[1], step[2] - fixed[2]
    return f"{rest1 / rest2:.2f}x" if rest1 > 0 and rest2 > 0 else "n/a"


def op_table(by_op: dict[str, list[float]], step: dict[int, float], top: int) -> list[list]:
    """Rows of the per-operator table (largest 2-thread time first), then the sums."""
    tot1 = sum(v[1] for v in by_op.values())
    tot2 = sum(v[2] for v in by_op.values())
    rows = []
    for name, (calls, t1, t2) in sorted(by_op.items(), key=lambda kv: -kv[1][2])[:top]:
        rows.append(
            [
                f"`{name}`",
                calls,
                f"{t1 * 1e3:.3f}",
                f"{t2 * 1e3:.3f}",
                f"{t1 / t2:.2f}x",
                f"{100 * t2 / tot2:.1f} %",
            ]
        )
    rows.append(
        [
            "all operators",
            sum(v[0] for v in by_op.values()),
            f"{tot1 * 1e3:.3f}",
            f"{tot2 * 1e3:.3f}",
            f"{tot1 / tot2:.2f}x",
            "100 %",
        ]
    )
    out1, out2 = step[1] - tot1, step[2] - tot2
    rows.append(
        [
            "outside operators (step - operators)",
            "",
            f"{out1 * 1e3:.3f}",
            f"{out2 * 1e3:.3f}",
            f"{out1 / out2:.2f}x" if out2 > 0 else "n/a",
            "",
        ]
    )
    rows.append(
        [
            "whole step",
            "",
            f"{step[1] * 1e3:.3f}",
            f"{step[2] * 1e3:.3f}",
            f"{step[1] / step[2]:.2f}x",
            "",
        ]
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=6, help="alternating 1/2-thread blocks")
    p.add_argument("--steps", type=int, default=6, help="training steps per block")
    p.add_argument("--top", type=int, default=14, help="operators listed per model")
    p.add_argument(
        "--widths",
        default=WIDTHS,
        help=f"expert HIDDEN:OUTPUT widths of the efficiency table, comma-separated ({WIDTHS})",
    )
    args, argv = _common.parse(p, argv)
    try:
        widths = parse_widths(args.widths)
    except ValueError as e:
        p.error(str(e))
    models, op_rounds, small = dict(MODELS), 8, 64
    if args.quick:
        args.batch, args.rounds, args.steps, op_rounds = 256, 2, 1, 2
        models = {k: MODELS[k] for k in ("cesaa", "mmoe")}
        widths = widths[:1]
    if args.threads not in (0, 2):
        p.error("--threads: this benchmark sets 1 and 2 threads itself; leave --threads out")
    machine = _report.machine(threads=2)
    t0 = time.perf_counter()
    from cesaa.data import load_data

    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    gen = torch.Generator().manual_seed(0)
    summary, tables = [], []
    for label, (name, overrides) in models.items():
        model, opt = build(name, data.spec, **overrides)  # seed 0, the trainer's optimizer
        params = sum(q.numel() for q in model.parameters())
        fpr = flops_per_row(model, table, args.batch)
        model.train()
        for _ in range(2):  # warm-up (and Adam's state)
            train_step(model, opt, table, torch.randint(len(table), (args.batch,), generator=gen))
        times = step_times(model, opt, table, (args.batch, small), args.rounds, args.steps, gen)
        step = {t: times[(t, args.batch)] for t in (1, 2)}
        fixed = {t: times[(t, small)] for t in (1, 2)}
        idx = torch.randint(len(table), (args.batch,), generator=gen)
        calls = record_ops(lambda m=model, o=opt, i=idx: train_step(m, o, table, i))
        summary.append(
            [
                label,
                f"{params:,}",
                f"{fpr / 1e3:,.1f}",
                len(calls),
                f"{args.batch / step[1]:,.0f}",
                f"{args.batch / step[2]:,.0f}",
                f"{fpr * args.batch / step[1] / 1e9:,.1f}",
                f"{fpr * args.batch / step[2] / 1e9:,.1f}",
                f"{step[1] / step[2]:.2f}x",
                f"{fixed[1] * 1e3:.2f}",
                f"{fixed[2] * 1e3:.2f}",
                f"{100 * fixed[2] / step[2]:.0f} %",
                beyond_fixed(step, fixed),
            ]
        )
        _report.log(f"{label}: step {step[1] * 1e3:.1f} / {step[2] * 1e3:.1f} ms at 1 / 2 threads")
        if label in PROFILED:
            by_op = time_ops(
                lambda m=model, o=opt: train_step(
                    m, o, table, torch.randint(len(table), (args.batch,), generator=gen)
                ),
                op_rounds,
            )
            tables.append(
                f"### {label}: operators of one training step (batch {args.batch}), ms per step\n\n"
                + _report.table(
                    ["operator", "calls", "1 thread", "2 threads", "speed-up", "share at 2"],
                    op_table(by_op, step, args.top),
                )
            )
    efficiency = width_rows(data.spec, table, args.batch, widths, args.rounds, args.steps, gen)
    torch.set_num_threads(2)
    notes = (
        f"MovieLens-100k training split, default configs, batch {args.batch}, float32, the "
        "trainer's fused Adam; threads switched in-process with `torch.set_num_threads`, 1 and "
        f"2 alternating in {args.rounds} blocks of {args.steps} steps (medians), batch "
        f"{args.batch} and {small} alternating within each block.  'fixed ms' is a step at batch "
        f"{small} (arithmetic negligible: Python, autograd, dispatch, per-call costs of the "
        "operators): a cost every step pays whatever its batch.  'fixed share' is its part of "
        f"the batch-{args.batch} step at 2 threads, and 'speed-up beyond the fixed cost' the "
        "second thread's gain on the rest of the step, (step - fixed) at 1 thread over (step - "
        "fixed) at 2.  "
        "'kFLOP / row' counts forward and backward matrix products (as `bench.roofline`).  "
        "Operator tables: every ATen call timed where it runs, inside real training steps "
        "(`bench.thread_scaling.time_ops`), summed by operator per step (median of "
        f"{op_rounds} steps per thread count, steps alternating); 'outside operators' is the "
        "whole step minus their sum (Python, autograd bookkeeping, dispatch).  An operator "
        "timed alone (hot caches) looks faster than it runs in the step: the step's own order "
        "and buffers are what count."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Thread scaling: where the second core goes in a training step",
                _report.command("bench.thread_scaling", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                [
                    "model",
                    "parameters",
                    "kFLOP / row",
                    "ATen calls / step",
                    "rows/s, 1 thread",
                    "rows/s, 2 threads",
                    "GFLOP/s, 1 thread",
                    "GFLOP/s, 2 threads",
                    "speed-up",
                    "fixed ms, 1 thread",
                    "fixed ms, 2 threads",
                    "fixed share, 2 threads",
                    "speed-up beyond the fixed cost",
                ],
                summary,
            ),
            *tables,
            "### CESAA against dense MoEs of equal active FLOPs and of equal parameters, by "
            f"expert width (batch {args.batch})\n\n"
            "'mmoe': one expert per domain (3 here: CESAA's k = 2 plus its shared expert, the "
            "same active expert FLOPs per row); 'mmoe-9': 9 experts (CESAA's 8 plus 1 shared, "
            "the same parameters).  Every model's experts at the width of the row; models and "
            f"thread counts alternating in {args.rounds} rounds of {args.steps} steps (medians).  "
            "'CESAA / model': CESAA's rows/s as a multiple of the model's (above 1: CESAA trains "
            "faster).\n\n"
            + _report.table(
                [
                    "expert widths",
                    "model",
                    "kFLOP / row",
                    "rows/s, 1 thread",
                    "rows/s, 2 threads",
                    "speed-up",
                    "CESAA / model, 1 thread",
                    "CESAA / model, 2 threads",
                ],
                efficiency,
            ),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
