"""The dashboard on a dense two-gate record (issue 21): every routing page offers every gate,
the Experts page's share is the gate weight, and the gates in sequence get a cross-gate view.
Expected values from the fixed gates of the model (numpy), never from the dashboard's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from apptest_support import _app_on_path, _env, arr, assert_clean, charts, run_page  # noqa: F401
from test_known_answers_gates import DOMAINS, P1, P2, E, TwoGateModel, _batches

from analysis.records import GateSpec, record


@pytest.fixture(scope="module")
def two_gate(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gates") / "two-gate"
    record(
        TwoGateModel(),
        _batches(),
        gates={
            "layer0": GateSpec(modules=("gate0",), hyper={}, layer=0),
            "layer1": GateSpec(modules=("gate1",), hyper={}, layer=1),
        },
        experts={"layer0": [f"layer0_experts.{i}" for i in range(E)]},
        out=out,
        domains=DOMAINS,
        domain=lambda b: b[2],
        label=lambda b: b[1],
        keep={"feat": lambda b: b[0]["feats"][:, 0]},
        sample_size=100,
    )
    return out


def _run(page: str, path: Path, **state):
    return run_page(page, path, nav_folder=str(path.parent), **state)


@pytest.mark.parametrize(("page", "key", "chart"), [("routing", "rt_gate", "rt_soft")])
def test_every_gate_on_the_routing_page(two_gate, page, key, chart):
    at = _run(page, two_gate)
    assert_clean(at)
    assert list(at.selectbox(key=key).options) == ["layer0", "layer1"]
    np.testing.assert_allclose(arr(charts(at)[chart]["data"][0]["z"]), P1, atol=1e-6)
    at.selectbox(key=key).set_value("layer1").run()
    assert_clean(at)
    np.testing.assert_allclose(arr(charts(at)[chart]["data"][0]["z"]), P2, atol=1e-6)
    # dense gate: dead experts read by gate weight; layer 1 has none, layer 0's expert 3 only
    assert any("dead experts (by gate weight): none" in c.value for c in at.caption)


def test_every_gate_on_the_information_page(two_gate):
    at = _run("information", two_gate)
    assert_clean(at)
    assert list(at.selectbox(key="info_gate").options) == ["layer0", "layer1"]
    first = float(at.metric[0].value)
    at.selectbox(key="info_gate").set_value("layer1").run()
    assert_clean(at)
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    joint = np.zeros((3, E))
    for d in range(3):
        joint[d] = P2[d] * (dom == d).sum()
    p = joint / joint.sum()
    mi = float(np.sum(p * np.log(p / p.sum(1, keepdims=True) / p.sum(0, keepdims=True))))
    assert float(at.metric[0].value) == pytest.approx(mi, abs=1e-4)
    assert float(at.metric[0].value) != pytest.approx(first, abs=1e-4)


def test_cross_gate_view_and_experts_share(two_gate):
    at = _run("routing", two_gate)
    assert_clean(at)
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    a, b = P1[dom].argmax(axis=1), P2[dom].argmax(axis=1)
    co = arr(charts(at)["rt_cross"]["data"][0]["z"])
    for i in np.unique(a):  # P(top at layer1 | top at layer0), numpy
        np.testing.assert_allclose(co[i], np.bincount(b[a == i], minlength=E) / (a == i).sum())
    at = _run("experts", two_gate)
    assert_clean(at)
    table = at.dataframe[0].value
    # expert 1 is never any row's top expert, yet its share of the work is its 0.2 gate weight
    share = table["share of gate weight"].to_numpy()
    assert share[1] == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_allclose(share, P1[dom].mean(axis=0), atol=1e-6)
    assert table["share of rows routed"].to_numpy()[1] == 0


def test_overview_names_the_dead_expert_and_declares_the_gates(two_gate):
    at = _run("overview", two_gate)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("**layer0_experts.3 is unused**") for w in warnings), warnings
    assert not any("layer0_experts.1" in w for w in warnings)
    assert not any("model.beta" in w for w in warnings)  # not a cesaa model
    assert any("`layer1`: dense" in c.value for c in at.caption)
