from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.alarm_summary import alarm_table, summarize_alarms
from analysis.alarms import Alarm, health_alarms
from analysis.stats import RoutingStats

NAMES40 = [f"d{i}" for i in range(40)]
CHANCE = [3, 7, 9, 12, 20, 21, 22, 25, 26, 28, 30, 31, 33, 35, 36, 38, 39]  # 17 domains
CONSTANT = [9, 39]


def chance(d: int) -> Alarm:
    return Alarm("critical", "domain_auc_chance", f"d{d}: no better than chance", "m", f"d{d}",
                 value=0.5, threshold=0.02)  # fmt: skip


def constant(d: int) -> Alarm:
    return Alarm("critical", "constant_predictions", f"d{d}: constant predictions", "m", f"d{d}")


def alike(a: int, b: int) -> Alarm:
    return Alarm("warning", "domains_indistinguishable", f"d{a} and d{b} are routed alike", "m",
                 f"d{a}", other_domain=f"d{b}")  # fmt: skip


COLLAPSE = Alarm("warning", "gate_collapse", "gate collapsed onto expert 2", "m", expert=2)
DEAD = Alarm("warning", "dead_expert", "expert 5 is unused", "m", expert=5)


def hand_built() -> list[Alarm]:
    # critical first, as health_alarms orders them; chance alarms in reversed domain order so the
    # listing order must come from the domain names, not from the input
    return (
        [chance(d) for d in reversed(CHANCE)]
        + [constant(d) for d in CONSTANT]
        + [COLLAPSE, DEAD, alike(1, 4), alike(4, 30), alike(0, 1)]
    )


def test_forty_domains_fold_into_one_entry_per_kind():
    groups = summarize_alarms(hand_built(), NAMES40)
    assert [(g.level, g.code, g.grouped) for g in groups] == [
        ("critical", "domain_auc_chance", True),
        ("critical", "constant_predictions", True),
        ("warning", "gate_collapse", False),
        ("warning", "dead_expert", False),
        ("warning", "domains_indistinguishable", True),
    ]
    auc, const, collapse, dead, pairs = groups
    assert auc.title == (
        "AUC no better than chance in 17 of 40 domains: d3, d7, d9, d12, d20 and 12 more"
    )
    assert auc.domains == tuple(f"d{d}" for d in CHANCE)
    assert len(auc.alarms) == 17 and {a.domain for a in auc.alarms} == set(auc.domains)
    assert const.title == "constant predictions in 2 of 40 domains: d9, d39"  # no "and 0 more"
    assert const.domains == ("d9", "d39")
    assert collapse.title == COLLAPSE.title and collapse.alarms == (COLLAPSE,)
    assert dead.alarms == (DEAD,) and dead.domains == ()
    # 3 pairs over the domains {0, 1, 4, 30}, both sides of each pair counted
    assert (
        pairs.title == "3 pairs of domains routed alike, involving 4 of 40 domains: d0, d1, d4, d30"
    )
    assert pairs.domains == ("d0", "d1", "d4", "d30")
    assert len(pairs.alarms) == 3


def test_max_listed_and_dict_input():
    found = [a.to_dict() for a in hand_built()]  # the dashboard passes the cached dicts
    auc = summarize_alarms(found, NAMES40, max_listed=2)[0]
    assert auc.title == "AUC no better than chance in 17 of 40 domains: d3, d7 and 15 more"
    assert auc.to_dict()["alarms"][0] == found[0]


def test_few_domains_change_nothing():
    names = ["books", "music", "video"]
    found = [
        Alarm("critical", "domain_auc_chance", "books: no better than chance", "m", "books"),
        Alarm("critical", "domain_auc_chance", "video: no better than chance", "m", "video"),
        COLLAPSE,
    ]
    groups = summarize_alarms(found, names)
    assert [g.grouped for g in groups] == [False, False, False]
    assert [g.alarms for g in groups] == [(a,) for a in found]
    assert [g.title for g in groups] == [a.title for a in found]
    # the same alarms over 40 names are folded; at exactly group_above names they are not
    assert len(summarize_alarms(found, names, group_above=2)) == 2
    eight = names + [f"x{i}" for i in range(5)]
    assert all(not g.grouped for g in summarize_alarms(found, eight))


def test_real_alarms_over_many_domains_fold():
    # 12 domains, all routed identically (alpha > 0): every pair is routed alike, 66 pairs
    names = [f"dom{i}" for i in range(12)]
    domain = np.repeat(np.arange(12), 20)
    probs = np.tile([0.4, 0.3, 0.2, 0.1], (len(domain), 1))
    topk = np.tile([0, 1], (len(domain), 1))
    stats = RoutingStats.from_arrays(probs, domain, 12, topk_idx=topk)
    metrics = {f"auc/{n}": 0.8 for n in names}
    found = health_alarms(stats, metrics, names, alpha=0.01)
    groups = summarize_alarms(found, names)
    pairs = [g for g in groups if g.code == "domains_indistinguishable"]
    assert len(pairs) == 1
    assert pairs[0].title == (
        "66 pairs of domains routed alike, involving 12 of 12 domains: "
        "dom0, dom1, dom2, dom3, dom4 and 7 more"
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="names domain 'zz'"):
        summarize_alarms([Alarm("critical", "c", "t", "m", "zz")], NAMES40)
    with pytest.raises(ValueError, match="max_listed"):
        summarize_alarms([], NAMES40, max_listed=0)
    with pytest.raises(ValueError, match="not an Alarm's fields"):
        summarize_alarms([{"level": "critical"}], NAMES40)
    with pytest.raises(ValueError, match="domain_names"):
        summarize_alarms([], "d1")


def test_alarm_table_shows_both_domains_of_a_pair():
    """The raw alarm table named only the first domain of each routed-alike pair."""
    pair = Alarm(
        "warning", "domains_indistinguishable", "t", "m", domain="news", other_domain="shop",
        value=0.001, threshold=0.01,
    )  # fmt: skip
    single = Alarm("critical", "domain_auc_chance", "t", "m", domain="video", value=0.5)
    t = alarm_table([pair, single.to_dict()])
    assert list(t.columns) == ["level", "code", "domain", "other domain", "expert", "value",
                               "threshold"]  # fmt: skip
    assert (t.loc[0, "domain"], t.loc[0, "other domain"]) == ("news", "shop")
    assert t.loc[1, "domain"] == "video" and pd.isna(t.loc[1, "other domain"])
