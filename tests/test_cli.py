from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cesaa.cli import main

SRC = "synthetic:rows=4000,domains=3,seed=0"


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            SRC,
            "--model",
            "cesaa",
            "--set",
            "train.epochs=2",
            "--set",
            "model.top_k=1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "test metrics" in text and "overall" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["config"]["top_k"] == 1
    assert meta["train"]["epochs"] == 2
    assert main(["evaluate", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["auc"] == pytest.approx(meta["metrics"]["test"]["auc"])
    assert main(["evaluate", str(out), "--top-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] != metrics["auc"]


def test_unknown_set_key_lists_valid_keys(capsys):
    rc = main(["train", "--data", SRC, "--set", "model.topk=2", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown --set key 'model.topk'" in err
    assert "model.top_k" in err and "train.epochs" in err


def test_invalid_value_is_a_clear_error(capsys):
    assert main(["train", "--data", SRC, "--set", "model.top_k=9", "--quiet"]) == 2
    assert "top_k=9 must be in [1, num_experts=8]" in capsys.readouterr().err
    assert main(["train", "--data", SRC, "--set", "model.alpha=-1", "--quiet"]) == 2
    assert "alpha=-1.0 must be >= 0" in capsys.readouterr().err
    assert main(["train", "--data", SRC, "--set", "train.epochs=two", "--quiet"]) == 2
    assert "expected a value of type int" in capsys.readouterr().err


def test_unknown_model_name_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "gpt"])
    assert e.value.code == 2
    assert "invalid choice: 'gpt'" in capsys.readouterr().err


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "meta.json: file is missing" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["models"]])
def test_help_everywhere(cmd):
    r = subprocess.run(
        [sys.executable, "-m", "cesaa", *cmd, "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0
    assert "usage: cesaa" in r.stdout


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("cesaa", "sparse_moe", "mmoe", "ple", "star", "shared_bottom", "mlp"):
        assert name in out


# ---- --resume: a documented set of changes, everything else refused (issue 9, item 8) -----------


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    sets = ["--set", "train.epochs=2", "--set", "train.patience=0"]
    assert main(["train", "--data", SRC, *sets, "--out", str(out), "--quiet"]) == 0
    return out


def test_resume_with_more_epochs_trains_them(two_epoch_run, tmp_path, capsys):
    import shutil

    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data
    from cesaa.train import predict, read_history

    run = tmp_path / "run"
    shutil.copytree(two_epoch_run, run)
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]) == 0
    assert [r["epoch"] for r in read_history(run)] == [1, 2, 3]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["train"]["epochs"] == 3 and meta["status"] == "complete"
    # the same as three epochs in one go
    straight = tmp_path / "straight"
    sets = ["--set", "train.epochs=3", "--set", "train.patience=0"]
    assert main(["train", "--data", SRC, *sets, "--out", str(straight), "--quiet"]) == 0
    test = load_data(SRC).test
    assert (
        predict(load_checkpoint(run).model, test) == predict(load_checkpoint(straight).model, test)
    ).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--set", "model.top_k=1"],
            r"--set model\.top_k=1 cannot be used with --resume: a "
            r"resumed run may change only train\.epochs, train\.patience",
        ),
        (["--set", "train.lr=0.1"], r"--set train\.lr=0\.1 cannot be used with --resume"),
        (["--model", "mmoe"], r"--model cannot be used with --resume"),
        (["--split", "temporal"], r"--split cannot be used with --resume"),
        (["--data-seed", "3"], r"--data-seed cannot be used with --resume"),
        (["--out", "elsewhere"], r"--out cannot be used with --resume"),
    ],
)
def test_resume_refuses_what_it_would_ignore(two_epoch_run, extra, message, capsys):
    import re

    before = (two_epoch_run / "meta.json").read_text()
    assert main(["train", "--resume", str(two_epoch_run), *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert (two_epoch_run / "meta.json").read_text() == before


def test_resume_with_other_data_is_refused(two_epoch_run, capsys):
    other = "synthetic:rows=4000,domains=3,seed=1"
    assert main(["train", "--resume", str(two_epoch_run), "--data", other, "--quiet"]) == 2
    assert "data fingerprint" in capsys.readouterr().err


# ---- model keys the chosen model does not use ---------------------------------------------------


def test_model_key_the_model_does_not_use_is_rejected(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", SRC, "--model", "mmoe", "--set", "model.alpha=0.5"]
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model 'mmoe' does not use model.alpha" in err
    used = err.split("the model.* keys it uses: ")[1].strip().split(", ")
    assert used == [
        "model.dropout",
        "model.embed_dim",
        "model.embed_init_std",
        "model.expert_dim",
        "model.expert_hidden",
        "model.input_norm",
        "model.mmoe_experts",
        "model.tower_hidden",
        "model.tower_init",
    ]
    assert not out.exists()  # nothing trained, nothing recorded in a meta.json


@pytest.mark.parametrize(
    ("model", "key", "used"),
    [
        ("star", "top_k", False),
        ("star", "star_hidden", True),
        ("cesaa", "mmoe_experts", False),
        ("cesaa", "alpha", True),
        ("ple", "ple_levels", True),
        ("mlp", "num_experts", False),
        ("mlp", "tower_init", False),
        ("shared_bottom", "tower_init", True),
    ],
)
def test_used_config_keys_follow_the_model_code(model, key, used):
    from cesaa.models.registry import default_config
    from cesaa.models.usage import used_config_keys

    assert (key in used_config_keys(default_config(model))) is used


# ---- plugin commands: discovered through entry points, never vanish ----------------------------


def _entry_points(monkeypatch, *eps):
    import cesaa.cli

    def fake(group=None):
        assert group == cesaa.cli.COMMAND_GROUP
        return list(eps)

    monkeypatch.setattr(cesaa.cli, "entry_points", fake)


def test_a_plugin_that_fails_to_import_still_has_its_command(monkeypatch, tmp_path, capsys):
    from importlib.metadata import EntryPoint

    (tmp_path / "broken_plugin.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("report", "broken_plugin:add_report_parser", "cesaa.commands")
    _entry_points(monkeypatch, ep)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report" in capsys.readouterr().out
    assert main(["report", "checkpoints/cesaa", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cesaa report: error: the command could not be loaded from ")
    assert "ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed'" in err


def test_the_analysis_plugins_load_through_entry_points(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    _entry_points(
        monkeypatch,
        EntryPoint("report", "analysis.cli:add_report_parser", "cesaa.commands"),
        EntryPoint("record", "analysis.records.cli:add_record_parser", "cesaa.commands"),
    )
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0
    assert "usage: cesaa report" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    assert "usage: cesaa record" in capsys.readouterr().out


def test_pyproject_declares_the_analysis_plugins():
    from pathlib import Path

    from cesaa.data.schema import tomllib  # tomli on Python 3.10

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]["cesaa.commands"]
    assert eps["report"] == "analysis.cli:add_report_parser"
    from analysis.cli import add_report_parser

    assert callable(add_report_parser)


# ---- defaults: the documented benchmark protocol ----------------------------------------------


def test_train_defaults_are_the_benchmark_protocol():
    import re
    from pathlib import Path

    from cesaa.config import TrainConfig

    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    accuracy = docs.split("<!-- bench:accuracy -->")[1].split("<!-- /bench:accuracy -->")[0]
    m = re.search(
        r"Adam lr ([\d.e-]+), weight decay ([\d.e-]+), batch (\d+), early stopping on "
        r"validation AUC \(patience (\d+), at most (\d+) epochs, not before (\d+) optimizer steps\)",
        accuracy,
    )
    assert m, "the accuracy section no longer states its protocol"
    lr, wd, batch, patience, epochs, min_steps = m.groups()
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size) == (float(lr), float(wd), int(batch))
    assert (cfg.patience, cfg.epochs, cfg.monitor) == (int(patience), int(epochs), "auc")
    assert cfg.min_steps == int(min_steps)


def test_old_metrics_jsonl_reads_with_todays_names(tmp_path):
    from cesaa.train import read_history

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train/mi": 0.25}) + "\n")
    assert read_history(tmp_path) == [{"epoch": 1, "train/batch_mi": 0.25}]
