from __future__ import annotations

import pytest
import torch

from cesaa.experts import StackedExperts

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


@pytest.mark.parametrize(("e", "k"), [(4, 1), (4, 2), (4, 4), (3, 2), (8, 3)])
def test_sparse_matches_dense_forward_and_gradients(e: int, k: int) -> None:
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


def test_sparse_dispatch_skips_unselected_experts() -> None:
    experts, x, topk_idx, topk_vals = _case(4, 2, never=3)
    with torch.no_grad():
        experts.weights[0][3].fill_(float("nan"))
    gates = _gates(topk_idx, topk_vals, 4)
    sparse = experts.forward_sparse(x, topk_idx, gates)
    assert torch.isfinite(sparse).all()
    # the oracle runs every expert, so the NaN expert poisons it (0 * NaN = NaN)
    assert torch.isnan(experts.forward_dense_masked(x, gates)).any()


def test_sparse_dispatch_runs_each_selected_expert_once_on_its_rows() -> None:
    experts, x, topk_idx, topk_vals = _case(4, 2, never=1)
    calls: list[tuple[int, int]] = []
    original = experts.forward_expert

    def counting(rows: torch.Tensor, e: int) -> torch.Tensor:
        calls.append((e, rows.shape[0]))
        return original(rows, e)

    experts.forward_expert = counting  # instance attribute shadows the method
    experts.forward_sparse(x, topk_idx, _gates(topk_idx, topk_vals, 4))
    counts = torch.bincount(topk_idx.flatten(), minlength=4).tolist()
    assert calls == [(e, c) for e, c in enumerate(counts) if c > 0]
    assert 1 not in [e for e, _ in calls]
    assert sum(c for _, c in calls) == B * 2


def test_gates_scale_the_output() -> None:
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
