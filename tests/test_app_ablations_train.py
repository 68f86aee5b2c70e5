"""AppTest tests of the dashboard's Ablations and Train pages: the live toggles (k, shared expert,
knock-outs, alpha) and training / uploading from the browser.  Harness: ``apptest_support``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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
    finish_training,
    pytestmark,
    run_page,
)


@pytest.fixture(scope="module")
def oracle():
    """The default checkpoint evaluated directly with cesaa + analysis."""
    return evaluate_directly(DEFAULT)


# ---- ablations: the live toggles ----------------------------------------------------------------


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


def test_knock_out_changes_only_what_it_names(oracle):
    """Knocking out an expert keeps the k in force (the slider used to restart at k=1, so the
    "now" column showed the effect of k=1 under a knock-out caption); a k chosen by hand survives
    a knock-out that lowers it for a while."""
    from cesaa.models import RoutingOverride
    from cesaa.train import evaluate

    ckpt, data, _ = oracle
    names = ckpt.domain_names
    at = run_page("ablations")
    at.multiselect(key="abl_knock").set_value([7]).run()
    assert_clean(at)
    assert at.slider(key="abl_k").value == ckpt.model_config.top_k == 2
    caption = at.caption[0].value
    assert "knocked out [7]" in caption and "k=1" not in caption, caption
    ko = evaluate(ckpt.model, data.test, names, routing=RoutingOverride(knocked_out=(7,)))
    now = arr(charts(at)["abl_auc"]["data"][0]["y"])
    assert now == pytest.approx([ko[f"auc/{d}"] for d in names])
    # a hand-picked k=3: knocking out six experts lowers it to the 2 left, lifting them restores 3
    at.slider(key="abl_k").set_value(3).run()
    at.multiselect(key="abl_knock").set_value([0, 1, 2, 3, 4, 5]).run()
    assert at.slider(key="abl_k").value == 2
    at.multiselect(key="abl_knock").set_value([7]).run()
    assert_clean(at)
    assert at.slider(key="abl_k").value == 3
    assert "k=3" in at.caption[0].value


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
                figs, case = charts(at), (name, knocked, k, shared)
                assert {"abl_auc", "abl_heat_now"} <= set(figs), case
                # the caption names exactly the routing evaluated, and the routing shows it
                caption = at.caption[0].value
                assert at.slider(key="abl_k").value == k, case
                assert (f"knocked out {knocked}" in caption) == bool(knocked), (case, caption)
                assert ("shared off" in caption) == (shared is False), (case, caption)
                now = arr(figs["abl_heat_now"]["data"][0]["z"])  # hard P(expert | domain)
                np.testing.assert_allclose(now.sum(axis=1), 1.0, atol=1e-9)
                assert (now[:, knocked] == 0).all(), case  # knocked out: never selected
                auc = arr(figs["abl_auc"]["data"][0]["y"])
                assert ((auc > 0.5) & (auc <= 1)).all(), case


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
    cfg = {k: v for k, v in meta["model"]["config"].items() if k in shipped["model"]["config"]}
    assert cfg == {**shipped["model"]["config"], "alpha": 0.5}


@pytest.mark.slow  # the page's default run: 100,000 rows, up to 30 epochs (about 30 s idle)
def test_train_page_default_run_forms_its_routing(tmp_path):
    """Issue 25: a CESAA model trained from the Train page with its defaults showed 0.0 % of the
    MI bound (20,000 rows: 480 steps at lr 1e-3, the routing never formed).  Its defaults now
    give the routing the steps it needs: I(D;E) of the saved model at least 20 % of its bound."""
    from analysis.collect import collect
    from analysis.measures import mutual_information
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data

    at = run_page("train")
    assert at.selectbox(key="tr_model").value == "cesaa"
    at.text_input(key="tr_name").set_value("defaults")
    at.button(key="tr_go").click().run(timeout=120)
    finish_training(at, timeout=600)
    assert_clean(at)
    ckpt = load_checkpoint(tmp_path / "runs" / "defaults")
    data = load_data(ckpt.meta["data"]["description"]["source"], encoders=ckpt.encoders)
    stats = collect(ckpt.model, data.val, num_domains=ckpt.spec.num_domains).stats
    assert mutual_information(stats, "soft", normalized=True) >= 0.2


def test_train_page_trains_a_checkpoint_that_opens_everywhere(tmp_path):
    at = run_page("train")
    assert_clean(at)
    at.number_input(key="tr_rows").set_value(2000)
    at.number_input(key="tr_domains").set_value(3)
    at.number_input(key="tr_epochs").set_value(1)
    at.text_input(key="tr_name").set_value("tiny")
    at.button(key="tr_go").click().run(timeout=120)
    assert_clean(at)
    finish_training(at)
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
    finish_training(at)
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
    assert not at.exception
    # proposed: tab -> domain, user -> user, price -> numeric; clicked (0/1/2) is no label yet
    assert at.selectbox(key="tr_role_tab").value == "domain"
    assert at.selectbox(key="tr_role_user").value == "user"
    assert at.selectbox(key="tr_role_price").value == "numeric"
    (card,) = at.error
    assert "exactly one column must be the label" in card.value and "Change the roles" in card.value
    at.selectbox(key="tr_role_clicked").set_value("label").run()
    assert_clean(at)
    at.button(key="tr_go").click().run()
    assert not at.exception
    (card,) = at.error
    assert "'clicked'" in card.value and "[2]" in card.value and "row 1" in card.value


def test_upload_with_proposed_roles_trains_and_can_be_cancelled(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "user": rng.integers(1, 40, n),
            "item": rng.integers(1, 80, n),
            "tab": rng.choice(["home", "search", "cart"], n),
            "click": rng.integers(0, 2, n),
        }
    )
    csv = frame.to_csv(index=False).encode()
    at = run_page("train", tr_source="Upload CSV/Parquet")
    at.file_uploader(key="tr_upload").set_value(("clicks.csv", csv, "text/csv")).run()
    assert_clean(at)
    roles = {c: at.selectbox(key=f"tr_role_{c}").value for c in frame.columns}
    assert roles == {"user": "user", "item": "item", "tab": "domain", "click": "label"}
    assert at.text_input(key="tr_name").value == "clicks"  # named after the file
    at.number_input(key="tr_epochs").set_value(1)
    at.text_input(key="tr_name").set_value("clicks")
    at.button(key="tr_go").click().run(timeout=60)
    finish_training(at)
    assert_clean(at)
    meta = json.loads((tmp_path / "runs" / "clicks" / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["data"]["spec"]["cat_names"] == ["user", "item"]
    # a long run (200k rows, 100 epochs) is cancelled from the page; its folder is removed
    at.radio(key="tr_source").set_value("Synthetic").run()
    at.number_input(key="tr_rows").set_value(200_000)
    at.number_input(key="tr_epochs").set_value(100)
    at.text_input(key="tr_name").set_value("long")
    at.button(key="tr_go").click().run(timeout=60)
    assert at.session_state["tr_job"].running
    at.button(key="tr_cancel").click().run(timeout=60)
    finish_training(at)
    assert any("Cancelled long" in i.value for i in at.info)
    assert not (tmp_path / "runs" / "long").exists()


def test_the_issue_csv_proposes_ids_time_and_domains_and_trains_by_time(tmp_path):
    from test_data_roles import movielens_like

    from cesaa.config import TrainConfig

    frame = movielens_like()
    csv = frame.to_csv(index=False).encode()
    at = run_page("train", tr_source="Upload CSV/Parquet")
    at.file_uploader(key="tr_upload").set_value(("ratings.csv", csv, "text/csv")).run()
    assert_clean(at)
    roles = {c: at.selectbox(key=f"tr_role_{c}").value for c in frame.columns}
    assert roles == {
        "rating_ts": "time",
        "movie": "item",
        "viewer": "user",
        "gender_of_viewer": "categorical",
        "occupation": "domain",
        "clicked": "label",
    }
    (choices,) = [d.value for d in at.dataframe if "as spread as (equal values)" in d.value]
    assert list(choices["column"]) == ["occupation", "gender_of_viewer"]
    n_jobs = frame["occupation"].nunique()
    assert choices.set_index("column").loc["occupation", "values"] == n_jobs
    women = int((frame["gender_of_viewer"] == "F").sum())
    assert f"F {women}" in choices.set_index("column").loc["gender_of_viewer", "value counts"]
    assert at.text_input(key="tr_name").value == "ratings"  # named after the file
    assert at.number_input(key="tr_epochs").value == TrainConfig().epochs  # the CLI's schedule
    # a split by time without a time column is refused with the reason
    at.selectbox(key="tr_role_rating_ts").set_value("numeric").run()
    at.radio(key="tr_split").set_value("time").run()
    (card,) = at.error
    assert "needs a time column" in card.value
    at.selectbox(key="tr_role_rating_ts").set_value("time").run()
    assert_clean(at)
    at.number_input(key="tr_epochs").set_value(1)
    at.button(key="tr_go").click().run(timeout=60)
    finish_training(at)
    assert_clean(at)
    meta = json.loads((tmp_path / "runs" / "ratings" / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["data"]["description"]["split"] == "time"
    assert meta["data"]["spec"]["cat_names"][:2] == ["movie", "viewer"]


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


def test_train_page_on_a_movielens_folder(ml100k_path, tmp_path):
    at = run_page("train", tr_source="MovieLens folder")
    at.text_input(key="tr_ml_folder").set_value(str(ml100k_path))
    at.number_input(key="tr_epochs").set_value(1)
    at.text_input(key="tr_name").set_value("ml")
    at.button(key="tr_go").click().run(timeout=180)
    finish_training(at, 180)
    assert_clean(at)
    meta = json.loads((tmp_path / "runs" / "ml" / "meta.json").read_text())
    assert meta["data"]["description"]["kind"] == "movielens-100k"

    at.text_input(key="tr_ml_folder").set_value(str(tmp_path / "nowhere"))
    at.button(key="tr_go").click().run()
    finish_training(at)
    assert not at.exception
    assert "nowhere" in at.error[0].value
