"""The Leaderboard page: it shows a `cesaa bench` folder's tables as written, and bad folders as
error cards (never a traceback)."""

from __future__ import annotations

import pytest
from apptest_support import _app_on_path, _env, assert_clean, run_page  # noqa: F401

from cesaa.benchmark.leaderboard import build_leaderboard
from cesaa.benchmark.report import write_leaderboard


def _runs() -> list[dict]:
    runs = []
    for s, base in enumerate((0.70, 0.72, 0.69)):
        for name, auc in (("mlp", base), ("cesaa", base + 0.01)):
            test = {"auc": auc, "gauc": auc, "logloss": 1 - auc}
            for d in ("young", "old"):
                test.update({f"auc/{d}": auc, f"gauc/{d}": auc, f"logloss/{d}": 1 - auc})
            runs.append(
                {
                    "model": name,
                    "seed": s,
                    "test": test,
                    "val": {},
                    "params": {},
                    "best_epoch": 2,
                    "epochs": 3,
                    "seconds": 1.5,
                    "domains": ["young", "old"],
                }
            )
    return runs


@pytest.fixture
def bench_dir(tmp_path):
    lb = build_leaderboard(_runs(), meta={"command": "cesaa bench --data x --out y"})
    return write_leaderboard(lb, tmp_path / "bench")


def test_leaderboard_shows_the_folder(bench_dir) -> None:
    at = run_page("leaderboard", lb_folder=str(bench_dir))
    assert_clean(at)
    overall = at.dataframe[0].value
    assert overall["model"].tolist() == ["cesaa", "mlp"]
    assert overall["AUC"].tolist() == ["0.7133 ± 0.0153", "0.7033 ± 0.0153"]
    assert overall.iloc[1]["Δ AUC vs best [95% CI]"].startswith("-0.0100 [-0.0100, -0.0100]")
    assert any("cesaa bench --data x --out y" in m.value for m in at.markdown)
    # cesaa is mlp + 0.01 on every seed in both domains: a constant difference, p = 0
    tally = at.dataframe[1].value
    assert tally.values.tolist() == [
        ["cesaa", "2 / 2", "0 / 2", "0 / 2"],
        ["mlp", "0 / 2", "0 / 2", "2 / 2"],
    ]
    domains = at.dataframe[2].value
    assert domains.columns.tolist() == ["model", "young", "old"]
    at.radio(key="lb_metric").set_value("logloss").run()
    assert at.dataframe[2].value.iloc[0]["young"] == "0.2867 ± 0.0153 *"


def test_leaderboard_without_folder_explains(monkeypatch) -> None:
    monkeypatch.delenv("CESAA_BENCH_DIR", raising=False)
    at = run_page("leaderboard")
    assert_clean(at)
    assert "cesaa bench" in at.info[0].value


@pytest.mark.parametrize("content", [None, "{broken", '{"cells": 1}'])
def test_leaderboard_bad_folder_is_an_error_card(tmp_path, content) -> None:
    if content is not None:
        (tmp_path / "leaderboard.json").write_text(content)
    at = run_page("leaderboard", lb_folder=str(tmp_path))
    assert not at.exception
    assert len(at.error) == 1 and "Cannot open this benchmark folder" in at.error[0].value
    assert "leaderboard.json" in at.error[0].value
