"""bench.sweep: one cell's point on the map from hand-built runs (scipy and statsmodels as the
oracles), the grid's sources, and the ablations it registers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import sweep  # noqa: E402

CESAA = [0.80, 0.81, 0.79, 0.82, 0.80]


def _runs(extra: dict[str, list[float]]) -> list[dict]:
    models = {"cesaa": CESAA, **extra}
    return [
        {"model": m, "seed": s, "test": {"auc": v}} for m, vals in models.items()
        for s, v in enumerate(vals)
    ]  # fmt: skip


def test_cell_map_pairs_cesaa_with_the_best_baseline_and_its_ablations() -> None:
    from statsmodels.stats.power import TTestPower

    mlp = [0.79, 0.805, 0.785, 0.80, 0.795]  # the best baseline by mean
    star = [0.70, 0.71, 0.69, 0.72, 0.70]
    nomi = [0.80, 0.80, 0.79, 0.81, 0.80]
    runs = _runs({"mlp": mlp, "star": star, "cesaa_nomi": nomi})
    ends = ["plateau", "converged", "plateau", "not_converged", "converged"]
    for r in runs:  # CESAA's runs say how they ended, the baselines' do not
        if r["model"] == "cesaa":
            r["end"] = ends[r["seed"]]
    point = sweep.cell_map(runs)
    assert point["baseline"] == "mlp"  # the ablation is no baseline, however good
    d = np.array(CESAA) - np.array(mlp)
    gap = point["gap"]
    assert gap["mean"] == pytest.approx(d.mean())
    assert gap["p_value"] == pytest.approx(stats.ttest_rel(CESAA, mlp).pvalue)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (gap["ci_low"], gap["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    effect_10 = TTestPower().solve_power(effect_size=None, nobs=10, alpha=0.05, power=0.8)
    assert gap["detectable_10"] == pytest.approx(effect_10 * d.std(ddof=1), rel=0.002)
    assert gap["detectable"] > gap["detectable_10"]  # 5 seeds see less than 10
    mech = point["mechanisms"]["cesaa_nomi"]
    assert mech["mean"] == pytest.approx(np.mean(np.array(CESAA) - np.array(nomi)))
    assert set(point["mechanisms"]) == {"cesaa_nomi"}
    assert point["spread"]["star"][1] == pytest.approx(np.std(star, ddof=1))
    cols, rows = sweep.map_rows({"h1-d3-r1000": point})
    row = dict(zip(cols, rows[0], strict=True))
    assert gap["ci_low"] > 0 and row["verdict"] == "ahead"
    assert row["CESAA − no shared expert"] == "not run"
    assert row["stalled runs: CESAA / best baseline"] == (
        "3 of 5 seeds (plateau 2, not converged 1) / n/a"
    )


def test_cell_map_verdicts_and_errors() -> None:
    behind = [v + 0.01 + 0.001 * (s % 2) for s, v in enumerate(CESAA)]
    point = sweep.cell_map(_runs({"m2m": behind}))
    _, rows = sweep.map_rows({"c": point})
    assert rows[0][4] == "behind"
    level = [v + (0.004 if s % 2 else -0.004) for s, v in enumerate(CESAA)]
    _, rows = sweep.map_rows({"c": sweep.cell_map(_runs({"m2m": level}))})
    assert rows[0][4].startswith("level (within ±")
    with pytest.raises(ValueError, match="no 'cesaa' runs"):
        sweep.cell_map([{"model": "mlp", "seed": 0, "test": {"auc": 0.7}}])
    with pytest.raises(ValueError, match="no baseline runs"):
        sweep.cell_map(_runs({"cesaa_k1": CESAA}))


def test_cells_are_synthetic_sources_at_the_dial() -> None:
    from cesaa.data.sources import load_data

    src = sweep.cell_source(0.25, 3, 1000)
    assert src == "synthetic:rows=3000,domains=3,heterogeneity=0.25,seed=0"
    data = load_data(src)
    assert data.truth["heterogeneity"] == 0.25 and len(data.domain_names) == 3
    assert sweep.cell_name(0.25, 3, 1000) == "h0.25-d3-r1000"


@pytest.fixture
def clean_registry():
    from cesaa.models import registry

    before, spaces = dict(registry._REGISTRY), dict(registry._SPACES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    registry._SPACES.clear()
    registry._SPACES.update(spaces)


def test_ablations_pin_one_setting_of_cesaas_space(clean_registry) -> None:
    from bench import _sweep_models
    from cesaa.models.registry import default_config, model_search_space

    _sweep_models.register()
    _sweep_models.register()  # idempotent
    assert default_config("cesaa_nomi").alpha == 0.0
    assert default_config("cesaa_noshared").num_shared == 0
    assert default_config("cesaa_k1").top_k == 1
    assert default_config("cesaa_k3").top_k == 3 and default_config("cesaa_k4").top_k == 4

    class Trial:
        def suggest_categorical(self, name, choices):
            return choices[-1]

        def suggest_float(self, name, low, high, log=False):
            return high

        def suggest_int(self, name, low, high, step=1, log=False):
            return high

    assert model_search_space("cesaa_nomi")(Trial())["alpha"] == 0.0
    assert model_search_space("cesaa")(Trial())["alpha"] != 0.0


def test_logloss_probe_temperature_recovers_a_known_overconfidence() -> None:
    """Labels drawn from sigmoid(z) and a model reporting 3 z: the fitted temperature is 3 (the
    maximum-likelihood temperature of a calibrated model scaled by 3, up to sampling noise)."""
    from bench.logloss_probe import temperature

    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 200_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    assert temperature(3 * z, y) == pytest.approx(3.0, rel=0.03)
    assert temperature(z, y) == pytest.approx(1.0, rel=0.03)


def _point(gap: tuple, n: int = 5, **mechanisms: tuple) -> dict:
    def d(t):
        return {"mean": t[0], "ci_low": t[1], "ci_high": t[2], "n": n}

    return {"gap": d(gap), "mechanisms": {k: d(v) for k, v in mechanisms.items()}}


def test_chart_series_follow_one_axis_with_the_tables_numbers() -> None:
    """Each panel takes the cells that differ only along its axis, sorted along it, and plots the
    map's own gap and mechanism intervals; a panel with one cell is empty."""
    from bench import _sweep_chart

    points = {
        (1.0, 12, 3000): _point((-0.01, -0.02, 0.0), cesaa_nomi=(0.001, -0.001, 0.003)),
        (0.0, 12, 3000): _point((0.002, -0.001, 0.005), cesaa_nomi=(0.0, -0.002, 0.002)),
        (0.5, 12, 3000): _point((-0.004, -0.006, -0.002)),  # no ablation run in this cell
        (1.0, 3, 3000): _point((-0.006, -0.015, 0.002)),
        (1.0, 12, 1000): _point((0.5, 0.4, 0.6)),  # on no panel's line (12 domains, h 1, 1k rows)
    }
    labels = {"cesaa_nomi": "CESAA − no MI loss", "cesaa_k4": "CESAA − k 4"}
    series = _sweep_chart.axis_series(points, 0, {1: 12, 2: 3000}, labels)
    assert series == {
        _sweep_chart.GAP: [
            (0.0, 0.002, -0.001, 0.005),
            (0.5, -0.004, -0.006, -0.002),
            (1.0, -0.01, -0.02, 0.0),
        ],
        "CESAA − no MI loss": [(0.0, 0.0, -0.002, 0.002), (1.0, 0.001, -0.001, 0.003)],
    }
    domains = _sweep_chart.axis_series(points, 1, {0: 1.0, 2: 3000}, labels)
    assert domains[_sweep_chart.GAP] == [(3.0, -0.006, -0.015, 0.002), (12.0, -0.01, -0.02, 0.0)]
    assert _sweep_chart.axis_series(points, 2, {0: 1.0, 1: 3}, labels) == {}
    fig = _sweep_chart.figure(points, labels)
    gap = [t for t in fig.data if t.name == _sweep_chart.GAP and t.xaxis == "x"][0]
    assert list(gap.y) == [0.002, -0.004, -0.01]
    assert list(gap.error_y.array) == pytest.approx([0.003, 0.002, 0.01])
    assert list(gap.error_y.arrayminus) == pytest.approx([0.003, 0.002, 0.01])
    assert fig.layout.title.text.endswith("over 5 paired seeds")
    points[(1.0, 3, 3000)] = _point((-0.006, -0.015, 0.002), n=3)  # a cell run with fewer seeds
    assert _sweep_chart.figure(points, labels).layout.title.text.endswith("over 3-5 paired seeds")


def test_cells_parse_and_name_a_malformed_one() -> None:
    assert sweep.parse_cells("1:3:3000,0.5:12:1000") == [(1.0, 3, 3000), (0.5, 12, 1000)]
    with pytest.raises(ValueError, match=r"--cells: '1:3' is not H:DOMAINS:ROWS_PER_DOMAIN"):
        sweep.parse_cells("1:3:3000,1:3")


def test_model_rows_list_cesaa_first_and_mark_a_model_not_run() -> None:
    points = {
        "a": {"spread": {"star": (0.7, 0.01), "cesaa": (0.8, 0.002), "cesaa_k1": (0.79, 0.003)}},
        "b": {"spread": {"cesaa": (0.6, 0.02), "m2m": (0.65, 0.0125)}},
    }
    cols, rows = sweep.model_rows(points)
    assert cols == ["cell", "cesaa", "cesaa_k1", "m2m", "star"]
    assert rows == [
        ["a", "0.8000 ± 0.0020", "0.7900 ± 0.0030", "not run", "0.7000 ± 0.0100"],
        ["b", "0.6000 ± 0.0200", "not run", "0.6500 ± 0.0125", "not run"],
    ]
