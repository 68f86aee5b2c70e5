from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis import figures

DOMAINS = ["news", "video", "shop"]
EXPERTS = ["e0", "e1", "e2", "e3"]


def test_activation_heatmap_has_domain_rows_expert_columns_and_the_exact_values():
    act = np.random.default_rng(0).dirichlet(np.ones(4), size=3)  # [D=3, E=4]
    fig = figures.activation_heatmap(act, DOMAINS, EXPERTS, "P(e|d)")
    (hm,) = fig.data
    z = np.asarray(hm.z)
    assert z.shape == (3, 4)
    np.testing.assert_array_equal(z, act)
    assert list(hm.y) == DOMAINS and list(hm.x) == EXPERTS
    assert fig.layout.yaxis.autorange == "reversed"  # first domain on top, as in the matrix
    assert hm.text[2][1] == f"{act[2, 1]:.2f}"


def test_heatmap_default_names_and_bad_names():
    fig = figures.activation_heatmap(np.eye(2))
    assert list(fig.data[0].y) == ["domain_0", "domain_1"]
    with pytest.raises(ValueError, match="expert_names has 3 names but the data has 2"):
        figures.activation_heatmap(np.eye(2), None, ["a", "b", "c"])
    with pytest.raises(ValueError, match="act must be 2-D"):
        figures.activation_heatmap(np.ones(3))


def test_nan_cells_have_no_text():
    fig = figures.activation_heatmap(np.array([[0.5, 0.5], [np.nan, np.nan]]))
    assert list(fig.data[0].text[1]) == ["", ""]


def test_aligned_difference_heatmap_is_diverging_around_zero_with_the_exact_values():
    diff = np.array([[-0.1, 0.1, 0.0, 0.0], [0.0, 0.0, 0.25, -0.25], [0.0, 0.0, 0.0, 0.0]])
    fig = figures.aligned_difference_heatmap(diff, DOMAINS, EXPERTS, "B - A")
    (hm,) = fig.data
    np.testing.assert_array_equal(np.asarray(hm.z), diff)
    assert list(hm.y) == DOMAINS and list(hm.x) == EXPERTS
    assert (hm.zmin, hm.zmid, hm.zmax) == (-0.25, 0.0, 0.25)  # symmetric: white is no change
    assert hm.colorscale == go.Heatmap(colorscale=figures.DIVERGING).colorscale
    assert hm.text[0][0] == "-0.10" and hm.text[0][1] == "+0.10"
    assert fig.layout.yaxis.autorange == "reversed"
    fixed = figures.aligned_difference_heatmap(np.zeros((2, 2)))  # no change: a valid scale
    assert (fixed.data[0].zmin, fixed.data[0].zmax) == (-1.0, 1.0)
    assert list(fixed.data[0].x) == ["expert_0", "expert_1"]
    assert figures.aligned_difference_heatmap(diff, zmax=1.0).data[0].zmin == -1.0
    with pytest.raises(ValueError, match="diff must be 2-D"):
        figures.aligned_difference_heatmap(np.ones(3))
    with pytest.raises(ValueError, match="domain_names has 2 names but the data has 3"):
        figures.aligned_difference_heatmap(diff, DOMAINS[:2])


def test_load_bars_and_coactivation():
    load = np.array([0.4, 0.3, 0.2, 0.1])
    fig = figures.load_bars(load, EXPERTS, soft=np.full(4, 0.25))
    np.testing.assert_array_equal(np.asarray(fig.data[0].y), load)
    assert len(fig.data) == 2 and list(fig.data[0].x) == EXPERTS
    assert fig.layout.shapes[0].y0 == pytest.approx(0.25)  # the uniform line 1/E
    co = np.eye(4) * 0.5
    fig = figures.coactivation_heatmap(co, EXPERTS)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), co)


def test_entropy_distributions_one_trace_per_domain():
    h = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    dom = np.array([0, 0, 1, 2, 2])
    for build in (figures.entropy_violin, figures.entropy_histogram):
        fig = build(h, dom, DOMAINS, max_entropy=np.log(4))
        assert [t.name for t in fig.data] == DOMAINS
        values = [np.asarray(t.y if t.type == "violin" else t.x) for t in fig.data]
        np.testing.assert_array_equal(values[2], [0.4, 0.5])
    with pytest.raises(ValueError, match="entropy has 5 rows but domain has 2"):
        figures.entropy_violin(h, dom[:2], DOMAINS)


def test_knockout_heatmap_pivots_target_by_domain():
    rows = [
        (t, d, 0.7, 0.5, i * 0.01 - j * 0.1, 0.0)
        for i, t in enumerate(["expert 0", "expert 1", "shared"])
        for j, d in enumerate(["overall", *DOMAINS])
    ]
    df = pd.DataFrame(
        rows, columns=["target", "domain", "auc", "logloss", "delta_auc", "delta_logloss"]
    )
    fig = figures.knockout_heatmap(df)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3, 4)
    assert list(fig.data[0].y) == ["expert 0", "expert 1", "shared"]
    assert list(fig.data[0].x) == ["overall", *DOMAINS]
    assert z[2, 1] == pytest.approx(0.02 - 0.1)
    assert fig.data[0].zmid == 0
    with pytest.raises(ValueError, match="needs a 'target' column"):
        figures.knockout_heatmap(df.drop(columns="target"))


def test_k_curve_one_line_per_domain_sorted_by_k():
    df = pd.DataFrame(
        {
            "k": [2, 1, 2, 1],
            "domain": ["overall", "overall", "news", "news"],
            "auc": [0.7, 0.6, 0.8, 0.65],
            "logloss": 0.5,
            "active_experts": 0,
        }
    )
    fig = figures.k_curve_figure(df)
    assert [t.name for t in fig.data] == ["overall", "news"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.6, 0.7]


def test_embedding_scatter_one_trace_per_label():
    xy = np.random.default_rng(1).normal(size=(10, 2))
    lab = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fig = figures.embedding_scatter(xy, lab, DOMAINS)
    assert [t.name for t in fig.data] == DOMAINS
    assert sum(len(t.x) for t in fig.data) == 10
    np.testing.assert_array_equal(np.asarray(fig.data[0].x), xy[lab == 0, 0])
    with pytest.raises(ValueError, match=r"xy must be \[n, 2\]"):
        figures.embedding_scatter(np.zeros((3, 3)), [0, 0, 0])


def test_training_truth_and_metric_figures():
    history = [
        {"epoch": 1, "train/loss": 0.7, "val/auc": 0.6},
        {"epoch": 2, "train/loss": 0.6, "val/auc": 0.65},
    ]
    fig = figures.training_curve(history)
    assert [t.name for t in fig.data] == ["train/loss", "val/auc"]
    truth = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0]])
    act = np.full((3, 4), 0.25)
    fig = figures.truth_vs_learned(truth, act, DOMAINS, ["m0", "m1", "m2"], EXPERTS)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), truth)
    np.testing.assert_array_equal(np.asarray(fig.data[1].z), act)
    with pytest.raises(ValueError, match="truth has 3 domains but activation has 2"):
        figures.truth_vs_learned(truth, act[:2])
    metrics = {"auc": 0.7, "auc/news": 0.6, "auc/video": 0.8, "auc/shop": None}
    fig = figures.metric_bars(metrics, DOMAINS)
    np.testing.assert_array_equal(np.asarray(fig.data[0].y), [0.6, 0.8, np.nan])


def test_fixed_size_and_static_config():
    fig = figures.activation_heatmap(np.eye(3), width=800, height=300)
    assert (fig.layout.width, fig.layout.height, fig.layout.autosize) == (800, 300, False)
    assert figures.html_config(static=True)["displayModeBar"] is False
    assert "displayModeBar" not in figures.html_config()


def test_token_text_html_colours_by_top1_and_escapes():
    from analysis.figures.tokens import expert_colour, token_text_html

    top = np.array([[2, 0], [1, 2]])
    probs = np.array([[0.3, 0.1, 0.6], [0.1, 0.5, 0.4]])
    html = token_text_html(["<b>", " x"], top, 3, probs=probs)
    spans = html.split("</span>")
    assert expert_colour(2, 3) in spans[0] and expert_colour(1, 3) in spans[1]
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert 'title="expert 2 (0.60), expert 0 (0.30)"' in html
    with pytest.raises(ValueError, match="expert index 3 outside"):
        token_text_html(["a"], np.array([[3]]), 3)


def test_probabilities_share_a_fixed_scale_with_uniform_marked():
    """A near-uniform gate (0.12-0.13 at E = 8) was drawn from white to dark blue by plotly's own
    range; on the fixed 0..1 scale it stays pale, with 1/E = 0.125 marked as uniform."""
    rng = np.random.default_rng(0)
    act = 0.125 + rng.uniform(-0.005, 0.005, size=(4, 8))
    (hm,) = figures.activation_heatmap(act).data
    assert (hm.zmin, hm.zmax) == (0.0, 1.0)
    assert 0.125 in hm.colorbar.tickvals
    assert any("uniform" in t for t in hm.colorbar.ticktext)
    # the contrast view stretches the colours over the data, and says so
    fig = figures.activation_heatmap(act, contrast=True)
    (hm,) = fig.data
    assert (hm.zmin, hm.zmax) == (pytest.approx(act.min()), pytest.approx(act.max()))
    assert "contrast" in fig.layout.title.text and "contrast" in hm.colorbar.title.text


def test_matrix_heatmap_of_one_zero_cell_has_a_range_from_zero():
    from analysis.figures.inspection import matrix_heatmap

    # the Rows page filtered to one domain: a single 0.00 cell got a -0.5..0.5 colour bar
    (hm,) = matrix_heatmap(np.zeros((1, 1)), ["a"], ["a"], "one cell").data
    assert hm.zmin == 0.0 and hm.zmax > 0.0
    (hm,) = matrix_heatmap(np.array([[0.2, 0.4]]), ["a", "b"], ["r"], "t").data
    assert (hm.zmin, hm.zmax) == (0.0, pytest.approx(0.4))


def _k_table(names: list[str]) -> pd.DataFrame:
    rows = [
        {"k": k, "domain": n, "auc": 0.6 + 0.01 * k + 0.001 * i}
        for k in (1, 2, 3)
        for i, n in enumerate(["overall", *names])
    ]
    return pd.DataFrame(rows)


def test_one_colour_per_domain_across_figures():
    """domain_0 was blue in the metric bars and orange in the k curve ("overall" took the first
    colour there): every figure now colours a domain by figures.domain_color."""
    names = ["d0", "d1", "d2", "d3"]
    metrics = {f"auc/{n}": 0.7 + 0.01 * i for i, n in enumerate(names)}
    bars = figures.metric_bars(metrics, names, "auc").data[0].marker.color
    lines = {t.name: t.line.color for t in figures.k_curve_figure(_k_table(names)).data}
    violin = {t.name: t.line.color for t in figures.entropy_violin(
        np.zeros(8), np.repeat(np.arange(4), 2), names).data}  # fmt: skip
    for i, n in enumerate(names):
        assert bars[i] == lines[n] == violin[n] == figures.domain_color(i, 4)
    assert lines["overall"] not in bars


def test_forty_domains_get_top_and_bottom_bars_and_a_k_heatmap():
    names = [f"d{i}" for i in range(40)]
    metrics = {f"auc/{n}": 0.5 + 0.01 * i for i, n in enumerate(names)}
    fig = figures.metric_bars(metrics, names, "auc")
    (bar,) = fig.data
    assert list(bar.x) == [f"d{i}" for i in (39, 38, 37, 36, 35, 34, 5, 4, 3, 2, 1, 0)]
    assert "6 highest and 6 lowest of 40 domains" in fig.layout.title.text
    assert bar.marker.color[0] == figures.domain_color(39, 40)
    kc = figures.k_curve_figure(_k_table(names))
    (hm,) = kc.data
    assert hm.type == "heatmap" and np.asarray(hm.z).shape == (41, 3)
    assert list(hm.y)[:2] == ["overall", "d0"]
