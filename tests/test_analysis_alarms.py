from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.alarms import Alarm, AlarmThresholds, health_alarms, prediction_std_per_domain
from analysis.stats import RoutingStats

NAMES = ["books", "music", "video"]
D, E = 3, 6
# healthy routing: each domain prefers its own two experts, no expert above 90%, none unused
HEALTHY = np.array([
    [0.40, 0.30, 0.10, 0.10, 0.05, 0.05],
    [0.05, 0.10, 0.40, 0.30, 0.10, 0.05],
    [0.05, 0.05, 0.10, 0.10, 0.40, 0.30],
])  # fmt: skip
METRICS = {"auc": 0.75, **{f"auc/{n}": 0.75 for n in NAMES}}
STD = np.array([0.1, 0.12, 0.08])


def stats_of(act: np.ndarray, rows: int = 40) -> RoutingStats:
    """Every row of domain d has gate probabilities act[d] and selects its top-2 experts."""
    domain = np.repeat(np.arange(len(act)), rows)
    probs = (act / act.sum(axis=1, keepdims=True))[domain]
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    return RoutingStats.from_arrays(probs, domain, len(act), topk_idx=topk)


def codes(alarms: list[Alarm]) -> list[str]:
    return [a.code for a in alarms]


def test_healthy_model_raises_no_alarm():
    assert health_alarms(stats_of(HEALTHY), METRICS, NAMES, alpha=0.01,
                         predictions_std_per_domain=STD) == []  # fmt: skip
    assert health_alarms(None, METRICS, NAMES, alpha=0.0, predictions_std_per_domain=STD) == []


def test_decisive_per_domain_routing_is_not_gate_collapse():
    # regression (issue 9, item 6): each domain sends 93% of its gate mass to its own expert 2d
    # (and picks 2d + 1 second), what the MI loss asks for; the old check (one expert > 90% of a
    # domain's gate mass) fired on it
    act = np.full((3, 6), 0.01)
    act[[0, 1, 2], [0, 2, 4]] = 0.93
    act[[0, 1, 2], [1, 3, 5]] = 0.03
    assert health_alarms(stats_of(act), METRICS, NAMES, alpha=0.01) == []


def test_gate_collapse_when_every_domain_uses_the_same_expert():
    act = np.tile([0.01, 0.01, 0.93, 0.03, 0.01, 0.01], (3, 1))  # all domains on expert 2
    alarms = health_alarms(stats_of(act), METRICS, NAMES, alpha=0.0)
    collapse = [a for a in alarms if a.code == "gate_collapse"]
    assert len(collapse) == 1
    a = collapse[0]
    # every row of every domain selects expert 2 among its top 2: q(2 | d) = 1 for each d
    assert (a.level, a.domain, a.expert) == ("warning", None, 2)
    assert a.value == pytest.approx(1.0) and a.threshold == 0.9
    assert "100%" in a.message and "beta" in a.message and "num_shared" in a.message
    # one domain on its own expert plus two domains sharing another: the average domain's
    # largest row share is (1 + 1 + 0) / 3 = 2/3 < 0.9, silent
    mixed = act.copy()
    mixed[0] = [0.93, 0.03, 0.01, 0.01, 0.01, 0.01]
    assert "gate_collapse" not in codes(health_alarms(stats_of(mixed), METRICS, NAMES, alpha=0))
    strict = AlarmThresholds(collapse_share=0.6)
    assert "gate_collapse" in codes(
        health_alarms(stats_of(mixed), METRICS, NAMES, alpha=0, thresholds=strict)
    )


def test_dead_expert():
    act = HEALTHY.copy()
    act[:, 5] = 0.0  # no gate mass: expert 5 is never among a row's top 2
    alarms = health_alarms(stats_of(act), METRICS, NAMES, alpha=0.01)
    assert codes(alarms) == ["dead_expert"]
    assert alarms[0].expert == 5 and alarms[0].value == 0.0
    assert alarms[0].message.startswith("expert 5 gets 0.00% of the selections")


def test_domain_auc_near_chance():
    metrics = {**METRICS, "auc/video": 0.51}
    alarms = health_alarms(stats_of(HEALTHY), metrics, NAMES, alpha=0.01)
    assert codes(alarms) == ["domain_auc_chance"]
    assert (alarms[0].level, alarms[0].domain) == ("critical", "video")
    assert "0.510" in alarms[0].message
    # a model without a gate still gets the metric checks; NaN AUC (one class) is not an alarm
    assert codes(health_alarms(None, metrics, NAMES, alpha=0.0)) == ["domain_auc_chance"]
    assert health_alarms(None, {**METRICS, "auc/video": float("nan")}, NAMES, alpha=0.0) == []


def test_constant_predictions():
    alarms = health_alarms(stats_of(HEALTHY), METRICS, NAMES, alpha=0.01,
                           predictions_std_per_domain={"books": 0.1, "music": 1e-5})  # fmt: skip
    assert codes(alarms) == ["constant_predictions"]
    assert (alarms[0].level, alarms[0].domain) == ("critical", "music")
    std = prediction_std_per_domain(np.r_[np.full(5, 0.3), [0.1, 0.9, 0.5]], [0] * 5 + [1] * 3, 3)
    np.testing.assert_allclose(std[:2], [0.0, np.std([0.1, 0.9, 0.5])])
    assert np.isnan(std[2])
    alarms = health_alarms(None, METRICS, NAMES, alpha=0.0, predictions_std_per_domain=std)
    assert codes(alarms) == ["constant_predictions"] and alarms[0].domain == "books"


def test_mi_near_zero_only_when_alpha_is_positive():
    blind = np.tile(HEALTHY[0], (3, 1))  # every domain routed alike
    alarms = health_alarms(stats_of(blind), METRICS, NAMES, alpha=0.05)
    assert codes(alarms).count("mi_near_zero") == 1
    mi = next(a for a in alarms if a.code == "mi_near_zero")
    assert mi.level == "warning" and "alpha = 0.05" in mi.message
    assert "mi_near_zero" not in codes(health_alarms(stats_of(blind), METRICS, NAMES, alpha=0))


def test_indistinguishable_domains():
    act = HEALTHY.copy()
    act[2] = act[1]
    alarms = health_alarms(stats_of(act), METRICS, NAMES, alpha=0.01)
    alike = [a for a in alarms if a.code == "domains_indistinguishable"]
    assert len(alike) == 1  # only music / video, not books
    assert alike[0].domain == "music" and "video" in alike[0].title
    assert alike[0].value == pytest.approx(0.0, abs=1e-12)
    assert set(codes(alarms)) == {"domains_indistinguishable", "dead_expert"}  # 4, 5 now unused
    # without the MI loss nobody asked for domain-specific routing: not an alarm
    assert "domains_indistinguishable" not in codes(
        health_alarms(stats_of(act), METRICS, NAMES, alpha=0.0)
    )


def test_critical_alarms_come_first_and_serialize():
    act = HEALTHY.copy()
    act[:, 5] = 0.0  # expert 5 unused: a warning
    alarms = health_alarms(stats_of(act), {**METRICS, "auc/books": 0.5}, NAMES, alpha=0.01)
    assert [a.level for a in alarms] == ["critical", "warning"]
    json.dumps([a.to_dict() for a in alarms])


def test_alarm_validation_errors():
    stats = stats_of(HEALTHY)
    with pytest.raises(ValueError, match="domain_names has 2 names but stats has 3 domains"):
        health_alarms(stats, METRICS, NAMES[:2], alpha=0.01)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        health_alarms(stats, METRICS, NAMES, alpha=-1)
    with pytest.raises(ValueError, match="stats must be a RoutingStats"):
        health_alarms(HEALTHY, METRICS, NAMES, alpha=0.01)
    with pytest.raises(ValueError, match=r"predictions_std_per_domain must have shape \(3,\)"):
        health_alarms(stats, METRICS, NAMES, alpha=0.01, predictions_std_per_domain=[0.1])
    with pytest.raises(ValueError, match=r"unknown domains \['games'\]"):
        health_alarms(stats, METRICS, NAMES, alpha=0.01, predictions_std_per_domain={"games": 1})
    with pytest.raises(ValueError, match="metrics must be a dict"):
        health_alarms(stats, [0.7], NAMES, alpha=0.01)
    with pytest.raises(ValueError, match="collapse_share=0 must be in"):
        AlarmThresholds(collapse_share=0)
    with pytest.raises(ValueError, match="AlarmThresholds.min_mi must be a number >= 0"):
        AlarmThresholds(min_mi=-0.1)
