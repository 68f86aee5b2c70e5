"""Editing a model's experts (cesaa.pruning): known answers for pruning and merging."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cesaa.checkpoint import load_checkpoint, read_meta, save_checkpoint
from cesaa.config import ModelConfig
from cesaa.data import load_data
from cesaa.data.table import EncodedTable
from cesaa.evaluation import predict
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import build_model, default_config
from cesaa.pruning import (
    ExpertPlan,
    apply_plan,
    count_parameters,
    expert_flops_per_row,
    save_edited_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), embed_dim=8)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic:rows=3000,domains=3,seed=0")


def _model(data, **kw):
    torch.manual_seed(0)
    cfg = default_config("cesaa", **{**TINY, "num_experts": 4, "top_k": 2, **kw})
    model = build_model(cfg, data.spec).eval()
    with torch.no_grad():  # a gate that is not uniform (it is zero-initialized)
        model.gate.w_gate.normal_(0, 1.0)
    return model


def _auc_by_domain(y, p, d):
    return {int(v): roc_auc_score(y[d == v], p[d == v]) for v in np.unique(d)}


def test_plan_validation_names_the_problem():
    with pytest.raises(ValueError, match="at least two slots"):
        ExpertPlan(merge=((1,),))
    with pytest.raises(ValueError, match=r"slots \[1\] appear twice"):
        ExpertPlan(remove=(1,), merge=((1, 2),))
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        ExpertPlan(remove=(5,)).check(4)
    with pytest.raises(ValueError, match="keep at least one"):
        ExpertPlan(remove=(0, 1, 2, 3)).check(4)
    with pytest.raises(ValueError, match="ints >= 0"):
        ExpertPlan(remove=(-1,))
    with pytest.raises(ValueError, match="unknown keys"):
        ExpertPlan.from_dict({"remove": [1], "prune": [2]})
    plan = ExpertPlan(remove=(3, 1), merge=((2, 0),), criterion="reap")
    assert ExpertPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan.to_dict() == {"remove": [1, 3], "merge": [[0, 2]], "criterion": "reap"}


def test_expert_slots_config_is_checked():
    with pytest.raises(ValueError, match="one expert per gate slot"):
        ModelConfig(num_experts=4, expert_slots=(0, 1, 2))
    with pytest.raises(ValueError, match=r"every expert 0\.\.1"):
        ModelConfig(num_experts=3, expert_slots=(0, 2, 2))


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_pruning_equals_the_knockout(data, dispatch):
    """Removing slots computes what knocking them out computes (gates renormalized)."""
    model = _model(data, dispatch=dispatch)
    t = data.test
    pruned = apply_plan(model, ExpertPlan(remove=(1, 2)))
    assert pruned.cfg.num_experts == 2 and pruned.experts.groups == 2
    assert pruned.gate.w_gate.shape[-1] == 2
    knocked = predict(model, t, routing=RoutingOverride(knocked_out=(1, 2)))
    np.testing.assert_allclose(predict(pruned, t), knocked, atol=1e-6)
    assert model.cfg.num_experts == 4  # the original is untouched


def test_k_is_clipped_to_the_slots_left(data):
    model = _model(data, top_k=3)
    pruned = apply_plan(model, ExpertPlan(remove=(0, 1, 3)))
    assert pruned.cfg.top_k == 1 and pruned.cfg.num_experts == 1
    # one slot left: it mixes with weight 1, as the k = 1 override of the knocked-out model
    knocked = predict(model, data.test, routing=RoutingOverride(top_k=1, knocked_out=(0, 1, 3)))
    np.testing.assert_allclose(predict(pruned, data.test), knocked, atol=1e-6)


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_merging_two_identical_experts_costs_exactly_zero(data, dispatch):
    model = _model(data, dispatch=dispatch)
    with torch.no_grad():  # expert 3 := expert 1 (their gate columns stay different)
        for w in (*model.experts.weights, *model.experts.biases):
            w[3] = w[1]
    t = data.test
    before = predict(model, t)
    merged = apply_plan(model, ExpertPlan(merge=((1, 3),)))
    assert merged.cfg.expert_slots == (0, 1, 2, 1) and merged.experts.groups == 3
    assert merged.cfg.num_experts == 4 and merged.cfg.top_k == 2
    after = predict(merged, t)
    np.testing.assert_allclose(after, before, atol=1e-6)
    y = t.label.numpy()
    assert roc_auc_score(y, after) == roc_auc_score(y, before)
    one = sum(w[0].numel() for w in (*model.experts.weights, *model.experts.biases))
    assert count_parameters(model) - count_parameters(merged) == one
    # sparse: each row still runs k experts; dense: every expert network runs, one fewer
    saved = expert_flops_per_row(model) - expert_flops_per_row(merged)
    flops_one = sum(2 * w.shape[1] * w.shape[2] + w.shape[2] for w in model.experts.weights)
    assert saved == (0 if dispatch == "sparse" else flops_one)


def test_merged_expert_holds_the_average(data):
    model = _model(data)
    merged = apply_plan(model, ExpertPlan(merge=((0, 2),)))
    for old, new in zip(model.experts.weights, merged.experts.weights, strict=True):
        torch.testing.assert_close(new[0], (old[0] + old[2]) / 2)
        torch.testing.assert_close(new[1], old[1])
        torch.testing.assert_close(new[2], old[3])
    # a merged model is edited again: pruning slot 0 keeps the shared expert for slot 2
    again = apply_plan(merged, ExpertPlan(remove=(0,)))
    assert again.cfg.expert_slots == () and again.experts.groups == 3
    torch.testing.assert_close(again.experts.weights[0][1], merged.experts.weights[0][0])


def test_pruning_a_dead_expert_costs_exactly_zero(data):
    """Slot 1 is never selected (its logit is slot 0's minus 1000 on every row): weight 0."""
    model = _model(data)
    with torch.no_grad():
        model.domain_emb.weight[:, 0] = 1.0  # a constant input to the gate
        f = model.features.out_dim
        model.gate.w_gate[:, 1] = model.gate.w_gate[:, 0]
        model.gate.w_gate[f, 1] -= 1000.0
    t = data.test
    out = model(t.cat, t.num, t.domain)
    assert not (out.topk_idx == 1).any() and (out.gates[:, 1] == 0).all()
    before = predict(model, t)
    pruned = apply_plan(model, ExpertPlan(remove=(1,)))
    after = predict(pruned, t)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert roc_auc_score(t.label.numpy(), after) == roc_auc_score(t.label.numpy(), before)


def test_an_expert_that_alone_serves_a_planted_domain(data):
    """Domain d is routed to expert d alone (k = 1, gate weight exactly 1); the labels are drawn
    from this model.  Pruning expert 0 costs domain 0 and leaves domains 1 and 2 exactly."""
    model = _model(data, top_k=1, num_shared=0)
    with torch.no_grad():
        f = model.features.out_dim
        model.domain_emb.weight.zero_()
        model.domain_emb.weight[:, :3] = torch.eye(3)
        model.gate.w_gate.zero_()
        model.gate.w_gate[f : f + 3, :3] = 100.0 * torch.eye(3)
    t = data.test
    out = model(t.cat, t.num, t.domain)
    assert torch.equal(out.topk_idx[:, 0], t.domain)
    gen = torch.Generator().manual_seed(0)
    p = torch.from_numpy(predict(model, t))
    planted = EncodedTable(t.cat, t.num, t.domain, torch.bernoulli(p, generator=gen))
    y, d = planted.label.numpy(), planted.domain.numpy()
    before = _auc_by_domain(y, predict(model, planted), d)
    after = _auc_by_domain(y, predict(apply_plan(model, ExpertPlan(remove=(0,))), planted), d)
    assert before[0] - after[0] > 0.05
    assert after[1] == before[1] and after[2] == before[2]


def test_edited_checkpoint_round_trip(data, tmp_path):
    from cesaa.checkpoint import build_meta
    from cesaa.config import TrainConfig

    model = _model(data)
    src = tmp_path / "src"
    meta = build_meta(model.cfg, TrainConfig(), data.spec, data.description, "fp", {})
    save_checkpoint(src, model, meta)
    ckpt = load_checkpoint(src)
    plan = ExpertPlan(remove=(2,), merge=((0, 1),), criterion="test")
    edited = apply_plan(ckpt.model, plan)
    out = save_edited_checkpoint(ckpt, edited, plan, tmp_path / "pruned", metrics={"test": {}})
    back = load_checkpoint(out)
    assert back.model_config == dataclasses.replace(
        model.cfg, num_experts=3, expert_slots=(0, 0, 1)
    )
    np.testing.assert_array_equal(predict(back.model, data.test), predict(edited, data.test))
    info = read_meta(out)["edit"]
    assert info["plan"] == plan.to_dict()
    assert (info["slots_before"], info["slots_after"]) == (4, 3)
    assert (info["experts_before"], info["experts_after"]) == (4, 2)
    assert info["parameters_before"] - info["parameters_after"] == count_parameters(
        model
    ) - count_parameters(edited)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    with pytest.raises(ValueError, match="already exists"):
        save_edited_checkpoint(ckpt, edited, plan, out)


def test_outside_models_are_refused_with_a_reason(data):
    mmoe = build_model(default_config("mmoe", **TINY), data.spec)
    with pytest.raises(ValueError, match="export the plan as JSON"):
        apply_plan(mmoe, ExpertPlan(remove=(0,)))
