"""AdaSparse and PEPNet: the mechanisms that define them, with hand-set weights and closed forms.

Fixtures are tiny (B=48, 3 domains, 3 categorical + 2 numeric columns).
"""

from __future__ import annotations

import math

import pytest
import torch

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec
from cesaa.models.baselines.adasparse import AdaSparse, band_penalty, weighting_factor
from cesaa.models.baselines.pepnet import PEPNet, prior_columns
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import default_config, model_names, model_search_space

B, D, DE = 48, 3, 4
SPEC = FeatureSpec(
    cat_names=("user_id", "item_id", "ctx"),
    cat_cardinalities=(10, 12, 8),
    num_names=("n0", "n1"),
    domain_names=("d0", "d1", "d2"),
)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in SPEC.cat_cardinalities], 1)
    return cat, torch.randn(B, 2, generator=g), torch.arange(B) % D


def cfg(name: str, **kw) -> ModelConfig:
    base = dict(embed_dim=DE, expert_hidden=(8,), tower_hidden=(6,))
    return default_config(name, **{**base, **kw})


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# ---------------------------------------------------------------- AdaSparse


@pytest.mark.parametrize(
    ("form", "alpha", "expected"),
    [
        # v = -10, 0, 10 ; beta = 2, epsilon = 0.01
        ("binarization", 1.0, [0.0, 0.5, sig(10)]),  # sig(-10) = 4.5e-5 < eps -> pruned
        ("scaling", 5.0, [0.0, 1.0, 2 * sig(10)]),  # alpha ignored
        ("fusion", 0.5, [2 * sig(-5), 1.0, 2 * sig(5)]),  # 2 sig(-5) = 0.0134 >= eps -> kept
        ("fusion", 1.0, [0.0, 1.0, 2 * sig(10)]),
    ],
)
def test_weighting_factor_closed_form(form, alpha, expected):
    v = torch.tensor([-10.0, 0.0, 10.0], dtype=torch.float64)
    pi = weighting_factor(v, form, alpha, beta=2.0, epsilon=0.01)
    assert pi.tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    with pytest.raises(ValueError, match="form='hard' must be one of"):
        weighting_factor(v, "hard", alpha, 2.0, 0.01)


def _pruning_model() -> AdaSparse:
    """Hidden neuron 0 is pruned for domain 0 rows only: its pruner reads e_d and nothing else."""
    torch.manual_seed(0)
    m = AdaSparse(cfg("adasparse"), SPEC).eval()
    with torch.no_grad():
        m.domain_embedding.weight.copy_(torch.tensor([[1.0] * DE, [-1.0] * DE, [-1.0] * DE]))
        p = m.pruners[1].weight  # [8, De + 8]
        p.zero_()
        p[0, :DE] = -50.0  # domain 0: v = -200 -> pi = 0; domains 1, 2: v = +200 -> pi = beta
    return m


def test_adasparse_prunes_a_neuron_for_one_domain_only():
    m = _pruning_model()
    cat, num, domain = batch()
    with torch.no_grad():  # hidden neuron 0 = ReLU(1) = 1 on every row
        m.layers[0].weight[0].zero_()
        m.layers[0].bias[0].fill_(1.0)
    before = m(cat, num, domain).logit
    with torch.no_grad():
        m.layers[0].bias[0].fill_(4.0)  # change only hidden neuron 0: now 4 on every row
    after = m(cat, num, domain).logit
    d0 = domain == 0
    torch.testing.assert_close(after[d0], before[d0], rtol=0, atol=0)  # pruned: no effect at all
    changed = (after[~d0] - before[~d0]).abs() > 1e-6  # kept (x beta = 2) for the other domains
    assert changed.float().mean() > 0.5


def test_pruned_neurons_get_no_gradient_and_report_pruned_fraction():
    m = _pruning_model().train()
    m.cfg.adasparse_alpha_step = 0.0
    cat, num, _ = batch()
    domain = torch.zeros(B, dtype=torch.long)
    out = m(cat, num, domain)
    out.logit.sum().backward()
    assert m.layers[0].weight.grad[0].abs().max() == 0  # neuron 0 pruned on every row
    assert m.layers[0].weight.grad[1:].abs().max() > 0
    assert 0 < out.losses["pruned"].item() < 1
    assert out.aux_loss.item() == 0.0  # regularizer off by default


def test_alpha_anneals_in_training_only_and_travels_with_the_weights():
    c = cfg("adasparse", adasparse_alpha=1.0, adasparse_alpha_step=0.25)
    torch.manual_seed(0)
    m = AdaSparse(c, SPEC)
    cat, num, domain = batch()
    m.train()
    for _ in range(3):
        m(cat, num, domain)
    assert m.alpha.item() == pytest.approx(1.75)
    m.eval()
    first = m(cat, num, domain).logit
    assert m.alpha.item() == pytest.approx(1.75)  # evaluation leaves it alone
    torch.testing.assert_close(m(cat, num, domain).logit, first, rtol=0, atol=0)
    fresh = AdaSparse(c, SPEC).eval()
    fresh.load_state_dict(m.state_dict())
    assert fresh.alpha.item() == pytest.approx(1.75)
    torch.testing.assert_close(fresh(cat, num, domain).logit, first, rtol=0, atol=0)


def test_band_penalty_closed_form():
    soft = torch.full((2, 5), 0.6)
    half = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0, 0.0]])  # r = 0.4
    assert band_penalty(half, soft, 0.1, 0.3).item() == pytest.approx(abs(0.6 - 0.2))
    assert band_penalty(half, soft, 0.3, 0.5).item() == 0.0  # inside the band
    none = torch.ones(2, 5)  # r = 0 < r_min
    assert band_penalty(none, soft, 0.1, 0.3).item() == pytest.approx(0.4)


def test_sparsity_regularizer_is_the_weighted_sum_and_trains_the_pruners():
    torch.manual_seed(0)
    m = AdaSparse(cfg("adasparse", adasparse_sparsity=0.5), SPEC).train()
    out = m(*batch())
    # at init almost nothing is pruned (r = 0 < r_min), so every layer pays |r~ - 0.2|
    assert out.losses["pruned"].item() < 0.1
    assert out.aux_loss.item() > 0
    out.aux_loss.backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().max() > 0 for p in m.pruners)


def test_adasparse_rejects_routing_and_bad_config():
    m = AdaSparse(cfg("adasparse"), SPEC)
    with pytest.raises(ValueError, match="'adasparse' has no gate"):
        m(*batch(), routing=RoutingOverride(top_k=1))
    with pytest.raises(ValueError, match="adasparse_form='soft' must be one of"):
        ModelConfig(adasparse_form="soft")
    with pytest.raises(ValueError, match="adasparse_beta=0.5 must be >= 1"):
        ModelConfig(adasparse_beta=0.5)
    with pytest.raises(ValueError, match="need 0 <= r_min <= r_max <= 1"):
        ModelConfig(adasparse_r_min=0.5, adasparse_r_max=0.2)


# ---------------------------------------------------------------- PEPNet


def _neutral(gate) -> None:
    with torch.no_grad():
        gate.out.weight.zero_()
        gate.out.bias.zero_()  # gamma * sigmoid(0) = 1 with gamma = 2


def test_neutral_gates_reduce_pepnet_to_the_plain_dnn():
    torch.manual_seed(0)
    m = PEPNet(cfg("pepnet"), SPEC).eval()
    _neutral(m.ep_gate)
    for g in m.pp_gates:
        _neutral(g)
    cat, num, domain = batch()
    x = m.embedding(cat, num)
    h = x
    for layer in m.layers:
        h = torch.relu(h @ layer.weight.T + layer.bias)
    expected = (h @ m.out.weight.T + m.out.bias).squeeze(-1)
    torch.testing.assert_close(m(cat, num, domain).logit, expected)
    # ... so the domain has no effect at all: EPNet is PEPNet's only domain input
    other = (domain + 1) % D
    torch.testing.assert_close(m(cat, num, other).logit, m(cat, num, domain).logit)


def test_epnet_gates_each_field_by_domain():
    torch.manual_seed(0)
    m = PEPNet(cfg("pepnet"), SPEC).eval()
    cat, num, domain = batch()
    x = m.embedding(cat, num)
    delta = m.field_gates(x, domain)
    assert delta.shape == (B, 5)  # 3 categorical + 2 numeric fields
    assert (delta > 0).all() and (delta < 2).all()  # Gate NU range (0, gamma)
    full = m.expand(delta)
    assert full.shape == x.shape
    for f in range(3):  # a categorical field's De values share its gate
        torch.testing.assert_close(
            full[:, f * DE : (f + 1) * DE], delta[:, f : f + 1].expand(-1, DE)
        )
    torch.testing.assert_close(full[:, 3 * DE :], delta[:, 3:])
    other = (domain + 1) % D
    assert (m.field_gates(x, other) - delta).abs().max() > 1e-4  # same features, other domain
    assert (m(cat, num, other).logit - m(cat, num, domain).logit).abs().max() > 1e-5


def test_gates_do_not_backpropagate_into_what_they_read():
    torch.manual_seed(0)
    m = PEPNet(cfg("pepnet"), SPEC)
    cat, num, domain = batch()
    x = m.embedding(cat, num).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.field_gates(x, domain).sum(), x, allow_unused=True)
    assert grad is None  # sg(E) in U_ep([e_d, sg(E)])
    # the domain embedding does learn through the EPNet gate
    m(cat, num, domain).logit.sum().backward()
    assert m.domain_embedding.weight.grad.abs().max() > 0
    assert all(g.out.weight.grad.abs().max() > 0 for g in m.pp_gates)


def test_without_ppnet_pepnet_is_the_plain_dnn_on_epnets_output():
    torch.manual_seed(0)
    full = PEPNet(cfg("pepnet"), SPEC).eval()
    torch.manual_seed(0)
    m = PEPNet(cfg("pepnet", pepnet_ppnet=False), SPEC).eval()
    assert len(m.pp_gates) == 0
    n_gates = sum(p.numel() for p in full.pp_gates.parameters())
    assert n_gates > 0
    assert (
        sum(p.numel() for p in m.parameters())
        == sum(p.numel() for p in full.parameters()) - n_gates
    )
    cat, num, domain = batch()
    x = m.embedding(cat, num)
    delta = m.field_gates(x, domain)  # [B, F]; a categorical field's De values share one gate
    h = torch.cat(
        [x[:, : 3 * DE] * delta[:, :3].repeat_interleave(DE, 1), x[:, 3 * DE :] * delta[:, 3:]], 1
    )
    for layer in m.layers:
        h = torch.relu(h @ layer.weight.T + layer.bias)
    expected = (h @ m.out.weight.T + m.out.bias).squeeze(-1)
    torch.testing.assert_close(m(cat, num, domain).logit, expected)
    # the same draws up to the PPNet gates: EPNet and the DNN start as the full model's
    torch.testing.assert_close(m.layers[0].weight, full.layers[0].weight)


def test_pepnet_gamma_bounds_the_gates():
    torch.manual_seed(0)
    m = PEPNet(cfg("pepnet", pepnet_gamma=3.0), SPEC)
    with torch.no_grad():
        m.ep_gate.out.bias.fill_(50.0)  # saturate: sigmoid -> 1
    x = m.embedding(*batch()[:2])
    assert torch.allclose(m.field_gates(x, batch()[2]), torch.tensor(3.0))
    with pytest.raises(ValueError, match="pepnet_gamma=0.0 must be > 0"):
        ModelConfig(pepnet_gamma=0.0)


def test_prior_columns():
    assert prior_columns(SPEC, "auto") == (0, 1)
    assert prior_columns(SPEC, "ctx, user_id") == (2, 0)
    anon = FeatureSpec(("a", "b"), (3, 3), (), ("d0",))
    assert prior_columns(anon, "auto") == (0, 1)  # no user_id/item_id: every categorical column
    with pytest.raises(ValueError, match=r"pepnet_prior='user_id,zzz': columns \['zzz'\]"):
        prior_columns(SPEC, "user_id,zzz")
    with pytest.raises(ValueError, match="'pepnet' has no gate"):
        PEPNet(cfg("pepnet"), SPEC)(*batch(), routing=RoutingOverride(knocked_out=(0,)))


# ---------------------------------------------------------------- registry and search spaces


class _Trial:
    """Duck-typed Optuna trial: always the first choice / the lower bound."""

    def suggest_float(self, name, low, high, log=False):
        return low

    def suggest_int(self, name, low, high):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]


@pytest.mark.parametrize("name", ["adasparse", "pepnet"])
def test_registered_with_a_search_space_of_valid_overrides(name):
    assert name in model_names()
    params = model_search_space(name)(_Trial())
    train_keys = {"lr", "weight_decay"}
    model_cfg = default_config(name, **{k: v for k, v in params.items() if k not in train_keys})
    assert model_cfg.expert_hidden == (64,) and model_cfg.tower_hidden == (32,)
    assert params["lr"] == 3e-4
