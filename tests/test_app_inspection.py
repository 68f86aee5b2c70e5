"""AppTest visits of the inspection pages (Experts, Rows, Routing over training) on the shipped
checkpoints, checked against ``analysis`` called directly.  Harness: ``apptest_support``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    DEFAULT,
    SHIPPED,
    _app_on_path,
    _env,
    arr,
    assert_clean,
    charts,
    pytestmark,
    run_page,
)


def test_experts_page_matches_the_analysis():
    from analysis.experts import feature_log_odds, routed_mask
    from analysis.rows import kept_columns
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data

    at = run_page("experts", DEFAULT)
    assert_clean(at)
    figs = charts(at)
    assert {"ex_logodds", "ex_similarity", "ex_overlap"} <= set(figs)
    sim = arr(figs["ex_similarity"]["data"][0]["z"])
    assert sim.shape == (8, 8)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    # the bars are expert 0's top values, as analysis computes them on the same rows
    ckpt = load_checkpoint(DEFAULT)
    desc = ckpt.meta["data"]["description"]
    test = load_data(
        desc["source"], split=desc["split"], seed=desc["seed"], encoders=ckpt.encoders
    ).test
    with torch.no_grad():
        out = ckpt.model.eval()(test.cat, test.num, test.domain)
    table = feature_log_odds(
        kept_columns(test.cat, test.num, ckpt.encoders),
        test.domain.numpy(),
        routed_mask(out.topk_idx.numpy(), 0, 8),
    )
    bars = figs["ex_logodds"]["data"][0]
    np.testing.assert_allclose(arr(bars["x"])[::-1], table["log_odds"].head(15), rtol=1e-6)
    # filter by domain and pick another expert
    at.selectbox(key="ex_expert").set_value(2)
    at.multiselect(key="ex_domains").set_value(["domain_1"]).run()
    assert_clean(at)
    at.radio(key="ex_method").set_value("cosine")
    at.toggle(key="ex_cluster").set_value(False).run()
    assert_clean(at)
    # expert 1 takes every test row of domain_0 and none of the others (derived below from the
    # routing): the page says the domain alone picks it instead of showing an empty chart as if
    # the expert had learned nothing; expert 2 takes some rows of domain_1 (and all of domain_3)
    dom, topk = test.domain.numpy(), out.topk_idx.numpy()
    for e, whole in ((1, True), (2, False)):
        routed = (topk == e).any(axis=1)
        used = np.unique(dom[routed])
        mixed = [d for d in used if 0 < routed[dom == d].sum() < (dom == d).sum()]
        assert (not mixed) == whole
    at.multiselect(key="ex_domains").set_value([])
    at.selectbox(key="ex_expert").set_value(1).run()
    assert_clean(at)
    assert any("the domain alone decides" in w.value for w in at.warning)
    at.selectbox(key="ex_expert").set_value(2).run()
    assert not any("the domain alone decides" in w.value for w in at.warning)
    contrast = f"{len(mixed)} of {len(used)} domains hold a contrast"  # expert 2's, from above
    assert any(contrast in c.value for c in at.caption)


def test_rows_page_lookup_contributions_and_swap():
    at = run_page("rows", DEFAULT)
    assert_clean(at)
    figs = charts(at)
    assert {"rw_contrib", "rw_gate", "rw_swap_logit", "rw_swap_tv"} <= set(figs)
    dl = arr(figs["rw_swap_logit"]["data"][0]["z"])
    assert dl.shape == (4, 4)
    np.testing.assert_allclose(np.diag(dl), 0.0)
    assert (dl[~np.eye(4, dtype=bool)] > 0).all()
    # look a row up by a kept column
    at.selectbox(key="rw_column").set_value("cat_d").run()
    assert any("Type a value" in i.value for i in at.info)
    at.text_input(key="rw_value").set_value("3").run()
    assert_clean(at)
    at.text_input(key="rw_value").set_value("no such value").run()
    assert not at.exception
    assert any("No sampled test row" in i.value for i in at.info)


def test_rows_page_on_a_dense_gate_model():
    """MMoE: no per-expert contributions (it is not a CESAA-family model: the page says why), a
    dense gate, and the domain swap still shown."""
    at = run_page("rows", SHIPPED / "mmoe")
    assert_clean(at)
    assert any("not a CESAA-family model" in i.value for i in at.info)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Selected experts"] == "dense"
    assert 0.0 <= float(shown["Prediction"]) <= 1.0
    figs = charts(at)
    assert "rw_contrib" not in figs
    for key in ("rw_swap_logit", "rw_swap_tv"):
        z = arr(figs[key]["data"][0]["z"])
        assert z.shape == (4, 4)
        np.testing.assert_allclose(np.diag(z), 0.0, atol=1e-9)  # a row as its own domain
    tv = arr(figs["rw_swap_tv"]["data"][0]["z"])
    assert (tv >= 0).all() and (tv <= 1).all()


@pytest.mark.parametrize(("name", "experts"), [("cesaa", 8), ("mmoe", 8), ("cesaa-k1", 8)])
def test_inspection_pages_on_shipped_checkpoints(name, experts):
    import json

    meta = json.loads((SHIPPED / name / "meta.json").read_text())
    assert meta["model"]["config"]["num_experts"] == experts
    at = run_page("experts", SHIPPED / name)
    assert_clean(at)
    summary = at.dataframe[0].value  # one row per expert, shares of the rows routed to it
    assert summary["expert"].tolist() == list(range(experts))
    # the expert's share in the gate's own notion (selections for top-k, gate weight for dense)
    share = summary[next(c for c in summary.columns if str(c).startswith("share of"))]
    assert (share >= 0).all() and (share <= 1).all() and share.sum() == pytest.approx(1.0)
    assert "ex_logodds" in charts(at) or any("domain alone decides" in w.value for w in at.warning)
    at = run_page("rows", SHIPPED / name)
    assert_clean(at)
    dl = arr(charts(at)["rw_swap_logit"]["data"][0]["z"])
    assert dl.shape == (4, 4)
    np.testing.assert_allclose(np.diag(dl), 0.0, atol=1e-9)
    at = run_page("evolution", SHIPPED / name)
    assert_clean(at)
    statement = " ".join(m.value for m in at.markdown)
    assert "settled" in statement and "unrelated routing gives, k/E" in statement
    sat = arr(charts(at)["ev_lines"]["data"][0]["y"])
    assert sat[-1] == 1.0 and ((sat >= 0) & (sat <= 1)).all()


def test_evolution_page_on_a_run_with_snapshots(tmp_path, monkeypatch):
    from cesaa.config import TrainConfig
    from cesaa.data import load_data
    from cesaa.models.registry import default_config
    from cesaa.train import train

    torch.set_num_threads(1)
    run = tmp_path / "runs" / "snap"
    data = load_data("synthetic:rows=3000,domains=3,seed=0")
    cfg = default_config(
        "cesaa", expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=4, top_k=2
    )
    train(cfg, TrainConfig(epochs=3, batch_size=256, lr=1e-2, routing_snapshots=True), data, run)
    at = run_page("evolution", run)
    assert_clean(at)
    assert any("settled" in m.value or "not settled" in m.value for m in at.markdown)
    figs = charts(at)
    sat = arr(figs["ev_lines"]["data"][0]["y"])
    assert sat[-1] == 1.0 and len(sat) == 3
    assert arr(figs["ev_activation"]["data"][0]["z"]).shape == (3, 4)
    # probabilities on the fixed 0..1 scale (it used to end at the largest value shown)
    assert (figs["ev_activation"]["data"][0]["zmin"], figs["ev_activation"]["data"][0]["zmax"]) == (
        0,
        1,
    )
    at.select_slider(key="ev_epoch").set_value(1).run()
    assert_clean(at)


def test_evolution_page_without_snapshots_says_how_to_get_them(tmp_path):
    """On a run trained without snapshots (the shipped checkpoints have them, so the old test on
    DEFAULT could only pass through its ``or charts(at)``)."""
    from cesaa.config import TrainConfig
    from cesaa.data import load_data
    from cesaa.models.registry import default_config
    from cesaa.train import train

    torch.set_num_threads(1)
    run = tmp_path / "runs" / "nosnap"
    data = load_data("synthetic:rows=2000,domains=3,seed=0")
    cfg = default_config(
        "cesaa", expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=4, top_k=2
    )
    train(cfg, TrainConfig(epochs=1, batch_size=256, routing_snapshots=False), data, run)
    assert not (run / "routing").exists()
    at = run_page("evolution", run)
    assert_clean(at)
    (info,) = at.info
    assert "trained without routing snapshots" in info.value
    assert "routing_snapshots=true" in info.value
    assert not charts(at)


def test_inspection_pages_read_at_40_domains_and_32_experts(tmp_path):
    """Many domains: the pages render, heatmaps are clustered by routing profile (a toggle back
    to the natural order) and the domain filter restricts the swap matrices."""
    from cesaa.config import TrainConfig
    from cesaa.data import load_data
    from cesaa.models.registry import default_config
    from cesaa.train import train

    torch.set_num_threads(1)
    run = tmp_path / "runs" / "many"
    data = load_data("synthetic:rows=6000,domains=40,seed=0")
    cfg = default_config(
        "cesaa", embed_dim=4, expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=32
    )
    train(cfg, TrainConfig(epochs=2, batch_size=512, lr=1e-2, routing_snapshots=True), data, run)
    for page in ("experts", "evolution", "routing"):
        at = run_page(page, run)
        assert_clean(at)
    at = run_page("rows", run, rw_size=200)
    assert_clean(at)
    names = [f"domain_{d}" for d in range(40)]
    clustered = charts(at)["rw_swap_logit"]["data"][0]["y"]
    assert sorted(clustered) == sorted(names) and clustered != names
    at.toggle(key="rw_cluster").set_value(False).run()
    assert charts(at)["rw_swap_logit"]["data"][0]["y"] == names
    at.multiselect(key="rw_domains").set_value(["domain_3", "domain_7"]).run()
    assert_clean(at)
    assert arr(charts(at)["rw_swap_logit"]["data"][0]["z"]).shape == (2, 2)
    (top,) = [d.value for d in at.dataframe if "mean |Δlogit| to other domains" in d.value]
    assert len(top) == 10  # a top-N table instead of 40 unreadable bars
    assert top["mean |Δlogit| to other domains"].is_monotonic_decreasing


def test_experts_page_at_40_domains_shows_significant_values_first():
    """The shipped 40-domain checkpoint: an expert's top-15 bars were all grey, untested ids
    (34 values were significant, none visible); the tested, significant values now lead.  Expert
    10 of today's checkpoint takes part of the rows of 24 domains (2,246 test rows)."""
    from analysis.figures import PALETTE

    at = run_page("experts", SHIPPED / "cesaa-d40")
    assert_clean(at)
    at.selectbox(key="ex_expert").set_value(10).run()
    assert_clean(at)
    bars = charts(at)["ex_logodds"]["data"][0]
    colors = bars["marker"]["color"][::-1]  # drawn bottom-up: the first value is the last bar
    assert colors[0] == PALETTE[0] and colors.count(PALETTE[0]) >= 10, colors
    caption = " ".join(c.value for c in at.caption)
    assert "values tested" in caption


def test_routing_heatmaps_share_a_fixed_scale_unless_contrast_is_asked():
    at = run_page("routing", DEFAULT)
    assert_clean(at)
    soft = charts(at)["rt_soft"]["data"][0]
    assert (soft["zmin"], soft["zmax"]) == (0.0, 1.0)
    assert any("uniform" in t for t in soft["colorbar"]["ticktext"])
    at.toggle(key="rt_contrast").set_value(True).run()
    assert_clean(at)
    soft = charts(at)["rt_soft"]["data"][0]
    z = arr(soft["z"])
    assert soft["zmax"] == pytest.approx(z.max()) and soft["zmin"] == pytest.approx(z.min())
    assert "contrast" in soft["colorbar"]["title"]["text"]
