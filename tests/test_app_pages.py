"""AppTest tests of every dashboard page (``app/``), run against the shipped checkpoints.

Chart contents are read from the plotly figure JSON each page sends and compared with what
``cesaa`` and ``analysis`` compute directly (the oracle).  Streamlit caches are process-global:
they are cleared around the module.  AppTest drops the entry file's sidebar elements on pages
other than the first run's, so tests select a checkpoint through ``session_state["nav_ckpt"]``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from io import BytesIO

import numpy as np
import pytest
from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    DEFAULT,
    PAGES,
    REPO,
    SHIPPED,
    _app_on_path,
    _env,
    arr,
    assert_clean,
    charts,
    evaluate_directly,
    pytestmark,
    run_page,
)


@pytest.fixture(scope="module")
def oracle():
    """The default checkpoint evaluated directly with cesaa + analysis."""
    return evaluate_directly(DEFAULT)


# ---- one test per page ---------------------------------------------------------------------------


def test_overview_shows_model_card_metrics_and_all_checkpoints(oracle):
    from cesaa.train import evaluate

    ckpt, data, _ = oracle
    at = run_page()
    assert_clean(at)
    assert at.selectbox(key="nav_ckpt").value == str(DEFAULT.resolve())
    figs = charts(at)
    assert {"ov_history", "ov_auc_bars"} <= set(figs)
    m = evaluate(ckpt.model, data.test, ckpt.domain_names)
    bars = figs["ov_auc_bars"]["data"][0]
    assert bars["x"] == list(ckpt.domain_names)
    assert arr(bars["y"]) == pytest.approx([m[f"auc/{d}"] for d in ckpt.domain_names])
    listed = at.dataframe[-1].value
    assert len(listed) == len(list(SHIPPED.glob("*/meta.json")))
    assert {"cesaa", "mmoe", "sparse_moe", "cesaa-alpha0"} <= set(listed["checkpoint"])


def test_routing_heatmaps_are_the_analysis_output(oracle):
    from analysis.measures import activation, expert_load, load_balance

    ckpt, _, col = oracle
    at = run_page("routing")
    assert_clean(at)
    figs = charts(at)
    d, e = ckpt.spec.num_domains, ckpt.model_config.num_experts
    for key, kind in (("rt_soft", "soft"), ("rt_hard", "hard")):
        trace = figs[key]["data"][0]
        z = arr(trace["z"])
        assert z.shape == (d, e)  # D rows, E columns
        assert trace["y"] == list(ckpt.domain_names)
        assert trace["x"] == [f"expert {i}" for i in range(e)]
        np.testing.assert_allclose(z, activation(col.stats, kind), atol=1e-9)
    load = figs["rt_load"]["data"]
    np.testing.assert_allclose(arr(load[0]["y"]), expert_load(col.stats, "hard"), atol=1e-9)
    coact = arr(figs["rt_coact"]["data"][0]["z"])
    np.testing.assert_allclose(coact, load_balance(col.stats)["coactivation"], atol=1e-9)
    assert {"rt_margin", "rt_entropy"} <= set(figs)
    assert len(figs["rt_entropy"]["data"]) == d  # one violin per domain


def test_information_shows_mi_and_planted_truth(oracle):
    from analysis.measures import mutual_information
    from analysis.truth import truth_recovery

    ckpt, data, col = oracle
    at = run_page("information")
    assert_clean(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["I(D;E) soft"] == f"{mutual_information(col.stats, 'soft'):.4f}"
    assert shown["I(D;E) hard"] == f"{mutual_information(col.stats, 'hard'):.4f}"
    rec = truth_recovery(col.stats, data.truth, kind="hard", domain_names=list(ckpt.domain_names))
    assert shown["Recovery score"] == f"{rec.score:.3f}"
    truth = charts(at)["info_truth"]["data"]
    assert len(truth) == 2  # the planted matrix next to the learned one
    np.testing.assert_array_equal(arr(truth[0]["z"]), data.truth["domain_mechanism"])


def test_embeddings_reads_the_shipped_umap_and_computes_pca():
    at = run_page("embeddings")
    assert_clean(at)
    fig = charts(at)["emb_umap"]
    assert "cached" in fig["layout"]["title"]["text"]
    cached = None
    for f in (DEFAULT / "embeddings").glob("umap-*.npz"):
        with np.load(f, allow_pickle=False) as z:
            key = json.loads(str(z["key"]))
            if key["sample_size"] == 2000 and key["mode"] == "routed":
                cached = z["xy"]
    assert cached is not None
    xs = np.concatenate([arr(t["x"]) for t in fig["data"]])
    assert len(xs) == 2000 and set(np.round(xs, 6)) == set(np.round(cached[:, 0], 6))

    at.radio(key="emb_method").set_value("PCA")
    at.select_slider(key="emb_sample").set_value(500)
    at.radio(key="emb_color").set_value("expert").run()
    assert_clean(at)
    fig = charts(at)["emb_pca"]
    assert sum(len(arr(t["x"])) for t in fig["data"]) == 500
    assert [t["name"] for t in fig["data"]][0] == "expert 0"


def test_compare_aligns_the_second_checkpoint(oracle):
    import derived

    from analysis.compare import compare
    from analysis.measures import activation

    at = run_page("compare")
    assert_clean(at)
    other = SHIPPED / "sparse_moe"
    at.selectbox(key="cmp_other").set_value(str(other.resolve())).run()
    assert_clean(at)
    figs = charts(at)
    b = arr(figs["cmp_heat_b"]["data"][0]["z"])
    own = activation(derived.stats(str(other.resolve())), "soft")
    assert b.shape == own.shape
    perm = [int(x.split()[-1]) for x in figs["cmp_heat_b"]["data"][0]["x"]]
    assert sorted(perm) == list(range(own.shape[1]))
    np.testing.assert_allclose(b, own[:, perm], atol=1e-9)

    ckpt, _, col_a = oracle
    expected = compare(col_a, evaluate_directly(other)[2], kind="soft")
    diff = figs["cmp_diff"]["data"][0]
    assert diff["y"] == list(ckpt.domain_names)
    assert [int(x.split()[-1]) for x in diff["x"]] == expected.permutation.tolist() == perm
    np.testing.assert_allclose(arr(diff["z"]), expected.aligned_diff, atol=1e-9)
    assert diff["zmid"] == 0


def test_compare_refuses_checkpoints_on_different_data_before_any_table():
    """cesaa (4 synthetic domains) against cesaa-d40 (40 domains, other rows): the per-domain
    table used to fill with differences between unrelated domains before the error card."""
    at = run_page("compare")
    at.selectbox(key="cmp_other").set_value(str((SHIPPED / "cesaa-d40").resolve())).run()
    assert not at.exception
    (err,) = at.error
    assert "not evaluated on the same data" in err.value and "different rows" in err.value
    assert not at.dataframe and not charts(at)  # no per-domain table, no heatmaps


def test_report_page_and_its_files(oracle):
    import jobs
    import projections

    ckpt, _, col = oracle
    at = run_page("report")
    assert_clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:3] == ["Download HTML", "Download JSON", "Download CSV"]

    report = projections.report(str(DEFAULT.resolve()), 500, "pca")
    files = jobs.report_files(report)
    html, _, _ = files["html"]
    assert html.startswith(b"<!DOCTYPE html") or b"<html" in html[:200]
    payload = json.loads(files["json"][0])
    assert payload["metrics"]["auc"] == pytest.approx(col.metrics(ckpt.domain_names)["auc"])
    with zipfile.ZipFile(BytesIO(files["csv"][0])) as z:
        assert {"metrics.csv", "activation_soft.csv", "knockout.csv"} <= set(z.namelist())
    if jobs.static_problem("pdf") is None:
        data, mime, _ = jobs.static_file(report, "pdf")
        assert mime == "application/pdf" and data.startswith(b"%PDF")


# ---- no checkpoints, broken checkpoints ----------------------------------------------------------


def test_every_page_explains_what_to_run_without_checkpoints(monkeypatch, tmp_path):
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(tmp_path / "empty"))
    for page in PAGES:
        at = run_page(page)
        assert_clean(at)
        assert any("make_checkpoints.py" in i.value for i in at.info), page
    at = run_page("train")
    assert_clean(at)
    assert at.button(key="tr_go")


def test_a_broken_checkpoint_gets_an_error_card_and_the_others_work(monkeypatch, tmp_path):
    root = tmp_path / "ck"
    for name in ("good", "bad-weights", "bad-meta"):
        shutil.copytree(DEFAULT, root / name)
    weights = root / "bad-weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (root / "bad-meta" / "meta.json").write_text("{ not json")
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(root))

    at = run_page("overview", root / "good")
    assert not at.exception
    cards = [e.value for e in at.error]
    # the "All checkpoints" table reads each checkpoint's declared record: both broken ones say why
    assert len(cards) == 2
    assert "bad-meta" in cards[0] and "not valid JSON" in cards[0]
    assert "bad-weights" in cards[1] and "sha256" in cards[1]
    assert charts(at)

    for page in ("overview", "routing", "ablations"):
        at = run_page(page, root / "bad-weights")
        assert not at.exception
        assert any("sha256" in e.value for e in at.error), page
    at = run_page("routing", root / "bad-meta")
    assert not at.exception
    assert "not valid JSON" in at.error[0].value
    at = run_page("routing", root / "good")
    assert_clean(at)


def test_every_shipped_checkpoint_loads_with_its_umap_cached():
    """The keys written by scripts/make_checkpoints.py are the keys the dashboard looks up."""
    import projections

    names = sorted(p.parent.name for p in SHIPPED.glob("*/meta.json"))
    assert {"cesaa", "cesaa-alpha0", "cesaa-k1", "cesaa-noshared", "mmoe", "sparse_moe"} <= set(
        names
    )
    for name in names:
        path = str((SHIPPED / name).resolve())
        for size in (500, 2000):
            xy = projections.projection(path, size, "umap", compute=False)
            assert xy is not None and xy.shape == (size, 2), (name, size)


def test_missing_data_gives_an_error_card_on_every_page(monkeypatch, tmp_path):
    # no cached record of this checkpoint yet: every view needs the data (a record made before
    # the data moved would serve the descriptive views)
    monkeypatch.setenv("CESAA_RECORD_CACHE", str(tmp_path / "record-cache"))
    root = tmp_path / "ck"
    shutil.copytree(DEFAULT, root / "lost-data")
    meta_path = root / "lost-data" / "meta.json"
    meta = json.loads(meta_path.read_text())
    nowhere = tmp_path / "nowhere"
    meta["data"]["description"]["source"] = f"movielens-100k:{nowhere}"
    # the data's recorded location (meta.json data.location) points at the missing folder too
    meta["data"]["location"] = {
        "source": f"movielens-100k:{nowhere}",
        "kind": "movielens-100k",
        "fingerprint": meta["data"].get("fingerprint"),
        "folder": {"absolute": str(nowhere), "relative_to_run": "../../nowhere"},
    }
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(root))
    for page in PAGES:
        at = run_page(page, root / "lost-data")
        assert not at.exception, page
        cards = [e.value for e in at.error]
        assert any("nowhere" in c for c in cards), (page, cards)
        assert not any("Unexpected" in c for c in cards), (page, cards)
