"""Pruning evidence and plans for an outside model recorded through the hook API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_records import HandMMoE, P, _batches

from analysis.prune_record import record_plan, sample_evidence
from analysis.records import GateSpec, record
from analysis.records.collection import record_sample

E = 4


def _rec(tmp_path, model):
    return record(
        model,
        _batches(),
        gates={"gate": GateSpec(modules=("gate",))},
        experts={"gate": [f"experts.{i}" for i in range(E)]},
        out=tmp_path / "rec",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
        sample_size=120,
    )


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = HandMMoE()
    with torch.no_grad():
        m.experts[3].load_state_dict(m.experts[0].state_dict())  # 3 is a copy of 0
        m.experts[2].weight.zero_()  # 2 outputs 0 on every row
        m.experts[2].bias.zero_()
    return m


def test_evidence_of_a_recorded_outside_model(tmp_path, model):
    rec = _rec(tmp_path, model)
    sample = record_sample(rec)
    per, per_domain = sample_evidence(sample, ["a", "b", "c"])
    # dense gate of known weights: each domain's mean gate weight is its row of P
    got = per_domain.pivot(index="domain", columns="expert", values="gate_weight")
    np.testing.assert_allclose(got.to_numpy(), P, atol=1e-6)
    assert per.loc[2, "reap"] == 0.0  # zero output on every row
    assert per.loc[0, "nearest"] == "expert 3" and per.loc[0, "cka_nearest"] == pytest.approx(1.0)
    for col in ("dead_units", "own_logloss", "alone_logloss", "underfit"):
        assert per[col].isna().all()  # need the live model


def test_plans_from_a_record_exported_as_json(tmp_path, model):
    rec = _rec(tmp_path, model)
    reap = record_plan(rec, 3, "reap")
    assert reap.remove == (2,) and reap.merge == ()
    merge = record_plan(rec, 3, "merge")
    assert merge.merge == ((0, 3),) and merge.remove == ()
    assert json.loads(json.dumps(merge.to_dict())) == {
        "remove": [],
        "merge": [[0, 3]],
        "criterion": "merge",
    }
    with pytest.raises(ValueError, match="greedy knock-out needs the live model"):
        record_plan(rec, 3, "knockout")
    with pytest.raises(ValueError, match=r"--keep 5 must be in \[1, 4\]"):
        record_plan(rec, 5, "reap")


def test_a_record_without_a_sample_is_refused(tmp_path, model):
    torch.manual_seed(0)
    rec = record(
        model,
        _batches(),
        gates={"gate": GateSpec(modules=("gate",))},
        out=tmp_path / "bare",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
    )
    with pytest.raises(ValueError, match="no expert-output sample"):
        record_plan(rec, 2, "reap")


def test_cesaa_prune_on_a_record_exports_the_plan(tmp_path, model, monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    import cesaa.cli

    ep = EntryPoint("prune", "analysis.prune_cli:add_prune_parser", "cesaa.commands")
    monkeypatch.setattr(cesaa.cli, "entry_points", lambda group=None: [ep])
    rec = _rec(tmp_path, model)
    out = tmp_path / "plan.json"
    args = ["prune", str(rec.path), "--keep", "3", "--criterion", "merge"]
    assert cesaa.cli.main([*args, "--plan-json", str(out)]) == 0
    assert json.loads(out.read_text())["merge"] == [[0, 3]]
    assert "cost not measured" in capsys.readouterr().out
    assert cesaa.cli.main([*args, "--out", str(tmp_path / "x")]) == 2
    assert "--out: " in capsys.readouterr().err
