from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.capabilities import routing_capabilities
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
        "top_k": 2,
        "num_shared": 1,
        "has_gate": True,
        "has_topk": True,
    }
    expected = {
        "sparse_moe": (4, 2, 0, True, True),
        "mmoe": (3, None, 0, True, False),
        "ple": (3, None, 1, True, False),  # 2 specific + 1 shared under each domain's gate
        "mlp": (0, None, 0, False, False),
        "shared_bottom": (0, None, 0, False, False),
        "star": (0, None, 0, False, False),
    }
    for name in model_names():
        caps = routing_capabilities(build_model(default_config(name, **TINY), data.spec))
        assert caps["name"] == name
        if name in expected:
            got = tuple(caps[k] for k in ("num_experts", "top_k", "num_shared", "has_gate",
                                           "has_topk"))  # fmt: skip
            assert got == expected[name], name
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        routing_capabilities("cesaa")


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
    assert "shared" in set(knockout_importance(ple, data.test, data.domain_names).target)
    with pytest.raises(ValueError, match="'mmoe' has no top-k gate"):
        k_curve(mmoe, data.test, data.domain_names)


def test_causal_validation_errors(trained):
    data, model = trained
    mlp = build_model(default_config("mlp", **TINY), data.spec)
    with pytest.raises(ValueError, match="'mlp' has no gate"):
        knockout_importance(mlp, data.test, data.domain_names)
    with pytest.raises(ValueError, match="'mlp' has no top-k gate"):
        k_curve(mlp, data.test, data.domain_names)
    with pytest.raises(ValueError, match=r"ks has values outside \[1, num_experts=4\]: \[0, 5\]"):
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
