from __future__ import annotations

import pytest
import torch

from cesaa.gating import GateOutput, NoisyTopKGate, check_routing, noisy_top_k_gating

B, D, E, K, DIN, DE = 32, 3, 4, 2, 6, 5


def _logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, E, generator=g), torch.randn(B, E, generator=g)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, DIN, generator=g)
    e_d = torch.randn(B, DE, generator=g)
    domain = torch.arange(B) % D
    return x, e_d, domain


def _random_gate(gate_input: str = "concat", noisy: bool = True) -> NoisyTopKGate:
    gate = NoisyTopKGate(DIN, DE, E, D, gate_input=gate_input, noisy=noisy)
    with torch.no_grad():
        gate.w_gate.normal_(generator=torch.Generator().manual_seed(1))
        if gate.w_noise is not None:
            gate.w_noise.normal_(generator=torch.Generator().manual_seed(2))
    return gate


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exactly_k_nonzeros_and_rows_sum_to_one(training: bool, k: int) -> None:
    clean, noise = _logits()
    out = noisy_top_k_gating(clean, noise, k, training)
    assert isinstance(out, GateOutput)
    assert out.gates.shape == (B, E) and out.probs.shape == (B, E) and out.load.shape == (E,)
    assert out.topk_idx.shape == (B, k)
    assert ((out.gates != 0).sum(dim=1) == k).all()
    # the weights the sparse dispatch reads are exactly the gates at the selected experts
    assert torch.equal(out.topk_gates, out.gates.gather(1, out.topk_idx))
    if k > 1:
        assert out.gates.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    else:  # Switch Transformer: the one selected expert is weighted by its router probability
        assert (out.gates.sum(dim=1) < 1).all()
    assert out.probs.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    # the non-zeros are exactly the selected experts
    selected = torch.zeros(B, E, dtype=torch.bool).scatter(1, out.topk_idx, True)
    assert torch.equal(selected, out.gates != 0)


def test_probs_are_float32_softmax_of_clean_logits() -> None:
    clean, noise = _logits()
    out = noisy_top_k_gating(clean.to(torch.bfloat16), noise, K, training=True)
    assert out.probs.dtype == torch.float32 and out.gates.dtype == torch.float32
    expected = torch.softmax(clean.to(torch.bfloat16).float(), dim=-1)
    assert torch.allclose(out.probs, expected)


def test_eval_is_deterministic_and_ignores_noise() -> None:
    clean, noise = _logits()
    a = noisy_top_k_gating(clean, noise, K, training=False)
    b = noisy_top_k_gating(clean, noise, K, training=False)
    c = noisy_top_k_gating(clean, None, K, training=False)
    assert torch.equal(a.gates, b.gates) and torch.equal(a.gates, c.gates)
    assert torch.equal(a.topk_idx, c.topk_idx)
    # eval selects the top-k of the clean logits
    assert torch.equal(a.topk_idx, clean.topk(K, dim=-1).indices)


def test_training_noise_differs_between_calls_and_generator_reproduces() -> None:
    clean, noise = _logits()
    a = noisy_top_k_gating(clean, noise, K, training=True)
    b = noisy_top_k_gating(clean, noise, K, training=True)
    assert not torch.equal(a.gates, b.gates)
    c = noisy_top_k_gating(clean, noise, K, True, generator=torch.Generator().manual_seed(5))
    d = noisy_top_k_gating(clean, noise, K, True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c.gates, d.gates)
    # probs never see the noise
    assert torch.equal(a.probs, b.probs)


def test_gate_module_eval_deterministic_train_noisy() -> None:
    gate = _random_gate()
    x, e_d, domain = _inputs()
    gate.eval()
    a, b = gate(x, e_d, domain, K), gate(x, e_d, domain, K)
    assert torch.equal(a.gates, b.gates)
    gate.train()
    c, d = gate(x, e_d, domain, K), gate(x, e_d, domain, K)
    assert not torch.equal(c.gates, d.gates)


def test_zero_init_gate_is_uniform() -> None:
    gate = NoisyTopKGate(DIN, DE, E, D)
    x, e_d, domain = _inputs()
    out = gate.eval()(x, e_d, domain, K)
    assert out.probs.flatten().tolist() == pytest.approx([1 / E] * (B * E))
    assert out.gates.max().item() == pytest.approx(1 / K)


def test_gradients_reach_w_gate_and_w_noise() -> None:
    gate = NoisyTopKGate(DIN, DE, E, D)  # zero init, as used in training
    x, e_d, domain = _inputs()
    weights = torch.randn(B, E, generator=torch.Generator().manual_seed(3))
    out = gate.train()(x, e_d, domain, K, generator=torch.Generator().manual_seed(4))
    (out.gates * weights).sum().backward()
    assert gate.w_gate.grad is not None and gate.w_gate.grad.abs().sum() > 0
    assert gate.w_noise.grad is not None and gate.w_noise.grad.abs().sum() > 0


def test_load_gradient_reaches_w_noise() -> None:
    gate = _random_gate()
    x, e_d, domain = _inputs()
    out = gate.train()(x, e_d, domain, K)
    out.load.var().backward()
    assert gate.w_noise.grad.abs().sum() > 0


@pytest.mark.parametrize("training", [False, True])
def test_knocked_out_experts_never_selected_and_get_zero_prob(training: bool) -> None:
    clean, noise = _logits()
    clean[:, 1] += 10.0  # expert 1 would win every row
    out = noisy_top_k_gating(clean, noise, K, training, knocked_out=(1,))
    assert not (out.topk_idx == 1).any()
    assert (out.probs[:, 1] == 0).all() and (out.gates[:, 1] == 0).all()
    assert out.load[1].item() == 0.0
    assert out.probs.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    assert out.gates.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    rest = [0, 2, 3]
    expected = torch.softmax(clean[:, rest], dim=-1)
    assert torch.allclose(out.probs[:, rest], expected)


def test_knocked_out_gradients_are_finite() -> None:
    clean, noise = _logits()
    clean.requires_grad_(True)
    noise.requires_grad_(True)
    out = noisy_top_k_gating(clean, noise, K, True, knocked_out=(0, 3))
    (out.gates.sum(0) @ torch.arange(E).float() + out.probs[:, 1].sum() + out.load.sum()).backward()
    assert torch.isfinite(clean.grad).all() and torch.isfinite(noise.grad).all()


def test_k_equal_e_gives_dense_softmax() -> None:
    clean, _ = _logits()
    out = noisy_top_k_gating(clean, None, E, training=True)
    assert torch.allclose(out.gates, out.probs, atol=1e-7)
    assert torch.allclose(out.gates, torch.softmax(clean, dim=-1), atol=1e-7)


def test_load_without_noise_is_selection_count() -> None:
    clean, noise = _logits()
    for out in (
        noisy_top_k_gating(clean, noise, K, training=False),
        noisy_top_k_gating(clean, None, K, training=True),
    ):
        counts = torch.bincount(out.topk_idx.flatten(), minlength=E).float()
        assert torch.equal(out.load, counts)
        assert out.load.sum().item() == B * K


def test_smooth_load_is_a_probability_sum() -> None:
    clean, noise = _logits()
    out = noisy_top_k_gating(clean, noise, K, training=True)
    assert out.load.shape == (E,)
    assert (out.load >= 0).all() and (out.load <= B).all()
    assert not torch.equal(out.load, out.load.round())  # smooth, not counts
    # in expectation each row puts about k experts in its top k
    assert out.load.sum().item() == pytest.approx(B * K, rel=0.35)


def test_smooth_load_matches_brute_force_definition() -> None:
    """load_e = sum_x P(H'_e > k-th largest H of the other experts), H'_e = clean_e + N(0, std_e)."""
    clean, noise = _logits()
    out = noisy_top_k_gating(clean, noise, K, True, generator=torch.Generator().manual_seed(8))
    eps = torch.randn(B, E, generator=torch.Generator().manual_seed(8))  # the same draw
    std = torch.nn.functional.softplus(noise) + 1e-2
    h = clean + eps * std
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = torch.zeros(E)
    for e in range(E):
        others = torch.cat([h[:, :e], h[:, e + 1 :]], dim=1)  # [B, E-1]
        threshold = others.topk(K, dim=1).values[:, -1]  # [B]
        expected[e] = normal.cdf((clean[:, e] - threshold) / std[:, e]).sum()
    assert out.load.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("gate_input", ["concat", "per_domain", "features"])
def test_each_gate_input_mode_works(gate_input: str) -> None:
    gate = _random_gate(gate_input)
    x, e_d, domain = _inputs()
    out = gate.eval()(x, e_d, domain, K)
    assert ((out.gates != 0).sum(dim=1) == K).all()
    # only "concat" reads the domain embedding
    out2 = gate(x, e_d + 1.0, domain, K)
    assert torch.equal(out.logits, out2.logits) == (gate_input != "concat")


def test_gate_input_shapes() -> None:
    assert NoisyTopKGate(DIN, DE, E, D, "concat").w_gate.shape == (DIN + DE, E)
    assert NoisyTopKGate(DIN, DE, E, D, "per_domain").w_gate.shape == (D, DIN, E)
    assert NoisyTopKGate(DIN, DE, E, D, "features").w_gate.shape == (DIN, E)
    assert NoisyTopKGate(DIN, DE, E, D, noisy=False).w_noise is None
    with pytest.raises(ValueError, match="gate_input"):
        NoisyTopKGate(DIN, DE, E, D, "bogus")


def test_per_domain_weights_change_only_their_domain_rows() -> None:
    gate = _random_gate("per_domain").eval()
    x, e_d, domain = _inputs()
    before = gate(x, e_d, domain, K).logits
    with torch.no_grad():
        gate.w_gate[1].normal_(generator=torch.Generator().manual_seed(9))
    after = gate(x, e_d, domain, K).logits
    changed = (before != after).any(dim=1)
    assert torch.equal(changed, domain == 1)


def test_per_domain_gradient_only_reaches_present_domains() -> None:
    gate = _random_gate("per_domain").eval()
    x, e_d, _ = _inputs()
    domain = torch.zeros(B, dtype=torch.long)  # only domain 0 in the batch
    gate(x, e_d, domain, K).probs[:, 0].sum().backward()
    assert gate.w_gate.grad[0].abs().sum() > 0
    assert gate.w_gate.grad[1:].abs().sum() == 0


def test_noiseless_module_has_no_noise() -> None:
    gate = _random_gate(noisy=False).train()
    x, e_d, domain = _inputs()
    assert torch.equal(gate(x, e_d, domain, K).gates, gate(x, e_d, domain, K).gates)


@pytest.mark.parametrize("k", [0, 5, -1])
def test_invalid_k_raises(k: int) -> None:
    clean, noise = _logits()
    with pytest.raises(ValueError, match="top_k"):
        noisy_top_k_gating(clean, noise, k, training=False)


def test_check_routing() -> None:
    assert check_routing(2, 4, (3, 1, 3)) == (1, 3)
    with pytest.raises(ValueError, match="top_k=3 must be in \\[1, 2\\]"):
        check_routing(3, 4, (0, 1))
    with pytest.raises(ValueError, match="knocked_out"):
        check_routing(1, 4, (4,))
    with pytest.raises(ValueError, match="knocked_out"):
        check_routing(1, 4, (-1,))


@pytest.mark.parametrize("training", [False, True])
def test_k1_gate_is_the_router_probability_and_trains(training: bool) -> None:
    """With k = 1 a softmax over the one selected value would be constantly 1 and the gate would get
    no gradient from the task loss; the weight is the router probability softmax(H)[e] instead."""
    clean, noise = _logits()
    clean = clean.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(3)
    out = noisy_top_k_gating(clean, noise, 1, training, generator=gen)
    if not training:  # without noise H = the clean logits: the weight is probs at the selection
        expected = out.probs.gather(1, out.topk_idx)
        assert torch.allclose(out.gates.gather(1, out.topk_idx), expected, atol=1e-6)
    out.gates.sum().backward()
    assert clean.grad is not None and clean.grad.abs().sum() > 0


# ---- inference-time k overrides: only the set of experts changes ---------------------------------


def test_k1_override_of_a_k2_gate_weights_the_top_expert_one() -> None:
    """Re-routing a k = 2 gate to k = 1 gives the top expert weight exactly 1 (not p_max); a gate
    trained with k = 1 keeps its Switch weight p_max."""
    clean, _ = _logits()
    over = noisy_top_k_gating(clean, None, 1, False, trained_k=2)
    assert torch.equal(over.gates.gather(1, over.topk_idx), torch.ones(B, 1))
    assert torch.equal(over.topk_idx, clean.argmax(dim=1, keepdim=True))
    for trained in (None, 1):
        native = noisy_top_k_gating(clean, None, 1, False, trained_k=trained)
        p_max = torch.softmax(clean, dim=1).max(dim=1, keepdim=True).values
        assert torch.allclose(native.gates.gather(1, native.topk_idx), p_max)
        assert (native.gates.sum(1) < 1).all()


@pytest.mark.parametrize(("k", "trained"), [(2, 4), (3, 1), (2, 2), (4, 2)])
def test_k_override_renormalizes_the_selected_probabilities(k: int, trained: int) -> None:
    clean, _ = _logits()
    out = noisy_top_k_gating(clean, None, k, False, trained_k=trained)
    p = torch.softmax(clean, dim=1)
    top = p.topk(k, dim=1)
    expected = torch.zeros(B, E).scatter(
        1, top.indices, top.values / top.values.sum(1, keepdim=True)
    )
    assert torch.allclose(out.gates, expected, atol=1e-6)
    torch.testing.assert_close(out.probs, p)  # the softmax of the clean logits, to rounding
    other = noisy_top_k_gating(clean, None, 1, False, trained_k=trained)
    assert torch.equal(out.probs, other.probs)  # probs never depend on k


def _moe(k: int, dispatch: str = "sparse", **kw):
    from cesaa.config import ModelConfig
    from cesaa.features import FeatureSpec
    from cesaa.models.cesaa_model import CESAA

    spec = FeatureSpec(("a", "b"), (7, 5), ("n0",), ("d0", "d1", "d2"))
    cfg = dict(num_experts=E, top_k=k, num_shared=0, alpha=0.0, dispatch=dispatch, embed_dim=4)
    cfg.update(kw)
    torch.manual_seed(0)
    model = CESAA(ModelConfig(name="cesaa", expert_hidden=(8,), expert_dim=6, **cfg), spec)
    with torch.no_grad():  # a gate that is not uniform
        model.gate.w_gate.normal_(generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in (7, 5)], 1)
    return model.eval(), (cat, torch.randn(B, 1, generator=g), torch.arange(B) % D)


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_k1_override_of_a_k2_model_outputs_the_top_experts_output(dispatch: str) -> None:
    """The regression of issue 9 item 3: before, the mixture was p_max * the top expert's output."""
    from cesaa.models.output import RoutingOverride

    model, (cat, num, domain) = _moe(2, dispatch)
    with torch.no_grad():
        c = model.select(cat, num, domain, RoutingOverride(top_k=1))
        every = model.experts.forward_all(c.x)  # [B, E, H]
    top = every[torch.arange(B), c.gate.topk_idx[:, 0]]  # [B, H]
    if dispatch == "dense":  # 1.0 * y + 0 * others: exactly y
        assert torch.equal(c.h, top)
    else:  # the sparse path runs the expert on grouped rows: same function, float rounding
        torch.testing.assert_close(c.h, top, rtol=1e-6, atol=1e-7)
    assert (c.gate.probs.max(1).values < 0.99).all()  # p_max would have visibly shrunk it


@pytest.mark.parametrize("k", [1, 2, 3])
def test_trained_k_override_reproduces_the_model_bit_for_bit(k: int) -> None:
    from cesaa.models.output import RoutingOverride

    model, (cat, num, domain) = _moe(k, num_shared=1)
    with torch.no_grad():
        base = model(cat, num, domain)
        same = model(cat, num, domain, routing=RoutingOverride(top_k=k))
    assert torch.equal(same.logit, base.logit) and torch.equal(same.gates, base.gates)


def test_per_domain_projection_equals_each_rows_own_matrix_without_gathering_it() -> None:
    gate = _random_gate("per_domain").eval()
    x, e_d, domain = _inputs()
    expected = torch.stack([x[i] @ gate.w_gate[domain[i]] for i in range(B)])  # row by row
    assert torch.allclose(gate(x, e_d, domain, K).logits, expected, atol=1e-5)


def test_gating_reads_nothing_back_to_the_host(monkeypatch) -> None:
    gate = _random_gate("per_domain").train()
    x, e_d, domain = _inputs()

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside the gate")

    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    out = gate(x, e_d, domain, K)
    (out.gates.sum() + out.load.sum()).backward()
    monkeypatch.undo()
    assert gate.w_gate.grad is not None


def test_smooth_load_off_gives_selection_counts_and_the_same_gates() -> None:
    gate = _random_gate().train()
    x, e_d, domain = _inputs()
    smooth = gate(x, e_d, domain, K, generator=torch.Generator().manual_seed(3))
    counts = gate(x, e_d, domain, K, generator=torch.Generator().manual_seed(3), smooth_load=False)
    assert torch.equal(smooth.gates, counts.gates)
    expected = torch.bincount(counts.topk_idx.flatten(), minlength=E).float()
    assert torch.equal(counts.load, expected)
    assert not torch.equal(smooth.load, counts.load)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_eval_gates_equal_the_softmax_of_the_top_k_logits(k: int) -> None:
    # without autograd the top-k softmax takes an elementwise path: same weights as F.softmax
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 6, generator=g) * 4
    with torch.no_grad():
        out = noisy_top_k_gating(logits, None, k, training=False, trained_k=2)
    top = logits.topk(k, dim=-1)
    want = torch.zeros(64, 6).scatter(1, top.indices, torch.softmax(top.values, dim=-1))
    assert torch.allclose(out.gates, want, atol=1e-6, rtol=0)
    assert torch.allclose(out.gates.sum(dim=1), torch.ones(64), atol=1e-6)
