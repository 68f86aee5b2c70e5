"""HMoE: the gradient-cut label-space mix, its reduction to per-domain MMoE, and routing overrides."""

from __future__ import annotations

import pytest
import torch

from cesaa.features import FeatureSpec
from cesaa.models.baselines.hmoe import HMoE, mix_with_gradient_cut
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import default_config, model_search_space

B, D = 48, 3
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


def build(**kw) -> HMoE:
    torch.manual_seed(0)
    cfg = default_config("hmoe", embed_dim=4, expert_hidden=(8,), expert_dim=6, tower_hidden=(5,))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return HMoE(cfg, SPEC)


def test_mix_closed_form_and_gradient_cut():
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    w = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    domain = torch.tensor([0, 2])
    out = mix_with_gradient_cut(scores, w, domain)
    assert out.tolist() == pytest.approx([0.5 + 0.5 + 0.75, 0.4 + 1.0 + 4.2])
    out.sum().backward()
    # only the row's own domain score receives gradient, with its weight
    torch.testing.assert_close(scores.grad, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.7]]))


def test_one_hot_label_gate_reduces_to_mmoe_per_domain():
    m = build().eval()
    with torch.no_grad():  # label gate of domain d puts all weight on d
        m.label_gates.weights[0].zero_()
        m.label_gates.biases[0].copy_(torch.eye(D) * 60.0)
    cat, num, domain = batch()
    out = m(cat, num, domain)
    x = m.embedding(cat, num)
    experts = m.experts(x)  # [B, n, H]
    expected = []
    for r in range(B):  # the row's own MMoE path, written out
        dr = int(domain[r])
        g = torch.softmax(x[r] @ m.gates.weights[0][dr] + m.gates.biases[0][dr], dim=0)
        h = (g[:, None] * experts[r]).sum(0)
        t = torch.relu(h @ m.towers.weights[0][dr] + m.towers.biases[0][dr])
        expected.append(t @ m.towers.weights[1][dr] + m.towers.biases[1][dr])
    torch.testing.assert_close(out.logit, torch.cat(expected), rtol=1e-5, atol=1e-5)
    assert out.losses["self_weight"].item() == pytest.approx(1.0)
    assert m.num_experts == D and out.probs.shape == (B, D)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(B))


def test_rows_of_one_domain_do_not_train_other_domains_towers():
    m = build()
    cat, num, _ = batch()
    domain = torch.zeros(B, dtype=torch.long)
    out = m(cat, num, domain)
    assert 0 < out.losses["self_weight"].item() < 1  # other domains' predictions are mixed in
    out.logit.sum().backward()
    for layer in m.towers.weights:  # [D, in, out]
        assert layer.grad[0].abs().max() > 0
        assert layer.grad[1:].abs().max() == 0  # gradient cut
    assert m.label_gates.weights[0].grad[0].abs().max() > 0  # the mix itself is trained
    assert m.gates.weights[0].grad[1:].abs().max() == 0  # ... and not the other domains' gates


def test_routing_override_knocks_an_expert_out_of_every_path():
    m = build().eval()
    out = m(*batch(), routing=RoutingOverride(knocked_out=(1,)))
    assert (out.probs[:, 1] == 0).all()
    torch.testing.assert_close(out.probs.sum(1), torch.ones(B))
    top = m(*batch(), routing=RoutingOverride(top_k=1))
    assert top.topk_idx.shape == (B, 1) and ((top.gates > 0).sum(1) == 1).all()
    with pytest.raises(ValueError, match=r"indices \[7\] not in \[0, 3\)"):
        m(*batch(), routing=RoutingOverride(knocked_out=(7,)))


def test_experts_count_and_search_space():
    assert build(mmoe_experts=5).num_experts == 5
    out = build(mmoe_experts=5)(*batch(), return_expert_outputs=True)
    assert out.expert_outputs.shape == (B, 5, 6)

    class Trial:
        def suggest_float(self, name, low, high, log=False):
            return high

        def suggest_categorical(self, name, choices):
            return choices[-1]

    params = model_search_space("hmoe")(Trial())
    assert params["expert_hidden"] == (128, 64) and params["mmoe_experts"] == 8
    assert params["lr"] == 1e-2


def test_label_gate_starts_on_the_rows_own_domain():
    """hmoe_self_weight w: gate d's bias for domain d is raised by log(w (D - 1) / (1 - w)) over
    nn.Linear's draw (same random stream), so with the other logits equal the own weight is
    exactly w; 0 keeps nn.Linear's init (own weight about 1/D)."""
    import math

    plain, own = build(hmoe_self_weight=0.0), build(hmoe_self_weight=0.9)
    boost = math.log(0.9 * (D - 1) / 0.1)
    diff = own.label_gates.biases[0] - plain.label_gates.biases[0]
    torch.testing.assert_close(diff, boost * torch.eye(D))
    torch.testing.assert_close(own.label_gates.weights[0], plain.label_gates.weights[0])
    logits = torch.zeros(D) + boost * torch.eye(D)[1]  # equal logits but the own one
    assert torch.softmax(logits, 0)[1].item() == pytest.approx(0.9)
    cat, num, domain = batch()
    for model, lo, hi in ((own, 0.8, 0.97), (plain, 1 / D - 0.1, 1 / D + 0.1)):
        weight = model.eval()(cat, num, domain).losses["self_weight"].item()
        assert lo < weight < hi, weight
    with pytest.raises(ValueError, match="hmoe_self_weight=1.0 must be in"):
        default_config("hmoe", hmoe_self_weight=1.0)
