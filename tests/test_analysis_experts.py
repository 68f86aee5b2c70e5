from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from analysis.expert_profiles import expert_profiles
from analysis.experts import feature_log_odds, routed_mask, top_values
from analysis.odds import benjamini_hochberg
from cesaa.data.synthetic import make_planted_frame


def _table(cells: list[tuple[int, int, int, int]]):
    """Rows from 2 x 2 tables per domain: (a routed with v, b routed without, c other with v,
    d other without)."""
    dom, routed, value = [], [], []
    for s, (a, b, c, d) in enumerate(cells):
        for n, r, v in ((a, 1, "v"), (b, 1, "w"), (c, 0, "v"), (d, 0, "w")):
            dom += [s] * n
            routed += [r] * n
            value += [v] * n
    return {"f": np.array(value)}, np.array(dom), np.array(routed, dtype=bool)


def test_single_stratum_is_haldane_log_odds_with_woolf_interval():
    feats, dom, routed = _table([(30, 70, 10, 90)])
    t = feature_log_odds(feats, dom, routed)
    row = t[t["value"] == "v"].iloc[0]
    a, b, c, d = 30.5, 70.5, 10.5, 90.5
    lor = math.log(a * d / (b * c))
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    assert row["log_odds"] == pytest.approx(lor)
    assert row["ci_low"] == pytest.approx(lor - 1.959964 * se, rel=1e-5)
    assert row["ci_high"] == pytest.approx(lor + 1.959964 * se, rel=1e-5)
    assert (row["routed_with"], row["routed_rows"], row["other_with"], row["other_rows"]) == (
        30,
        100,
        10,
        100,
    )
    assert row["share_routed"] == pytest.approx(0.3)
    assert row["share_other"] == pytest.approx(0.1)
    # the complementary value is under-represented by exactly the opposite amount
    w = t[t["value"] == "w"].iloc[0]
    assert w["log_odds"] == pytest.approx(-lor)
    assert t.iloc[0]["value"] == "v"  # sorted: most confidently over-represented first


def test_stratification_removes_a_domain_mix_confounder():
    # both domains have odds ratio 4, but the expert takes mostly domain 0 rows, which have v
    # more often: the crude (pooled) odds ratio is far from 4, Mantel-Haenszel gives 4 exactly
    cells = [(20, 20, 10, 40), (5, 45, 10, 360)]
    feats, dom, routed = _table(cells)
    t = feature_log_odds(feats, dom, routed, smoothing=0.0)
    row = t[t["value"] == "v"].iloc[0]
    assert row["log_odds"] == pytest.approx(math.log(4.0))
    a, b, c, d = (sum(x[i] for x in cells) for i in range(4))
    crude = math.log(a * d / (b * c))
    assert abs(crude - math.log(4.0)) > 0.3


def _strata(rng, n_strata: int, *, absent: int, routed_share: float | None = None):
    """``n_strata`` random 2 x 2 tables (a, b, c, d) with the value present and every margin
    positive, then ``absent`` strata where the value never occurs (a = c = 0)."""
    cells = []
    for _ in range(n_strata):
        a, b, c, d = (int(x) for x in rng.integers(1, 60, size=4))
        cells.append((a, b, c, d))
    for _ in range(absent):
        n = int(rng.integers(50, 200))
        r = int(round(n * (routed_share if routed_share is not None else rng.uniform(0.1, 0.9))))
        cells.append((0, r, 0, n - r))
    return cells


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mantel_haenszel_matches_statsmodels_on_many_strata(seed):
    from statsmodels.stats.contingency_tables import StratifiedTable

    rng = np.random.default_rng(seed)
    cells = _strata(rng, 25, absent=15)
    feats, dom, routed = _table(cells)
    t = feature_log_odds(feats, dom, routed, smoothing=0.0)
    row = t[t["value"] == "v"].iloc[0]
    ref = StratifiedTable([np.array([[a, b], [c, d]]) for a, b, c, d in cells])
    assert row["log_odds"] == pytest.approx(ref.logodds_pooled, rel=1e-10)
    lo, hi = ref.logodds_pooled_confint()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-8)
    # smoothing adds to the cells of the strata that hold the value (and its absence) only
    smooth = feature_log_odds(feats, dom, routed).set_index("value").loc["v"]
    ref = StratifiedTable(
        [np.array([[a, b], [c, d]]) + 0.5 for a, b, c, d in cells if a + c > 0 and b + d > 0]
    )
    assert smooth["log_odds"] == pytest.approx(ref.logodds_pooled, rel=1e-10)


@pytest.mark.parametrize("routed_share", [0.5, 0.9])
def test_strata_without_the_value_leave_the_estimate_unchanged(routed_share):
    # a value 10x as common among the expert's rows of its one domain; then 39 domains where the
    # value never occurs route 50% or 90% of their rows to the expert.  Before the fix the smoothed
    # empty strata pulled the estimate to +1.29 (9 domains, 50%) and -0.49 (39 domains, 90%).
    one = [(40, 60, 4, 96)]
    feats, dom, routed = _table(one)
    alone = feature_log_odds(feats, dom, routed).set_index("value").loc["v"]
    assert alone["log_odds"] == pytest.approx(math.log(40.5 * 96.5 / (60.5 * 4.5)))
    for absent in (9, 39):
        cells = one + [(0, int(100 * routed_share), 0, 100 - int(100 * routed_share))] * absent
        feats, dom, routed = _table(cells)
        many = feature_log_odds(feats, dom, routed).set_index("value").loc["v"]
        assert many["log_odds"] == pytest.approx(alone["log_odds"], rel=1e-12), absent
        assert many["ci_low"] == pytest.approx(alone["ci_low"], rel=1e-12)
        assert many["expected_routed"] == pytest.approx(alone["expected_routed"])
        assert many["significant"]


def test_domain_filter_restricts_to_that_domain():
    feats, dom, routed = _table([(30, 70, 10, 90), (5, 5, 5, 5)])
    only0 = feature_log_odds(feats, dom, routed, domains=[0])
    v = only0[only0["value"] == "v"].iloc[0]
    assert (v["routed_rows"], v["other_rows"]) == (100, 100)
    assert v["log_odds"] == pytest.approx(math.log(30.5 * 90.5 / (70.5 * 10.5)))


def test_shuffled_routing_finds_nothing_significant():
    """A planted routing (domain 0's rows go to the expert when its mechanism 1 is high) has
    significant values; the same routing shuffled within each domain has (BH at 5%: at most a
    5% chance per shuffle of any false discovery) nothing significant in almost every shuffle, and
    its p-values are uniform."""
    planted = make_planted_frame(num_rows=20_000, num_domains=4, seed=1)
    f = planted.frame
    feats = {c: f[c].to_numpy() for c in ("cat_a", "cat_b", "cat_c", "cat_d", "num_0", "num_1")}
    dom = f["domain"].str.replace("domain_", "").astype(int).to_numpy()
    routed = (dom < 2) & (planted.mechanisms[:, 1] > 0)
    assert feature_log_odds(feats, dom, routed)["significant"].sum() > 5
    rng = np.random.default_rng(0)
    any_found, small_p, tested = 0, 0, 0
    for _ in range(20):
        shuffled = routed.copy()
        for d in range(4):
            idx = np.flatnonzero(dom == d)
            shuffled[idx] = routed[rng.permutation(idx)]
        t = feature_log_odds(feats, dom, shuffled)
        assert len(t) > 250  # every value of every feature was tested
        any_found += bool(t["significant"].any())
        small_p += int((t["p_value"] < 0.05).sum())
        tested += len(t)
    assert any_found <= 3  # expected <= 1 of 20
    assert 0.03 < small_p / tested < 0.07


def test_planted_mechanism_features_come_out_on_top():
    """Route each domain's rows to its own expert when its specific mechanism is high: the
    features that mechanism reads are the most over-represented for that expert."""
    planted = make_planted_frame(num_rows=30_000, num_domains=3, seed=2)
    f, truth = planted.frame, planted.truth
    dom = f["domain"].str.replace("domain_", "").astype(int).to_numpy()
    cats = ("cat_a", "cat_b", "cat_c", "cat_d")
    feats = {c: f[c].to_numpy() for c in cats}
    feats.update({c: f[c].to_numpy().astype(np.float64) for c in ("num_0", "num_1", "num_2")})
    feats["num_3"] = f["num_3"].to_numpy().astype(np.float64)
    member = np.asarray(truth["domain_mechanism"])
    for d in range(3):
        k = int(np.flatnonzero(member[d, 1:])[0]) + 1  # the domain's first specific mechanism
        routed = (dom == d) & (planted.mechanisms[:, k] > 0.5)
        t = feature_log_odds(feats, dom, routed)
        assert t["significant"].any()
        best = t.groupby("feature")["ci_low"].max().sort_values(ascending=False)
        reads = set(truth["mechanism_features"][k])
        # the top feature is one the mechanism reads, and no feature it does not read is
        # significant while those it reads lead the table
        assert best.index[0] in reads, (k, reads, best.head())
        sig = set(t.loc[t["significant"], "feature"])
        assert sig & reads
        top3 = set(best.index[:2])
        assert top3 <= reads | {"user_id", "item_id"}


def test_values_expected_in_few_routed_rows_are_shown_but_not_tested():
    # domain 0: 100 routed and 900 other rows, v in 2 routed and 3 other rows; domain 1: 50 and 50,
    # v in 4 routed and 1 other.  Expected routed rows with v under no association:
    # 100 * 5 / 1000 + 50 * 5 / 100 = 3.0, below the default 20: shown, not tested
    cells = [(2, 98, 3, 897), (4, 46, 1, 49)]
    feats, dom, routed = _table(cells)
    t = feature_log_odds(feats, dom, routed)
    v = t[t["value"] == "v"].iloc[0]
    assert v["expected_routed"] == pytest.approx(3.0)
    assert v["log_odds"] > 1.0 and v["ci_low"] > 0  # strongly over-represented on its face
    assert math.isnan(v["p_value"]) and math.isnan(v["q_value"]) and not v["significant"]
    w = t[t["value"] == "w"].iloc[0]  # the common value: 150 - 3 = 147 expected, tested
    assert w["expected_routed"] == pytest.approx(147.0)
    assert 0 <= w["p_value"] <= 1 and w["q_value"] == pytest.approx(w["p_value"])  # BH of one
    # with no threshold both are tested and BH runs over the two p-values
    t0 = feature_log_odds(feats, dom, routed, min_expected=0)
    assert t0["p_value"].notna().all()
    v0 = t0[t0["value"] == "v"].iloc[0]
    se = (v0["ci_high"] - v0["log_odds"]) / 1.959964
    assert v0["p_value"] == pytest.approx(2 * norm.sf(v0["log_odds"] / se))  # the Wald p-value
    with pytest.raises(ValueError, match="min_expected=-1 must be >= 0"):
        feature_log_odds(feats, dom, routed, min_expected=-1)


def test_benjamini_hochberg_matches_hand_values():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.06, 0.0533, 0.5 -> step-up min: .04, .0533, .0533, .5
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_top_values_per_feature():
    feats, dom, routed = _table([(30, 70, 10, 90)])
    feats["g"] = np.where(np.arange(len(dom)) % 2 == 0, "even", "odd")
    t = feature_log_odds(feats, dom, routed)
    top = top_values(t, 1)
    assert sorted(top["feature"]) == ["f", "g"]
    assert top.loc[top["feature"] == "f", "value"].item() == "v"
    with pytest.raises(ValueError, match="top_n"):
        top_values(t, 0)


def test_errors_name_the_problem():
    feats, dom, routed = _table([(3, 7, 1, 9)])
    with pytest.raises(ValueError, match="feature 'f' has 5 rows"):
        feature_log_odds({"f": feats["f"][:5]}, dom, routed)
    with pytest.raises(ValueError, match="routed has shape"):
        feature_log_odds(feats, dom, routed[:3])
    with pytest.raises(ValueError, match="features is empty"):
        feature_log_odds({}, dom, routed)
    with pytest.raises(ValueError, match="expert=9"):
        routed_mask(np.array([[0, 1]]), 9, num_experts=4)


def test_expert_profiles_against_sklearn():
    rng = np.random.default_rng(0)
    n, e = 400, 4
    dom = rng.integers(0, 2, n)
    topk = np.stack([rng.permutation(e)[:2] for _ in range(n)])
    y = rng.integers(0, 2, n).astype(float)
    p = rng.random(n)
    summary, per_domain = expert_profiles(dom, topk, y, p, num_experts=e, domain_names=["a", "b"])
    for ex in range(e):
        m = (topk == ex).any(1)
        row = summary.iloc[ex]
        assert row["rows"] == m.sum()
        assert row["mean_prediction"] == pytest.approx(p[m].mean())
        assert row["label_rate"] == pytest.approx(y[m].mean())
        assert row["auc"] == pytest.approx(roc_auc_score(y[m], p[m]))
        md = m & (dom == 1)
        r = per_domain[(per_domain["expert"] == ex) & (per_domain["domain"] == "b")].iloc[0]
        assert r["rows"] == md.sum()
        assert r["auc"] == pytest.approx(roc_auc_score(y[md], p[md]))
    assert isinstance(summary, pd.DataFrame) and summary["share"].sum() == pytest.approx(2.0)


def test_domain_contrast_says_when_the_domain_alone_picks_the_expert() -> None:
    """Hand-built: domain 0 sends every row to the expert, domain 1 half, domain 2 none."""
    import numpy as np

    from analysis.experts import domain_contrast, feature_log_odds

    domain = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    routed = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    t = domain_contrast(domain, routed)
    assert t["domain"].tolist() == [0, 1]  # default scope: domains with a routed row
    assert t["routed"].tolist() == [3, 2] and t["other"].tolist() == [0, 2]
    assert t["contrast"].tolist() == [False, True]
    t = domain_contrast(domain, routed, domains=[0, 2])
    assert t["contrast"].tolist() == [False, False]  # all or none in each: domain alone decides
    # routing that is a function of the domain: no contrast, and no value can come out significant
    dom = np.repeat([0, 1], 500)
    only = dom == 0
    feat = {"f": np.where(np.arange(1000) % 2 == 0, "a", "b")}
    assert not domain_contrast(dom, only)["contrast"].any()
    assert not feature_log_odds(feat, dom, only)["significant"].any()


def test_expert_profiles_without_labels_counts_rows_and_leaves_label_columns_out():
    dom = np.array([0, 0, 1, 1, 1])
    top = np.array([[0, 1], [0, 2], [1, 2], [1, 0], [2, 1]])
    summary, per_domain = expert_profiles(dom, top, None, None, num_experts=3, num_domains=2)
    assert list(summary.columns) == ["expert", "rows", "share", "domains"]
    assert summary["rows"].tolist() == [3, 4, 3]  # rows with the expert among their top-2
    assert list(per_domain.columns) == ["expert", "domain", "rows"]
    assert per_domain.loc[per_domain.expert == 1, "rows"].tolist() == [1, 3]


def test_significant_values_come_before_untested_ones():
    """At 40 domains the top of the table was rare, untested ids (wide intervals from few rows,
    some with a high lower end) above every significant value; they now follow the tested ones."""
    rng = np.random.default_rng(0)
    n = 4000
    dom = np.repeat(np.arange(40), n // 40)
    routed = rng.random(n) < 0.5
    # "hit" in 30% of routed rows and 20% of the others: modest, but significant over 4000 rows
    common = np.where(rng.random(n) < np.where(routed, 0.3, 0.2), "hit", "miss")
    rare = np.full(n, "other", dtype=object)
    rows = np.flatnonzero(routed & (dom == 0))[:15]
    rare[rows] = "rare"  # 15 routed rows of one domain: a high lower end, too few to test
    t = feature_log_odds({"common": common, "rare": rare}, dom, routed)
    r = t.set_index("value")
    assert r.loc["rare", "ci_low"] > r.loc["hit", "ci_low"]  # ranked by ci_low alone, rare led
    top = t.iloc[0]
    assert (top["feature"], top["value"], bool(top["significant"])) == ("common", "hit", True)
    untested = t[t["p_value"].isna()]
    assert len(untested) and untested.index.min() > t[t["p_value"].notna()].index.max()
    shown = t.head(2)
    assert shown["significant"].iloc[0] and not shown["p_value"].isna().any()
