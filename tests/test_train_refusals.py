"""The trainer refuses what it cannot honour (issue 9, item 7): a monitor that cannot be computed on
the validation split is an error before the first step, and a run where no epoch improved the
monitor fails loudly instead of returning the initial weights as ``status: complete``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_robustness import write

import cesaa.train as train_module
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.data.stream import open_stream
from cesaa.models.registry import default_config
from cesaa.monitor import NoImprovementError, check_monitor
from cesaa.train import train

TINY = dict(expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=4, top_k=2)


def clicks(n: int = 300, seed: int = 0, users: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "price": rng.normal(10, 3, n),
            "click": rng.integers(0, 2, n),
            "tab": np.where(np.arange(n) % 3 == 0, "search", "home"),
        }
    )
    if users:
        df["uid"] = np.arange(n) % 20
    return df


def write_table(folder, df: pd.DataFrame, name: str = "clicks.parquet", **schema):
    return write(folder, df, name, row_group_size=64, **schema)


def _fit(data, out=None, **train_kw):
    base = dict(epochs=2, batch_size=64, patience=1)
    return train(default_config("cesaa", **TINY), TrainConfig(**{**base, **train_kw}), data, out)


@pytest.mark.parametrize("kind", ["table", "stream"])
def test_gauc_monitor_without_a_user_column_is_refused(tmp_path, kind):
    schema = write_table(tmp_path, clicks())
    data = load_data(f"table:{schema}") if kind == "table" else open_stream(f"stream:{schema}")
    with pytest.raises(
        ValueError,
        match=r"train\.monitor='gauc' cannot be computed on the validation split: the data has no "
        r"user column .* use --set train\.monitor=auc",
    ):
        _fit(data, tmp_path / "run", monitor="gauc")
    assert not (tmp_path / "run" / "meta.json").exists()  # refused before anything was written


@pytest.mark.parametrize("monitor", ["auc", "mean_domain_auc", "worst_domain_auc", "gauc"])
def test_all_positive_labels_are_refused(tmp_path, monitor):
    schema = write_table(tmp_path, clicks(users=True).assign(click=1), user="uid")
    data = load_data(f"table:{schema}")
    with pytest.raises(
        ValueError,
        match=rf"train\.monitor='{monitor}' cannot be computed on the "
        r"validation split: .*(every label is 1|no domain has both|no user has)",
    ):
        _fit(data, monitor=monitor)


def test_logloss_monitor_trains_on_all_positive_labels(tmp_path):
    schema = write_table(tmp_path, clicks().assign(click=1))
    res = _fit(load_data(f"table:{schema}"), tmp_path / "run", monitor="logloss")
    assert res.best_epoch >= 1
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "complete"


def test_gauc_monitor_with_users_having_both_classes_trains(tmp_path):
    schema = write_table(tmp_path, clicks(users=True), user="uid")
    res = _fit(load_data(f"table:{schema}"), monitor="gauc")
    assert res.best_epoch >= 1 and np.isfinite(res.val_metrics["gauc"])


def test_check_monitor_finds_a_user_with_both_classes_across_stream_pieces(tmp_path):
    # every user's rows alternate labels across row groups: no piece alone has a user with both
    df = clicks(n=256, users=True)
    df["uid"] = np.arange(256) // 2 % 64  # rows 2u, 2u+1 -> user u mod 64
    df["click"] = (np.arange(256) // 128) % 2  # first half 0, second half 1
    schema = write_table(tmp_path, df, user="uid")
    enc = open_stream(f"stream:{schema}").encoders
    data = open_stream(f"stream:{schema}", split="none", encoders=enc, read_rows=64)
    pieces = list(data.test.chunks())
    assert len(pieces) == 4 and all(len(set(p.label.tolist())) == 1 for p in pieces)
    check_monitor("gauc", data.test, "test")  # no error: users appear with 0 and later with 1
    only_zero = write_table(tmp_path, df.assign(click=0), name="zero.parquet", user="uid")
    zero = open_stream(f"stream:{only_zero}", split="none", encoders=enc)
    with pytest.raises(ValueError, match="no user has both a positive and a negative row"):
        check_monitor("gauc", zero.test, "test")


def test_no_improving_epoch_fails_and_marks_the_run_failed(tmp_path, monkeypatch, small_data):
    # a monitor that is NaN on every epoch (here forced): no epoch is better than the initial weights
    monkeypatch.setattr(train_module, "score", lambda metrics, monitor: float("nan"))
    with pytest.raises(NoImprovementError, match=r"no epoch improved val/auc .*untrained"):
        _fit(small_data, tmp_path / "run", epochs=3, patience=2)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "failed" and "no epoch improved" in meta["error"]
    assert "test" not in meta["metrics"]


def test_cli_reports_an_uncomputable_monitor_in_one_line(tmp_path, capsys):
    from cesaa.cli import main

    schema = write_table(tmp_path, clicks())
    args = ["train", "--data", f"table:{schema}", "--set", "train.monitor=gauc", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cesaa train: error: train.monitor='gauc' cannot be computed")
    assert len(err.splitlines()) == 1


def test_resume_names_the_config_differences(tmp_path, small_data):
    from cesaa.checkpoint import CheckpointError

    run = tmp_path / "run"
    _fit(small_data, run, epochs=1)
    cfg = default_config("cesaa", **TINY)
    base = TrainConfig(epochs=1, batch_size=64, patience=1)
    with pytest.raises(
        CheckpointError,
        match=r"a resumed run may change only train\.epochs, train\.patience, train\.min_steps, train\.routing_rise; "
        r"differs in train\.lr \(0\.001 -> 0\.1\)",
    ):
        train(cfg, TrainConfig(**{**base.__dict__, "lr": 0.1}), small_data, run, resume=True)
    other = default_config("cesaa", **{**TINY, "top_k": 1})
    with pytest.raises(
        CheckpointError, match=r"keeps its model config; differs in model\.top_k \(2 -> 1\)"
    ):
        train(other, base, small_data, run, resume=True)
    more = train(cfg, TrainConfig(**{**base.__dict__, "epochs": 2}), small_data, run, resume=True)
    assert [r["epoch"] for r in more.history] == [1, 2]
