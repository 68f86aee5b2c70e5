"""The fused gate + shared-expert GEMM of ``CESBlock.select`` computes what the separate modules
compute: a reference forward written from the unfused pieces (``NoisyTopKGate.forward``,
``StackedExperts.forward_all``, the dense masked experts, the tower on [h, e_d]) gives the same
outputs and gradients, in training (same noise draw) and evaluation, under routing overrides."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec
from cesaa.gating import check_routing
from cesaa.models.cesaa_model import CESAA
from cesaa.models.output import RoutingOverride

B, D, E = 48, 3, 5
SPEC = FeatureSpec(("user", "item"), (10, 20), ("n0", "n1", "n2"), ("d0", "d1", "d2"))


def _model(**overrides) -> CESAA:
    base = dict(
        name="cesaa",
        embed_dim=4,
        expert_hidden=(16,),
        expert_dim=8,
        tower_hidden=(8,),
        num_experts=E,
        top_k=2,
        num_shared=1,
        beta=0.01,
    )
    torch.manual_seed(0)
    model = CESAA(ModelConfig(**{**base, **overrides}), SPEC)
    with torch.no_grad():  # random gate weights, so routing depends on the input and domain
        model.gate.w_gate.normal_()
        if model.gate.w_noise is not None:
            model.gate.w_noise.normal_(std=0.3)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in (10, 20)], 1)
    return cat, torch.randn(B, 3, generator=g), torch.arange(B) % D, torch.rand(B, generator=g)


def _reference(m: CESAA, cat, num, domain, routing: RoutingOverride):
    """The CESAA forward from the unfused modules (logit, probs, gates, topk_idx, aux loss)."""
    cfg = m.cfg
    k = cfg.top_k if routing.top_k is None else routing.top_k
    ko = check_routing(k, cfg.num_experts, routing.knocked_out)
    x = m.features(cat, num)
    e_d = m.domain_emb(domain)
    smooth = m.training and cfg.beta > 0
    g = m.gate(x, e_d, domain, k, ko, trained_k=cfg.top_k, smooth_load=smooth)
    h_spec = m.experts.forward_dense_masked(x, g.gates)
    h_sh = torch.zeros_like(h_spec)
    if m.shared is not None and routing.use_shared:
        shared = torch.stack(
            [m.shared.forward_expert(x, s) for s in range(cfg.num_shared)], dim=1
        )  # [B, S, H], one expert at a time
        h_sh = shared.mean(dim=1)
    h = h_sh + h_spec if cfg.fusion == "sum" else torch.cat([h_sh, h_spec], dim=1)
    logit = m.tower(torch.cat([h, e_d], dim=1)).squeeze(-1)
    aux, _ = m.aea_loss(g, domain)
    return logit, g.probs, g.gates, g.topk_idx, aux


ROUTINGS = [
    RoutingOverride(),
    RoutingOverride(top_k=1),
    RoutingOverride(top_k=3),
    RoutingOverride(knocked_out=(0, 3)),
    RoutingOverride(use_shared=False),
    RoutingOverride(top_k=1, knocked_out=(2,), use_shared=False),
]
CONFIGS = [
    {},
    {"gate_input": "features"},
    {"gate_input": "per_domain"},
    {"noisy_gating": False},
    {"num_shared": 2},
    {"num_shared": 0},
    {"expert_hidden": ()},
    {"fusion": "concat"},
    {"tower_hidden": ()},  # the head is one Linear: head_logit's split first layer is all of it
]


@pytest.mark.parametrize(
    "overrides", CONFIGS, ids=lambda o: ",".join(map(str, o.items())) or "default"
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_select_matches_the_unfused_modules(overrides: dict, training: bool) -> None:
    m = _model(**overrides).train(training)
    cat, num, domain, label = _batch()
    for routing in ROUTINGS:
        if training and not routing.is_identity:
            continue  # overrides are an inference feature
        torch.manual_seed(5)
        out = m(cat, num, domain, routing)
        torch.manual_seed(5)  # the same gate noise draw
        ref = _reference(m, cat, num, domain, routing)
        assert torch.equal(out.topk_idx, ref[3]), routing
        got = (out.logit, out.probs, out.gates)
        for name, a, b in zip(("logit", "probs", "gates"), got, ref[:3], strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (name, routing)
        assert torch.allclose(out.aux_loss, ref[4], atol=1e-6)
        if not training:  # inference (no autograd) takes in-place paths: same values
            with torch.no_grad():
                fast = m(cat, num, domain, routing)
            assert torch.equal(fast.topk_idx, ref[3]), routing
            assert torch.allclose(fast.logit, ref[0], atol=1e-5, rtol=1e-5), routing
            assert torch.allclose(fast.gates, ref[2], atol=1e-5, rtol=1e-5), routing
            continue
        params = [p for p in m.parameters() if p.requires_grad]
        got = torch.autograd.grad(
            F.binary_cross_entropy_with_logits(out.logit, label) + out.aux_loss,
            params,
            allow_unused=True,
        )
        want = torch.autograd.grad(
            F.binary_cross_entropy_with_logits(ref[0], label) + ref[4], params, allow_unused=True
        )
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        for name, a, b in zip(names, got, want, strict=True):
            a = torch.zeros_like(b) if a is None and b is not None else a
            b = torch.zeros_like(a) if b is None and a is not None else b
            if a is not None:
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_eval_projects_the_gate_without_the_noise_weights() -> None:
    # W_noise only matters for the training noise draw: eval never multiplies by it
    m = _model().eval()
    cat, num, domain, _ = _batch()
    before = m(cat, num, domain).logit
    with torch.no_grad():
        m.gate.w_noise.fill_(float("nan"))
    assert torch.equal(m(cat, num, domain).logit, before)
