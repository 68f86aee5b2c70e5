"""The dashboard on a routing record: pages read it without the model, views that re-run the model
say they need a checkpoint, malformed records give error cards, records upload as zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from apptest_support import (  # noqa: F401  (fixtures)
    DEFAULT,
    _app_on_path,
    _env,
    arr,
    assert_clean,
    charts,
    run_page,
)
from test_records_writer import MALFORMED, _arrays, _write

from analysis.records.checkpoint import record_checkpoint


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records") / "cesaa-record"
    record_checkpoint(DEFAULT, out, sample_size=300, batch_size=2048)
    return out


def _run(page: str, path: Path, **state):
    return run_page(page, path, nav_folder=str(path.parent), **state)


def test_sidebar_lists_the_record_beside_checkpoints(rec_dir):
    at = _run("overview", rec_dir)
    assert_clean(at)
    box = at.sidebar.selectbox(key="nav_ckpt")
    labels = list(box.options)  # the labels shown
    assert any(lbl.endswith("(record)") for lbl in labels)
    assert any(not lbl.endswith("(record)") for lbl in labels)


def test_overview_of_a_record(rec_dir):
    from analysis.records import open_record

    at = _run("overview", rec_dir)
    assert_clean(at)
    assert any("Routing record" in s.value for s in at.subheader)
    auc = next(m for m in at.metric if m.label == "AUC")
    assert float(auc.value) == pytest.approx(open_record(rec_dir).meta.metrics["auc"], abs=1e-4)


def _record_stats(rec_dir):
    from analysis.measures import activation, mutual_information
    from analysis.records import open_record

    rec = open_record(rec_dir)
    st = rec.stats[rec.meta.primary.name]
    return rec, st, activation, mutual_information


@pytest.mark.parametrize(
    "page",
    ["routing", "information", "embeddings", "compare", "report", "experts", "evolution"],
)
def test_record_pages_show_the_record(rec_dir, page):
    """Each page read from the record shows the record's own numbers (not only "no exception")."""
    rec, st, activation, mutual_information = _record_stats(rec_dir)
    at = _run(page, rec_dir, emb_method="PCA", emb_sample=500)
    assert_clean(at)
    figs = charts(at)
    if page == "routing":
        np.testing.assert_allclose(
            arr(figs["rt_soft"]["data"][0]["z"]), activation(st, "soft"), atol=1e-9
        )
        np.testing.assert_allclose(
            arr(figs["rt_hard"]["data"][0]["z"]), activation(st, "hard"), atol=1e-9
        )
    elif page == "information":
        shown = {m.label: m.value for m in at.metric}
        assert shown["I(D;E) soft"] == f"{mutual_information(st, 'soft'):.4f}"
        assert shown["I(D;E) hard"] == f"{mutual_information(st, 'hard'):.4f}"
    elif page == "embeddings":
        pca = figs["emb_pca"]
        assert sum(len(arr(t["x"])) for t in pca["data"]) == 300  # the record's stored sample
    elif page == "compare":
        # B is a checkpoint on the record's own data: aligned heatmaps, A = the record's routing
        np.testing.assert_allclose(
            arr(figs["cmp_heat_a"]["data"][0]["z"]), activation(st, "soft"), atol=1e-9
        )
    elif page == "report":
        labels = [b.proto.label for b in at.get("download_button")]
        assert labels[:3] == ["Download HTML", "Download JSON", "Download CSV"]
    elif page == "experts":
        summary = at.dataframe[0].value
        assert summary["expert"].tolist() == list(range(st.num_experts))
        assert "ex_logodds" in figs
    else:  # evolution needs the run folder, which a record does not carry
        from analysis.records.collection import NEEDS_CHECKPOINT

        infos = [i.value for i in at.info]
        assert any("Routing over training" in v and NEEDS_CHECKPOINT in v for v in infos), infos
        assert not figs


@pytest.mark.parametrize("page", ["ablations", "rows"])
def test_live_model_views_say_they_need_a_checkpoint(rec_dir, page):
    at = _run(page, rec_dir)
    assert not at.exception and not at.error
    assert any("needs a checkpoint" in i.value for i in at.info)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_error_card(tmp_path, case):
    path = tmp_path / "recs" / "bad"
    _write(path, _arrays(), [0, 1000])
    corrupt, error, text = MALFORMED[case]
    corrupt(path)
    at = _run("overview", path)
    assert not at.exception
    msgs = [e.value for e in at.error]
    assert any(error.__name__ in m and text in m for m in msgs), msgs


# ---- upload ---------------------------------------------------------------------------------------


def _zip(folder: Path, prefix: str = "rec/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in folder.iterdir():
            if f.is_file():
                z.write(f, prefix + f.name)
    return buf.getvalue()


def test_upload_a_record_zip(tmp_path, rec_dir):
    import uploads

    from analysis.records import open_record

    path = uploads.save_record_zip("rec.zip", _zip(rec_dir), 200, tmp_path)
    assert open_record(path).stats["gate"] == open_record(rec_dir).stats["gate"]


def test_upload_refusals_name_the_problem(tmp_path):
    import uploads
    from loaders import LoadError

    good = tmp_path / "good"
    _write(good, _arrays(), [0, 1000])
    content = _zip(good)
    with pytest.raises(LoadError, match=r"rec\.zip is 0\.\d MB, over the dashboard's upload limit"):
        uploads.save_record_zip("rec.zip", content, 0.001, tmp_path)
    with pytest.raises(LoadError, match="not a zip file"):
        uploads.save_record_zip("x.zip", b"not a zip", 200, tmp_path)
    bad = tmp_path / "bad"
    _write(bad, _arrays(), [0, 1000])
    MALFORMED["unknown domain"][0](bad)
    with pytest.raises(LoadError, match="RecordUnknownDomain"):
        uploads.save_record_zip("bad.zip", _zip(bad), 200, tmp_path / "up")
    assert not any((tmp_path / "up" / "records").iterdir())


# ---- a torch-rechub MMOE trained by torch-rechub, recorded, opened in the dashboard ----------------


@pytest.fixture(scope="module")
def rechub_rec(tmp_path_factory) -> Path:
    pytest.importorskip("torch_rechub")
    from conftest import ML100K
    from test_records_rechub import DOMAINS, _movielens, _train
    from torch_rechub.models.multi_task import MMOE

    from analysis.records.rechub import record_rechub

    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100k not found at {ML100K}")
    tmp = tmp_path_factory.mktemp("rechub")
    x, y, features = _movielens(ML100K, rows=6000)
    model = MMOE(features, ["classification"], 4, {"dims": [8]}, [{"dims": [4]}])
    test = _train(model, x, y, tmp, epochs=3, lr=1e-2)
    out = tmp / "recs" / "rechub-mmoe"
    record_rechub(model, test, domain="age_group", domains=DOMAINS, out=out, sample_size=200)
    return out


@pytest.mark.parametrize("page", ["overview", "routing", "information", "embeddings"])
def test_rechub_record_in_the_dashboard(rechub_rec, page):
    at = _run(page, rechub_rec, emb_method="PCA", emb_sample=500)
    assert_clean(at)
    if page == "overview":
        assert any("torch-rechub MMOE" in str(m.value) for m in at.metric)


def test_inspection_pages_on_a_record(rec_dir):
    """Experts reads the record alone (its kept columns); Rows and Routing over training say
    what they need instead."""
    from apptest_support import arr, charts

    at = _run("experts", rec_dir)
    assert_clean(at)
    figs = charts(at)
    assert {"ex_logodds", "ex_similarity", "ex_overlap"} <= set(figs)
    assert arr(figs["ex_similarity"]["data"][0]["z"]).shape == (8, 8)
    at = _run("rows", rec_dir)
    assert not at.exception and not at.error
    assert any("needs a checkpoint" in i.value for i in at.info)
    at = _run("evolution", rec_dir)
    assert not at.exception and not at.error
    assert any("run folder" in i.value for i in at.info)


# ---- the Experts page reads a seeded sample of a record's rows, not its head ----------------------


@pytest.fixture(scope="module")
def blocked_rec(tmp_path_factory) -> tuple[Path, dict]:
    """A 30,000-row record written domain by domain: rows 0-9,999 are domain a, then b, then c,
    so the record's first 20,000 rows hold no row of c."""
    n = 30_000
    a = _arrays(n, seed=3)
    a["domain"] = np.repeat(np.arange(3), n // 3)
    path = tmp_path_factory.mktemp("blocked") / "recs" / "blocked"
    _write(path, a, [0, 7_000, n], sample_size=200, row_group_rows=4_096)
    return path, a


def test_experts_page_on_a_record_reads_a_seeded_sample_of_all_its_rows(blocked_rec):
    import inspection

    path, a = blocked_rec
    at = _run("experts", path)
    assert_clean(at)
    assert any(
        "20,000 of 30,000 rows of the record, seeded sample" in c.value for c in at.caption
    ), [c.value for c in at.caption]
    r = inspection.rows(str(path.resolve()))
    pos = r["rows"]
    assert len(pos) == 20_000 and len(np.unique(pos)) == 20_000
    assert r["total"] == 30_000
    # every sampled row is the record's row at that position (domain, label, kept user id)
    np.testing.assert_array_equal(r["domain"], a["domain"][pos])
    np.testing.assert_array_equal(r["label"], a["label"][pos])
    np.testing.assert_array_equal(r["columns"]["user"], a["user"][pos])
    # a uniform draw without replacement: each domain block holds 20,000 / 3 rows in expectation
    # (hypergeometric sd = sqrt(20000 * 1/3 * 2/3 * 10000 / 29999) ~ 38); the head would hold none
    # of domain c
    counts = np.bincount(r["domain"], minlength=3)
    assert counts.sum() == 20_000
    assert np.all(np.abs(counts - 20_000 / 3) < 6 * 38), counts
