from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from analysis import export
from analysis.report import Report, build_report, write_report
from analysis.report_build import resolve_embedding
from analysis.report_html import SECTIONS
from cesaa.cli import main

SRC = "synthetic:rows=4000,domains=3,seed=0"
E, D, SAMPLE = 4, 3, 300
EXTERNAL = re.compile(
    r"<(?:script|img|iframe)[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//|<link[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//",
    re.IGNORECASE,
)


def _train(name: str, out, epochs: int, **model):
    from cesaa.config import TrainConfig
    from cesaa.data import load_data
    from cesaa.models.registry import default_config
    from cesaa.train import train

    data = load_data(SRC)
    cfg = default_config(name, expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), **model)
    train(cfg, TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, seed=0), data, out)
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _train("cesaa", tmp_path_factory.mktemp("run") / "cesaa", 2, num_experts=E, top_k=2)


@pytest.fixture(scope="module")
def report(ckpt):
    return build_report(ckpt, embedding="pca", sample_size=SAMPLE, seed=0)


def test_report_holds_every_number(report, ckpt):
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data
    from cesaa.train import evaluate

    c = load_checkpoint(ckpt)
    direct = evaluate(c.model, load_data(SRC, encoders=c.encoders).test, c.domain_names)
    assert report.metrics["auc"] == pytest.approx(direct["auc"])
    assert report.metrics["auc/domain_1"] == pytest.approx(direct["auc/domain_1"])
    s = report.summary
    assert (s["num_domains"], s["num_experts"]) == (D, E) and s["rows"] == 400
    assert 0 <= s["mi_hard"] <= np.log(D)
    assert len(report.knockout) == (E + 1) * (D + 1)  # E experts + shared, overall + D domains
    assert len(report.k_curve) == E * (D + 1)
    # per-row entropies read every row of the record (400 < ROW_DRAW), not the output sample
    assert len(report.entropy["values"]) == 400 and report.entropy["max"] == pytest.approx(
        np.log(E)
    )
    assert np.asarray(report.embedding["xy"]).shape == (SAMPLE, 2)
    assert report.embedding["method"] == "pca" and not report.embedding["cached"]
    assert 0 <= report.truth["recovery"]["score"] <= 1
    assert np.asarray(report.truth["matrix"]).shape[0] == D
    assert {"python", "torch", "numpy", "pandas", "scikit-learn", "plotly", "cesaa"} <= set(
        report.versions
    )
    assert (
        report.model_card["data"]["fingerprint"] == report.model_card["data"]["train_fingerprint"]
    )
    assert len(report.model_card["history"]) == 2
    assert f"report {ckpt} --data {SRC} --split test --sample {SAMPLE}" in report.command
    assert "--embedding pca --seed 0" in report.command
    assert all(a["level"] in ("critical", "warning") for a in report.alarms)
    # cached in the checkpoint's cached record folder
    assert list((Path(report.checkpoint["record"]) / "embeddings").glob("pca-*.npz"))


def test_json_round_trip(report, tmp_path):
    text = report.to_json()

    def no_nan(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(text, parse_constant=no_nan)
    assert Report.from_json(text).to_dict() == report.to_dict()
    report.to_json(tmp_path / "r.json")
    assert Report.from_json(tmp_path / "r.json").to_dict() == report.to_dict()
    with pytest.raises(ValueError, match="schema_version must be 1"):
        Report.from_dict({**report.to_dict(), "schema_version": 99})


def test_html_is_self_contained_with_every_section(report):
    page = report.to_html()
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in page
    assert set(SECTIONS) >= {
        "model-card",
        "metrics",
        "alarms",
        "routing",
        "information",
        "load",
        "entropy",
        "knockout",
        "k-curve",
        "embeddings",
        "truth",
        "reproduce",
    }
    assert not EXTERNAL.search(page)
    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js embedded exactly once
    assert page.count("Plotly.newPlot(") >= 10
    # a reloaded report renders the same page
    assert Report.from_json(report.to_json()).to_html() == page
    static = report.to_html(static=True)
    assert '"displayModeBar": false' in static and '"staticPlot": true' in static


def test_external_url_scanner_catches_cdn_tags():
    assert EXTERNAL.search('<script src="https://cdn.plot.ly/plotly.min.js"></script>')
    assert EXTERNAL.search("<link rel=stylesheet href=//fonts.example.com/a.css>")
    assert not EXTERNAL.search("<a href='#metrics'>metrics</a><script>var u='https://x';</script>")


def test_write_report_files_and_csv_columns(report, tmp_path):
    out = tmp_path / "rep"
    written = write_report(report, out, static=())
    assert written["html"] == out / "report.html" and written["json"] == out / "report.json"
    assert "png" not in written and "pdf" not in written
    columns = {
        "metrics": ["domain", "AUC", "GAUC", "logloss", "rows", "pos_rate"],
        "activation_soft": ["domain", *(f"expert {i}" for i in range(E))],
        "activation_hard": ["domain", *(f"expert {i}" for i in range(E))],
        "knockout": ["target", "domain", "auc", "logloss", "delta_auc", "delta_logloss"],
        "k_curve": ["k", "domain", "auc", "logloss", "active_experts"],
        "alarms": ["level", "code", "title", "message", "domain", "expert", "value", "threshold"],
    }
    for name, cols in columns.items():
        df = pd.read_csv(written[f"{name}.csv"])
        assert list(df.columns) == cols, name
    act = pd.read_csv(out / "activation_soft.csv").set_index("domain").to_numpy()
    np.testing.assert_allclose(act, report.summary["activation_soft"])
    assert len(pd.read_csv(out / "knockout.csv")) == (E + 1) * (D + 1)
    saved = Report.from_json(out / "report.json")
    assert saved.command.endswith(f"--out {out}")
    assert stat.S_IMODE((out / "report.html").stat().st_mode) & 0o044  # readable by others


def test_static_export_is_skipped_cleanly_without_chromium(report, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "find_chromium", lambda: None)
    written = write_report(report, tmp_path, formats=("html",), static=("png", "pdf"))
    assert written["png"].startswith("skipped: PNG export: no Chromium found")
    assert written["pdf"].startswith("skipped: PDF export: no Chromium found")
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "report.pdf").exists()
    with pytest.raises(ValueError, match="unknown report formats"):
        write_report(report, tmp_path, formats=("docx",))


def test_png_export_that_writes_nothing_is_not_reported_as_written(tmp_path, monkeypatch):
    """A browser that returns without writing the file (seen under heavy load) must not make
    export_png report the PNG as written: it retries once, then says which files are missing."""
    import plotly.graph_objects as go
    import plotly.io as pio

    calls = []
    monkeypatch.setattr(export, "static_problem", lambda fmt: None)
    monkeypatch.setattr(export, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(pio, "write_images", lambda *a, **k: calls.append(a))
    out = export.export_png({"fig_a": go.Figure()}, tmp_path)
    assert isinstance(out, str) and out.startswith("skipped:")
    assert "wrote no file for ['fig_a']" in out and len(calls) == 2

    def writes(figs, paths, **kwargs):  # the second attempt writes
        calls.append(paths)
        if len(calls) > 3:
            for p in paths:
                p.write_bytes(b"\x89PNG\r\n\x1a\n")

    monkeypatch.setattr(pio, "write_images", writes)
    assert export.export_png({"fig_a": go.Figure()}, tmp_path) == {"fig_a": tmp_path / "fig_a.png"}
    assert len(calls) == 4

    # a PNG left by an earlier export must not count as written by this one
    monkeypatch.setattr(pio, "write_images", lambda *a, **k: None)
    assert export.export_png({"fig_a": go.Figure()}, tmp_path).startswith("skipped:")


@pytest.mark.browser
def test_real_png_and_pdf_export(report, tmp_path):
    if export.find_chromium() is None or export.kaleido_problem():
        pytest.skip("needs Chromium and kaleido >= 1")
    from analysis.report_html import report_figures

    figs = report_figures(report, static=True)
    pngs = export.export_png({"activation_soft": figs["activation_soft"]}, tmp_path)
    assert pngs["activation_soft"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = export.export_pdf(report.to_html(static=True), tmp_path / "report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000


def test_cli_report_writes_files_and_prints_headline(ckpt, report, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "report",
            str(ckpt),
            "--out",
            str(out),
            "--embedding",
            "pca",
            "--sample",
            str(SAMPLE),
            "--no-static",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert f"AUC {report.metrics['auc']:.4f}" in text
    assert "I(D;E) soft" in text and "alarms:" in text and "recovery score" in text
    assert "embedding: pca (cached)" in text  # the module fixture computed the same projection
    assert re.search(r"done in \d+\.\ds", text)
    for name in ("report.html", "report.json", "metrics.csv", "knockout.csv", "alarms.csv"):
        assert (out / name).is_file() and str(out / name) in text


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--no-static"]) == 2
    assert "cesaa report: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--embedding", "tsne"])


def test_build_report_rejects_bad_arguments(ckpt):
    with pytest.raises(ValueError, match="split must be one of"):
        build_report(ckpt, split="dev")
    with pytest.raises(ValueError, match="embedding must be one of"):
        build_report(ckpt, embedding="tsne")
    with pytest.raises(ValueError, match="sample_size must be an int >= 0"):
        build_report(ckpt, sample_size=-1)


def test_auto_embedding_prefers_umap_and_falls_back_to_pca(monkeypatch):
    from analysis import embeddings

    monkeypatch.setattr(embeddings, "umap_available", lambda: True)
    assert resolve_embedding("auto") == ("umap", None)
    monkeypatch.setattr(embeddings, "umap_available", lambda: False)
    method, note = resolve_embedding("auto")
    assert method == "pca" and "umap-learn is not installed" in note


def test_report_of_a_model_without_gate(tmp_path):
    run = _train("mlp", tmp_path / "mlp", 1)
    r = build_report(run, embedding="pca", sample_size=50)
    assert r.summary is None and r.knockout is None and r.k_curve is None
    assert r.embedding is None and "no gate" in r.notes["knockout"]
    assert r.metrics["auc"] is not None
    page = r.to_html()
    assert all(f"<section id='{sid}'>" in page for sid in SECTIONS)
    assert "has no gate" in page
    written = write_report(r, tmp_path / "out", static=())
    assert list(pd.read_csv(written["knockout.csv"]).columns)[:2] == ["target", "domain"]
    assert Report.from_json(r.to_json()).to_dict() == r.to_dict()


def test_auto_embedding_survives_a_umap_failure(ckpt, tmp_path, monkeypatch):
    from analysis import embeddings

    real = embeddings.project

    def broken(points, method="pca", **kw):
        if method == "umap":
            raise RuntimeError("numba exploded")
        return real(points, method, **kw)

    monkeypatch.setattr(embeddings, "umap_available", lambda: True)
    monkeypatch.setattr(embeddings, "project", broken)
    r = build_report(ckpt, embedding="auto", sample_size=50, cache_dir=tmp_path)
    assert r.embedding["method"] == "pca" and "UMAP failed" in r.embedding["note"]
    assert "--embedding pca" in r.command
    with pytest.raises(RuntimeError, match="numba exploded"):
        build_report(ckpt, embedding="umap", sample_size=50, cache_dir=tmp_path)


def test_report_prune_section_is_the_analysis_curve(report, ckpt):
    from analysis.prune_plans import CURVE_COLUMNS, planning_sample, prediction_error, prune_curve
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data.locate import open_checkpoint_data

    loaded = load_checkpoint(ckpt)
    data = open_checkpoint_data(loaded.meta, loaded.path)
    plan_rows = planning_sample(data.val, 4000, seed=0)
    curve = prune_curve(loaded.model, plan_rows, data.test, loaded.domain_names)
    got = pd.DataFrame(report.prune)
    assert list(got.columns) == CURVE_COLUMNS and len(got) == 3 * E
    np.testing.assert_allclose(got["delta_auc"], curve["delta_auc"], atol=1e-12)
    np.testing.assert_allclose(got["predicted_delta_auc"], curve["predicted_delta_auc"])
    page = report.to_html()
    best = prediction_error(curve)["criterion"].iloc[0]
    assert f"Best predictor of its own cost: {best}." in page
    assert list(report.tables()["prune"].columns) == CURVE_COLUMNS
