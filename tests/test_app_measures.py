"""AppTest: the Information page shows each MI and recovery value next to its ceiling at the
model's (E, k, D), and the Overview shows no gate-collapse alarm on the shipped default model."""

from __future__ import annotations

import math

import pytest
from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    DEFAULT,
    SHIPPED,
    _app_on_path,
    _env,
    assert_clean,
    evaluate_directly,
    pytestmark,
    run_page,
)


@pytest.fixture(scope="module")
def k4():
    """The shipped k = 4 checkpoint, where the hard ceiling log(E/k) = log 2 < H(D) binds."""
    return evaluate_directly(SHIPPED / "cesaa-k4")


def test_information_shows_ceilings_and_fractions(k4):
    from analysis.measures import mi_ceiling, mutual_information
    from analysis.truth import truth_recovery

    ckpt, data, col = k4
    at = run_page("information", ckpt=SHIPPED / "cesaa-k4")
    assert_clean(at)
    shown = {m.label: m.value for m in at.metric}
    fraction = mutual_information(col.stats, "hard", normalized=True)
    assert shown["hard, fraction of ceiling"] == f"{fraction:.3f}"
    frames = {df.value.index.name: df.value for df in at.dataframe}
    mi = frames["routing"]  # the MI table: index soft / hard
    assert mi.loc["hard", "bound"] == pytest.approx(math.log(8 / 4))  # E = 8, k = 4
    # the test split's domains are not exactly balanced: the best routing stays a hair below
    assert mi.loc["hard", "ceiling"] == pytest.approx(math.log(8 / 4), rel=1e-3)
    assert mi.loc["hard", "ceiling is"] == "reachable"
    assert mi.loc["hard", "ceiling"] == pytest.approx(mi_ceiling(col.stats, "hard"))
    assert mi.loc["hard", "fraction"] == pytest.approx(fraction)
    assert mi.loc["soft", "nats"] == pytest.approx(mutual_information(col.stats, "soft"))
    rec = truth_recovery(col.stats, data.truth, kind="hard", domain_names=list(ckpt.domain_names))
    table = frames["measure"]  # the recovery table: score / set_jaccard / exact_match
    assert table.loc["set_jaccard", "value"] == pytest.approx(rec.set_jaccard)
    assert table.loc["score", "ceiling"] == pytest.approx(0.8)  # E = 8, D = 4, k = 4
    assert shown["Domain-set Jaccard"] == f"{rec.set_jaccard:.3f}"


def test_overview_of_the_default_model_has_no_gate_collapse_alarm():
    at = run_page("overview", ckpt=DEFAULT)
    assert_clean(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "gate collapsed" not in warnings


def test_information_shows_the_planted_groups_recovered():
    """cesaa-d40's data plant 8 groups of domains: the page shows their recovery from the routing
    as analysis.domain_groups computes it on the same rows; the 4-domain data plant none."""
    from analysis.domain_groups import group_recovery

    ckpt, data, col = evaluate_directly(SHIPPED / "cesaa-d40")
    at = run_page("information", ckpt=SHIPPED / "cesaa-d40")
    assert_clean(at)
    shown = {m.label: m.value for m in at.metric}
    rec = group_recovery(col.stats, data.truth["domain_group"], "hard")
    assert shown["Planted groups recovered (ARI)"] == f"{rec.ari:.3f}"
    assert shown["Planted groups recovered (NMI)"] == f"{rec.nmi:.3f}"
    at = run_page("information", ckpt=DEFAULT)
    assert not any(m.label.startswith("Planted groups") for m in at.metric)
