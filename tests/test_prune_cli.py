"""``cesaa prune``: flags, the written checkpoint, the plan JSON."""

from __future__ import annotations

import json
import re
from importlib.metadata import EntryPoint

import pytest
import torch

import cesaa.cli
from cesaa.checkpoint import build_meta, load_checkpoint, read_meta, save_checkpoint
from cesaa.cli import main
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.evaluation import evaluate
from cesaa.models.registry import build_model, default_config

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "synthetic:rows=3000,domains=3,seed=0"


@pytest.fixture(autouse=True)
def prune_plugin(monkeypatch):
    ep = EntryPoint("prune", "analysis.prune_cli:add_prune_parser", "cesaa.commands")
    monkeypatch.setattr(cesaa.cli, "entry_points", lambda group=None: [ep])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    data = load_data(SOURCE)
    torch.manual_seed(0)
    cfg = default_config(
        "cesaa",
        expert_hidden=(16,),
        expert_dim=8,
        tower_hidden=(8,),
        embed_dim=8,
        num_experts=4,
        top_k=2,
    )
    model = build_model(cfg, data.spec)
    with torch.no_grad():
        model.gate.w_gate.normal_(0, 1.0)
    run = tmp_path_factory.mktemp("prune") / "src"
    meta = build_meta(
        cfg,
        TrainConfig(batch_size=256),
        data.spec,
        data.description,
        data.fingerprint,
        data.encoders,
    )
    save_checkpoint(run, model, {**meta, "status": "complete"})
    return run, data


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--keep", "2", "--criterion", "best", "--out", "x"], "--criterion 'best' must be one of"),
        (["--keep", "9", "--out", "x"], r"--keep \[9\] must be in \[1, 4\]"),
        (["--out", "x"], "--keep N is required"),
        (["--keep", "2"], "--out DIR or --plan-json FILE is required"),
        (["--keep", "2", "--out", "x", "--split", "dev"], "--split 'dev' must be one of"),
        (["--keep", "2", "--out", "x", "--fine-tune", "-1"], "--fine-tune -1 must be >= 0"),
    ],
)
def test_bad_flags_name_the_flag(ckpt, capsys, flags, message):
    run, _ = ckpt
    assert main(["prune", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cesaa prune: error: ")
    assert re.search(message, err), err


def test_prune_writes_a_checkpoint_that_evaluates_like_any_other(ckpt, tmp_path, capsys):
    run, data = ckpt
    out, plan_file = tmp_path / "pruned", tmp_path / "plan.json"
    args = ["prune", str(run), "--keep", "2", "--criterion", "reap", "--out", str(out)]
    assert main([*args, "--plan-json", str(plan_file), "--reps", "20"]) == 0
    printed = capsys.readouterr().out
    plan = json.loads(plan_file.read_text())
    assert plan["criterion"] == "reap" and len(plan["remove"]) == 2 and plan["merge"] == []
    edited = load_checkpoint(out)
    assert edited.model_config.num_experts == 2
    meta = read_meta(out)
    assert meta["edit"]["plan"] == plan
    src = load_checkpoint(run)
    names = src.domain_names
    direct = (
        evaluate(edited.model, data.test, names)["auc"]
        - evaluate(src.model, data.test, names)["auc"]
    )
    measured = next(r for r in meta["edit"]["measured"] if r["scope"] == "overall")
    assert measured["delta_auc"] == pytest.approx(direct)
    assert meta["metrics"]["test"]["auc"] == pytest.approx(
        evaluate(edited.model, data.test, names)["auc"]
    )
    assert f"{direct:+.4f}" in printed
    # the written checkpoint evaluates through the ordinary command
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(
        meta["metrics"]["test"]["auc"]
    )


def test_fine_tuning_changes_the_weights_and_is_recorded(ckpt, tmp_path, capsys):
    run, _ = ckpt
    out = tmp_path / "merged"
    args = ["prune", str(run), "--keep", "3", "--criterion", "merge", "--out", str(out)]
    assert main([*args, "--fine-tune", "3", "--reps", "5"]) == 0
    meta = read_meta(out)
    assert meta["edit"]["fine_tune_steps"] == 3
    assert len(meta["edit"]["plan"]["merge"]) == 1
    assert "after 3 fine-tuning steps" in capsys.readouterr().out


def test_fine_tuned_weights_differ_from_the_plain_edit(ckpt, tmp_path):
    from cesaa.pruning import ExpertPlan, apply_plan

    run, _ = ckpt
    out = tmp_path / "tuned"
    args = ["prune", str(run), "--keep", "3", "--criterion", "knockout", "--out", str(out)]
    assert main([*args, "--fine-tune", "2", "--reps", "5"]) == 0
    meta = read_meta(out)
    plain = apply_plan(load_checkpoint(run).model, ExpertPlan.from_dict(meta["edit"]["plan"]))
    tuned = load_checkpoint(out).model
    assert not torch.equal(plain.experts.weights[0], tuned.experts.weights[0])


def test_pyproject_declares_the_prune_plugin():
    from pathlib import Path

    from cesaa.data.schema import tomllib  # tomli on Python 3.10

    root = Path(__file__).resolve().parents[1]
    eps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    assert eps["cesaa.commands"]["prune"] == "analysis.prune_cli:add_prune_parser"
