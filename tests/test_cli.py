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
