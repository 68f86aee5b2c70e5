"""Per-expert evidence, the bootstrap and the prune plans (analysis.expert_evidence,
analysis.expert_pass, analysis.bootstrap, analysis.prune_plans)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from analysis.bootstrap import paired_auc_delta_ci, weighted_auc
from analysis.expert_evidence import (
    EVIDENCE_COLUMNS,
    dead_unit_share,
    domain_weights,
    reap_scores,
    top_domain_share,
)
from analysis.expert_pass import expert_arrays
from analysis.prune_cost import plan_cost
from analysis.prune_plans import CURVE_COLUMNS, prediction_error, propose, prune_curve
from cesaa.data import load_data
from cesaa.evaluation import evaluate
from cesaa.models.registry import build_model, default_config
from cesaa.pruning import ExpertPlan, apply_plan

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), embed_dim=8)


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic:rows=3000,domains=3,seed=0")


def _model(data, **kw):
    torch.manual_seed(0)
    cfg = default_config("cesaa", **{**TINY, "num_experts": 4, "top_k": 2, **kw})
    model = build_model(cfg, data.spec).eval()
    with torch.no_grad():
        model.gate.w_gate.normal_(0, 1.0)
    return model


# --- HoME measures and REAP on hand-built arrays ---------------------------------------------


def test_dead_unit_share_known_values():
    assert dead_unit_share([np.zeros((5, 3)), np.zeros((5, 2))]) == 1.0
    acts = [np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.5]])]
    assert dead_unit_share(acts) == pytest.approx(2 / 5)  # unit 0 of layer 0, unit 1 of layer 1
    assert np.isnan(dead_unit_share([np.zeros((0, 3))]))
    with pytest.raises(ValueError, match="after the ReLU"):
        dead_unit_share([np.array([[-1.0]])])


def test_reap_and_top_domain_share_known_values():
    gates = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
    norm = np.array([[2.0, 4.0, 9.0], [1.0, 1.0, 9.0], [4.0, 4.0, 9.0]])
    s = reap_scores(gates, norm)
    assert s[0] == pytest.approx((0.5 * 2 + 1 * 1 + 0.25 * 4) / 3)
    assert s[1] == pytest.approx((0.5 * 4 + 0.75 * 4) / 2)
    assert np.isnan(s[2])  # never routed
    weight, count = domain_weights(gates, np.array([0, 1, 1]), num_domains=2)
    np.testing.assert_allclose(weight, [[0.5, 0.5, 0.0], [1.25, 0.75, 0.0]])
    np.testing.assert_array_equal(count, [[1, 1, 0], [2, 1, 0]])
    share, top = top_domain_share(weight)
    assert share[0] == pytest.approx(1.25 / 1.75) and top[0] == 1
    assert share[1] == pytest.approx(0.75 / 1.25) and np.isnan(share[2]) and top[2] == -1


def test_an_expert_whose_relu_units_are_all_dead_reads_one(data):
    model = _model(data)
    with torch.no_grad():  # expert 2: zero weights, negative biases: every ReLU outputs 0
        for w, b in zip(model.experts.weights, model.experts.biases, strict=True):
            w[2] = 0.0
            b[2] = -1.0
    arr = expert_arrays(model, data.test, data.domain_names, sample_size=200)
    per, per_domain = arr.evidence()
    assert list(per.columns) == EVIDENCE_COLUMNS
    assert per.loc[2, "dead_units"] == 1.0
    assert (per.drop(index=2)["dead_units"] < 1.0).all()
    assert per.loc[2, "reap"] == 0.0  # its output norm is 0 on every row
    assert len(per_domain) == 4 * 3
    shares = per_domain.groupby("expert")["weight_share"].sum()
    np.testing.assert_allclose(shares.to_numpy(), 1.0)


# --- bootstrap --------------------------------------------------------------------------------


def test_weighted_auc_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    w = rng.integers(0, 4, (3, 300)).astype(float)
    for r in range(3):
        assert weighted_auc(y, p, w[r]) == pytest.approx(roc_auc_score(y, p, sample_weight=w[r]))
    np.testing.assert_allclose(
        weighted_auc(y, p, w), [roc_auc_score(y, p, sample_weight=x) for x in w]
    )


def test_paired_interval_of_equal_predictions_is_zero_and_covers_a_shift():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p0 = rng.random(400)
    assert paired_auc_delta_ci(y, p0, p0) == (0.0, 0.0)
    p1 = p0 + 0.3 * y  # better
    lo, hi = paired_auc_delta_ci(y, p0, p1, reps=100)
    d = roc_auc_score(y, p1) - roc_auc_score(y, p0)
    assert 0 < lo <= d <= hi


# --- plans and their cost ---------------------------------------------------------------------


def test_measured_cost_equals_a_direct_evaluation_of_the_edited_model(data):
    model = _model(data)
    names = data.domain_names
    plan = ExpertPlan(remove=(1,), merge=((0, 3),))
    cost = plan_cost(model, plan, data.test, names, reps=20).set_index("scope")
    direct = evaluate(apply_plan(model, plan), data.test, names)
    base = evaluate(model, data.test, names)
    assert cost.loc["overall", "delta_auc"] == pytest.approx(direct["auc"] - base["auc"], abs=0)
    assert cost.loc["overall", "delta_gauc"] == pytest.approx(direct["gauc"] - base["gauc"])
    for n in names:
        assert cost.loc[n, "delta_auc"] == pytest.approx(direct[f"auc/{n}"] - base[f"auc/{n}"])
        assert cost.loc[n, "delta_logloss"] == pytest.approx(
            direct[f"logloss/{n}"] - base[f"logloss/{n}"]
        )
    assert cost.loc["overall", "rows"] == len(data.test)


def _perfect_labels(model, table):
    """The rows relabelled 1 where the model's prediction is above its median: the model is a
    perfect ranker of them (AUC 1), so any change of its predictions' order costs AUC."""
    from cesaa.data.table import EncodedTable
    from cesaa.evaluation import predict

    p = predict(model, table)
    y = torch.from_numpy((p > np.median(p)).astype(np.float32))
    return EncodedTable(table.cat, table.num, table.domain, y, user=table.user)


def test_greedy_removes_a_dead_expert_first_at_zero_cost(data):
    model = _model(data)
    with torch.no_grad():  # slot 2 never selected (as in tests/test_pruning.py)
        model.domain_emb.weight[:, 0] = 1.0
        f = model.features.out_dim
        model.gate.w_gate[:, 2] = model.gate.w_gate[:, 0]
        model.gate.w_gate[f, 2] -= 1000.0
    val, test = _perfect_labels(model, data.val), _perfect_labels(model, data.test)
    for e in (0, 1, 3):  # every live expert's removal costs AUC on these rows
        cost = plan_cost(model, ExpertPlan(remove=(e,)), val, data.domain_names, reps=5)
        assert cost.loc[0, "delta_auc"] < 0
    arr = expert_arrays(model, val, data.domain_names, sample_size=200)
    plans = propose(model, arr, val, criteria=("knockout", "reap"), keeps=[3])
    assert [(c, k, p.remove, pred) for c, k, p, pred in plans] == [
        ("knockout", 3, (2,), 0.0),
        ("reap", 3, (2,), 0.0),
    ]
    curve = prune_curve(
        model,
        val,
        test,
        data.domain_names,
        criteria=("knockout",),
        keeps=[3, 4],
        reps=20,
        arrays=arr,
    )
    assert list(curve.columns) == CURVE_COLUMNS
    assert (curve["delta_auc"] == 0.0).all()


def test_merge_criterion_merges_identical_experts_first_at_zero_cost(data):
    model = _model(data)
    with torch.no_grad():
        for w in (*model.experts.weights, *model.experts.biases):
            w[3] = w[0]
    curve = prune_curve(
        model,
        data.val,
        data.test,
        data.domain_names,
        criteria=("merge",),
        keeps=[2, 3],
        reps=20,
    ).set_index("keep")
    assert curve.loc[3, "plan"]["merge"] == [[0, 3]]
    assert curve.loc[3, "delta_auc"] == 0.0 and curve.loc[3, "predicted_delta_auc"] == 0.0
    assert curve.loc[3, "flops_saved_per_row"] == 0.0  # k experts per row still
    assert curve.loc[3, "parameters_saved"] > 0
    err = prediction_error(curve.reset_index())
    assert list(err["criterion"]) == ["merge"]


def test_bad_budget_and_criterion_name_the_value(data):
    model = _model(data)
    arr = expert_arrays(model, data.val, data.domain_names, sample_size=100)
    with pytest.raises(ValueError, match=r"--keep \[5\] must be in \[1, 4\]"):
        propose(model, arr, data.val, keeps=[5])
    with pytest.raises(ValueError, match=r"criterion \['best'\] unknown"):
        propose(model, arr, data.val, criteria=("best",))


def test_evidence_knockout_columns_equal_pruning_each_expert(data):
    model = _model(data)
    arr = expert_arrays(model, data.test, data.domain_names, sample_size=200)
    per, per_domain = arr.evidence()
    for i in range(4):
        cost = plan_cost(model, ExpertPlan(remove=(i,)), data.test, data.domain_names, reps=1)
        cost = cost.set_index("scope")
        assert per.loc[i, "knockout_delta_auc"] == pytest.approx(
            cost.loc["overall", "delta_auc"], abs=1e-9
        )
        assert per.loc[i, "knockout_delta_logloss"] == pytest.approx(
            cost.loc["overall", "delta_logloss"], abs=1e-6
        )
        doms = cost.drop(index="overall")["delta_auc"]
        assert per.loc[i, "knockout_worst_domain"] == doms.idxmin()
        mine = per_domain[per_domain["expert"] == f"expert {i}"].set_index("domain")
        np.testing.assert_allclose(mine["knockout_delta_auc"], doms[mine.index], atol=1e-9)


def test_planning_sample_is_seeded_and_keeps_small_tables(data):
    from analysis.prune_plans import planning_sample

    assert planning_sample(data.val, None) is data.val
    assert planning_sample(data.val, len(data.val)) is data.val
    a, b = planning_sample(data.val, 100, seed=1), planning_sample(data.val, 100, seed=1)
    assert len(a) == 100 and torch.equal(a.label, b.label) and torch.equal(a.cat, b.cat)
    with pytest.raises(ValueError, match="positive int"):
        planning_sample(data.val, 0)


def test_curve_budgets_every_one_up_to_most_then_spaced():
    from analysis.prune_plans import curve_budgets

    assert curve_budgets(8) == list(range(1, 9))
    b = curve_budgets(32)
    assert b[0] == 1 and b[-2:] == [31, 32] and b == sorted(set(b)) and len(b) <= 18
    assert all(1 <= k <= 32 for k in b)
