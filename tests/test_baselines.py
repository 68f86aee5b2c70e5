"""Baselines: shapes, gradients, per-domain behaviour, routing overrides, STAR's PN, and learning.

Fixtures are tiny (B=64, 3 domains, 3 categorical + 2 numeric columns) so the file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec
from cesaa.models.baselines.mlp import DomainMLP
from cesaa.models.baselines.mmoe import MMoE
from cesaa.models.baselines.ple import PLE
from cesaa.models.baselines.shared_bottom import SharedBottom
from cesaa.models.baselines.star import STAR
from cesaa.models.output import RoutingOverride

B, D, H = 64, 3, 32  # H = ModelConfig.expert_dim default
SPEC = FeatureSpec(
    cat_names=("user", "item", "ctx"),
    cat_cardinalities=(10, 12, 8),
    num_names=("n0", "n1"),
    domain_names=("d0", "d1", "d2"),
)
MODELS = {"mlp": DomainMLP, "shared_bottom": SharedBottom, "mmoe": MMoE, "ple": PLE, "star": STAR}
# parameter groups each model must have (top-level attribute names), all of which must get gradients
GROUPS = {
    "mlp": {"embedding", "domain_embedding", "net"},
    "shared_bottom": {"embedding", "bottom", "towers"},
    "mmoe": {"embedding", "experts", "gates", "towers"},
    "ple": {"embedding", "levels", "towers"},
    "star": {"embedding", "norm", "fcn", "domain_embedding", "aux"},
}
VARIANTS = [(name, {}) for name in MODELS] + [("ple", {"ple_levels": 2})]
IDS = [name + ("_2levels" if kw else "") for name, kw in VARIANTS]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name](ModelConfig(name=name, **kw), SPEC)


def batch(seed: int = 0, b: int = B) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (b,), generator=g) for c in SPEC.cat_cardinalities], 1)
    num = torch.randn(b, SPEC.num_numeric, generator=g)
    domain = torch.arange(b) % D  # every domain present
    return cat, num, domain


def test_each_model_is_registered_under_its_name():
    assert {cls.model_name for cls in MODELS.values()} == set(MODELS)


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_forward_shapes_and_finite(name, kw):
    out = build(name, **kw)(*batch())
    assert out.logit.shape == (B,)
    assert torch.isfinite(out.logit).all()
    assert out.aux_loss.shape == () and out.aux_loss.item() == 0.0
    assert out.expert_outputs is None  # only when requested


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_gradients_reach_every_parameter(name, kw):
    model = build(name, **kw)
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == GROUPS[name]
    cat, num, domain = batch()
    y = (num[:, 0] > 0).float()
    F.binary_cross_entropy_with_logits(model(cat, num, domain).logit, y).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert p.grad.abs().sum() > 0, f"{n} got a zero gradient"


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_changing_only_the_domain_changes_the_logit(name, kw):
    # independent towers: with tied ones Shared-Bottom's domains compute one function at init
    model = build(name, tower_init="independent", **kw).eval()
    cat, num, domain = batch()
    a = model(cat, num, domain).logit
    b = model(cat, num, (domain + 1) % D).logit
    assert not torch.isclose(a, b, atol=1e-6).any()


def _changed_rows(model, perturb) -> torch.Tensor:
    model.eval()
    cat, num, domain = batch()
    before = model(cat, num, domain).logit
    with torch.no_grad():
        perturb(model)
    after = model(cat, num, domain).logit
    return ~torch.isclose(before, after, atol=1e-6)


def _bump_group(params, group: int) -> None:
    """Add random noise to slice ``group`` of stacked parameters (a constant shift would cancel in a
    softmax gate)."""
    g = torch.Generator().manual_seed(group)
    for p in params:
        p[group] += 0.5 * torch.randn(p[group].shape, generator=g)


PER_DOMAIN_PARAMS = {  # parameters stacked with domain first: perturbing [1] may change domain 1 only
    "shared_bottom.towers": ("shared_bottom", lambda m: m.towers.parameters()),
    "mmoe.towers": ("mmoe", lambda m: m.towers.parameters()),
    "mmoe.gates": ("mmoe", lambda m: m.gates.parameters()),
    "ple.towers": ("ple", lambda m: m.towers.parameters()),
    "ple.gates": ("ple", lambda m: m.levels[0].gates.parameters()),
    "star.fcn": ("star", lambda m: [*m.fcn.domain_weights, *m.fcn.domain_biases]),
    "star.norm": ("star", lambda m: [m.norm.domain_gamma, m.norm.domain_beta]),
}


@pytest.mark.parametrize("key", PER_DOMAIN_PARAMS)
def test_perturbing_one_domains_parameters_changes_only_its_rows(key):
    name, params = PER_DOMAIN_PARAMS[key]
    changed = _changed_rows(build(name), lambda m: _bump_group(params(m), 1))
    domain = batch()[2]
    assert changed[domain == 1].all()
    assert not changed[domain != 1].any()


def test_ple_specific_experts_belong_to_their_domain_and_shared_to_all():
    s = ModelConfig().ple_specific
    specific = _changed_rows(build("ple"), lambda m: _bump_group(m.levels[0].specific.weights, s))
    domain = batch()[2]
    assert specific[domain == 1].all() and not specific[domain != 1].any()  # group s = domain 1
    shared = _changed_rows(build("ple"), lambda m: _bump_group(m.levels[0].shared.weights, 0))
    assert shared.all()


def test_mmoe_probs_are_a_dense_softmax_with_one_expert_per_domain_by_default():
    out = build("mmoe")(*batch(), return_expert_outputs=True)
    assert out.probs.shape == (B, D)
    assert torch.allclose(out.probs.sum(1), torch.ones(B))
    assert (out.probs > 0).all() and out.topk_idx is None
    assert torch.equal(out.gates, out.probs)
    assert out.expert_outputs.shape == (B, D, H)
    assert build("mmoe", mmoe_experts=5)(*batch()).probs.shape == (B, 5)


def test_mmoe_knocked_out_expert_gets_zero_weight_and_the_rest_is_renormalized():
    model = build("mmoe").eval()
    base = model(*batch())
    out = model(*batch(), routing=RoutingOverride(knocked_out=(1,)))
    for g in (out.probs, out.gates):
        assert (g[:, 1] == 0).all()
        assert torch.allclose(g.sum(1), torch.ones(B))
    kept = base.probs[:, [0, 2]]
    assert torch.allclose(out.gates[:, [0, 2]], kept / kept.sum(1, keepdim=True))
    assert not torch.isclose(out.logit, base.logit).any()


def test_mmoe_override_is_applied_before_mixing():
    # with only expert 2 left, the gate no longer matters: perturbing the gates leaves the logit as is
    routing = RoutingOverride(knocked_out=(0, 1))
    model = build("mmoe").eval()
    before = model(*batch(), routing=routing).logit
    with torch.no_grad():
        _bump_group(model.gates.parameters(), 0)
        _bump_group(model.gates.parameters(), 1)
    assert torch.allclose(model(*batch(), routing=routing).logit, before)
    assert not torch.allclose(model(*batch()).logit, build("mmoe").eval()(*batch()).logit)


def test_mmoe_top_k_override_keeps_the_k_largest_and_renormalizes():
    model = build("mmoe", mmoe_experts=4).eval()
    base = model(*batch())
    out = model(*batch(), routing=RoutingOverride(top_k=2))
    assert out.topk_idx.shape == (B, 2)
    assert ((out.gates > 0).sum(1) == 2).all()
    assert torch.allclose(out.gates.sum(1), torch.ones(B))
    assert torch.equal(out.topk_idx[:, 0], base.probs.argmax(1))
    assert torch.equal(out.probs, base.probs)  # top-k changes the mixing weights, not probs


@pytest.mark.parametrize(
    ("routing", "match"),
    [
        (RoutingOverride(knocked_out=(7,)), "knocked_out"),
        (RoutingOverride(knocked_out=(0, 1, 2)), "no expert"),
        (RoutingOverride(top_k=3, knocked_out=(0,)), "top_k"),
    ],
)
def test_mmoe_invalid_overrides_raise(routing, match):
    with pytest.raises(ValueError, match=match):
        build("mmoe")(*batch(), routing=routing)


@pytest.mark.parametrize("name", ["mlp", "shared_bottom", "star"])
def test_gateless_models_reject_overrides_but_accept_identity(name):
    model = build(name)
    model(*batch(), routing=RoutingOverride())
    with pytest.raises(ValueError, match="has no gate"):
        model(*batch(), routing=RoutingOverride(top_k=1))


def test_star_eval_is_deterministic_and_train_mode_is_not_eval_mode():
    model = build("star", dropout=0.2)
    cat, num, domain = batch()
    model.eval()
    a, b = model(cat, num, domain).logit, model(cat, num, domain).logit
    assert torch.equal(a, b)
    model.train()
    assert not torch.allclose(model(cat, num, domain).logit, a)


def test_star_domains_share_the_fcn_at_init():
    model = build("star").eval()
    with torch.no_grad():  # switch the auxiliary network off: only PN and the star FCN remain
        model.aux[-1].weight.zero_()
        model.aux[-1].bias.zero_()
    cat, num, domain = batch()
    a = model(cat, num, domain).logit
    assert torch.allclose(a, model(cat, num, (domain + 1) % D).logit)
    with torch.no_grad():
        _bump_group(model.fcn.domain_weights, 1)
    assert not torch.allclose(a, model(cat, num, (domain + 1) % D).logit)


def test_star_pn_normalizes_each_domain_with_its_own_batch_moments():
    model = build("star").train()
    cat, num, domain = batch()
    num = num + 3.0 * domain[:, None]  # domains far apart
    x = model.embedding(cat, num)
    z = model.norm(x, domain)  # gamma = 1, beta = 0 at init
    eps = model.norm.eps
    for d in range(D):
        xd = x[domain == d]
        expected = (xd - xd.mean(0)) / torch.sqrt(xd.var(0, unbiased=False) + eps)
        assert torch.allclose(z[domain == d], expected, atol=1e-5)
        assert torch.allclose(z[domain == d].mean(0), torch.zeros(x.shape[1]), atol=1e-5)


def test_star_running_stats_are_per_domain_and_skip_domains_with_one_row():
    model = build("star")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(20):
        cat, num, domain = batch(seed=step)
        num = num + 3.0 * (domain == 2)[:, None]  # domain 2's numeric features are shifted
        loss = F.binary_cross_entropy_with_logits(
            model(cat, num, domain).logit, (num[:, 0] > 0) * 1.0
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    mean = model.norm.running_mean[:, -SPEC.num_numeric :]  # [D, 2] numeric columns
    assert (mean[2] - mean[0]).min() > 2.0
    assert (mean[0] - mean[1]).abs().max() < 0.5
    snapshot = model.norm.running_mean.clone()
    cat, num, domain = batch()
    domain = torch.where(domain == 2, 0, domain)
    domain[0] = 2  # domain 2 has a single row: it uses and keeps its running moments
    assert torch.isfinite(model(cat, num, domain).logit).all()
    assert torch.equal(model.norm.running_mean[2], snapshot[2])
    assert not torch.equal(model.norm.running_mean[0], snapshot[0])


def _sign_task(seed: int, n: int = 768) -> tuple[torch.Tensor, ...]:
    """Label = [sign_d * num_0 + noise > 0] with sign = (+1, -1, +1) and domain 1 half of the rows."""
    cat, num, _ = batch(seed=seed, b=n)
    g = torch.Generator().manual_seed(seed)
    domain = torch.multinomial(torch.tensor([0.25, 0.5, 0.25]), n, replacement=True, generator=g)
    sign = torch.tensor([1.0, -1.0, 1.0])[domain]
    y = (sign * num[:, 0] + 0.3 * torch.randn(n, generator=g) > 0).float()
    return cat, num, domain, y


def _train_and_score(model: torch.nn.Module, blind: bool = False) -> tuple[float, float]:
    """150 full-batch Adam steps (lr 1e-2) on the sign task; (train AUC, held-out AUC).

    Held-out rows matter: the categorical columns nearly identify each training row, so even a
    domain-blind model can memorize the training set.  ``blind`` hides the domain (all rows: 0).
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    aucs = []
    for i, seed in enumerate((1, 2)):  # seed 1 trains, seed 2 is held out
        cat, num, domain, y = _sign_task(seed)
        domain = torch.zeros_like(domain) if blind else domain
        for _ in range(150 if i == 0 else 0):
            loss = F.binary_cross_entropy_with_logits(model(cat, num, domain).logit, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logit = model.eval()(cat, num, domain).logit
        model.train()
        aucs.append(roc_auc_score(y.numpy(), logit.numpy()))
    return aucs[0], aucs[1]


def test_sign_task_needs_the_domain():
    _, num, _, y = _sign_task(1)
    assert 0.35 < roc_auc_score(y.numpy(), num[:, 0].numpy()) < 0.65
    assert _train_and_score(build("mlp"), blind=True)[1] < 0.65  # control: without the domain


@pytest.mark.parametrize("name", list(MODELS))
def test_learns_a_domain_dependent_sign(name):
    train_auc, heldout_auc = _train_and_score(build(name))
    assert train_auc > 0.75
    assert heldout_auc > 0.75


@pytest.mark.parametrize("grouped_gemm", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_star_runs_each_row_on_its_own_domain_path_only(monkeypatch, grouped_gemm, training):
    """The grouped-by-domain FCN equals the every-path-then-select oracle, values and gradients."""
    from cesaa import grouped_gemm as gemm_module

    if grouped_gemm and not gemm_module.grouped_mm_available(torch.device("cpu"), torch.float32):
        pytest.skip("torch._grouped_mm does not run on this CPU build")
    monkeypatch.setitem(gemm_module._GROUPED_MM_OK, ("cpu", torch.float32), grouped_gemm)
    model = build("star").train(training)
    with torch.no_grad():  # leave the all-ones start: domains must differ
        for p in model.fcn.domain_weights:
            p.normal_(1.0, 0.3, generator=torch.Generator().manual_seed(4))
    cat, num, domain = batch()
    x = torch.randn(B, model.embedding.out_dim, generator=torch.Generator().manual_seed(5))
    domain = domain.flip(0)  # not sorted by domain
    fast = model.fcn(x, domain)
    slow = model.fcn.forward_all_paths(x, domain)
    assert fast.shape == (B,)
    assert torch.allclose(fast, slow, atol=1e-5)
    params = list(model.fcn.parameters())
    g_fast = torch.autograd.grad((fast * torch.arange(B)).sum(), params)
    g_slow = torch.autograd.grad((slow * torch.arange(B)).sum(), params)
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_star_training_with_dropout_keeps_every_path_dropout_draws():
    model = build("star", dropout=0.5).train()
    x = torch.randn(B, model.embedding.out_dim, generator=torch.Generator().manual_seed(5))
    domain = torch.arange(B) % D
    torch.manual_seed(11)
    out = model.fcn(x, domain)
    torch.manual_seed(11)
    assert torch.equal(out, model.fcn.forward_all_paths(x, domain))


TOWERED = ("shared_bottom", "mmoe", "ple", "hmoe")


@pytest.mark.parametrize("name", TOWERED)
def test_per_domain_towers_start_tied_and_train_apart(name):
    """tower_init="tied" (the default): every domain's tower starts as domain 0's draw of the
    independent init (same random stream: every other parameter is unchanged), and one training
    step on rows of every domain moves the towers apart."""
    from cesaa.models.registry import build_model

    def make(init: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(ModelConfig(name=name, tower_init=init), SPEC)

    tied, indep = make("tied"), make("independent")
    for w_t, w_i in zip(tied.towers.parameters(), indep.towers.parameters(), strict=True):
        assert torch.equal(w_t, w_i[:1].expand_as(w_i))  # every group = the independent group 0
        assert not torch.equal(w_i[1], w_i[0])
    others = {n: p for n, p in indep.named_parameters() if not n.startswith("towers.")}
    for n, p in tied.named_parameters():
        if not n.startswith("towers."):
            assert torch.equal(p, others[n]), n
    cat, num, domain = batch()
    y = (num[:, 0] > 0).float()
    opt = torch.optim.Adam(tied.parameters(), lr=1e-2)
    F.binary_cross_entropy_with_logits(tied(cat, num, domain).logit, y).backward()
    opt.step()
    last = list(tied.towers.parameters())[-2]  # the last layer's weights [D, I, 1]
    assert not torch.equal(last[0], last[1]) and not torch.equal(last[1], last[2])
