"""AppTest tests of every dashboard page (``app/``), run against the shipped checkpoints.

Chart contents are read from the plotly figure JSON each page sends and compared with what
``cesaa`` and ``analysis`` compute directly (the oracle).  Streamlit caches are process-global:
they are cleared around the module.  AppTest drops the entry file's sidebar elements on pages
other than the first run's, so tests select a checkpoint through ``session_state["nav_ckpt"]``.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
SHIPPED = REPO / "checkpoints"
DEFAULT = SHIPPED / "cesaa"
PAGES = ("overview", "routing", "information", "embeddings", "ablations", "compare", "report")

pytestmark = pytest.mark.skipif(
    not (DEFAULT / "meta.json").is_file(),
    reason="shipped checkpoints missing: run .venv/bin/python scripts/make_checkpoints.py",
)


@pytest.fixture(scope="module", autouse=True)
def _app_on_path():
    import streamlit as st

    sys.path.insert(0, str(REPO / "app"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(SHIPPED))
    monkeypatch.setenv("CESAA_DASHBOARD_RUNS", str(tmp_path / "runs"))


def evaluate_directly(path: Path):
    """A checkpoint evaluated directly with cesaa + analysis: (checkpoint, data, collection)."""
    from analysis.collect import collect
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data

    ckpt = load_checkpoint(path)
    desc = ckpt.meta["data"]["description"]
    data = load_data(desc["source"], split=desc["split"], seed=desc["seed"], encoders=ckpt.encoders)
    col = collect(ckpt.model, data.test, num_domains=ckpt.spec.num_domains)
    return ckpt, data, col


@pytest.fixture(scope="module")
def oracle():
    """The default checkpoint evaluated directly with cesaa + analysis."""
    return evaluate_directly(DEFAULT)


def run_page(page: str = "overview", ckpt: Path | None = None, **state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=60)
    if ckpt is not None:
        at.session_state["nav_ckpt"] = str(Path(ckpt).resolve())
    for key, value in state.items():
        at.session_state[key] = value
    if page != "overview":
        at.switch_page(f"views/{page}.py")
    return at.run()


def assert_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at) -> dict[str, dict]:
    """Plotly figures by widget key (element ids end with ``-<key>``)."""
    return {c.proto.id.split("-", 2)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def arr(x) -> np.ndarray:
    """A figure array: a plain list or plotly's base64 typed array."""
    if isinstance(x, dict) and "bdata" in x:
        a = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])
        if "shape" in x:
            a = a.reshape([int(s) for s in str(x["shape"]).split(",")])
        return a.astype(np.float64)
    return np.asarray(x, dtype=np.float64)


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


def test_ablations_k_changes_metrics_and_routing(oracle):
    from analysis.collect import collect
    from analysis.measures import activation
    from cesaa.models import RoutingOverride
    from cesaa.train import evaluate

    ckpt, data, _ = oracle
    names = ckpt.domain_names
    at = run_page("ablations")
    assert_clean(at)
    before = arr(charts(at)["abl_auc"]["data"][0]["y"])
    at.slider(key="abl_k").set_value(1).run()
    assert_clean(at)
    figs = charts(at)
    after = arr(figs["abl_auc"]["data"][0]["y"])
    k1 = evaluate(ckpt.model, data.test, names, routing=RoutingOverride(top_k=1))
    assert after == pytest.approx([k1[f"auc/{d}"] for d in names])
    assert not np.allclose(before, after)
    live = collect(ckpt.model, data.test, num_domains=len(names), routing=RoutingOverride(top_k=1))
    np.testing.assert_allclose(
        arr(figs["abl_heat_now"]["data"][0]["z"]), activation(live.stats, "hard"), atol=1e-9
    )
    kc = figs["abl_kcurve"]["data"]
    assert [t["name"] for t in kc] == ["overall", *names]
    ko = arr(figs["abl_knockout"]["data"][0]["z"])
    assert ko.shape == (ckpt.model_config.num_experts + 1, len(names) + 1)  # + shared, + overall


@pytest.mark.parametrize("name", ["cesaa", "cesaa-noshared", "cesaa-k4", "mmoe", "sparse_moe"])
def test_ablation_toggle_sweep_has_no_exceptions(name):
    at = run_page("ablations", SHIPPED / name)
    assert_clean(at)
    has_shared = not at.toggle(key="abl_shared").disabled
    for knocked in ([], [0, 1]):
        at.multiselect(key="abl_knock").set_value(knocked).run()
        assert_clean(at)
        top = at.slider(key="abl_k").max
        for k in (1, top):
            for shared in (True, False) if has_shared else (None,):
                at.slider(key="abl_k").set_value(k)
                if shared is not None:
                    at.toggle(key="abl_shared").set_value(shared)
                at.run()
                assert_clean(at)
                assert {"abl_auc", "abl_heat_now"} <= set(charts(at)), (knocked, k, shared)


def test_alpha_grid_is_offered_with_aligned_routing():
    at = run_page("ablations")
    assert_clean(at)
    pick = at.selectbox(key="abl_alpha_pick")
    alphas = sorted(opt.split(" · ")[0] for opt in pick.options)
    assert alphas == ["alpha=0", "alpha=0.1", "alpha=1"]
    pick.set_value(str((SHIPPED / "cesaa-alpha0").resolve())).run()
    assert_clean(at)
    z = arr(charts(at)["abl_alpha_heat_b"]["data"][0]["z"])
    assert z.shape == (4, 8)


def test_alpha_trained_now_is_selected_and_compared(tmp_path):
    at = run_page("ablations")
    at.number_input(key="abl_alpha_new").set_value(0.5)
    at.number_input(key="abl_alpha_epochs").set_value(1)
    at.button(key="abl_alpha_train").click().run(timeout=120)
    assert_clean(at)
    run = tmp_path / "runs" / "cesaa-alpha0.5"
    assert (run / "meta.json").is_file()
    assert at.selectbox(key="abl_alpha_pick").value == str(run.resolve())
    assert "abl_alpha_heat_b" in charts(at)
    meta = json.loads((run / "meta.json").read_text())
    shipped = json.loads((DEFAULT / "meta.json").read_text())
    assert meta["model"]["config"] == {**shipped["model"]["config"], "alpha": 0.5}


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


def test_train_page_trains_a_checkpoint_that_opens_everywhere(tmp_path):
    at = run_page("train")
    assert_clean(at)
    at.number_input(key="tr_rows").set_value(2000)
    at.number_input(key="tr_domains").set_value(3)
    at.number_input(key="tr_epochs").set_value(1)
    at.text_input(key="tr_name").set_value("tiny")
    at.button(key="tr_go").click().run(timeout=120)
    assert_clean(at)
    run = tmp_path / "runs" / "tiny"
    assert (run / "meta.json").is_file()
    assert at.session_state["nav_ckpt"] == str(run.resolve())
    assert any("tiny" in s.value for s in at.success)
    at.switch_page("views/routing.py").run()
    assert_clean(at)
    assert arr(charts(at)["rt_soft"]["data"][0]["z"]).shape == (3, 8)

    at.switch_page("views/train.py").run()
    at.selectbox(key="tr_model").set_value("mlp")
    at.text_input(key="tr_name").set_value("tiny-mlp")
    at.button(key="tr_go").click().run(timeout=120)
    assert_clean(at)
    for page in ("routing", "information", "ablations", "embeddings"):
        at.switch_page(f"views/{page}.py").run()
        assert_clean(at)
        assert any("no gate" in i.value for i in at.info), page
    for page in ("overview", "compare", "report"):  # a tiny model: critical alarms are fine
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
        cards = [
            e.value for e in at.error if e.value.startswith("**Cannot") or "Unexpected" in e.value
        ]
        assert not cards, (page, cards)


def test_bad_upload_names_the_column():
    at = run_page("train", tr_source="Upload CSV/Parquet")
    assert_clean(at)
    csv = b"clicked,tab,user,price\n1,home,u1,1.5\n2,search,u2,2.0\n0,home,u3,0.5\n"
    at.file_uploader(key="tr_upload").set_value(("clicks.csv", csv, "text/csv")).run()
    assert_clean(at)
    at.selectbox(key="tr_label").set_value("clicked")
    at.selectbox(key="tr_domain").set_value("tab")
    at.multiselect(key="tr_cat").set_value(["user"])
    at.multiselect(key="tr_num").set_value(["price"])
    at.button(key="tr_go").click().run()
    assert not at.exception
    (card,) = at.error
    assert "'clicked'" in card.value and "[2]" in card.value and "row 1" in card.value


def test_upload_helpers_report_what_is_wrong():
    import jobs
    import loaders

    with pytest.raises(loaders.LoadError, match="clicks.parquet"):
        jobs.upload_frame("clicks.parquet", b"not parquet")
    csv = b"click,tab,price\n1,a,x\n0,b,2\n"
    schema = {"label": "click", "domain": "tab", "numeric": ["price"]}
    with pytest.raises(loaders.LoadError, match="'price' is not numeric"):
        jobs.save_upload("clicks.csv", csv, schema)
    with pytest.raises(loaders.LoadError, match="'missing'.*is missing"):
        jobs.save_upload("clicks.csv", csv, {**schema, "categorical": ["missing"]})


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
    assert len(cards) == 1 and "bad-meta" in cards[0] and "not valid JSON" in cards[0]
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


def test_train_page_on_a_movielens_folder(ml100k_path, tmp_path):
    at = run_page("train", tr_source="MovieLens folder")
    at.text_input(key="tr_ml_folder").set_value(str(ml100k_path))
    at.number_input(key="tr_epochs").set_value(1)
    at.text_input(key="tr_name").set_value("ml")
    at.button(key="tr_go").click().run(timeout=180)
    assert_clean(at)
    meta = json.loads((tmp_path / "runs" / "ml" / "meta.json").read_text())
    assert meta["data"]["description"]["kind"] == "movielens-100k"

    at.text_input(key="tr_ml_folder").set_value(str(tmp_path / "nowhere"))
    at.button(key="tr_go").click().run()
    assert not at.exception
    assert "nowhere" in at.error[0].value


def test_missing_data_gives_an_error_card_on_every_page(monkeypatch, tmp_path):
    root = tmp_path / "ck"
    shutil.copytree(DEFAULT, root / "lost-data")
    meta_path = root / "lost-data" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["data"]["description"]["source"] = f"movielens-100k:{tmp_path / 'nowhere'}"
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(root))
    for page in PAGES:
        at = run_page(page, root / "lost-data")
        assert not at.exception, page
        cards = [e.value for e in at.error]
        assert any("nowhere" in c for c in cards), (page, cards)
        assert not any("Unexpected" in c for c in cards), (page, cards)
