from __future__ import annotations

import math

import pytest
import torch

from cesaa.losses import balance_loss, cv_squared, joint_domain_expert, mi_loss, mutual_information

B, D, E = 30, 3, 4


def test_joint_sums_to_one_and_has_domain_marginals() -> None:
    probs = torch.softmax(torch.randn(B, E, generator=torch.Generator().manual_seed(0)), dim=-1)
    domain = torch.tensor([0] * 10 + [1] * 5 + [2] * 15)
    m = joint_domain_expert(probs, domain, D)
    assert m.shape == (D, E)
    assert m.sum().item() == pytest.approx(1.0)
    assert m.sum(dim=1).tolist() == pytest.approx([10 / B, 5 / B, 15 / B])


def test_mi_zero_when_routing_ignores_domain() -> None:
    row = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.5]), dim=-1)
    probs = row.expand(B, E)
    domain = torch.arange(B) % D
    mi = mutual_information(joint_domain_expert(probs, domain, D))
    assert mi.item() == pytest.approx(0.0, abs=1e-6)


def test_mi_log_d_for_one_expert_per_balanced_domain() -> None:
    domain = torch.arange(B) % 3
    probs = torch.nn.functional.one_hot(domain, 3).float()  # D = E = 3
    mi = mutual_information(joint_domain_expert(probs, domain, 3))
    assert mi.item() == pytest.approx(math.log(3), rel=1e-6)


def test_mi_log_2_for_two_domains_on_disjoint_expert_pairs() -> None:
    domain = torch.arange(B) % 2
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])[domain]
    mi = mutual_information(joint_domain_expert(probs, domain, 2))
    assert mi.item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_mi_bounded_on_random_inputs(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(B, E, generator=g), dim=-1)
    domain = torch.randint(0, D, (B,), generator=g)
    mi = mutual_information(joint_domain_expert(probs, domain, D)).item()
    assert 0.0 <= mi <= math.log(min(D, E)) + 1e-6
    assert mi > 0.0


def test_mi_loss_is_negative_mi_and_differentiable() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, E, generator=g, requires_grad=True)
    domain = torch.arange(B) % D
    loss, mi = mi_loss(torch.softmax(logits, dim=-1), domain, D)
    assert loss.item() == pytest.approx(-mi.item())
    assert not mi.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.isfinite(logits.grad).all()


def test_mi_loss_with_a_zero_expert_column_has_finite_gradient() -> None:
    logits = torch.randn(B, E, generator=torch.Generator().manual_seed(1))
    logits[:, 2] = float("-inf")  # a knocked-out expert: probability exactly 0
    logits.requires_grad_(True)
    loss, _ = mi_loss(torch.softmax(logits, dim=-1), torch.arange(B) % D, D)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_cv_squared_known_values() -> None:
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    # population var([1, 3]) = ((1 - 2)^2 + (3 - 2)^2) / 2 = 1, mean^2 = 4 (was 0.5 with ddof=1)
    assert cv_squared(torch.tensor([1.0, 3.0])).item() == pytest.approx(0.25)
    assert cv_squared(torch.tensor([5.0])).item() == 0.0


def test_balance_loss_zero_when_balanced_positive_otherwise() -> None:
    gates = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    assert balance_loss(gates, torch.ones(4)).item() == pytest.approx(0.0)
    skewed = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # importance [1, 1, 0, 0]: population var 1/4, mean 1/2 -> 1;  load [2, 2, 0, 0]: the same
    assert balance_loss(skewed, torch.tensor([2.0, 2.0, 0.0, 0.0])).item() == pytest.approx(2.0)


def test_mutual_information_of_an_all_zero_joint_is_zero_without_a_host_sync(monkeypatch) -> None:
    joint = torch.zeros(D, E, requires_grad=True)
    probs = torch.softmax(torch.randn(B, E, generator=torch.Generator().manual_seed(2)), dim=-1)

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside the MI loss")

    for method in ("item", "tolist", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    zero = mutual_information(joint)
    loss, mi = mi_loss(probs, torch.arange(B) % D, D)
    zero.backward()
    monkeypatch.undo()
    assert zero.item() == 0.0 and torch.isfinite(joint.grad).all()
    assert loss.item() == pytest.approx(-mi.item())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mi_loss_gradient_matches_finite_differences(seed: int) -> None:
    # the closed-form backward against central differences in float64 (torch.autograd.gradcheck)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, E, generator=g, dtype=torch.float64)
    if seed == 2:
        logits[:, 1] = float("-inf")  # a knocked-out expert: a zero column of the joint
    domain = torch.arange(B) % D

    def loss(z: torch.Tensor) -> torch.Tensor:
        return mi_loss(torch.softmax(z, dim=-1), domain, D)[0]

    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (z,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_mi_loss_gradient_of_one_probability_in_closed_form() -> None:
    # two domains, two experts, one row each: p = [[a, 1-a], [0.5, 0.5]], M = p / 2.
    # d I / d a by hand: m = [[a/2, (1-a)/2], [1/4, 1/4]], p_d = 1/2, p_e = [(a + 1/2)/2, (3/2 - a)/2]
    # I(a) = sum m log(m / (p_d p_e)); dI/da = (1/2) [log(a / (a + 1/2)) - log((1-a) / (3/2 - a))]
    a = 0.8
    p = torch.tensor([[a, 1 - a], [0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    loss, _ = mi_loss(p, torch.tensor([0, 1]), 2)
    (-loss).backward()
    want = 0.5 * (math.log(a / (a + 0.5)) - math.log((1 - a) / (1.5 - a)))
    # the probability of the first expert in row 0 moves mass between the two columns of row 0;
    # the gradient w.r.t. the row is [dI/dp00, dI/dp01], whose difference is dI/da
    assert float(p.grad[0, 0] - p.grad[0, 1]) == pytest.approx(want, rel=1e-9)
    # and the value: I(a) summed by hand over the four cells
    m = [[a / 2, (1 - a) / 2], [0.25, 0.25]]
    pe = [a / 2 + 0.25, (1 - a) / 2 + 0.25]
    value = sum(m[d][e] * math.log(m[d][e] / (0.5 * pe[e])) for d in range(2) for e in range(2))
    assert -float(loss) == pytest.approx(value, rel=1e-12)


def test_mi_loss_is_zero_with_zero_gradient_for_an_all_zero_batch() -> None:
    p = torch.zeros(4, 3, requires_grad=True)
    loss, mi = mi_loss(p, torch.tensor([0, 1, 0, 1]), 2)
    loss.backward()
    assert mi.item() == 0.0 and torch.equal(p.grad, torch.zeros(4, 3))
