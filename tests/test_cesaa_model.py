from __future__ import annotations

import dataclasses

import pytest
import torch
from sklearn.metrics import roc_auc_score

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec
from cesaa.models.cesaa_model import CESAA, SparseMoE
from cesaa.models.output import ModelOutput, RoutingOverride
from cesaa.models.registry import build_model, default_config

B, D, E, K, H = 32, 3, 4, 2, 8
SPEC = FeatureSpec(
    cat_names=("user", "item"),
    cat_cardinalities=(10, 20),
    num_names=("n0", "n1", "n2", "n3"),
    domain_names=("d0", "d1", "d2"),
)


def _cfg(**overrides) -> ModelConfig:
    base = dict(
        name="cesaa",
        embed_dim=4,
        expert_hidden=(16,),
        expert_dim=H,
        tower_hidden=(8,),
        num_experts=E,
        top_k=K,
        num_shared=1,
        beta=0.01,
    )
    return ModelConfig(**{**base, **overrides})


def _model(seed: int = 0, cls: type = CESAA, **overrides) -> CESAA:
    """A model with random (not zero) gate weights, so that routing depends on the input."""
    torch.manual_seed(seed)
    model = cls(_cfg(**overrides), SPEC)
    with torch.no_grad():
        model.gate.w_gate.normal_()
        if model.gate.w_noise is not None:
            model.gate.w_noise.normal_(std=0.1)
    return model


def _batch(n: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in SPEC.cat_cardinalities], 1)
    num = torch.randn(n, SPEC.num_numeric, generator=g)
    domain = torch.arange(n) % D
    return cat, num, domain


def test_output_shapes() -> None:
    model = _model().eval()
    out = model(*_batch(), return_expert_outputs=True)
    assert isinstance(out, ModelOutput)
    assert out.logit.shape == (B,)
    assert out.probs.shape == (B, E) and out.gates.shape == (B, E)
    assert out.topk_idx.shape == (B, K)
    assert out.expert_outputs.shape == (B, E, H)
    assert out.shared_outputs.shape == (B, 1, H)
    assert out.aux_loss.shape == ()
    assert out.losses == {}  # auxiliary terms are training-only
    assert set(model.train()(*_batch()).losses) == {"mi", "balance"}
    model.eval()
    plain = model(*_batch())
    assert plain.expert_outputs is None and plain.shared_outputs is None
    assert torch.equal(plain.logit, out.logit)


def test_gates_are_sparse_and_normalized() -> None:
    out = _model().train()(*_batch())
    assert ((out.gates != 0).sum(dim=1) == K).all()
    assert out.gates.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    assert out.probs.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)


def test_aux_loss_in_train_mode() -> None:
    model = _model(alpha=0.3, beta=0.2).train()
    out = model(*_batch())
    expected = 0.3 * (-out.losses["mi"]) + 0.2 * out.losses["balance"]
    assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.losses["mi"].item() > 0
    out.aux_loss.backward()
    assert model.gate.w_gate.grad.abs().sum() > 0


def test_eval_skips_the_auxiliary_losses() -> None:
    out = _model(alpha=0.3, beta=0.2).eval()(*_batch())
    assert out.aux_loss.item() == 0.0
    assert out.losses == {}


def test_balance_term_and_smooth_load_only_when_beta_is_positive(monkeypatch) -> None:
    import cesaa.gating as gating

    calls = []
    original = gating._prob_in_top_k

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gating, "_prob_in_top_k", counting)
    out = _model(alpha=0.3, beta=0.0).train()(*_batch())
    assert set(out.losses) == {"mi"} and calls == []
    expected = 0.3 * (-out.losses["mi"])
    assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out = _model(alpha=0.3, beta=0.2).train()(*_batch())
    assert set(out.losses) == {"mi", "balance"} and calls == [1]


def test_eval_deterministic_train_noisy() -> None:
    model = _model()
    batch = _batch()
    model.eval()
    assert torch.equal(model(*batch).logit, model(*batch).logit)
    model.train()
    assert not torch.equal(model(*batch).gates, model(*batch).gates)


@pytest.mark.parametrize("training", [False, True])
def test_sparse_and_dense_dispatch_agree(training: bool) -> None:
    sparse = _model(dispatch="sparse").train(training)
    dense = _model(dispatch="dense").train(training)
    dense.load_state_dict(sparse.state_dict())
    batch = _batch()
    outs = []
    for model in (sparse, dense):
        torch.manual_seed(123)  # the same gate noise in training
        out = model(*batch)
        (out.logit.sum() + out.aux_loss).backward()
        outs.append(out)
    assert torch.equal(outs[0].topk_idx, outs[1].topk_idx)
    assert torch.allclose(outs[0].logit, outs[1].logit, atol=1e-5)
    grads_s = dict(sparse.named_parameters())
    for name, p in dense.named_parameters():
        if p.grad is None:  # W_noise is unused in eval
            assert not training and grads_s[name].grad is None, name
            continue
        assert torch.allclose(grads_s[name].grad, p.grad, atol=1e-5), name


def test_routing_identity_is_bit_identical() -> None:
    model = _model().eval()
    batch = _batch()
    plain = model(*batch).logit
    assert torch.equal(model(*batch, routing=RoutingOverride()).logit, plain)
    assert torch.equal(model(*batch, routing=RoutingOverride(top_k=K)).logit, plain)


def test_knocked_out_expert_never_selected_and_gates_renormalized() -> None:
    model = _model().eval()
    batch = _batch()
    plain = model(*batch)
    assert (plain.topk_idx == 1).any()  # the knock-out below does change something
    out = model(*batch, routing=RoutingOverride(knocked_out=(1,)))
    assert not (out.topk_idx == 1).any()
    assert (out.gates[:, 1] == 0).all() and (out.probs[:, 1] == 0).all()
    assert out.gates.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    assert out.probs.sum(dim=1).tolist() == pytest.approx([1.0] * B, abs=1e-6)
    assert not torch.equal(out.logit, plain.logit)


def test_knocking_out_an_unselected_expert_changes_no_prediction() -> None:
    model = _model().eval()
    cat, num, domain = _batch(256)
    rows = ~(model(cat, num, domain).topk_idx == 3).any(dim=1)  # rows that never pick expert 3
    assert 0 < rows.sum() < 256
    batch = (cat[rows], num[rows], domain[rows])
    plain = model(*batch).logit
    knocked = model(*batch, routing=RoutingOverride(knocked_out=(3,))).logit
    assert torch.equal(plain, knocked)


def test_use_shared_false_changes_predictions() -> None:
    model = _model().eval()
    batch = _batch()
    off = model(*batch, routing=RoutingOverride(use_shared=False))
    assert not torch.allclose(off.logit, model(*batch).logit)
    moe = _model(cls=SparseMoE, num_shared=0, alpha=0.0).eval()
    assert torch.equal(
        moe(*batch, routing=RoutingOverride(use_shared=False)).logit, moe(*batch).logit
    )


def test_top_k_override() -> None:
    model = _model().eval()
    out = model(*_batch(), routing=RoutingOverride(top_k=1))
    assert out.topk_idx.shape == (B, 1)
    assert ((out.gates != 0).sum(dim=1) == 1).all()
    # k = 1 as an override of a k = 2 model: only the set changes, the one expert has weight 1
    # (a model trained with k = 1 keeps its Switch weight p_max: tests/test_gating.py)
    assert torch.equal(out.gates.gather(1, out.topk_idx), torch.ones(B, 1))
    full = model(*_batch(), routing=RoutingOverride(top_k=E))
    assert torch.allclose(full.gates, full.probs, atol=1e-6)


@pytest.mark.parametrize("k", [0, E + 1])
def test_invalid_top_k_raises(k: int) -> None:
    model = _model().eval()
    with pytest.raises(ValueError, match=f"top_k={k}"):
        model(*_batch(), routing=RoutingOverride(top_k=k))


def test_invalid_knock_out_raises() -> None:
    model = _model().eval()
    with pytest.raises(ValueError, match="knocked_out"):
        model(*_batch(), routing=RoutingOverride(knocked_out=(E,)))
    with pytest.raises(ValueError, match="top_k=2"):  # only one expert left for k = 2
        model(*_batch(), routing=RoutingOverride(knocked_out=(0, 1, 2)))


@pytest.mark.parametrize("gate_input", ["concat", "per_domain", "features"])
@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("head", ["shared", "per_domain"])
def test_variants_forward_and_backward(gate_input: str, fusion: str, head: str) -> None:
    model = _model(gate_input=gate_input, fusion=fusion, head=head).train()
    out = model(*_batch())
    assert out.logit.shape == (B,) and torch.isfinite(out.logit).all()
    (out.logit.sum() + out.aux_loss).backward()
    assert model.gate.w_gate.grad.abs().sum() > 0
    assert model.experts.weights[0].grad.abs().sum() > 0


def test_per_domain_head_uses_each_rows_own_tower() -> None:
    model = _model(head="per_domain").eval()
    batch = _batch()
    before = model(*batch).logit
    with torch.no_grad():
        model.towers[2][-1].bias += 1.0
    after = model(*batch).logit
    assert torch.equal(before != after, batch[2] == 2)


def test_concat_fusion_sees_both_parts() -> None:
    model = _model(fusion="concat").eval()
    assert model.tower[0].in_features == 2 * H + 4
    batch = _batch()
    off = model(*batch, routing=RoutingOverride(use_shared=False))
    assert not torch.allclose(off.logit, model(*batch).logit)


def test_registry_defaults_and_build() -> None:
    cfg = default_config("sparse_moe")
    assert cfg.num_shared == 0 and cfg.alpha == 0.0 and cfg.name == "sparse_moe"
    moe = build_model(dataclasses.replace(cfg, num_experts=E, top_k=K), SPEC)
    assert type(moe) is SparseMoE and moe.shared is None
    out = moe.train()(*_batch())
    assert cfg.beta == 0.0 and out.aux_loss.item() == 0.0  # alpha = beta = 0: no auxiliary loss
    model = build_model(default_config("cesaa", num_experts=E, top_k=K), SPEC)
    assert type(model) is CESAA and model.shared is not None
    assert default_config("cesaa").alpha > 0


def test_zero_init_gate_starts_uniform() -> None:
    torch.manual_seed(0)
    out = CESAA(_cfg(), SPEC).eval()(*_batch())
    assert out.probs.flatten().tolist() == pytest.approx([1 / E] * (B * E))


def test_training_learns_domain_specific_labels() -> None:
    torch.manual_seed(0)
    n = 2048
    cat, num, domain = _batch(n, seed=1)
    w = torch.tensor([[2.0, 1.0, 0.0, 0.0], [-2.0, 0.0, 1.5, 0.0], [0.0, -1.5, 0.0, 2.0]])
    score = (num * w[domain]).sum(dim=1)  # the label rule depends on the domain
    label = (score + 0.3 * torch.randn(n) > 0).float()
    model = CESAA(_cfg(alpha=0.01, beta=0.0), SPEC).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend with other processes
    try:
        for step in range(200):
            idx = torch.randint(0, n, (128,), generator=torch.Generator().manual_seed(step))
            out = model(cat[idx], num[idx], domain[idx])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logit, label[idx])
            opt.zero_grad()
            (bce + out.aux_loss).backward()
            opt.step()
        with torch.no_grad():
            pred = model.eval()(cat, num, domain).logit
    finally:
        torch.set_num_threads(threads)
    assert roc_auc_score(label.numpy(), pred.numpy()) > 0.75


def test_per_domain_towers_start_tied_like_the_baselines() -> None:
    """head="per_domain" with tower_init="tied" (the default): every domain's tower starts as the
    independent init's tower 0 and every other parameter is unchanged (same random stream)."""

    def make(init: str) -> CESAA:
        torch.manual_seed(0)
        return CESAA(_cfg(head="per_domain", tower_init=init), SPEC)

    tied, indep = make("tied"), make("independent")
    for t in range(D):
        for (n, w_t), w_0, w_i in zip(
            tied.towers[t].named_parameters(),
            indep.towers[0].parameters(),
            indep.towers[t].parameters(),
            strict=True,
        ):
            assert torch.equal(w_t, w_0), (t, n)
            assert t == 0 or not torch.equal(w_i, w_0), (t, n)
    others = dict(indep.named_parameters())
    for n, p in tied.named_parameters():
        if not n.startswith("towers."):
            assert torch.equal(p, others[n]), n
