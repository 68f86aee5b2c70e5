"""cesaa.benchmark: paired statistics, the leaderboard, its files, search spaces, and `cesaa bench`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cesaa.benchmark.leaderboard import build_leaderboard
from cesaa.benchmark.protocol import Protocol, split_params
from cesaa.benchmark.report import read_leaderboard, write_leaderboard
from cesaa.benchmark.stats import detectable_difference, holm, mean_std, paired_difference

# ---- statistics ------------------------------------------------------------------------------------


def test_paired_difference_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.78, 0.01, 10)
    b = a - rng.normal(0.002, 0.001, 10)
    d = paired_difference(dict(enumerate(a)), dict(enumerate(b)), level=0.9)
    diff = a - b
    assert d.n == 10
    assert d.mean == pytest.approx(diff.mean())
    assert d.std == pytest.approx(diff.std(ddof=1))
    assert d.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    lo, hi = stats.t.interval(0.9, 9, loc=diff.mean(), scale=stats.sem(diff))
    assert (d.ci_low, d.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_paired_difference_pairs_by_seed_and_handles_small_cases() -> None:
    # seeds only in one model are left out; order of the dicts does not matter
    d = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {1: 1.5, 0: 0.0, 7: 3.0})
    assert d.n == 2 and d.mean == pytest.approx((1.0 + 0.5) / 2)
    one = paired_difference({0: 1.0}, {0: 0.25})
    assert one.n == 1 and one.mean == 0.75 and math.isnan(one.ci_low) and math.isnan(one.p_value)
    same = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same.mean == 0.0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0
    with pytest.raises(ValueError, match="level=1.5"):
        paired_difference({0: 1.0}, {0: 1.0}, level=1.5)


def test_holm_known_values() -> None:
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 4*0.01=0.04, 3*0.02=0.06, 2*0.03=0.06, 1*0.5=0.5
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    # monotone step-down: 3*0.02=0.06, but the second (2*0.025=0.05) is raised to 0.06
    assert holm([0.02, 0.025, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    # capped at 1; nan stays nan and does not count in m (m = 2 here)
    out = holm([0.6, float("nan"), 0.7])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    assert holm([]) == []


def test_detectable_difference_agrees_with_statsmodels_power() -> None:
    from statsmodels.stats.power import TTestPower

    power = TTestPower()
    for n, tol in ((10, 0.002), (20, 0.001), (5, 0.015)):
        # the exact smallest standardized effect a paired (one-sample) t-test detects at 80 %
        effect = power.solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert detectable_difference(0.003, n) == pytest.approx(effect * 0.003, rel=tol)
    # and the power statsmodels gives at that difference is 80 % (to the same tolerance)
    d = detectable_difference(0.002, 10) / 0.002
    assert power.power(effect_size=d, nobs=10, alpha=0.05) == pytest.approx(0.8, abs=0.002)
    assert detectable_difference(0.0, 10) == 0.0
    assert math.isnan(detectable_difference(0.01, 1))
    with pytest.raises(ValueError, match="power=1.2 must be in"):
        detectable_difference(0.01, 10, power=1.2)


def test_mean_std() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([float("nan")]))


# ---- leaderboard -----------------------------------------------------------------------------------


def _runs() -> list[dict]:
    """3 models x 4 seeds; model 'b' is 'a' + 0.01 on every seed, 'c' is 'a' - noise."""
    base = [0.70, 0.72, 0.69, 0.71]
    noise = [0.001, 0.004, -0.002, 0.003]
    runs = []
    for s in range(4):
        for name, auc in (("a", base[s]), ("b", base[s] + 0.01), ("c", base[s] - noise[s])):
            test = {"auc": auc, "gauc": auc - 0.1, "logloss": 1 - auc}
            test.update({"auc/x": auc, "auc/y": 1 - auc, "gauc/x": 0.5, "gauc/y": 0.5})
            test.update({"logloss/x": 0.6, "logloss/y": 0.6})
            runs.append(
                {
                    "model": name,
                    "seed": s,
                    "test": test,
                    "val": {"auc": auc},
                    "params": {"lr": 0.001},
                    "best_epoch": 3 + s,
                    "epochs": 5 + s,
                    "seconds": 1.0,
                    "domains": ["x", "y"],
                }
            )
    return runs


def test_leaderboard_ranks_and_pairs_against_the_best() -> None:
    lb = build_leaderboard(_runs(), level=0.95)
    auc = lb.table("overall", "auc")
    assert [c.model for c in auc] == ["b", "a", "c"]
    assert auc[0].is_best and math.isnan(auc[0].diff_mean)
    a = auc[1]
    # a - b = -0.01 on every seed: zero spread, the interval collapses, p = 0
    assert a.diff_mean == pytest.approx(-0.01) and a.diff_std == pytest.approx(0.0, abs=1e-12)
    c = auc[2]
    b_vals = np.array([0.71, 0.73, 0.70, 0.72])
    c_vals = np.array([0.70 - 0.001, 0.72 - 0.004, 0.69 + 0.002, 0.71 - 0.003])
    assert c.diff_mean == pytest.approx((c_vals - b_vals).mean())
    p_c = stats.ttest_rel(c_vals, b_vals).pvalue
    assert c.p_value == pytest.approx(p_c)
    # its noise floor: (t_.975 + t_.8 at 3 degrees of freedom) x paired SD / sqrt(4)
    sd = np.std(c_vals - b_vals, ddof=1)
    t_sum = stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)
    assert c.detectable == pytest.approx(t_sum * sd / 2)
    assert math.isnan(auc[0].detectable)  # the best has no difference to detect
    # Holm over {a, c}: a has p ~ 0 (rank 1, times 2), c is second (times 1) but >= a's
    assert c.p_holm == pytest.approx(max(p_c, 2 * a.p_value))
    # logloss: lower is better, so b (1 - auc smallest) is best there too
    assert lb.table("overall", "logloss")[0].model == "b"
    # per domain: domain y scores 1 - auc, so the order reverses
    assert [x.model for x in lb.table("y", "auc")] == ["c", "a", "b"]
    assert [m.model for m in lb.models] == ["b", "a", "c"]
    assert lb.models[0].best_epoch == (
        pytest.approx(4.5),
        pytest.approx(np.std([3, 4, 5, 6], ddof=1)),
    )


def test_leaderboard_rejects_bad_runs() -> None:
    with pytest.raises(ValueError, match="no runs"):
        build_leaderboard([])
    runs = _runs()
    runs.append(dict(runs[0]))
    with pytest.raises(ValueError, match="two runs with seed 0"):
        build_leaderboard(runs)


def test_leaderboard_files_round_trip(tmp_path) -> None:
    lb = build_leaderboard(_runs(), meta={"command": "cesaa bench --x"})
    write_leaderboard(lb, tmp_path, runs=_runs())
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "runs.json"):
        assert (tmp_path / name).is_file()
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Command: `cesaa bench --x`" in md and "| 1 | b |" in md and "-0.0100" in md
    html = (tmp_path / "leaderboard.html").read_text()
    assert "<script" not in html and "http" not in html and "<table>" in html
    import pandas as pd

    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(csv) == 3 * 3 * 3  # (overall + 2 domains) x 3 metrics x 3 models
    row = csv[(csv.scope == "overall") & (csv.metric == "auc") & (csv.model == "a")].iloc[0]
    assert row["diff_to_best"] == pytest.approx(-0.01)
    back = read_leaderboard(tmp_path)
    assert [c.model for c in back.table("overall", "auc")] == ["b", "a", "c"]
    assert back.meta == lb.meta and back.domains == ["x", "y"]
    assert back.models[0].best_epoch == lb.models[0].best_epoch
    assert back.table("overall", "auc")[1].diff_mean == pytest.approx(-0.01)
    assert math.isnan(back.table("overall", "auc")[0].diff_mean)


def test_read_leaderboard_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="leaderboard.json not found"):
        read_leaderboard(tmp_path)
    (tmp_path / "leaderboard.json").write_text("{not json")
    with pytest.raises(ValueError, match="leaderboard.json: not a leaderboard"):
        read_leaderboard(tmp_path)
    (tmp_path / "leaderboard.json").write_text('{"cells": []}')
    with pytest.raises(ValueError, match="not a leaderboard"):
        read_leaderboard(tmp_path)


# ---- search spaces and protocol --------------------------------------------------------------------


class FakeTrial:
    """Optuna's suggest_* interface: always the first choice / the lower bound."""

    def __init__(self, pick: int = 0) -> None:
        self.pick = pick
        self.names: list[str] = []

    def suggest_float(self, name, low, high, log=False):
        self.names.append(name)
        return high if self.pick else low

    def suggest_int(self, name, low, high):
        self.names.append(name)
        return high if self.pick else low

    def suggest_categorical(self, name, choices):
        self.names.append(name)
        return choices[-1] if self.pick else choices[0]


def test_every_model_declares_a_buildable_search_space(small_data) -> None:
    from cesaa.models import build_model
    from cesaa.models.registry import default_config, model_names, model_search_space

    for name in model_names():
        space = model_search_space(name)
        assert space is not None, name
        for pick in (0, 1):
            trial = FakeTrial(pick)
            params = space(trial)
            assert len(trial.names) == len(set(trial.names)), f"{name}: a name suggested twice"
            model_over, train_over = split_params(params)
            assert {"lr", "weight_decay"} <= set(train_over)
            build_model(default_config(name, **model_over), small_data.spec)  # valid config
    cesaa = set(model_search_space("cesaa")(FakeTrial()))
    assert {"gate_input", "head", "fusion", "expert_dim", "alpha", "top_k", "num_shared"} <= cesaa


def test_split_params_and_protocol_reject_unknown_keys() -> None:
    assert split_params({"lr": 0.1, "top_k": 2}) == ({"top_k": 2}, {"lr": 0.1})
    with pytest.raises(ValueError, match="'bogus' is neither"):
        split_params({"bogus": 1})
    with pytest.raises(ValueError, match=r"unknown or fixed train field\(s\) \['seed'\]"):
        Protocol(train={"seed": 3})
    with pytest.raises(ValueError, match="patience=-1"):
        Protocol(train={"patience": -1})


def test_best_shot_verdict_compares_cesaa_with_the_best_other_model() -> None:
    """bench.best_shot's verdict: CESAA minus the best non-CESAA model, paired by seed, relative to
    that model's mean AUC, against the +0.25 % goal (closed form on hand-made runs)."""
    from scipy import stats

    from bench.best_shot import verdict

    runs = [r for r in _runs() if r["model"] != "c"]
    for r in runs:  # 'b' (a + 0.01) becomes CESAA; 'a' is the best (and only) other model
        r["model"] = {"b": "cesaa", "a": "mmoe"}[r["model"]]
    for s, bump in enumerate([0.0, 0.002, -0.001, 0.003]):  # give the differences a spread
        next(r for r in runs if (r["model"], r["seed"]) == ("cesaa", s))["test"]["auc"] += bump
    lb = build_leaderboard(runs, level=0.95)
    text, nums = verdict(runs, lb)
    d = [0.01, 0.012, 0.009, 0.013]
    mean, sd = sum(d) / 4, stats.tstd(d)
    half = stats.t.ppf(0.975, 3) * sd / 2
    base = (0.70 + 0.72 + 0.69 + 0.71) / 4
    assert nums["baseline"] == "mmoe"
    assert nums["diff"] == pytest.approx(mean)
    assert (nums["lo"], nums["hi"]) == pytest.approx((mean - half, mean + half))
    assert nums["rel"] == pytest.approx(mean / base)
    assert "met" in text and "missed" not in text and "cannot be told apart" not in text
    # beside the verdict, its noise floor (statsmodels' exact power solution, within 5 % at n = 4)
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(effect_size=None, nobs=4, alpha=0.05, power=0.8)
    assert nums["detectable"] == pytest.approx(effect * sd, rel=0.05)
    assert f"detect at 80 % power: {nums['detectable']:.4f}" in text
    for r in runs:  # CESAA 0.001 above on average: +0.14 %, short of the goal, interval spans 0
        if r["model"] == "cesaa":
            r["test"]["auc"] -= 0.01 + (0.002 if r["seed"] % 2 else -0.0005)
    text, nums = verdict(runs, build_leaderboard(runs, level=0.95))
    assert nums["rel"] < 0.0025 and "missed" in text and "cannot be told apart" in text


def test_best_shot_verdict_never_prints_a_p_value_of_zero() -> None:
    """A p-value below 0.001 reads "p <0.001" (it printed "p 0.000", as if exactly 0); others
    keep three decimals (scipy's paired t-test as the oracle)."""
    from scipy import stats

    from bench.best_shot import verdict

    runs = [r for r in _runs() if r["model"] != "c"]
    for r in runs:
        r["model"] = {"b": "cesaa", "a": "mmoe"}[r["model"]]
    for s, bump in enumerate([0.0, 0.0001, -0.0001, 0.0]):  # differences 0.01 +- 0.0001
        next(r for r in runs if (r["model"], r["seed"]) == ("cesaa", s))["test"]["auc"] += bump
    by = {(r["model"], r["seed"]): r["test"]["auc"] for r in runs}
    p = stats.ttest_rel([by["cesaa", s] for s in range(4)], [by["mmoe", s] for s in range(4)])
    assert p.pvalue < 0.001
    text, _ = verdict(runs, build_leaderboard(runs, level=0.95))
    assert "paired t-test p <0.001)" in text and "p 0.000" not in text
    for s, bump in enumerate([0.0, 0.004, -0.003, 0.002]):  # a wider spread: p above 0.001
        next(r for r in runs if (r["model"], r["seed"]) == ("cesaa", s))["test"]["auc"] += bump
    by = {(r["model"], r["seed"]): r["test"]["auc"] for r in runs}
    p = stats.ttest_rel([by["cesaa", s] for s in range(4)], [by["mmoe", s] for s in range(4)])
    text, _ = verdict(runs, build_leaderboard(runs, level=0.95))
    assert p.pvalue > 0.001 and f"paired t-test p {p.pvalue:.3f})" in text


def test_best_shot_per_domain_pairs_cesaa_with_the_baseline_in_each_domain() -> None:
    """bench.best_shot's per-domain table: CESAA minus the baseline within each domain, paired by
    seed (t interval by hand), domains by test rows, the counts of domains ahead / behind and
    the rank correlation with the domain's size (Spearman by hand: ranks 3 2 1 vs 2 1 3)."""
    from scipy import stats

    from bench.best_shot import per_domain

    diffs = {
        "x": [0.01, 0.02, 0.015, 0.005],  # ahead, interval above 0
        "y": [-0.01, 0.01, 0.002, -0.004],  # behind on average, interval spans 0
        "z": [-0.02, -0.021, -0.019, -0.02],  # behind, interval below 0
    }
    runs = []
    for s in range(4):
        base = {f"auc/{d}": 0.7 + 0.01 * s for d in diffs}
        runs.append({"model": "m2m", "seed": s, "test": base, "domains": list(diffs)})
        cesaa = {f"auc/{d}": 0.7 + 0.01 * s + diffs[d][s] for d in diffs}
        runs.append({"model": "cesaa", "seed": s, "test": cesaa, "domains": list(diffs)})
    text = per_domain(runs, "m2m", {"x": 100, "y": 300, "z": 200}, 0.95)
    x = diffs["x"]
    mean = sum(x) / 4
    half = stats.t.ppf(0.975, 3) * stats.tstd(x) / 2
    assert f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]" in text
    assert "ahead in 1 of 3 domains (1 with the interval above 0)" in text
    assert "behind in 2 (1 with the interval below 0)" in text
    assert "test rows: -0.50." in text  # 1 - 6 * (1 + 1 + 4) / (3 * 8)
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0].strip("| ") for row in table[1:]] == ["y", "z", "x"]
    assert per_domain([dict(r, domains=["x"]) for r in runs], "m2m", {}, 0.95) == ""


def test_domain_tally_counts_domains_won_level_and_worse() -> None:
    """Three models, three domains, four seeds.  d1: m1 and m2 identical (difference 0: level),
    m3 0.1 below on every seed (p = 0: worse).  d2: m2 best, m3 identical to it, m1 0.05 below.
    d3: m3 best, m2 0.1 below, m1 noisy around it (its p by scipy's paired t-test)."""
    from scipy import stats

    from cesaa.benchmark.leaderboard import domain_tally

    m1_d3 = [0.91, 0.88, 0.905, 0.895]
    values = {  # model -> domain -> per-seed AUC
        "m1": {"d1": [0.8] * 4, "d2": [0.85] * 4, "d3": m1_d3},
        "m2": {"d1": [0.8] * 4, "d2": [0.9] * 4, "d3": [0.8] * 4},
        "m3": {"d1": [0.7] * 4, "d2": [0.9] * 4, "d3": [0.9] * 4},
    }
    runs = []
    for m, per_domain in values.items():
        for s in range(4):
            test = {"auc": 0.8, "gauc": 0.7, "logloss": 0.5}
            for d, v in per_domain.items():
                test.update({f"auc/{d}": v[s], f"gauc/{d}": 0.5, f"logloss/{d}": 0.5})
            runs.append(
                {"model": m, "seed": s, "test": test, "params": {}, "best_epoch": 1,
                 "epochs": 1, "seconds": 1.0, "domains": ["d1", "d2", "d3"]}
            )  # fmt: skip
    p_m1 = stats.ttest_rel(m1_d3, [0.9] * 4).pvalue  # Holm with m2's p = 0: unchanged
    assert p_m1 > 0.05
    tally = {t.model: (t.best, t.level_with_best, t.worse) for t in domain_tally(
        build_leaderboard(runs, level=0.95), "auc")}  # fmt: skip
    assert tally == {"m1": (1, 1, 1), "m2": (1, 1, 1), "m3": (1, 1, 1)}
    at_90 = {t.model: (t.best, t.level_with_best, t.worse) for t in domain_tally(
        build_leaderboard(runs, level=1 - p_m1 - 1e-9), "auc")}  # fmt: skip
    assert at_90["m1"] == (1, 0, 2)  # now m1's d3 difference is significant
    no_domains = [dict(r, domains=[]) for r in runs]
    assert domain_tally(build_leaderboard(no_domains), "auc") == []
