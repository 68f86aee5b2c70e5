"""Rows grouped by domain on the device (PLE's own-domain path, STAR's folded norm, the grouped
linear layer and per-row routing overrides) against references written out here or the
every-domain oracle, with no host read.  Fixtures from ``test_baselines_fast_paths``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_baselines_fast_paths import SPEC, TOL, B, _batch

from cesaa.config import ModelConfig
from cesaa.models.baselines.blocks import override_dense_gate
from cesaa.models.baselines.grouped import override_dense_gate_rows
from cesaa.models.baselines.ple import PLE
from cesaa.models.baselines.star import STAR
from cesaa.models.output import RoutingOverride

pytestmark = pytest.mark.usefixtures("one_thread")

PLE_SHAPES = [(1, 2, 1), (2, 2, 1), (2, 1, 0), (1, 1, 2)]  # (levels, specific, shared)


@pytest.mark.parametrize(("levels", "specific", "shared"), PLE_SHAPES)
def test_ple_reads_nothing_back_under_routing_overrides(monkeypatch, levels, specific, shared):
    """The own-domain path groups rows on the device: no host read in eval with knock-outs and
    top_k either (training is covered for every model by test_host_sync)."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="ple", ple_levels=levels, ple_specific=specific, ple_shared=shared)
    model = PLE(cfg, SPEC).eval()
    cat, num, domain, _ = _batch(3)
    routings = [RoutingOverride(top_k=1)]
    if specific + shared > 1:  # domain 0's first specific expert off, the others untouched
        routings.append(RoutingOverride(knocked_out=(0,), top_k=1))
    if shared:
        routings.append(RoutingOverride(use_shared=False))
    want = [_per_domain_oracle(model, cat, num, domain, r) for r in routings]
    model(cat, num, domain)  # one-time probes (grouped GEMM support) may read
    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, _refuse)
    with torch.no_grad():
        got = [model(cat, num, domain, routing=r).logit for r in routings]
    monkeypatch.undo()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL)


def _per_domain_oracle(model: PLE, cat, num, domain, routing: RoutingOverride) -> torch.Tensor:
    """Every domain's path on every row with domain d's local override, read on d's rows."""
    logit = torch.empty(len(domain))
    with torch.no_grad():
        for d, local in enumerate(model.local_routing(routing)):
            out = model.forward_every_domain(cat, num, domain, routing=local).logit
            logit[domain == d] = out[domain == d]
    return logit


def _refuse(*args, **kwargs):
    raise AssertionError("a tensor was read back to the host inside the model")


def test_override_dense_gate_rows_applies_each_groups_override():
    """Rows of group g get exactly override_dense_gate(probs, routing[g]) (written per group)."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(B, 4), -1)
    group = torch.sort(torch.randint(0, 3, (B,)))[0]
    routing = [
        RoutingOverride(top_k=2, knocked_out=(1,)),
        RoutingOverride(top_k=2),
        RoutingOverride(top_k=2, knocked_out=(0, 3)),  # k = experts left: the dense gate
    ]
    p, g, idx = override_dense_gate_rows(probs, routing, group)
    for d, r in enumerate(routing):
        rows = group == d
        want_p, want_g, want_idx = override_dense_gate(probs[rows], r)
        torch.testing.assert_close(p[rows], want_p)
        torch.testing.assert_close(g[rows], want_g)
        if want_idx is not None:
            assert torch.equal(idx[rows], want_idx)
        else:  # a dense group still lists its k non-zero experts
            assert (want_g[torch.arange(int(rows.sum())).unsqueeze(1), idx[rows]] > 0).all()
    untouched = override_dense_gate_rows(probs, [None, RoutingOverride(top_k=2), None], group)
    assert torch.equal(untouched[0], probs)  # no knock-out anywhere: probabilities bit for bit
    with pytest.raises(ValueError, match="top_k differs between groups"):
        override_dense_gate_rows(probs, [RoutingOverride(top_k=1), RoutingOverride(top_k=2)], group)
    with pytest.raises(ValueError, match=r"indices \[7\] not in \[0, 4\)"):
        override_dense_gate_rows(probs, [RoutingOverride(knocked_out=(7,))], group)


@pytest.mark.parametrize("available", [True, False])
def test_grouped_linear_is_each_rows_own_groups_map(monkeypatch, available):
    """Both the grouped GEMM and the every-group fallback (where the torch build lacks one)."""
    import cesaa.models.baselines.grouped as grouped

    if not available:
        monkeypatch.setattr(grouped, "grouped_mm_available", lambda *a: False)
    torch.manual_seed(0)
    group = torch.tensor([0] * 5 + [2] * 9 + [3] * 4)  # group 1 empty
    x = torch.randn(len(group), 7, requires_grad=True)
    w = torch.randn(4, 7, 5, requires_grad=True)
    b = torch.randn(4, 5, requires_grad=True)
    out = grouped.grouped_linear(x, w, b, group, grouped.group_ends(group, 4))
    ref = torch.stack([x[r] @ w[g] + b[g] for r, g in enumerate(group.tolist())])
    torch.testing.assert_close(out, ref, **TOL)
    go = torch.randn_like(out)
    got = torch.autograd.grad((out * go).sum(), [x, w, b])
    want = torch.autograd.grad((ref * go).sum(), [x, w, b])
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, **TOL)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_grouped_gemm_probe_under_no_grad_does_not_disable_it(monkeypatch, mode):
    """The probe runs a backward: first called without autograd it used to fail and cache
    "unavailable" for the process, so PLE and STAR silently ran their fallback."""
    from cesaa import grouped_gemm

    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no torch._grouped_mm")
    monkeypatch.setattr(grouped_gemm, "_GROUPED_MM_OK", {})
    torch.manual_seed(0)
    model = PLE(ModelConfig(name="ple"), SPEC).eval()
    cat, num, domain, _ = _batch()
    with mode():
        model(cat, num, domain)
    assert grouped_gemm._GROUPED_MM_OK == {("cpu", torch.float32): True}


def reference_star(model: STAR, cat, num, domain) -> torch.Tensor:
    """STAR written out row by row: PN with the batch's (training) or running (eval) moments of
    the row's domain, the row's own FCN path (W * W_d, b + b_d), plus the auxiliary network."""
    x = model.embedding(cat, num)
    norm, fcn = model.norm, model.fcn
    if model.training:
        mean = torch.stack([x[domain == d].mean(0) for d in range(3)])
        var = torch.stack([x[domain == d].var(0, unbiased=False) for d in range(3)])
    else:
        mean, var = norm.running_mean, norm.running_var
    out = []
    for r in range(len(domain)):
        d = domain[r]
        z = (x[r] - mean[d]) / torch.sqrt(var[d] + norm.eps)
        h = z * norm.gamma * norm.domain_gamma[d] + norm.beta + norm.domain_beta[d]
        for i in range(len(fcn.weights)):
            h = (
                h @ (fcn.weights[i] * fcn.domain_weights[i][d])
                + fcn.biases[i]
                + fcn.domain_biases[i][d]
            )
            h = torch.relu(h) if i < len(fcn.weights) - 1 else h
        out.append(h[0])
    aux = model.aux(torch.cat([model.domain_embedding(domain), x], dim=1)).squeeze(-1)
    return torch.stack(out) + aux


@pytest.mark.parametrize("training", [True, False])
def test_star_with_pn_folded_into_layer_0_matches_the_row_by_row_reference(training):
    torch.manual_seed(0)
    model = STAR(ModelConfig(name="star"), SPEC)
    with torch.no_grad():  # away from the init (ones, zeros) so every term matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.norm.running_mean.normal_()
        model.norm.running_var.uniform_(0.5, 2.0)
    model.train(training)
    cat, num, domain, label = _batch(4)
    params = list(model.parameters())
    out = model(cat, num, domain).logit  # (the reference reads no running moment in training)
    ref = reference_star(model, cat, num, domain)
    torch.testing.assert_close(out, ref, **TOL)
    got = torch.autograd.grad(F.binary_cross_entropy_with_logits(out, label), params)
    want = torch.autograd.grad(F.binary_cross_entropy_with_logits(ref, label), params)
    for (name, _), a, r in zip(model.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(a, r, **TOL, msg=name)
