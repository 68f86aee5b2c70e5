from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.rows import (
    domain_swap,
    expert_contributions,
    head_is_linear,
    lookup_rows,
    supports_contributions,
    swap_matrices,
    swap_row_table,
)
from cesaa.features import FeatureSpec
from cesaa.models import build_model, default_config

D, N = 3, 64
SPEC = FeatureSpec(
    cat_names=("a", "b"),
    cat_cardinalities=(7, 5),
    num_names=("x",),
    domain_names=tuple(f"d{i}" for i in range(D)),
)


def _model(**kw):
    torch.manual_seed(0)
    cfg = default_config(
        "cesaa", embed_dim=4, expert_hidden=(8,), expert_dim=6, num_experts=4, top_k=2, **kw
    )
    m = build_model(cfg, SPEC)
    for p in m.parameters():  # larger weights than the init, so that every part matters
        p.data.normal_(0, 0.5)
    return m.eval()


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, 7, (N,), generator=g), torch.randint(0, 5, (N,), generator=g)], 1
    )
    num = torch.randn(N, 1, generator=g)
    dom = torch.randint(0, D, (N,), generator=g)
    return cat, num, dom


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("head", ["shared", "per_domain"])
def test_linear_head_contributions_sum_to_the_logit(fusion, head):
    m = _model(tower_hidden=(), fusion=fusion, head=head)
    cat, num, dom = _batch()
    c = expert_contributions(m, cat, num, dom)
    assert c.method == "exact" and head_is_linear(m)
    np.testing.assert_allclose(c.logit, m(cat, num, dom).logit.detach().double().numpy(), atol=1e-5)
    np.testing.assert_allclose(c.residual, 0.0, atol=1e-5)
    # non-zero contributions only on the k selected experts (a selected expert whose ReLU output
    # is all zero on a row contributes exactly 0, so "exactly k" holds for most rows, not all)
    nz = c.contributions != 0
    sel = np.zeros_like(nz)
    np.put_along_axis(sel, c.topk_idx, True, axis=1)
    assert not (nz & ~sel).any()
    assert (nz.sum(1) == 2).mean() > 0.8
    assert np.abs(c.shared).max() > 1e-3 and np.abs(c.base).max() > 1e-3


def test_linear_head_contribution_is_the_gate_times_the_projected_expert_output():
    m = _model(tower_hidden=(), fusion="sum", head="shared")
    cat, num, dom = _batch(1)
    c = expert_contributions(m, cat, num, dom)
    with torch.no_grad():
        x = m.features(cat, num)
        outs = m.experts.forward_all(x)  # [n, E, H]
        w = m.tower[0].weight[0, : outs.shape[2]]  # the h part of the one Linear
        expected = c.gates * (outs @ w).double().numpy()
    np.testing.assert_allclose(c.contributions, expected, atol=1e-5)


def test_nonlinear_head_is_leave_one_out_and_says_so():
    m = _model(tower_hidden=(8,))
    cat, num, dom = _batch()
    c = expert_contributions(m, cat, num, dom)
    assert c.method == "leave-one-out" and not head_is_linear(m)
    assert np.abs(c.residual).max() > 1e-4  # the parts do not add up for a non-linear head
    # leave-one-out by hand for row 0: zero the gate of its first selected expert
    e = int(c.topk_idx[0, 0])
    with torch.no_grad():
        x = m.features(cat[:1], num[:1])
        e_d = m.domain_emb(dom[:1])
        outs = m.experts.forward_all(x)
        shared = m.shared.forward_all(x).mean(1)
        g = torch.as_tensor(c.gates[:1], dtype=torch.float32)
        g[0, e] = 0
        h = shared + torch.einsum("ne,neh->nh", g, outs)
        minus = m.tower(torch.cat([h, e_d], 1)).item()
    assert c.contributions[0, e] == pytest.approx(c.logit[0] - minus, abs=1e-5)


def test_a_model_without_domain_input_has_zero_swap_effect():
    m = _model(gate_input="features", head="shared")
    with torch.no_grad():
        m.domain_emb.weight.zero_()  # the tower's domain input is now the same for every domain
    cat, num, dom = _batch()
    res = domain_swap(m, cat, num, dom, D)
    mats = swap_matrices(res, D)
    np.testing.assert_allclose(mats["mean_abs_dlogit"], 0.0, atol=1e-6)
    np.testing.assert_allclose(mats["mean_tv"], 0.0, atol=1e-6)
    np.testing.assert_allclose(mats["selection_changed"], 0.0)


def test_a_per_domain_head_has_a_nonzero_swap_effect():
    m = _model(gate_input="features", head="per_domain")
    cat, num, dom = _batch()
    res = domain_swap(m, cat, num, dom, D)
    mats = swap_matrices(res, D)
    off = ~np.eye(D, dtype=bool)
    assert (mats["mean_abs_dlogit"][off] > 1e-3).all()
    np.testing.assert_allclose(np.diag(mats["mean_abs_dlogit"]), 0.0)
    np.testing.assert_allclose(mats["mean_tv"], 0.0, atol=1e-6)  # the gate ignores the domain
    # the own-domain column equals the model's ordinary forward pass
    own = res.logits[np.arange(N), dom.numpy()]
    np.testing.assert_allclose(own, m(cat, num, dom).logit.detach().double().numpy(), atol=1e-5)
    # by hand: row 0's mean |dlogit| entry is part of its domain's average
    d0 = int(dom[0])
    rows = dom.numpy() == d0
    expected = np.abs(res.logits[rows] - res.logits[rows, d0][:, None]).mean(0)
    np.testing.assert_allclose(mats["mean_abs_dlogit"][d0], expected)
    assert mats["to_others"][d0] == pytest.approx(np.delete(expected, d0).mean())
    t = swap_row_table(res, 0, list(SPEC.domain_names))
    assert t["own"].sum() == 1 and t.loc[t["own"], "delta_logit"].item() == 0.0


def test_domain_gate_changes_routing_under_swap():
    m = _model(gate_input="per_domain")
    cat, num, dom = _batch()
    mats = swap_matrices(domain_swap(m, cat, num, dom, D, batch_size=10), D)
    off = ~np.eye(D, dtype=bool)
    assert (mats["mean_tv"][off] > 0.01).all()
    assert (mats["selection_changed"][off] > 0).all()


def test_errors_and_lookup():
    m = _model()
    cat, num, dom = _batch()
    with pytest.raises(ValueError, match="same rows"):
        domain_swap(m, cat[:3], num, dom, D)
    with pytest.raises(ValueError, match="domain has values outside"):
        domain_swap(m, cat, num, dom, 2)
    mlp = build_model(default_config("mlp", embed_dim=4), SPEC)
    assert "not a CESAA-family" in supports_contributions(mlp)
    with pytest.raises(ValueError, match="not a CESAA-family"):
        expert_contributions(mlp, cat, num, dom)
    cols = {"user": np.array([3, 42, 7, 42]), "tab": np.array(["a", "b", "a", "b"])}
    assert lookup_rows(cols, "user", "42").tolist() == [1, 3]
    assert lookup_rows(cols, "tab", "a", limit=1).tolist() == [0]
    with pytest.raises(ValueError, match="column 'item' is not kept"):
        lookup_rows(cols, "item", 1)
