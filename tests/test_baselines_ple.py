"""PLE and the dense-gate override rule: the global expert index (D * specific + shared), each
row through its own domain's path only (against the every-domain oracle), knock-outs of one network,
and k overrides that change only the set of experts.  Fixtures from ``test_baselines``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_baselines import B, D, H, batch, build

from cesaa.models.baselines.blocks import select_domain
from cesaa.models.baselines.ple import PLE
from cesaa.models.output import RoutingOverride

pytestmark = pytest.mark.usefixtures("one_thread")

PLE_SHAPES = [(1, 2, 1), (2, 2, 1), (1, 1, 2), (2, 1, 2), (1, 2, 0), (2, 2, 0), (3, 2, 1)]


def _ple(levels: int, specific: int, shared: int, **kw) -> PLE:
    return build("ple", ple_levels=levels, ple_specific=specific, ple_shared=shared, **kw)


def _own_columns(model: PLE, domain: torch.Tensor) -> torch.Tensor:
    """[B, G] True on the global experts a row's gate holds: its domain's specific ones, shared."""
    s, d = model.s, model.num_domains
    kinds = torch.arange(model.num_experts)
    own = (kinds.unsqueeze(0) // s == domain.unsqueeze(1)) & (kinds.unsqueeze(0) < d * s)
    return own | (kinds >= d * s).unsqueeze(0)


@pytest.mark.parametrize(("levels", "specific", "shared"), PLE_SHAPES)
def test_ple_probs_use_the_global_expert_index(levels, specific, shared):
    model = _ple(levels, specific, shared)
    cat, num, domain = batch()
    out = model(cat, num, domain, return_expert_outputs=True)
    g = D * specific + shared
    assert model.num_experts == g
    assert out.probs.shape == out.gates.shape == (B, g)
    assert out.expert_outputs.shape == (B, g, H)
    assert torch.allclose(out.probs.sum(1), torch.ones(B))
    own = _own_columns(model, domain)
    # a row of domain d has exactly zero probability on the other domains' specific experts
    assert (out.probs[~own] == 0).all() and (out.probs[own] > 0).all()
    assert (out.expert_outputs[~own] == 0).all()
    assert len(model.levels) == levels
    has_shared_gate = [lvl.shared_gate is not None for lvl in model.levels]
    assert has_shared_gate == [shared > 0 and i < levels - 1 for i in range(levels)]
    kinds = model.expert_kinds()
    assert (
        kinds
        == tuple(f"domain:{i // specific}" for i in range(D * specific)) + ("shared",) * shared
    )


@pytest.mark.parametrize(("levels", "specific", "shared"), PLE_SHAPES)
def test_ple_own_domain_path_equals_every_domain_path(levels, specific, shared):
    """Issue 13: each row runs only its own domain's path, with the all-paths outputs."""
    model = _ple(levels, specific, shared).eval()
    cat, num, _ = batch()
    domain = torch.tensor([2, 0, 0, 1] * (B // 4))  # unsorted, uneven
    overrides = [None, RoutingOverride(top_k=1), RoutingOverride(top_k=2)]
    if shared:
        overrides.append(RoutingOverride(use_shared=False))
    for routing in overrides:
        new = model(cat, num, domain, routing=routing, return_expert_outputs=True)
        old = model.forward_every_domain(cat, num, domain, routing=routing)
        torch.testing.assert_close(new.logit, old.logit, rtol=1e-5, atol=1e-6)
        cols = model.columns[domain]  # [B, R] global columns of each row's gate
        torch.testing.assert_close(new.probs.gather(1, cols), old.probs, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(new.gates.gather(1, cols), old.gates, rtol=1e-5, atol=1e-7)
        e = new.expert_outputs.gather(1, cols.unsqueeze(-1).expand(-1, -1, H))
        torch.testing.assert_close(e, old.expert_outputs, rtol=1e-5, atol=1e-6)
        if old.topk_idx is not None:
            assert torch.equal(new.topk_idx, cols.gather(1, old.topk_idx))
    # the old path's local knock-out of column j = the new global knock-out of j in every domain
    every = tuple(d * specific for d in range(D))
    new = model(cat, num, domain, routing=RoutingOverride(knocked_out=every))
    old = model.forward_every_domain(cat, num, domain, routing=RoutingOverride(knocked_out=(0,)))
    torch.testing.assert_close(new.logit, old.logit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("levels", "specific", "shared"), [(1, 2, 1), (2, 2, 1), (2, 1, 0)])
def test_ple_own_domain_path_trains_like_every_domain_path(levels, specific, shared):
    cat, num, _ = batch()
    domain = torch.tensor([1, 2, 2, 0] * (B // 4))
    y = (num[:, 0] > 0).float()
    grads = []
    for path in ("forward", "forward_every_domain"):
        model = _ple(levels, specific, shared).train()
        loss = F.binary_cross_entropy_with_logits(getattr(model, path)(cat, num, domain).logit, y)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7, msg=n)


def test_ple_domain_missing_from_the_batch_and_empty_batch():
    model = _ple(1, 2, 1).eval()
    cat, num, domain = batch()
    only = torch.full_like(domain, 2)
    out = model(cat, num, only)
    torch.testing.assert_close(out.logit, model.forward_every_domain(cat, num, only).logit)
    empty = model(cat[:0], num[:0], domain[:0], return_expert_outputs=True)
    assert empty.logit.shape == (0,) and empty.probs.shape == (0, model.num_experts)


@pytest.mark.parametrize("levels", [1, 2])
def test_ple_knocking_out_a_specific_expert_changes_only_its_domain(levels):
    # nn.Linear's gate init: each specific expert weighs about 1/3 (with the default shared start
    # of 0.8 a knocked-out specific expert may move an untrained model's logit by < 1e-6)
    model = _ple(levels, 2, 1, ple_shared_weight=0.0).eval()
    cat, num, domain = batch()
    base = model(cat, num, domain)
    for j in range(model.num_experts):
        out = model(cat, num, domain, routing=RoutingOverride(knocked_out=(j,)))
        assert (out.probs[:, j] == 0).all()
        users = base.probs[:, j] > 0  # rows whose gate held expert j
        assert torch.equal(out.logit[~users], base.logit[~users])
        assert not torch.isclose(out.logit[users], base.logit[users], atol=1e-7).any()
        assert users.sum() == (B if j == model.num_experts - 1 else (domain == j // 2).sum())


def test_ple_use_shared_false_knocks_out_the_shared_experts():
    model = _ple(2, 2, 1)
    cat, num, domain = batch()
    out = model(cat, num, domain, routing=RoutingOverride(use_shared=False))
    own = _own_columns(model, domain)
    assert (out.gates[:, D * 2 :] == 0).all()
    assert (out.gates[:, : D * 2][own[:, : D * 2]] > 0).all()
    assert torch.allclose(out.gates.sum(1), torch.ones(B))


@pytest.mark.parametrize(
    ("routing", "match"),
    [
        (RoutingOverride(knocked_out=(7,)), r"indices \[7\] not in \[0, 7\)"),
        (RoutingOverride(knocked_out=(2, 3, 6)), "leaves domain 1 no expert"),
        (RoutingOverride(top_k=3, knocked_out=(0,)), r"top_k=3 must be in \[1, 2\]: domain 0"),
        (RoutingOverride(top_k=4), r"top_k=4 must be in \[1, 3\]"),
    ],
)
def test_ple_invalid_overrides_raise(routing, match):
    with pytest.raises(ValueError, match=match):
        _ple(1, 2, 1)(*batch(), routing=routing)


def test_ple_top_k_with_a_knocked_out_expert_selects_within_each_gate():
    model = _ple(1, 2, 1).eval()
    cat, num, domain = batch()
    out = model(cat, num, domain, routing=RoutingOverride(top_k=2, knocked_out=(0,)))
    assert out.topk_idx.shape == (B, 2)
    assert ((out.gates > 0).sum(1) == 2).all() and (out.gates[:, 0] == 0).all()
    assert torch.equal(out.gates > 0, torch.zeros_like(out.gates, dtype=torch.bool).scatter(
        1, out.topk_idx, True))  # fmt: skip
    assert _own_columns(model, domain).gather(1, out.topk_idx).all()


@pytest.mark.parametrize("name", ["mmoe", "ple"])
def test_dense_gate_k_override_semantics(name):
    """Same k rule as CESAA: k = every expert of the gate is the trained model bit for bit;
    k = 1 mixes the top expert with weight exactly 1."""
    model = build(name).eval()
    cat, num, domain = batch()
    r = 3  # mmoe: one expert per domain; ple: 2 specific + 1 shared under each gate
    base = model(cat, num, domain, return_expert_outputs=True)
    same = model(cat, num, domain, routing=RoutingOverride(top_k=r))
    assert torch.equal(same.logit, base.logit) and torch.equal(same.gates, base.gates)
    assert same.topk_idx is None
    one = model(cat, num, domain, routing=RoutingOverride(top_k=1))
    top = base.probs.argmax(1)
    assert torch.equal(one.topk_idx[:, 0], top)
    assert torch.equal(one.gates.gather(1, top[:, None]), torch.ones(B, 1))
    assert ((one.gates > 0).sum(1) == 1).all()


def test_mmoe_k1_override_mixes_exactly_the_top_experts_output():
    model = build("mmoe", mmoe_experts=4).eval()
    cat, num, domain = batch()
    out = model(cat, num, domain, routing=RoutingOverride(top_k=1), return_expert_outputs=True)
    top = out.expert_outputs[torch.arange(B), out.topk_idx[:, 0]]  # [B, H]
    expected = select_domain(model.towers(top), domain).squeeze(-1)
    assert torch.equal(out.logit, expected)


def test_ple_state_dict_is_unchanged_so_old_checkpoints_load():
    model = _ple(2, 2, 1)
    keys = set(model.state_dict())
    assert "columns" not in keys
    assert {k.split(".")[0] for k in keys} == {"embedding", "levels", "towers"}
    fresh = _ple(2, 2, 1)
    fresh.load_state_dict(model.state_dict())  # strict


@pytest.mark.parametrize("levels", [1, 2])
def test_domain_gates_start_on_the_shared_experts(levels):
    """ple_shared_weight w: every level's domain gates get log(w S / ((1 - w) Sh)) added to the
    shared columns' biases over nn.Linear's draw (same random stream), so with equal logits the
    shared experts weigh exactly w in total; 0 keeps nn.Linear's init (about Sh / (S + Sh))."""
    import math

    plain = build("ple", ple_levels=levels, ple_shared_weight=0.0)
    own = build("ple", ple_levels=levels)  # the default, 0.8
    s, sh = own.s, own.sh
    boost = math.log(0.8 * s / (0.2 * sh))
    for lp, lo in zip(plain.levels, own.levels, strict=True):
        diff = lo.gates.biases[0] - lp.gates.biases[0]  # [D, S + Sh]
        expected = torch.zeros_like(diff)
        expected[:, s:] = boost
        torch.testing.assert_close(diff, expected)
        torch.testing.assert_close(lo.gates.weights[0], lp.gates.weights[0])
    logits = torch.zeros(s + sh)
    logits[s:] = boost
    assert torch.softmax(logits, 0)[s:].sum().item() == pytest.approx(0.8)
    cat, num, domain = batch()
    for model, lo, hi in ((own, 0.7, 0.9), (plain, sh / (s + sh) - 0.15, sh / (s + sh) + 0.15)):
        probs = model.eval()(cat, num, domain).probs  # [B, G] global index: shared last
        share = probs[:, -sh:].sum(1).mean().item()
        assert lo < share < hi, share
