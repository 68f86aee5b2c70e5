"""Checkpoints find their data (issue 9, item 9): each source is recorded resolved (absolute path,
path relative to the run folder, fingerprint), so ``cesaa evaluate``, ``cesaa report`` and the
dashboard open a ``table:`` or ``stream:`` checkpoint from any working directory; moved data gives
one error naming where it looked and how to point elsewhere."""

from __future__ import annotations

import json
import shutil
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import cesaa.cli
from cesaa.cli import main
from cesaa.data.locate import DataLocationError, open_checkpoint_data

REPO = Path(__file__).resolve().parents[1]
KINDS = ("table", "stream")
TINY = ["--set", "train.epochs=3", "--set", "train.batch_size=64", "--set", "train.lr=0.01"]


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice(["paris", "rome", "oslo"], n)
    tab = np.where(np.arange(n) % 3 == 0, "search", "home")
    logit = (city == "rome") * 1.5 - (tab == "search") * 1.0
    return pd.DataFrame(
        {
            "city": city,
            "price": rng.normal(10, 3, n),
            "tab": tab,
            "click": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


def _write_project(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    df = _frame()
    df.to_csv(root / "data" / "clicks.csv", index=False)
    df.to_parquet(root / "data" / "clicks.parquet", index=False, row_group_size=100)
    schema = {
        "label": "click",
        "domain": "tab",
        "domains": ["home", "search"],
        "categorical": ["city"],
        "numeric": ["price"],
    }
    for kind, data in (("table", "clicks.csv"), ("stream", "clicks.parquet")):
        (root / "data" / f"{kind}.yaml").write_text(yaml.safe_dump({**schema, "data": data}))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with tiny data and one checkpoint per kind, trained from inside it with
    relative paths (as the README's example does)."""
    import os

    root = tmp_path_factory.mktemp("loc") / "project"
    _write_project(root)
    here = os.getcwd()
    os.chdir(root)
    try:
        for kind in KINDS:
            src = f"{kind}:data/{kind}.yaml"
            assert main(["train", "--data", src, *TINY, "--out", f"runs/{kind}", "--quiet"]) == 0
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    d = tmp_path / "elsewhere"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def _test_auc(run: Path) -> float:
    return json.loads((run / "meta.json").read_text())["metrics"]["test"]["auc"]


@pytest.mark.parametrize("kind", KINDS)
def test_meta_records_the_resolved_location(project, kind):
    meta = json.loads((project / "runs" / kind / "meta.json").read_text())
    loc = meta["data"]["location"]
    assert loc["source"] == f"{kind}:data/{kind}.yaml" and loc["kind"] == kind
    assert loc["fingerprint"] == meta["data"]["fingerprint"]
    assert loc["schema"] == {
        "absolute": str((project / "data" / f"{kind}.yaml").resolve()),
        "relative_to_run": f"../../data/{kind}.yaml",
    }
    data = "clicks.csv" if kind == "table" else "clicks.parquet"
    assert loc["data"]["absolute"] == str((project / "data" / data).resolve())
    assert loc["data"]["relative_to_run"] == f"../../data/{data}"


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_from_another_folder(project, elsewhere, kind, capsys):
    run = project / "runs" / kind
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(_test_auc(run))


@pytest.mark.parametrize("kind", KINDS)
def test_report_from_another_folder(project, elsewhere, kind, monkeypatch, capsys):
    ep = EntryPoint("report", "analysis.cli:add_report_parser", cesaa.cli.COMMAND_GROUP)
    monkeypatch.setattr(cesaa.cli, "entry_points", lambda group=None: [ep])
    run = project / "runs" / kind
    out = elsewhere / "report"
    args = ["report", str(run), "--out", str(out), "--embedding", "pca", "--sample", "50"]
    assert main([*args, "--no-static", "--quiet"]) == 0
    assert f"AUC {_test_auc(run):.4f}" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["metrics"]["auc"] == pytest.approx(
        _test_auc(run)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_record_from_another_folder(project, elsewhere, kind, monkeypatch, capsys):
    ep = EntryPoint("record", "analysis.records.cli:add_record_parser", cesaa.cli.COMMAND_GROUP)
    monkeypatch.setattr(cesaa.cli, "entry_points", lambda group=None: [ep])
    out = elsewhere / "record"
    assert main(["record", str(project / "runs" / kind), "--out", str(out)]) == 0
    rec = json.loads((out / "record.json").read_text())
    meta = json.loads((project / "runs" / kind / "meta.json").read_text())
    assert rec["rows"] == meta["metrics"]["test"]["rows"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_project_moved_as_a_whole_finds_its_data_relative_to_the_run(
    project, tmp_path, monkeypatch, kind
):
    moved = tmp_path / "moved"
    shutil.copytree(project, moved)
    monkeypatch.chdir(tmp_path)
    hidden = project.with_name("project-hidden")  # the original place is gone
    project.rename(hidden)
    try:
        run = moved / "runs" / kind
        meta = json.loads((run / "meta.json").read_text())
        data = open_checkpoint_data(meta, run)
        assert data.fingerprint == meta["data"]["fingerprint"]
    finally:
        hidden.rename(project)


@pytest.mark.parametrize("kind", KINDS)
def test_moved_data_is_one_clear_error_and_data_points_elsewhere(
    project, tmp_path, elsewhere, kind, capsys
):
    run = tmp_path / "run"
    shutil.copytree(project / "runs" / kind, run)  # the run moved, the data too (renamed)
    data_dir = project / "data"
    new_dir = project / "data-new"
    data_dir.rename(new_dir)
    try:
        assert main(["evaluate", str(run), "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"cannot find the data '{kind}:data/{kind}.yaml' of checkpoint {run}" in err
        assert f"looked at {data_dir.resolve() / f'{kind}.yaml'} or " in err
        assert "pass --data SOURCE" in err
        new = f"{kind}:{new_dir / f'{kind}.yaml'}"
        assert main(["evaluate", str(run), "--data", new, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(_test_auc(run))
    finally:
        new_dir.rename(data_dir)


def test_changed_data_fails_the_fingerprint_check(project, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    _frame(seed=1).to_csv(copy / "data" / "clicks.csv", index=False)  # other rows, same name
    project_hidden = project.with_name("project-hidden2")
    project.rename(project_hidden)
    try:
        meta = json.loads((copy / "runs" / "table" / "meta.json").read_text())
        with pytest.raises(DataLocationError, match=r"is not the data it was trained on"):
            open_checkpoint_data(meta, copy / "runs" / "table")
    finally:
        project_hidden.rename(project)


# ---- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def app_env(project, elsewhere, monkeypatch, tmp_path):
    import streamlit as st

    monkeypatch.syspath_prepend(str(REPO / "app"))
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(project / "runs"))
    monkeypatch.setenv("CESAA_DASHBOARD_RUNS", str(tmp_path / "dash-runs"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
    for name in ("components", "derived", "loaders", "projections", "jobs"):
        sys.modules.pop(name, None)


def _overview(run: Path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
    at.session_state["nav_folder"] = str(run.parent.resolve())
    at.session_state["nav_ckpt"] = str(run.resolve())
    return at.run()


@pytest.mark.parametrize("kind", KINDS)
def test_dashboard_opens_table_and_stream_checkpoints_from_another_folder(project, app_env, kind):
    at = _overview(project / "runs" / kind)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert ("seeded sample of at most 100,000 rows" in captions) is (kind == "stream")
    tables = [df.value for df in at.dataframe if "AUC" in df.value.columns]
    overall = [t.loc["overall", "AUC"] for t in tables if "overall" in t.index]
    # the sample holds every test row of this tiny stream, so the AUC is the trained one
    assert overall and overall[0] == pytest.approx(_test_auc(project / "runs" / kind))


def test_dashboard_names_moved_data_and_takes_a_new_source(project, app_env, tmp_path, monkeypatch):
    # no cached record of the run yet (a record made before the data moved would serve the
    # descriptive views): the Overview needs the data
    monkeypatch.setenv("CESAA_RECORD_CACHE", str(tmp_path / "record-cache"))
    run = tmp_path / "runs" / "table"
    shutil.copytree(project / "runs" / "table", run)
    new_dir = tmp_path / "data-new"
    shutil.copytree(project / "data", new_dir)
    (project / "data").rename(project / "data-gone")
    try:
        at = _overview(run)
        assert not at.exception, [e.value for e in at.exception]
        text = " ".join(e.value for e in at.error)
        assert "cannot find the data 'table:data/table.yaml'" in text and "Data source" in text
        at.text_input(key="nav_data").input(f"table:{new_dir / 'table.yaml'}").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        at.switch_page("views/report.py").run()  # the report reads the same data source
        assert not at.exception, [e.value for e in at.exception]
        assert not [e.value for e in at.error if "cannot find the data" in e.value]
    finally:
        (project / "data-gone").rename(project / "data")


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_retrain_in_the_dashboard_trains_on_the_checkpoints_own_data(
    project, app_env, kind, tmp_path
):
    from streamlit.testing.v1 import AppTest

    run = project / "runs" / kind
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
    at.session_state["nav_ckpt"] = str(run.resolve())
    at.switch_page("views/ablations.py")
    at.run()
    at.number_input(key="abl_alpha_new").set_value(0.5)
    at.number_input(key="abl_alpha_epochs").set_value(1)
    at.button(key="abl_alpha_train").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Training failed" in e.value]
    new = tmp_path / "dash-runs" / f"{kind}-alpha0.5" / "meta.json"
    meta, own = json.loads(new.read_text()), json.loads((run / "meta.json").read_text())
    assert meta["data"]["fingerprint"] == own["data"]["fingerprint"]  # the same data
    assert meta["model"]["config"] == {**own["model"]["config"], "alpha": 0.5}
