from __future__ import annotations

import pytest
import torch

from cesaa import experts as experts_module
from cesaa import grouped_gemm
from cesaa.experts import StackedExperts, StackedMLP, grouped_mm_available

B, DIN, H = 32, 6, 5


def _case(e: int, k: int, seed: int = 0, never: int | None = None):
    """Experts, inputs, top-k indices and leaf gate values; expert ``never`` is never selected."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    experts = StackedExperts(e, DIN, (7,), H)
    x = torch.randn(B, DIN, generator=g, requires_grad=True)
    scores = torch.randn(B, e, generator=g)
    if never is not None:
        scores[:, never] = -1e9
    topk_idx = scores.topk(k, dim=-1).indices  # [B, k]
    topk_vals = torch.randn(B, k, generator=g, requires_grad=True)  # leaf, upstream of the gates
    return experts, x, topk_idx, topk_vals


def _gates(topk_idx: torch.Tensor, topk_vals: torch.Tensor, e: int) -> torch.Tensor:
    return torch.zeros(B, e).scatter(1, topk_idx, torch.softmax(topk_vals, dim=-1))


def _grads(experts, x, topk_vals, gates, out) -> list[torch.Tensor]:
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    params = [*experts.weights, *experts.biases]
    return torch.autograd.grad(
        (out * weights).sum(), [x, topk_vals, gates, *params], retain_graph=True
    )


HAS_GROUPED_MM = grouped_mm_available(torch.device("cpu"), torch.float32)


@pytest.fixture(params=["grouped", "looped"])
def dispatch(request, monkeypatch) -> str:
    """Run a test once through the grouped-GEMM path and once through the per-expert loop."""
    if request.param == "grouped" and not HAS_GROUPED_MM:
        pytest.skip("torch._grouped_mm does not run on this CPU build")
    ok = request.param == "grouped"
    monkeypatch.setitem(grouped_gemm._GROUPED_MM_OK, ("cpu", torch.float32), ok)
    return request.param


@pytest.mark.parametrize(("e", "k"), [(4, 1), (4, 2), (4, 4), (3, 2), (8, 3)])
def test_sparse_matches_dense_forward_and_gradients(e: int, k: int, dispatch: str) -> None:
    never = 0 if k < e else None
    experts, x, topk_idx, topk_vals = _case(e, k, never=never)
    if never is not None:
        assert not (topk_idx == never).any()
    gates = _gates(topk_idx, topk_vals, e)
    sparse = experts.forward_sparse(x, topk_idx, gates)
    dense = experts.forward_dense_masked(x, gates)
    assert sparse.shape == (B, H)
    assert torch.allclose(sparse, dense, atol=1e-5)

    gs = _grads(experts, x, topk_vals, gates, sparse)
    gd = _grads(experts, x, topk_vals, gates, dense)
    names = ["x", "topk_vals", "gates"] + [f"param{i}" for i in range(len(gs) - 3)]
    selected = torch.zeros(B, e, dtype=torch.bool).scatter(1, topk_idx, True)
    for name, a, b in zip(names, gs, gd, strict=True):
        if name == "gates":
            # the oracle also differentiates the unselected experts' (computed) outputs;
            # sparse dispatch never computes them, so compare the selected entries
            a, b = a[selected], b[selected]
        assert torch.allclose(a, b, atol=1e-5), name
    if never is not None:
        assert all(p[never].abs().sum() == 0 for p in gs[3:])


def test_forward_all_matches_per_expert_mlp() -> None:
    experts, x, _, _ = _case(4, 2)
    out = experts.forward_all(x)  # [B, n, H]
    assert out.shape == (B, 4, H)
    for e in range(4):
        w0, w1 = experts.weights[0][e], experts.weights[1][e]
        b0, b1 = experts.biases[0][e], experts.biases[1][e]
        ref = torch.relu(torch.relu(x @ w0 + b0) @ w1 + b1)
        assert torch.allclose(out[:, e], ref, atol=1e-6)
        assert torch.allclose(experts.forward_expert(x, e), ref, atol=1e-6)


def test_sparse_dispatch_skips_unselected_experts(dispatch: str) -> None:
    experts, x, topk_idx, topk_vals = _case(4, 2, never=3)
    with torch.no_grad():
        experts.weights[0][3].fill_(float("nan"))
    gates = _gates(topk_idx, topk_vals, 4)
    sparse = experts.forward_sparse(x, topk_idx, gates)
    assert torch.isfinite(sparse).all()
    # the oracle runs every expert, so the NaN expert poisons it (0 * NaN = NaN)
    assert torch.isnan(experts.forward_dense_masked(x, gates)).any()


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch._grouped_mm does not run on this CPU build")
def test_sparse_dispatch_is_one_grouped_gemm_per_layer_over_sorted_rows(monkeypatch) -> None:
    monkeypatch.setitem(grouped_gemm._GROUPED_MM_OK, ("cpu", torch.float32), True)
    experts, x, topk_idx, topk_vals = _case(4, 2, never=1)
    calls: list[tuple[tuple[int, ...], list[int]]] = []
    original = torch._grouped_mm

    def counting(a, b, *, offs=None, **kw):
        calls.append((tuple(a.shape), offs.tolist()))
        return original(a, b, offs=offs, **kw)

    monkeypatch.setattr(torch, "_grouped_mm", counting)
    experts.forward_sparse(x, topk_idx, _gates(topk_idx, topk_vals, 4))
    counts = torch.bincount(topk_idx.flatten(), minlength=4).tolist()
    ends = [sum(counts[: e + 1]) for e in range(4)]  # expert 1 gets an empty group
    # widths zero-padded to 16 bytes: DIN=6 -> 8, hidden 7 -> 8
    assert calls == [((B * 2, 8), ends), ((B * 2, 8), ends)]


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch._grouped_mm does not run on this CPU build")
def test_grouped_dispatch_reads_nothing_back_to_the_host(monkeypatch) -> None:
    monkeypatch.setitem(grouped_gemm._GROUPED_MM_OK, ("cpu", torch.float32), True)
    experts, x, topk_idx, topk_vals = _case(4, 2)
    gates = _gates(topk_idx, topk_vals, 4)

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside the sparse dispatch")

    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    out = experts.forward_sparse(x, topk_idx, gates)
    out.sum().backward()
    monkeypatch.undo()
    assert x.grad is not None and experts.weights[0].grad is not None


def test_looped_fallback_runs_each_selected_expert_once(monkeypatch) -> None:
    """float64 has no grouped GEMM kernel: the fallback runs one addmm chain per selected expert."""
    experts, x, topk_idx, topk_vals = _case(4, 2, never=1)
    experts = experts.double()
    calls: list[int] = []
    original = torch.addmm

    def counting(bias, a, w, *args, **kwargs):
        calls.append(a.shape[0])
        return original(bias, a, w, *args, **kwargs)

    monkeypatch.setattr(torch, "addmm", counting)
    gates = _gates(topk_idx, topk_vals, 4).double()
    out = experts.forward_sparse(x.double(), topk_idx, gates)
    monkeypatch.undo()
    counts = torch.bincount(topk_idx.flatten(), minlength=4).tolist()
    assert calls == [c for c in counts if c > 0 for _ in range(2)]  # 2 layers, expert 1 skipped
    dense = experts.forward_dense_masked(x.double(), gates)
    assert torch.allclose(out, dense, atol=1e-10)


def test_stacked_mlp_with_group_inputs_matches_each_group_alone() -> None:
    torch.manual_seed(0)
    mlp = StackedMLP(3, DIN, (7,), H)  # towers: no output ReLU
    x = torch.randn(B, 3, DIN)
    out = mlp(x)  # [B, G, O]
    for g in range(3):
        w0, w1 = mlp.weights[0][g], mlp.weights[1][g]
        b0, b1 = mlp.biases[0][g], mlp.biases[1][g]
        ref = torch.relu(x[:, g] @ w0 + b0) @ w1 + b1
        assert torch.allclose(out[:, g], ref, atol=1e-6)
    assert (out < 0).any()  # linear output layer


def test_empty_batch_gives_an_empty_output(dispatch: str) -> None:
    experts, _, _, _ = _case(4, 2)
    x = torch.zeros(0, DIN)
    out = experts.forward_sparse(x, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 4))
    assert out.shape == (0, H)


def test_gates_scale_the_output(dispatch: str) -> None:
    experts, x, topk_idx, _ = _case(4, 1)
    ones = torch.zeros(B, 4).scatter(1, topk_idx, 1.0)
    out = experts.forward_sparse(x, topk_idx, ones)
    half = experts.forward_sparse(x, topk_idx, ones * 0.5)
    ref = experts.forward_all(x).gather(1, topk_idx[:, :, None].expand(-1, -1, H)).squeeze(1)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(half, 0.5 * ref, atol=1e-6)


def test_output_is_nonnegative_relu() -> None:
    experts, x, _, _ = _case(4, 2)
    assert (experts.forward_all(x) >= 0).all()


def test_invalid_num_experts() -> None:
    with pytest.raises(ValueError, match="num_experts"):
        StackedExperts(0, DIN, (), H)


def test_sparse_dispatch_is_deterministic(dispatch: str) -> None:
    """Same inputs, same seed: bit-identical outputs and gradients on CPU (no atomics)."""
    results = []
    for _ in range(2):
        experts, x, topk_idx, topk_vals = _case(8, 2)
        gates = _gates(topk_idx, topk_vals, 8)
        out = experts.forward_sparse(x, topk_idx, gates)
        results.append([out.detach(), *_grads(experts, x, topk_vals, gates, out)])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_grouped_mm_probe_does_not_depend_on_the_callers_grad_mode(monkeypatch) -> None:
    # a first call under no_grad (an evaluation) once cached "unavailable" for the whole process,
    # sending every later training step down the per-expert loop
    key = ("cpu", torch.float32)
    monkeypatch.delitem(grouped_gemm._GROUPED_MM_OK, key, raising=False)
    with torch.enable_grad():
        with_grad = grouped_mm_available(torch.device("cpu"), torch.float32)
    monkeypatch.delitem(grouped_gemm._GROUPED_MM_OK, key)
    with torch.no_grad():
        without_grad = grouped_mm_available(torch.device("cpu"), torch.float32)
    assert without_grad == with_grad == hasattr(torch, "_grouped_mm")


@pytest.mark.parametrize("hidden", [(7,), (), (8, 5)])
def test_inference_outputs_equal_the_autograd_ones(hidden, dispatch: str) -> None:
    # without autograd the experts' ReLUs run in place on fresh GEMM outputs: same values,
    # and nothing the caller holds (x, the gates, the weights) is modified
    torch.manual_seed(0)
    experts = StackedExperts(4, DIN, hidden, H)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, DIN, generator=g)
    topk_idx = torch.randn(B, 4, generator=g).topk(2, dim=-1).indices
    gates = torch.zeros(B, 4).scatter(1, topk_idx, 0.5)
    calls = {
        "all": lambda: experts.forward_all(x),
        "sparse": lambda: experts.forward_sparse(x, topk_idx, gates),
        "dense": lambda: experts.forward_dense_masked(x, gates),
        "expert": lambda: experts.forward_expert(x, 2),
    }
    kept = [x.clone(), gates.clone(), *(p.detach().clone() for p in experts.parameters())]
    for name, call in calls.items():
        with torch.enable_grad():
            want = call()
        with torch.no_grad():
            got = call()
        assert not got.requires_grad and want.requires_grad
        assert torch.equal(got, want.detach()), name
    for a, b in zip(kept, [x, gates, *experts.parameters()], strict=True):
        assert torch.equal(a, b)


def test_inference_runs_the_pairs_in_slices_with_the_same_output(dispatch, monkeypatch) -> None:
    # P = 64 pairs in slices of 5: 13 slices, most cutting through an expert's group of rows
    experts, x, topk_idx, topk_vals = _case(4, 2)
    gates = _gates(topk_idx, topk_vals, 4).detach()
    whole = experts.forward_sparse(x, topk_idx, gates).detach()  # autograd: one pass
    oracle = experts.forward_dense_masked(x, gates).detach()
    monkeypatch.setattr(experts_module, "INFERENCE_PAIRS", 5)
    seen: list[int] = []
    original = experts_module.grouped_mlp

    def spy(x, rows, *args):
        seen.append(rows.shape[0])
        return original(x, rows, *args)

    monkeypatch.setattr(experts_module, "grouped_mlp", spy)
    with torch.no_grad():
        sliced = experts.forward_sparse(x, topk_idx, gates)
    assert seen == [5] * 12 + [4]
    torch.testing.assert_close(sliced, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sliced, oracle, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch._grouped_mm does not run on this CPU build")
def test_sliced_inference_reads_nothing_back_to_the_host(monkeypatch) -> None:
    monkeypatch.setitem(grouped_gemm._GROUPED_MM_OK, ("cpu", torch.float32), True)
    monkeypatch.setattr(experts_module, "INFERENCE_PAIRS", 7)
    experts, x, topk_idx, topk_vals = _case(4, 2)
    gates = _gates(topk_idx, topk_vals, 4).detach()

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside the sparse dispatch")

    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    with torch.no_grad():
        out = experts.forward_sparse(x.detach(), topk_idx, gates)
    monkeypatch.undo()
    assert out.shape == (B, H) and torch.isfinite(out).all()
