"""The CES layer's timed steps for ``bench.speed``: ``cesaa.experts.StackedExperts`` on CESAA's
MovieLens-100k shapes, one forward + backward per step through each dispatch (``sparse``, the
``dense`` masked oracle, the ``looped`` fallback forced, the ``previous`` dispatch kept here for
comparison), timed alternately; the goal cases' time ratio / FLOP ratio (``goal_ratios``, also
rerun by ``bench._kernels`` under narrower kernel sets) and one sparse step's operator profile.
"""

from __future__ import annotations

import statistics
import time

import torch

IN_DIM, HIDDEN, OUT_DIM = 115, (64,), 32


def previous_forward_sparse(
    experts: torch.nn.Module, x: torch.Tensor, topk_idx: torch.Tensor, gates: torch.Tensor
) -> torch.Tensor:
    """The package's sparse dispatch before the grouped GEMM, for comparison."""
    b, k = topk_idx.shape
    flat_expert = topk_idx.reshape(-1)
    order = torch.argsort(flat_expert, stable=True)
    rows = torch.div(order, k, rounding_mode="floor")
    counts = torch.bincount(flat_expert, minlength=experts.num_experts).tolist()  # host sync
    grouped = x.index_select(0, rows)
    outputs = []
    for e, h in enumerate(grouped.split(counts)):
        if h.shape[0] == 0:
            continue
        for w, bias in zip(experts.weights, experts.biases, strict=True):
            h = torch.relu(torch.addmm(bias[e], h, w[e]))  # w[e]: a full-size gradient per expert
        outputs.append(h)
    g = gates.gather(1, topk_idx).reshape(-1).index_select(0, order)
    return x.new_zeros(b, experts.out_dim).index_add(0, rows, torch.cat(outputs) * g.unsqueeze(1))


def looped_forward_sparse(
    experts: torch.nn.Module, x: torch.Tensor, topk_idx: torch.Tensor, gates: torch.Tensor
) -> torch.Tensor:
    """The package's dispatch with its fallback (per-expert addmm loop) forced."""
    from cesaa.grouped_gemm import forced_fallback

    with forced_fallback(x.device.type, x.dtype):
        return experts.forward_sparse(x, topk_idx, gates)


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
        elif kind == "looped":
            out = looped_forward_sparse(experts, x, idx, g)
        else:
            out = previous_forward_sparse(experts, x, idx, g)
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


def profile_sparse(case: dict, rounds: int) -> list[list]:
    """One sparse step's operators timed in the step at 1 and 2 threads (``bench.thread_scaling``'s
    method): rows of operator, calls, ms at each thread count, speed-up, share at 2 threads."""
    from bench import thread_scaling

    threads = torch.get_num_threads()  # restored on return: the caller's setting
    by_op = thread_scaling.time_ops(lambda: case["step"]("sparse"), rounds)
    step = {}
    for t in (1, 2):
        torch.set_num_threads(t)
        step[t] = statistics.median(time_case(case, ("sparse",), 2 * rounds + 1, 2)["sparse"])
    torch.set_num_threads(threads)
    return thread_scaling.op_table(by_op, step, 10)


GOALS = ((16, 2, 1.3), (32, 1, 1.6))  # (E, k, allowed time ratio / FLOP ratio)


def goal_ratios(batch: int, reps: int, warmup: int) -> dict:
    """The goal cases' time ratio / FLOP ratio (median of sparse/dense pairs) in this process,
    with the kernel set torch dispatched to: ``{"kernels": str, "E16k2": float, ...}``."""
    got: dict = {"kernels": torch.backends.cpu.get_cpu_capability()}
    for e, k, _ in GOALS:
        times = time_case(make_case(e, k, batch), ("sparse", "dense"), reps, warmup)
        pair = statistics.median(
            s / d for s, d in zip(times["sparse"], times["dense"], strict=True)
        )
        got[f"E{e}k{k}"] = pair / (k / e)
    return got
