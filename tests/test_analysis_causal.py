from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.capabilities import (
    MEASURES,
    expert_names,
    experts_left,
    not_applicable,
    routing_capabilities,
)
from analysis.causal import k_curve, knockout_importance
from analysis.collect import collect
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.output import RoutingOverride
from cesaa.models.registry import build_model, default_config, model_names
from cesaa.train import evaluate, predict, train

TINY = dict(expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), num_experts=4, top_k=2)
E, D = 4, 3


@pytest.fixture(scope="module")
def trained():
    """A tiny CESAA trained for 2 epochs on 4,000 synthetic rows (about a second)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_data("synthetic:rows=4000,domains=3,seed=0")
    cfg = default_config("cesaa", alpha=0.05, **TINY)
    res = train(cfg, TrainConfig(epochs=2, batch_size=256, lr=1e-2, seed=0), data)
    yield data, res.model
    torch.set_num_threads(threads)


def test_routing_capabilities_of_every_model(trained):
    data, model = trained
    assert routing_capabilities(model) == {
        "name": "cesaa",
        "num_experts": 4,
        "expert_kinds": ["routed"] * 4,
        "row_experts": 4,
        "top_k": 2,
        "num_shared": 1,
        "always_on": 1,
        "has_gate": True,
        "has_topk": True,
    }
    keys = (
        "num_experts",
        "row_experts",
        "top_k",
        "num_shared",
        "always_on",
        "has_gate",
        "has_topk",
    )
    expected = {
        "sparse_moe": (4, 4, 2, 0, 0, True, True),
        "mmoe": (3, 3, None, 0, 0, True, False),
        # 3 domains x 2 specific + 1 shared = 7 networks; each row's gate weighs 2 + 1 of them
        "ple": (7, 3, None, 1, 0, True, False),
        "mlp": (0, 0, None, 0, 0, False, False),
        "shared_bottom": (0, 0, None, 0, 0, False, False),
        "star": (0, 0, None, 0, 0, False, False),
    }
    for name in model_names():
        caps = routing_capabilities(build_model(default_config(name, **TINY), data.spec))
        assert caps["name"] == name
        if name in expected:
            assert tuple(caps[k] for k in keys) == expected[name], name
    ple = routing_capabilities(build_model(default_config("ple", **TINY), data.spec))
    assert ple["expert_kinds"] == [
        *["domain:0"] * 2,
        *["domain:1"] * 2,
        *["domain:2"] * 2,
        "shared",
    ]
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        routing_capabilities("cesaa")


def test_expert_names_label_ple_experts_by_kind(trained):
    data, model = trained
    assert expert_names(routing_capabilities(model)) == [f"expert {i}" for i in range(E)]
    caps = routing_capabilities(build_model(default_config("ple", **TINY), data.spec))
    assert expert_names(caps, ["a", "b", "c"]) == [
        "expert 0 (a only)", "expert 1 (a only)", "expert 2 (b only)", "expert 3 (b only)",
        "expert 4 (c only)", "expert 5 (c only)", "expert 6 (shared)",
    ]  # fmt: skip
    assert expert_names(caps)[2] == "expert 2 (domain 1 only)"


def test_experts_left_counts_the_smallest_gate(trained):
    data, model = trained
    assert experts_left(routing_capabilities(model), (0, 3)) == E - 2
    caps = routing_capabilities(build_model(default_config("ple", **TINY), data.spec))
    assert experts_left(caps) == 3
    assert experts_left(caps, (2,)) == 2  # domain 1 lost one of its two specific experts
    assert experts_left(caps, (0, 2)) == 2  # domains 0 and 1 lost one each: still 2 per gate
    assert experts_left(caps, (0, 1, 6)) == 0  # domain 0 has nothing left
    with pytest.raises(ValueError, match=r"indices \[7\] outside \[0, 7\)"):
        experts_left(caps, (7,))


def test_not_applicable_says_why_in_one_line(trained):
    data, model = trained
    caps = {n: routing_capabilities(build_model(default_config(n, **TINY), data.spec))
            for n in ("cesaa", "sparse_moe", "mmoe", "ple", "mlp")}  # fmt: skip
    for measure in ("routing", "knockout", "k_curve", "load_balance"):
        assert not_applicable(caps["cesaa"], measure) is None
        assert "'mlp' has no gate" in not_applicable(caps["mlp"], measure)
    assert not_applicable(caps["mmoe"], "k_curve") is None
    assert not_applicable(caps["ple"], "k_curve") is None
    assert "no shared expert" in not_applicable(caps["sparse_moe"], "shared_knockout")
    assert not_applicable(caps["ple"], "shared_knockout") is None
    assert "CESAA family" in not_applicable(caps["mmoe"], "alpha")
    assert not_applicable(caps["sparse_moe"], "alpha") is None
    assert "domain sizes" in not_applicable(caps["ple"], "load_balance")
    assert not_applicable(caps["mmoe"], "load_balance") is None
    for reason in (not_applicable(c, m) for c in caps.values() for m in MEASURES):
        assert reason is None or "\n" not in reason
    with pytest.raises(ValueError, match="measure must be one of"):
        not_applicable(caps["cesaa"], "mi")


def test_knockout_matrix_shape_and_deltas(trained):
    data, model = trained
    df = knockout_importance(model, data.test, data.domain_names)
    assert list(df.columns) == ["target", "domain", "auc", "logloss", "delta_auc", "delta_logloss"]
    targets = [f"expert {i}" for i in range(E)] + ["shared"]
    domains = ["overall", *data.domain_names]
    assert len(df) == (E + 1) * (D + 1)
    assert list(dict.fromkeys(df["target"])) == targets
    assert list(dict.fromkeys(df["domain"])) == domains
    matrix = df.pivot(index="target", columns="domain", values="delta_auc")
    assert matrix.shape == (E + 1, D + 1)
    base = evaluate(model, data.test, data.domain_names)
    row = df[(df.target == "shared") & (df.domain == data.domain_names[1])].iloc[0]
    assert row.auc - row.delta_auc == pytest.approx(base[f"auc/{data.domain_names[1]}"])
    assert row.logloss - row.delta_logloss == pytest.approx(base[f"logloss/{data.domain_names[1]}"])
    assert np.isfinite(df[["auc", "logloss", "delta_auc", "delta_logloss"]].to_numpy()).all()


def test_knocking_out_a_busy_expert_changes_predictions(trained):
    data, model = trained
    stats = collect(model, data.test, num_domains=D).stats
    busy = int(np.argmax(stats.select_count.sum(axis=0)))
    p0 = predict(model, data.test)
    p1 = predict(model, data.test, routing=RoutingOverride(knocked_out=(busy,)))
    assert np.mean(p0 != p1) > 0.2
    df = knockout_importance(model, data.test, data.domain_names)
    assert (df[df.target == f"expert {busy}"].delta_logloss.abs() > 0).all()


def test_knocking_out_an_unselected_expert_changes_nothing(trained):
    data, model = trained
    with torch.no_grad():
        topk = model(data.test.cat, data.test.num, data.test.domain).topk_idx.numpy()
    busy = int(np.bincount(topk.ravel(), minlength=E).argmax())
    without = torch.as_tensor(np.flatnonzero(~(topk == busy).any(axis=1)))
    with_ = torch.as_tensor(np.flatnonzero((topk == busy).any(axis=1)))
    assert len(without) > 20 and len(with_) > 20
    # rows that never selected the expert: identical predictions when it is knocked out
    sub = data.test.subset(without)
    ko = RoutingOverride(knocked_out=(busy,))
    np.testing.assert_array_equal(predict(model, sub, routing=ko), predict(model, sub))
    stats = collect(model, sub, num_domains=D).stats
    assert stats.select_count[:, busy].sum() == 0  # the stats see it as never selected
    df = knockout_importance(model, sub, data.domain_names)
    unused = df[df.target == f"expert {busy}"]
    assert (unused.delta_auc == 0).all() and (unused.delta_logloss == 0).all()
    # rows that did select it: changed
    sub = data.test.subset(with_)
    assert np.mean(predict(model, sub, routing=ko) != predict(model, sub)) > 0.95


def test_k_curve_has_every_k_and_domain(trained):
    data, model = trained
    df = k_curve(model, data.test, data.domain_names)
    assert list(df.columns) == ["k", "domain", "auc", "logloss", "active_experts"]
    assert len(df) == E * (D + 1)
    assert sorted(set(df.k)) == [1, 2, 3, 4]
    for k in range(1, E + 1):
        assert list(df[df.k == k].domain) == ["overall", *data.domain_names]
    assert (df.active_experts == df.k + 1).all()  # one shared expert always runs
    picked = k_curve(model, data.test, data.domain_names, ks=[3, 1])
    assert list(dict.fromkeys(picked.k)) == [3, 1]


def test_trained_k_reproduces_the_original_model(trained):
    data, model = trained
    np.testing.assert_array_equal(
        predict(model, data.test, routing=RoutingOverride(top_k=2)), predict(model, data.test)
    )
    base = evaluate(model, data.test, data.domain_names)
    at_k = k_curve(model, data.test, data.domain_names, ks=[2]).set_index("domain")
    assert at_k.loc["overall", "auc"] == base["auc"]
    for name in data.domain_names:
        assert at_k.loc[name, "auc"] == base[f"auc/{name}"]
        assert at_k.loc[name, "logloss"] == base[f"logloss/{name}"]
    other = k_curve(model, data.test, data.domain_names, ks=[1]).set_index("domain")
    assert other.loc["overall", "logloss"] != base["logloss"]


def test_dense_gate_models(trained):
    data, _ = trained
    torch.manual_seed(0)
    mmoe = build_model(default_config("mmoe", **TINY), data.spec)
    df = knockout_importance(mmoe, data.test, data.domain_names)
    assert list(dict.fromkeys(df.target)) == ["expert 0", "expert 1", "expert 2"]  # no "shared"
    ple = build_model(default_config("ple", **TINY), data.spec)
    targets = list(dict.fromkeys(knockout_importance(ple, data.test, data.domain_names).target))
    assert targets == [*expert_names(routing_capabilities(ple), data.domain_names), "shared"]


@pytest.mark.parametrize("name", ["mmoe", "ple"])
def test_k_curve_of_dense_gates_ends_at_the_trained_model(trained, name):
    """A dense gate's trained k is every expert of the row's gate: that point is the model."""
    data, _ = trained
    torch.manual_seed(0)
    model = build_model(default_config(name, **TINY), data.spec)
    df = k_curve(model, data.test, data.domain_names)
    assert sorted(set(df.k)) == [1, 2, 3]  # mmoe: 3 experts; ple: 2 specific + 1 shared per gate
    assert (df.active_experts == df.k).all()  # no expert runs outside the gate
    base = evaluate(model, data.test, data.domain_names)
    at_r = df[df.k == 3].set_index("domain")
    assert at_r.loc["overall", "auc"] == base["auc"]
    assert at_r.loc["overall", "logloss"] == base["logloss"]
    assert df[df.k == 1].set_index("domain").loc["overall", "logloss"] != base["logloss"]


def test_ple_knockout_of_a_domain_specific_expert_changes_only_that_domain(trained):
    data, _ = trained
    torch.manual_seed(0)
    ple = build_model(default_config("ple", **TINY), data.spec)
    df = knockout_importance(ple, data.test, data.domain_names).set_index(["target", "domain"])
    for i, target in enumerate(expert_names(routing_capabilities(ple), data.domain_names)[:6]):
        own = data.domain_names[i // 2]  # 2 specific experts per domain
        for dom in data.domain_names:
            delta = df.loc[(target, dom), "delta_logloss"]
            assert (delta != 0) if dom == own else (delta == 0), (target, dom)
    assert (df.xs("shared", level="target").delta_logloss != 0).all()


def test_causal_validation_errors(trained):
    data, model = trained
    mlp = build_model(default_config("mlp", **TINY), data.spec)
    with pytest.raises(ValueError, match="'mlp' has no gate"):
        knockout_importance(mlp, data.test, data.domain_names)
    with pytest.raises(ValueError, match="k_curve: model 'mlp' has no gate"):
        k_curve(mlp, data.test, data.domain_names)
    with pytest.raises(ValueError, match=r"ks has values outside \[1, 4\] .*: \[0, 5\]"):
        k_curve(model, data.test, data.domain_names, ks=[0, 2, 5])
    with pytest.raises(ValueError, match="ks must hold at least one k"):
        k_curve(model, data.test, data.domain_names, ks=[])
    with pytest.raises(ValueError, match=r"domain has values outside \[0, 2\)"):
        knockout_importance(model, data.test, data.domain_names[:2])
    with pytest.raises(ValueError, match="domain_names must be a list"):
        k_curve(model, data.test, "domain_0")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        knockout_importance(model, data.test, data.domain_names, batch_size=0)
    with pytest.raises(ValueError, match="table has no rows"):
        k_curve(model, data.test.subset(torch.arange(0)), data.domain_names)
