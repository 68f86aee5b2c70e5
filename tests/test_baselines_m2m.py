"""M2M: meta units with per-row generated weights, domain conditioning, attention and residual tower."""

from __future__ import annotations

import math

import torch

from cesaa.features import FeatureSpec
from cesaa.models.baselines.m2m import M2M, MetaLinear
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import default_config, model_search_space

B, D, H = 48, 3, 6
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


def build(**kw) -> M2M:
    torch.manual_seed(0)
    base = dict(embed_dim=4, expert_hidden=(8,), expert_dim=H, tower_hidden=(5,))
    return M2M(default_config("m2m", **{**base, **kw}), SPEC)


def test_meta_linear_generates_one_weight_per_row():
    torch.manual_seed(0)
    layer = MetaLinear(dz=2, in_dim=3, out_dim=4)
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    h = torch.randn(2, 3)
    a, a0 = layer.weight_gen.weight, layer.weight_gen.bias  # [12, 2], [12]
    expected = []
    for r in range(2):  # W(z) = reshape(A z + a) / sqrt(in), b(z) = B z + c
        w = ((a @ z[r] + a0).view(3, 4)) / math.sqrt(3)
        b = layer.bias_gen.weight @ z[r] + layer.bias_gen.bias
        expected.append(h[r] @ w + b)
    torch.testing.assert_close(layer(h, z), torch.stack(expected))
    hn = torch.randn(2, 5, 3)  # [B, n, in]: the same row weight for every expert view
    out = layer(hn, z)
    torch.testing.assert_close(out[1, 4], layer(hn[:, 4], z)[1])


def _freeze_generators(m: M2M, tower_zero: bool = False) -> None:
    """A = 0 in every generator: meta weights no longer depend on z_s (i.e. on the domain)."""
    with torch.no_grad():
        for layer in [m.attention, *m.meta_tower]:
            layer.weight_gen.weight.zero_()
            layer.bias_gen.weight.zero_()
            if tower_zero and layer is not m.attention:
                layer.weight_gen.bias.zero_()
                layer.bias_gen.bias.zero_()


def test_the_domain_acts_only_through_generated_weights():
    m = build().eval()
    cat, num, domain = batch()
    other = (domain + 1) % D
    assert (m(cat, num, other).logit - m(cat, num, domain).logit).abs().max() > 1e-6
    assert (m(cat, num, other).probs - m(cat, num, domain).probs).abs().max() > 1e-6
    _freeze_generators(m)
    torch.testing.assert_close(m(cat, num, other).logit, m(cat, num, domain).logit)


def test_zero_meta_tower_is_the_identity_by_its_residual():
    m = build(m2m_tower_layers=3).eval()
    _freeze_generators(m, tower_zero=True)
    cat, num, domain = batch()
    out = m(cat, num, domain, return_expert_outputs=True)
    r = torch.einsum("bn,bnh->bh", out.gates, out.expert_outputs)  # attention read-out
    torch.testing.assert_close(out.logit, m.out(r).squeeze(-1))


def test_meta_attention_is_a_distribution_over_experts_and_honours_overrides():
    m = build(mmoe_experts=4).eval()
    out = m(*batch())
    assert m.num_experts == 4 and out.probs.shape == (B, 4)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(B))
    knocked = m(*batch(), routing=RoutingOverride(knocked_out=(2,)))
    assert (knocked.probs[:, 2] == 0).all()
    top = m(*batch(), routing=RoutingOverride(top_k=1))
    assert ((top.gates > 0).sum(1) == 1).all()


def test_every_part_trains_and_search_space_is_valid():
    m = build()
    m(*batch()).logit.sum().backward()
    groups = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None}
    assert groups == {n.split(".")[0] for n, _ in m.named_parameters()}
    assert m.domain_embedding.weight.grad.abs().max() > 0

    class Trial:
        def suggest_float(self, name, low, high, log=False):
            return low

        def suggest_int(self, name, low, high):
            return high

        def suggest_categorical(self, name, choices):
            return choices[0]

    params = model_search_space("m2m")(Trial())
    assert params["m2m_tower_layers"] == 3
    cfg = default_config(
        "m2m", **{k: v for k, v in params.items() if k not in ("lr", "weight_decay")}
    )
    assert M2M(cfg, SPEC)(*batch()).logit.shape == (B,)
