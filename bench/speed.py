"""CES layer speed: sparse dispatch vs the dense "run all experts, mask" oracle, forward + backward.

``cesaa.experts.StackedExperts`` with CESAA's MovieLens-100k shapes (input 115 = 6 embeddings of 16
+ 19 genre flags, one hidden layer of 64, output 32), batch 4096, E in {8, 16, 32}, k in {1, 2, 4}.
Gates come from random logits (softmax over the top k; roughly balanced load), as a leaf that
receives gradient like a real gate.  One step = forward, backward of a fixed random output
gradient.  The implementations run alternately (the order rotates every repetition), so slow
phases of a shared machine hit all of them; we report medians and the time ratio sparse/dense next
to the FLOP ratio k/E.  Goal: time ratio within 1.3x of k/E at E=16, k=2.

``reference`` is the sparse dispatch before its optimization (one gather and one scatter-add per
expert), kept here to show what the change bought; ``proposed`` is a further step not in the
package yet (per-expert weights taken with one ``unbind`` per layer instead of one ``w[e]`` per
expert, whose backward zero-fills and adds a full [E, d_in, d_out] gradient per expert).  The
profile table breaks one sparse step at E=16, k=2 down by operator.

    python -m bench.speed            # full (about 2 min on 2 cores)
    python -m bench.speed --quick    # CI smoke run
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import _common, _report

SECTION = "speed"
IN_DIM, HIDDEN, OUT_DIM = 115, (64,), 32


def reference_forward_sparse(
    experts: torch.nn.Module, x: torch.Tensor, topk_idx: torch.Tensor, gates: torch.Tensor
) -> torch.Tensor:
    """The sparse dispatch as first written (before the optimization), for comparison."""
    b, k = topk_idx.shape
    flat_expert = topk_idx.reshape(-1)
    flat_row = torch.arange(b, device=x.device).repeat_interleave(k)
    flat_gate = gates.gather(1, topk_idx).reshape(-1)
    order = torch.argsort(flat_expert, stable=True)
    counts = torch.bincount(flat_expert, minlength=experts.num_experts).tolist()
    rows_per_expert = flat_row[order].split(counts)
    gates_per_expert = flat_gate[order].split(counts)
    out = x.new_zeros(b, experts.out_dim)
    for e, (rows, g) in enumerate(zip(rows_per_expert, gates_per_expert, strict=True)):
        if rows.numel() == 0:
            continue
        y = experts.forward_expert(x.index_select(0, rows), e)
        out = out.index_add(0, rows, y * g.unsqueeze(1))
    return out


def proposed_forward_sparse(
    experts: torch.nn.Module, x: torch.Tensor, topk_idx: torch.Tensor, gates: torch.Tensor
) -> torch.Tensor:
    """The package's dispatch with per-expert weights from one ``unbind`` per layer."""
    b, k = topk_idx.shape
    flat_expert = topk_idx.reshape(-1)
    order = torch.argsort(flat_expert, stable=True)
    rows = torch.div(order, k, rounding_mode="floor")
    counts = torch.bincount(flat_expert, minlength=experts.num_experts).tolist()
    grouped = x.index_select(0, rows)
    weights = [w.unbind(0) for w in experts.weights]  # one autograd node per layer
    biases = [bias.unbind(0) for bias in experts.biases]
    outputs = []
    for e, h in enumerate(grouped.split(counts)):
        if h.shape[0] == 0:
            continue
        for w, bias in zip(weights, biases, strict=True):
            h = torch.relu(torch.addmm(bias[e], h, w[e]))
        outputs.append(h)
    g = gates.gather(1, topk_idx).reshape(-1).index_select(0, order)
    return x.new_zeros(b, experts.out_dim).index_add(0, rows, torch.cat(outputs) * g.unsqueeze(1))


def make_case(e: int, k: int, batch: int, seed: int = 0) -> dict:
    from cesaa.experts import StackedExperts

    torch.manual_seed(seed)
    experts = StackedExperts(e, IN_DIM, HIDDEN, OUT_DIM)
    x = torch.randn(batch, IN_DIM, requires_grad=True)
    logits = torch.randn(batch, e)
    vals, idx = logits.topk(k, dim=1)  # [B, k]
    leaf = vals.clone().requires_grad_(True)
    grad_out = torch.randn(batch, OUT_DIM)
    params = [x, leaf, *experts.parameters()]

    def gates() -> torch.Tensor:
        return torch.zeros(batch, e).scatter(1, idx, torch.softmax(leaf, dim=1))  # [B, E]

    def step(kind: str) -> None:
        for p in params:
            p.grad = None
        g = gates()
        if kind == "sparse":
            out = experts.forward_sparse(x, idx, g)
        elif kind == "dense":
            out = experts.forward_dense_masked(x, g)
        elif kind == "reference":
            out = reference_forward_sparse(experts, x, idx, g)
        else:
            out = proposed_forward_sparse(experts, x, idx, g)
        out.backward(grad_out)

    return {"step": step, "experts": experts, "x": x, "idx": idx, "gates": gates}


def time_case(case: dict, kinds: tuple[str, ...], reps: int, warmup: int) -> dict[str, list]:
    for _ in range(warmup):
        for kind in kinds:
            case["step"](kind)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(reps):
        shift = r % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:  # rotate the order every repetition
            t0 = time.perf_counter()
            case["step"](kind)
            times[kind].append(time.perf_counter() - t0)
    return times


def profile_sparse(case: dict, steps: int) -> list[list]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            case["step"]("sparse")
    events = sorted(prof.key_averages(), key=lambda ev: ev.self_cpu_time_total, reverse=True)
    total = sum(ev.self_cpu_time_total for ev in events) or 1.0
    return [
        [
            f"`{ev.key}`",
            f"{ev.self_cpu_time_total / 1e3 / steps:.2f}",
            f"{100 * ev.self_cpu_time_total / total:.1f}%",
            f"{ev.count // steps}",
        ]
        for ev in events[:10]
    ]


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--reps", type=int, default=25)
    p.add_argument(
        "--no-reference", action="store_true", help="skip the reference and proposed dispatches"
    )
    args, argv = _common.parse(p, argv)
    es, ks = (8, 16, 32), (1, 2, 4)
    warmup = 3
    if args.quick:
        args.batch, args.reps, warmup = 512, 2, 1
        es, ks = (8, 16), (2,)
    kinds = ("sparse", "dense")
    if not args.no_reference:
        kinds += ("reference", "proposed")
    t0 = time.perf_counter()
    machine = _report.machine()
    rows = []
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
    prof_rows = profile_sparse(make_case(pe, pk, args.batch), 2 if args.quick else 10)
    goal = next((r for r in rows if r[0] == 16 and r[1] == 2), None)
    verdict = ""
    if goal is not None:
        ratio = float(goal[7].rstrip("x"))
        verdict = (
            f"**Goal (time ratio within 1.3x of k/E at E=16, k=2): "
            f"{'met' if ratio <= 1.3 else 'missed'}, {ratio:.2f}x.**"
        )
    notes = (
        f"Batch {args.batch}, input {IN_DIM}, hidden {HIDDEN[0]}, output {OUT_DIM}; "
        f"{args.reps} alternating repetitions after {warmup} warm-up rounds; float32 on CPU.  "
        "'time ratio / FLOP ratio' uses the median of per-repetition sparse/dense ratios (each "
        "pair measured back to back; robust to load drift).  Lower is better; 1.00x means the "
        "sparse step costs exactly its FLOP share of the dense one.  'sparse' is the package's "
        "`StackedExperts.forward_sparse`; 'reference' the dispatch before its optimization (a "
        "gather and an out-of-place scatter-add per expert, whose backward zero-fills a full "
        "[B, input] gradient per expert); 'proposed' a further change not in the package yet "
        "(per-expert weights from one `unbind` per layer instead of `w[e]` per expert, whose "
        "backward zero-fills and accumulates a full [E, d_in, d_out] gradient per expert: "
        "O(E^2) work)."
    )
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
            verdict,
            f"### Where a sparse step's time goes (E={pe}, k={pk}, batch {args.batch}, "
            "torch.profiler, self CPU time per step)\n\n"
            + _report.table(["operator", "ms / step", "share", "calls / step"], prof_rows),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
