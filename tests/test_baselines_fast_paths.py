"""The baselines' fast paths against straightforward references written out here.

``StackedMLP`` (one GEMM for layer 0 of every group, strided batched GEMMs after it, in-place ReLUs
without autograd, a width-1 last layer as a dot product), ``fused_linear``, ``select_domain``,
``mix_experts``, ``softmax_rows`` and MMoE's forward (experts and gates in one GEMM) must give the
outputs and gradients of the plain computation: each group's MLP as a loop of ``x @ w[g] + b[g]``,
every domain's gate and tower on every row and then the row's own, ``einsum`` mixing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cesaa.config import ModelConfig
from cesaa.experts import StackedMLP
from cesaa.features import FeatureSpec
from cesaa.models.baselines.blocks import (
    fused_linear,
    mix_experts,
    mix_experts_per_domain,
    override_dense_gate,
    select_domain,
    softmax_rows,
)
from cesaa.models.baselines.mmoe import MMoE
from cesaa.models.output import RoutingOverride

SPEC = FeatureSpec(("user", "item", "ctx"), (10, 12, 8), ("n0", "n1"), ("d0", "d1", "d2"))
B = 37  # not a multiple of anything
TOL = {"atol": 1e-5, "rtol": 1e-4}


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_stacked(mlp: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """Group g's MLP, written as a loop: x [B, I] or [B, G, I] -> [B, G, O]."""
    outs = []
    last = len(mlp.weights) - 1
    for g in range(mlp.groups):
        h = x if x.dim() == 2 else x[:, g]
        for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
            h = h @ w[g] + b[g]
            if i < last or mlp.out_relu:
                h = torch.relu(h)
        outs.append(h)
    return torch.stack(outs, dim=1)


STACKS = [  # (groups, in, hidden, out, out_relu)
    (3, 7, (5,), 4, True),  # experts
    (3, 6, (4,), 1, False),  # towers: width-1 last layer
    (4, 7, (), 3, False),  # gates: one linear layer
    (2, 5, (6, 3), 1, True),  # two hidden layers, ReLU on a width-1 output
    (1, 5, (4,), 2, False),
]


@pytest.mark.parametrize(("g", "i", "hidden", "o", "out_relu"), STACKS)
@pytest.mark.parametrize("shared_input", [True, False])
def test_stacked_mlp_matches_a_loop_over_groups_forward_and_backward(
    g, i, hidden, o, out_relu, shared_input
):
    torch.manual_seed(0)
    mlp = StackedMLP(g, i, hidden, o, out_relu=out_relu)
    x = torch.randn(B, i) if shared_input else torch.randn(B, g, i)
    x.requires_grad_(True)
    out = mlp(x)  # [B, G, O]
    assert out.shape == (B, g, o)
    grad_out = torch.randn(B, g, o)
    grads = torch.autograd.grad((out * grad_out).sum(), [x, *mlp.parameters()])
    ref = reference_stacked(mlp, x)
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), [x, *mlp.parameters()])
    torch.testing.assert_close(out, ref, **TOL)
    for a, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, r, **TOL)
    with torch.no_grad():  # the in-place path
        torch.testing.assert_close(mlp(x), ref, **TOL)
        torch.testing.assert_close(mlp.forward_grouped(x), ref.transpose(0, 1), **TOL)


def test_stacked_mlp_forward_rest_continues_a_flat_first_layer():
    torch.manual_seed(0)
    mlp = StackedMLP(3, 7, (5,), 4, out_relu=True)
    x = torch.randn(B, 7)
    w, b = mlp.flat_first_layer()
    assert w.shape == (7, 15) and b.shape == (15,)
    # group g's columns g*5 .. g*5+4 are its layer 0
    torch.testing.assert_close((x @ w + b)[:, 5:10], x @ mlp.weights[0][1] + mlp.biases[0][1])
    torch.testing.assert_close(
        mlp.forward_rest(x @ w + b).transpose(0, 1), reference_stacked(mlp, x), **TOL
    )


def test_stacked_mlp_with_dropout_draws_the_same_masks_as_before():
    """Training with dropout keeps the contiguous [G, B, O] layout the masks were drawn in:
    written out, relu(layer 0) laid out [G, B, O], then dropout, then the next layer."""
    torch.manual_seed(0)
    mlp = StackedMLP(3, 7, (5,), 4, dropout=0.5, out_relu=True).train()
    x = torch.randn(B, 7)
    torch.manual_seed(1)
    out = mlp(x)
    torch.manual_seed(1)
    h = torch.stack([x @ mlp.weights[0][g] + mlp.biases[0][g] for g in range(3)])  # [G, B, 5]
    h = F.dropout(torch.relu(h), 0.5, training=True)
    ref = torch.relu(torch.stack([h[g] @ mlp.weights[1][g] + mlp.biases[1][g] for g in range(3)]))
    torch.testing.assert_close(out, ref.transpose(0, 1), **TOL)
    assert (out == 0).any()  # dropout did act


def test_fused_linear_is_each_linear_map_and_pads_to_16_columns():
    torch.manual_seed(0)
    x = torch.randn(B, 9, requires_grad=True)
    parts = [(torch.randn(9, 10, requires_grad=True), torch.randn(10, requires_grad=True)),
             (torch.randn(9, 3, requires_grad=True), torch.randn(3, requires_grad=True))]  # fmt: skip
    outs = fused_linear(x, parts)
    assert [o.shape for o in outs] == [(B, 10), (B, 3)]
    assert outs[0].untyped_storage().nbytes() == B * 16 * 4  # 13 columns padded to 16, float32
    refs = [x @ w + b for w, b in parts]
    leaves = [x] + [t for p in parts for t in p]
    got = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(outs)), leaves)
    want = torch.autograd.grad(sum((r * (k + 1)).sum() for k, r in enumerate(refs)), leaves)
    for o, r in zip(outs, refs, strict=True):
        torch.testing.assert_close(o, r, **TOL)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, **TOL)


def test_select_domain_is_each_rows_own_slice_on_strided_views():
    torch.manual_seed(0)
    base = torch.randn(B, 4, 3, 5)
    domain = torch.randint(0, 3, (B,))
    for t in (base[:, :3], base.transpose(2, 3)[:, 1:], base[:, :3, 0]):
        want = torch.stack([t[r, domain[r]] for r in range(B)])
        assert torch.equal(select_domain(t, domain), want)


MIXES = {  # name: (function, gate shape [B, ..., E], einsum reference, output shape)
    "one gate per row": (mix_experts, (B, 4), "be,ebh->bh", (B, 6)),
    "every domain's gate": (mix_experts_per_domain, (B, 3, 4), "bde,ebh->bdh", (B, 3, 6)),
}


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("mix", list(MIXES))
def test_mixing_is_the_gate_weighted_sum_of_experts(mix, grad):
    fn, gate_shape, equation, out_shape = MIXES[mix]
    torch.manual_seed(0)
    gates = torch.softmax(torch.randn(gate_shape), -1).requires_grad_(grad)
    experts = torch.randn(B, 4, 6).transpose(0, 1).requires_grad_(grad)  # [E, B, H] strided
    with torch.set_grad_enabled(grad):
        out = fn(gates, experts)
    ref = torch.einsum(equation, gates, experts)
    assert out.shape == out_shape
    torch.testing.assert_close(out, ref, **TOL)
    if grad:
        g = torch.randn(out_shape)
        got = torch.autograd.grad((out * g).sum(), [gates, experts])
        want = torch.autograd.grad((ref * g).sum(), [gates, experts])
        for a, r in zip(got, want, strict=True):
            torch.testing.assert_close(a, r, **TOL)


def test_softmax_rows_is_a_softmax_over_the_last_dim():
    logits = torch.randn(B, 5) * 4
    torch.testing.assert_close(softmax_rows(logits), torch.softmax(logits, -1), **TOL)
    assert softmax_rows(logits).sum(-1) == pytest.approx(torch.ones(B), abs=1e-6)


def reference_mmoe(model: MMoE, cat, num, domain, routing=None):
    """Every domain's gate and tower on every row, then each row's own; einsum mixing."""
    x = model.embedding(cat, num)
    experts = reference_stacked(model.experts, x)  # [B, n, H]
    every_gate = reference_stacked(model.gates, x)  # [B, D, n]
    logits = every_gate[torch.arange(len(domain)), domain]  # [B, n]
    probs, gates, topk = override_dense_gate(torch.softmax(logits, dim=-1), routing)
    mixed = torch.einsum("bn,bnh->bh", gates, experts)
    every_tower = reference_stacked(model.towers, mixed)  # [B, D, 1]
    return every_tower[torch.arange(len(domain)), domain, 0], probs, gates, topk, experts


def _batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (b,), generator=g) for c in SPEC.cat_cardinalities], 1)
    num = torch.randn(b, SPEC.num_numeric, generator=g)
    domain = torch.randint(0, 3, (b,), generator=g)
    label = torch.randint(0, 2, (b,), generator=g).float()
    return cat, num, domain, label


ROUTINGS = [
    None,
    RoutingOverride(top_k=1),
    RoutingOverride(top_k=2),
    RoutingOverride(knocked_out=(0,)),
    RoutingOverride(knocked_out=(1, 3), top_k=2),
]


@pytest.mark.parametrize("experts", [0, 5])
@pytest.mark.parametrize("routing", ROUTINGS, ids=str)
def test_mmoe_matches_every_domain_reference_in_eval(experts, routing):
    if experts == 0 and routing is not None and 3 in routing.knocked_out:
        routing = RoutingOverride(knocked_out=(1,), top_k=1)  # 3 experts: stay in range
    torch.manual_seed(0)
    model = MMoE(ModelConfig(name="mmoe", mmoe_experts=experts), SPEC).eval()
    cat, num, domain, _ = _batch()
    with torch.no_grad():
        out = model(cat, num, domain, routing=routing, return_expert_outputs=True)
        logit, probs, gates, topk, expert_out = reference_mmoe(model, cat, num, domain, routing)
    torch.testing.assert_close(out.logit, logit, **TOL)
    torch.testing.assert_close(out.probs, probs, **TOL)
    torch.testing.assert_close(out.gates, gates, **TOL)
    torch.testing.assert_close(out.expert_outputs, expert_out, **TOL)
    assert (out.topk_idx is None) == (topk is None)
    if topk is not None:
        assert torch.equal(out.topk_idx, topk)


@pytest.mark.parametrize("hidden", [(64,), ()])
def test_mmoe_training_gradients_match_the_reference(hidden):
    torch.manual_seed(0)
    model = MMoE(ModelConfig(name="mmoe", expert_hidden=hidden), SPEC).train()
    cat, num, domain, label = _batch(1)
    params = list(model.parameters())
    out = model(cat, num, domain)
    got = torch.autograd.grad(F.binary_cross_entropy_with_logits(out.logit, label), params)
    logit = reference_mmoe(model, cat, num, domain)[0]
    want = torch.autograd.grad(F.binary_cross_entropy_with_logits(logit, label), params)
    torch.testing.assert_close(out.logit, logit, **TOL)
    for (name, _), a, r in zip(model.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(a, r, **TOL, msg=name)


@pytest.mark.parametrize("name", ["mmoe", "ple", "star", "shared_bottom", "hmoe", "m2m"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_empty_batch_and_determinism_under_a_seed(name, dropout):
    from cesaa.models import build_model, default_config

    torch.manual_seed(0)
    model = build_model(default_config(name), SPEC).eval()
    cat, num, domain, label = _batch(2)
    assert model(cat[:0], num[:0], domain[:0]).logit.shape == (0,)
    runs = []
    for _ in range(2):  # the same seed, the same training steps: the same parameters, bit for bit
        torch.manual_seed(0)
        m = build_model(default_config(name, dropout=dropout), SPEC).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(3):
            out = m(cat, num, domain)
            loss = F.binary_cross_entropy_with_logits(out.logit, label) + out.aux_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_fused_linear_backward_with_an_unused_part():
    torch.manual_seed(0)
    x = torch.randn(B, 5, requires_grad=True)
    (w1, b1), (w2, b2) = [(torch.randn(5, n, requires_grad=True), torch.randn(n)) for n in (4, 6)]
    first, _ = fused_linear(x, [(w1, b1), (w2, b2)])
    got = torch.autograd.grad(first.sum(), [x, w1, w2])
    want = torch.autograd.grad((x @ w1 + b1).sum(), [x, w1])
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], want[1], **TOL)
    assert torch.equal(got[2], torch.zeros(5, 6))  # the unused part's weight gets exactly 0
