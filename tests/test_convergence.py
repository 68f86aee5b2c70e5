"""The stall detector (cesaa.convergence) on hand-made validation curves, the domain-only
reference against sklearn, and where its verdict shows: meta.json, `cesaa train`'s last line,
the leaderboard row and the best-shot verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cesaa.convergence import (
    CONVERGED,
    MIN_GAIN,
    NOT_CONVERGED,
    PLATEAU,
    classify_run,
    domain_rate_auc,
    stalled_text,
)

FLAT = [0.49, 0.495, 0.50, 0.502, 0.499, 0.503, 0.501, 0.50, 0.502, 0.501]
LATE_RISE = [0.49, 0.49, 0.50, 0.50, 0.50, 0.51, 0.56, 0.63, 0.68, 0.70, 0.70, 0.69, 0.69, 0.69]
RISE_THEN_STOP = [0.70, 0.75, 0.77, 0.78, 0.779, 0.778, 0.776, 0.775]
STILL_RISING = [0.50, 0.52, 0.55, 0.58, 0.60, 0.62, 0.63, 0.64, 0.645, 0.65]


def test_flat_curve_is_a_plateau_whether_stopped_or_capped() -> None:
    # best 0.503 < 0.50 (the domain-only reference) + 0.05
    for stopped, cap in ((True, 30), (False, len(FLAT))):
        end = classify_run(FLAT, epochs_cap=cap, stopped_early=stopped, patience=4, reference=0.50)
        assert end.verdict == PLATEAU and end.stalled
        assert (end.best, end.best_epoch, end.first) == (0.503, 6, 0.49)
        assert "plateau" in end.message and "0.5030" in end.message


def test_late_rise_that_levels_off_is_converged_not_a_plateau() -> None:
    # flat for 6 epochs, then up to 0.70 (epoch 10), then 4 bad epochs: patience stopped it
    end = classify_run(LATE_RISE, epochs_cap=30, stopped_early=True, patience=4, reference=0.5)
    assert end.verdict == CONVERGED and not end.stalled
    assert end.best_epoch == 10 and end.best == 0.70


def test_rise_then_stop_is_converged() -> None:
    end = classify_run(
        RISE_THEN_STOP, epochs_cap=30, stopped_early=True, patience=4, reference=0.55
    )
    assert end.verdict == CONVERGED and end.best_epoch == 4


def test_still_rising_at_the_cap_is_not_converged() -> None:
    end = classify_run(STILL_RISING, epochs_cap=10, stopped_early=False, patience=4, reference=0.5)
    assert end.verdict == NOT_CONVERGED and end.stalled
    assert "10-epoch cap" in end.message and "train.epochs" in end.message
    # the same curve stopped by patience before the cap, or flat for `patience` epochs at the
    # cap, is converged: at the cap "still improving" means an improvement in the last 4 epochs
    assert classify_run(STILL_RISING, epochs_cap=30, stopped_early=True, patience=4).verdict == (
        CONVERGED
    )
    flat_end = STILL_RISING[:6] + [0.62] * 4  # best at epoch 6, then 4 epochs without a rise
    end = classify_run(flat_end, epochs_cap=10, stopped_early=False, patience=4)
    assert end.verdict == CONVERGED
    end = classify_run(flat_end[:9], epochs_cap=9, stopped_early=False, patience=4)
    assert end.verdict == NOT_CONVERGED  # 3 epochs since the best: still inside patience


def test_plateau_floor_is_the_reference_else_the_first_epoch() -> None:
    curve = [0.60, 0.62, 0.64]  # no reference: +0.04 over the first epoch, below MIN_GAIN
    end = classify_run(curve, epochs_cap=30, stopped_early=True, patience=1)
    assert end.verdict == PLATEAU and "its first epoch (0.6000)" in end.message
    # the domain alone gives 0.66: the run is below it, a plateau
    end = classify_run(curve, epochs_cap=30, stopped_early=True, patience=1, reference=0.66)
    assert end.verdict == PLATEAU and "domain-only level (0.6600)" in end.message
    # a large table: the first epoch is already the best, far above the domain-only level
    big = [0.79, 0.789, 0.788]
    end = classify_run(big, epochs_cap=30, stopped_early=True, patience=2, reference=0.55)
    assert end.verdict == CONVERGED
    # just at the gain: 0.5 + MIN_GAIN counts as having left the plateau
    edge = [0.5, 0.5 + MIN_GAIN]
    assert classify_run(edge, epochs_cap=30, stopped_early=True, patience=1).verdict == CONVERGED


def test_nan_epochs_are_skipped_and_bad_input_is_refused() -> None:
    end = classify_run([np.nan, 0.5, 0.7], epochs_cap=30, stopped_early=True, patience=1)
    assert (end.first, end.best, end.best_epoch) == (0.5, 0.7, 3)
    with pytest.raises(ValueError, match="no epochs"):
        classify_run([], epochs_cap=3, stopped_early=False, patience=1)
    with pytest.raises(ValueError, match="nan in every epoch"):
        classify_run([np.nan], epochs_cap=3, stopped_early=False, patience=1)
    with pytest.raises(ValueError, match="epochs_cap=0"):
        classify_run([0.5], epochs_cap=0, stopped_early=False, patience=1)


def test_domain_rate_auc_equals_sklearn_on_the_domain_rates() -> None:
    rng = np.random.default_rng(0)
    td = rng.integers(0, 3, 500)
    tl = (rng.random(500) < np.array([0.2, 0.5, 0.8])[td]).astype(float)
    vd = rng.integers(0, 3, 300)
    vl = (rng.random(300) < np.array([0.2, 0.5, 0.8])[vd]).astype(float)
    rates = np.array([tl[td == d].mean() for d in range(3)])  # by hand
    assert domain_rate_auc(td, tl, vd, vl) == pytest.approx(roc_auc_score(vl, rates[vd]))
    # equal rates: no information, AUC 0.5 (every score tied)
    assert domain_rate_auc(np.zeros(4), [0, 1, 0, 1], np.zeros(4), [0, 1, 1, 0]) == 0.5
    assert np.isnan(domain_rate_auc([0, 1], [0, 1], [0, 1], [1, 1]))  # one class
    with pytest.raises(ValueError, match="differ in length"):
        domain_rate_auc([0, 1], [0], [0], [1])


def test_stalled_text() -> None:
    runs = [CONVERGED] * 8 + [PLATEAU, NOT_CONVERGED]
    assert stalled_text(runs) == "2 of 10 seeds (plateau 1, not converged 1)"
    assert stalled_text([PLATEAU, PLATEAU, CONVERGED]) == "2 of 3 seeds (plateau 2)"
    assert stalled_text([CONVERGED] * 5) == "none of 5 seeds"
    assert stalled_text([None, None]) == "n/a"


def test_leaderboard_row_says_how_many_seeds_stalled() -> None:
    from cesaa.benchmark.leaderboard import Leaderboard, build_leaderboard
    from cesaa.benchmark.report import overall_rows

    runs = []
    for s in range(3):
        for model, auc, end in (("a", 0.70, CONVERGED), ("b", 0.55, PLATEAU if s else CONVERGED)):
            runs.append(
                {
                    "model": model,
                    "seed": s,
                    "test": {"auc": auc + 0.001 * s, "gauc": auc, "logloss": 0.6},
                    "best_epoch": 5,
                    "epochs": 9,
                    "seconds": 1.0,
                    "end": end,
                }
            )
    lb = Leaderboard.from_dict(json.loads(json.dumps(build_leaderboard(runs).to_dict())))
    cols, rows = overall_rows(lb)
    stalled = {r[1]: r[cols.index("stalled")] for r in rows}
    assert stalled == {"a": "none of 3 seeds", "b": "2 of 3 seeds (plateau 2)"}
    assert cols.index("stalled") == cols.index("p (Holm)") + 1  # next to the verdict
    old = build_leaderboard([{k: v for k, v in r.items() if k != "end"} for r in runs])
    assert {m.stalled for m in old.models} == {"n/a"}  # leaderboards written before the detector


def test_best_shot_verdict_names_a_stalled_model() -> None:
    from bench.best_shot import verdict
    from cesaa.benchmark.leaderboard import build_leaderboard

    runs = []
    for s in range(3):
        for model, auc in (("cesaa", 0.71), ("mmoe", 0.70)):
            end = PLATEAU if (model, s) == ("mmoe", 2) else CONVERGED
            t = {"auc": auc + 0.001 * s, "gauc": auc, "logloss": 0.6}
            runs.append(
                {
                    "model": model,
                    "seed": s,
                    "test": t,
                    "best_epoch": 5,
                    "epochs": 9,
                    "seconds": 1.0,
                    "end": end,
                }
            )
    text, _ = verdict(runs, build_leaderboard(runs))
    assert "Stalled runs: mmoe stalled in 1 of 3 seeds (plateau 1)" in text
    assert "cesaa stalled" not in text
    for r in runs:
        r["end"] = CONVERGED
    text, _ = verdict(runs, build_leaderboard(runs))
    assert "Stalled" not in text


def test_cesaa_train_reports_a_run_that_cannot_learn_as_a_plateau(tmp_path, capsys) -> None:
    """lr 1e-7 leaves the weights where they started: the validation AUC stays at its first
    epoch's level (within 0.01) and below the domain-only level + MIN_GAIN; meta.json and the last
    line of `cesaa train` say "plateau"."""
    from cesaa.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:rows=4000,domains=3,seed=0", "--model", "mlp"]
    args += ["--set", "train.epochs=2", "--set", "train.lr=1e-7", "--out", str(out), "--quiet"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("WARNING: run stalled on a plateau")
    end = json.loads((out / "meta.json").read_text())["run_end"]
    assert end["verdict"] == PLATEAU and end["epochs"] == 2
    assert end["best"] < end["reference"] + MIN_GAIN and end["best"] - end["first"] < 0.01
