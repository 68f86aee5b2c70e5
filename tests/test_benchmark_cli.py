"""`cesaa bench` end to end on tiny budgets: every data source, tuning with Optuna, errors."""

from __future__ import annotations

import json

import pytest

from cesaa.cli import main

TINY = "synthetic:rows=3000,domains=2,seed=0"


def _bench(tmp_path, *extra: str) -> int:
    return main(["bench", "--data", TINY, "--epochs", "2", "--out", str(tmp_path), *extra])


def test_bench_without_tuning_writes_every_file(tmp_path, capsys) -> None:
    assert _bench(tmp_path, "--models", "mlp,shared_bottom", "--seeds", "2") == 0
    out = capsys.readouterr().out
    assert "wrote leaderboard.md" in out
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html"):
        assert (tmp_path / name).is_file()
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert sorted((r["model"], r["seed"]) for r in runs) == [
        ("mlp", 0),
        ("mlp", 1),
        ("shared_bottom", 0),
        ("shared_bottom", 1),
    ]
    assert all(r["params"] == {} and r["epochs"] <= 2 for r in runs)
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    assert lb["meta"]["command"] == (
        f"cesaa bench --data {TINY} --models mlp,shared_bottom --seeds 2 --trials 0 --jobs 1 "
        f"--epochs 2 --out {tmp_path}"
    )
    assert "no tuning" in lb["meta"]["budget"]
    assert lb["domains"] == ["domain_0", "domain_1"]
    # the leaderboard's mean is the mean of the runs' test AUCs
    cell = next(
        c for c in lb["cells"] if (c["scope"], c["metric"], c["model"]) == ("overall", "auc", "mlp")
    )
    mlp = [r["test"]["auc"] for r in runs if r["model"] == "mlp"]
    assert cell["mean"] == pytest.approx(sum(mlp) / 2)
    # each domain has one best model: the tally's "best in" column sums to the domain count
    md = (tmp_path / "leaderboard.md").read_text()
    tally = md.split("## Domains won (test AUC)")[1].split("##")[0]
    best_in = [line.split(" | ")[1] for line in tally.splitlines() if line.startswith("| ")][1:]
    assert len(best_in) == 2 and all(b.endswith(" / 2") for b in best_in)
    assert sum(int(b.split(" / ")[0]) for b in best_in) == 2
    assert "Domains won (test AUC)" in (tmp_path / "leaderboard.html").read_text()


def test_bench_tunes_every_model_with_the_same_budget(tmp_path) -> None:
    pytest.importorskip("optuna")
    import optuna

    assert _bench(tmp_path, "--models", "cesaa,mlp", "--seeds", "1", "--trials", "3") == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    runs = json.loads((tmp_path / "runs.json").read_text())
    for model in ("cesaa", "mlp"):
        study = optuna.load_study(study_name=f"cesaa-bench-{model}", storage=storage)
        trials = study.get_trials()
        assert len(trials) == 3  # the same budget for each model
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert done, "at least one trial completes"
        # validation reported per epoch (what the pruner sees), and the value is the best of them
        for t in done:
            assert sorted(t.intermediate_values) == list(range(1, 1 + len(t.intermediate_values)))
            assert t.value == pytest.approx(max(t.intermediate_values.values()))
        # the final run uses the best trial's configuration
        best = study.best_trial.user_attrs["params"]
        (run,) = [r for r in runs if r["model"] == model]
        assert run["params"] == best and run["seed"] == 0
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    assert {m["model"]: m["tune"]["complete"] + m["tune"]["pruned"] for m in lb["models"]} == {
        "cesaa": 3,
        "mlp": 3,
    }


def test_bench_stream_source(tmp_path) -> None:
    import pandas as pd

    from cesaa.data import make_planted_frame

    planted = make_planted_frame(num_rows=3000, num_domains=2, seed=0)
    planted.frame.to_parquet(tmp_path / "rows.parquet", row_group_size=500)
    s = planted.schema
    (tmp_path / "schema.toml").write_text(
        f'data = "rows.parquet"\nlabel = "{s.label}"\ndomain = "{s.domain}"\n'
        f"categorical = {list(s.categorical)}\nnumeric = {list(s.numeric)}\n"
        f'user = "{s.user}"\n'.replace("'", '"')
    )
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--data",
            f"stream:{tmp_path / 'schema.toml'}",
            "--models",
            "mlp",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert pd.read_csv(out / "leaderboard.csv").model.unique().tolist() == ["mlp"]


def test_bench_table_source(tmp_path) -> None:
    from cesaa.data import make_planted_frame

    planted = make_planted_frame(num_rows=3000, num_domains=2, seed=0)
    planted.frame.to_csv(tmp_path / "rows.csv", index=False)
    s = planted.schema
    (tmp_path / "schema.toml").write_text(
        f'data = "rows.csv"\nlabel = "{s.label}"\ndomain = "{s.domain}"\n'
        f"categorical = {list(s.categorical)}\nnumeric = {list(s.numeric)}\n".replace("'", '"')
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                "--data",
                f"table:{tmp_path / 'schema.toml'}",
                "--models",
                "mlp",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "leaderboard.md").is_file()


def test_bench_movielens(tmp_path, ml100k_path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                "--data",
                f"movielens-100k:{ml100k_path}",
                "--models",
                "mlp",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--max-train",
                "4000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lb = json.loads((out / "leaderboard.json").read_text())
    assert len(lb["domains"]) >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "mlp,nope"], "unknown model(s) ['nope']"),
        (["--models", "mlp,mlp"], "['mlp'] listed twice"),
        (["--models", "mlp", "--seeds", "0"], "--seeds=0 must be >= 1"),
        (["--models", "mlp", "--level", "1.5"], "--level=1.5 must be between 0 and 1"),
        (["--models", "mlp", "--level", "95"], "--level=95.0 must be between 0 and 1"),
        (["--models", "mlp", "--level", "0"], "--level=0.0 must be between 0 and 1"),
        (["--models", "mlp", "--data", "criteo:/x"], "'stream:SCHEMA_PATH"),  # every valid form
        (["--models", "mlp", "--stage", "final"], "--stage=final needs --trials > 0"),
        (["--models", "mlp", "--set", "train.bogus=1"], "expected train.KEY=VALUE"),
        (["--models", "mlp", "--set", "train.seed=1"], "expected train.KEY=VALUE"),
        (["--models", "mlp", "--trials", "1", "--storage", "nonsense"], "expected journal:PATH"),
        (["--models", "mlp", "--trials", "1", "--stage", "final"], "study 'cesaa-bench-mlp' not"),
    ],
)
def test_bench_bad_input_is_one_clear_line(tmp_path, capsys, args, message) -> None:
    assert _bench(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cesaa bench: error:") and message in err


def test_bench_split_over_machines_through_a_shared_storage(tmp_path) -> None:
    """Two 'machines' run --stage tune against one SQLite study; --stage final reads it."""
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    common = ["--models", "mlp", "--trials", "3", "--storage", url]
    assert _bench(tmp_path / "m1", *common, "--stage", "tune") == 0
    assert not (tmp_path / "m1" / "leaderboard.json").exists()
    assert _bench(tmp_path / "m2", *common, "--stage", "tune") == 0  # already full: no new trial
    study = optuna.load_study(study_name="cesaa-bench-mlp", storage=url)
    assert len(study.trials) == 3
    assert _bench(tmp_path / "final", *common, "--stage", "final", "--seeds", "2") == 0
    runs = json.loads((tmp_path / "final" / "runs.json").read_text())
    assert [r["params"] for r in runs] == [study.best_trial.user_attrs["params"]] * 2
    assert len(optuna.load_study(study_name="cesaa-bench-mlp", storage=url).trials) == 3


@pytest.mark.slow  # spawns 2 worker processes (each imports torch): slow on a loaded machine
def test_bench_parallel_jobs_keep_the_budget(tmp_path) -> None:
    optuna = pytest.importorskip("optuna")
    assert _bench(tmp_path, "--models", "mlp", "--trials", "4", "--jobs", "2", "--seeds", "2") == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="cesaa-bench-mlp", storage=storage).trials
    trained = [t for t in trials if not t.user_attrs.get("surplus")]
    assert [t.number for t in trained] == [0, 1, 2, 3]  # exactly the budget was trained
    assert all("params" not in t.user_attrs for t in trials if t not in trained)
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    tune = lb["models"][0]["tune"]
    assert tune["complete"] + tune["pruned"] == 4
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert sorted(r["seed"] for r in runs) == [0, 1]


def test_pruner_waits_out_min_steps(tmp_path) -> None:
    from cesaa.benchmark.protocol import Protocol
    from cesaa.benchmark.runner import BenchSpec, warmup_epochs

    # 2400 training rows at batch 100 = 24 steps per epoch: min_steps 100 -> 5 epochs (96 < 100)
    proto = Protocol(train={"batch_size": 100, "min_steps": 100})
    spec = BenchSpec(TINY, ("mlp",), str(tmp_path), trials=1, protocol=proto)
    assert warmup_epochs(spec) == 5
    spec0 = BenchSpec(
        TINY, ("mlp",), str(tmp_path), trials=1, protocol=Protocol(train={"min_steps": 0})
    )
    assert warmup_epochs(spec0) == 2


def test_budget_line_says_when_pruning_never_starts(tmp_path) -> None:
    """The leaderboard's budget line said "median pruning per epoch after 63 epochs" for runs that
    stop at 30: the pruner then never prunes, and the line says so."""
    from cesaa.benchmark.protocol import Protocol
    from cesaa.benchmark.runner import BenchSpec, _meta

    # 24 steps per epoch: min_steps 1500 -> 63 epochs of warm-up, runs capped at 30 epochs
    proto = Protocol(train={"batch_size": 100, "min_steps": 1500, "epochs": 30})
    spec = BenchSpec(TINY, ("mlp",), str(tmp_path), trials=3, protocol=proto)
    budget = _meta(spec, [{}], 0.0)["budget"]
    assert "no pruning" in budget and "min_steps=1500" in budget and "30 epochs" in budget
    proto = Protocol(train={"batch_size": 100, "min_steps": 100, "epochs": 30})
    spec = BenchSpec(TINY, ("mlp",), str(tmp_path), trials=3, protocol=proto)
    assert "median pruning per epoch after 5 epochs" in _meta(spec, [{}], 0.0)["budget"]


def test_a_rerun_keeps_finished_final_runs_and_redoes_changed_ones(tmp_path, monkeypatch) -> None:
    """A stopped benchmark loses nothing finished: rerunning the same command trains nothing new;
    a record made for another task (here another epoch cap) or a damaged one is redone."""
    from cesaa.benchmark import runner

    args = ("--models", "mlp,shared_bottom", "--seeds", "2")
    assert _bench(tmp_path, *args) == 0
    first = json.loads((tmp_path / "runs.json").read_text())
    saved = sorted(p.name for p in (tmp_path / "final").iterdir())
    assert saved == [f"{m}-seed{s}.json" for m in ("mlp", "shared_bottom") for s in (0, 1)]

    calls: list[tuple[str, int]] = []
    real = runner.run_task

    def counting(task, callback=None):
        calls.append((task["model"], task["seed"]))
        return real(task, callback)

    monkeypatch.setattr(runner, "run_task", counting)
    assert _bench(tmp_path, *args) == 0
    assert calls == []  # everything was already finished
    assert json.loads((tmp_path / "runs.json").read_text()) == json.loads(json.dumps(first))

    (tmp_path / "final" / "mlp-seed1.json").write_text("{not json", encoding="utf-8")
    assert _bench(tmp_path, *args) == 0
    assert calls == [("mlp", 1)]  # only the damaged record

    calls.clear()
    assert main(["bench", "--data", TINY, "--epochs", "1", "--out", str(tmp_path), *args]) == 0
    assert sorted(calls) == [("mlp", 0), ("mlp", 1), ("shared_bottom", 0), ("shared_bottom", 1)]


def test_a_killed_tuning_run_is_resumed_to_exactly_the_budget(tmp_path) -> None:
    """A trial left RUNNING by a killed worker (here a process that has exited) and the surplus
    trials of racing workers hold no share of the budget: rerunning trains exactly what is missing."""
    import socket
    import subprocess
    import sys

    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from cesaa.benchmark.tuning import open_storage

    url = f"journal:{tmp_path / 'optuna.journal'}"
    common = ["--models", "mlp", "--trials", "3", "--storage", url, "--stage", "tune"]
    assert _bench(tmp_path, *common[:3], "2", *common[4:]) == 0  # 2 of the 3 trials done
    study = optuna.load_study(study_name="cesaa-bench-mlp", storage=open_storage(url))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    killed = study.ask()  # the third trial, whose worker was killed mid-training
    killed.set_user_attr("owner", f"{socket.gethostname()}:{int(dead.stdout)}")
    killed.set_user_attr("heartbeat", 0.0)
    surplus = study.ask()  # a racing worker's surplus trial: pruned, trained nothing
    surplus.set_user_attr("surplus", True)
    study.tell(surplus, state=TrialState.PRUNED)

    assert _bench(tmp_path, *common) == 0
    trials = optuna.load_study(study_name="cesaa-bench-mlp", storage=open_storage(url)).trials
    assert trials[killed.number].state == TrialState.FAIL  # released, not counted
    trained = [t for t in trials if "params" in t.user_attrs]
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    assert [t.state in done for t in trained] == [True] * 3  # exactly the budget
    assert [t.number for t in trained] == [0, 1, surplus.number + 1]
    assert _bench(tmp_path, *common) == 0  # full: nothing more
    assert len(
        optuna.load_study(study_name="cesaa-bench-mlp", storage=open_storage(url)).trials
    ) == (surplus.number + 2)
