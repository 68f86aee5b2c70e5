"""The dashboard with every kind of bad checkpoint present: each page shows an error card, never a
traceback, the pickle payload never runs, and the good checkpoint keeps working afterwards.

(Upload errors that name a column are tested in ``tests/test_app_ablations_train.py``.)
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
SHIPPED = REPO / "checkpoints" / "cesaa"
PAGES = ("overview", "routing", "information", "embeddings", "ablations", "compare", "report")

pytestmark = pytest.mark.skipif(
    not (SHIPPED / "meta.json").is_file(),
    reason="shipped checkpoints missing: run .venv/bin/python scripts/make_checkpoints.py",
)


class _Payload:
    """Unpickling it would create ``marker``: the test checks that this never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _edit_meta(run: Path, edit) -> None:
    meta = json.loads((run / "meta.json").read_text())
    edit(meta)
    (run / "meta.json").write_text(json.dumps(meta))


def _no_hash(meta: dict) -> None:
    meta.pop("weights_sha256", None)


def make_bad(root: Path, marker: Path) -> dict[str, str]:
    """Bad run folders under ``root`` -> a fragment of the error each must show."""
    bad = {
        "missing-weights": "model.safetensors: file is missing",
        "truncated-weights": "sha256 does not match meta.json",
        "schema-version": "unsupported schema_version 99",
        "tampered-meta": "unknown keys ['evil']",
        "meta-not-json": "not valid JSON",
        "pickle-payload": "not a valid safetensors file",
    }
    for name in bad:
        shutil.copytree(SHIPPED, root / name)
    (root / "missing-weights" / "model.safetensors").unlink()
    w = root / "truncated-weights" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    _edit_meta(root / "schema-version", lambda m: m.update(schema_version=99))
    _edit_meta(root / "tampered-meta", lambda m: m["model"]["config"].update(evil=1))
    (root / "meta-not-json" / "meta.json").write_text("{ not json")
    (root / "pickle-payload" / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    _edit_meta(root / "pickle-payload", _no_hash)  # reach the weights parser itself
    return bad


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    import streamlit as st

    root = tmp_path_factory.mktemp("bad-ckpts")
    marker = root.parent / "payload-ran"
    shutil.copytree(SHIPPED, root / "good")
    bad = make_bad(root, marker)
    sys.path.insert(0, str(REPO / "app"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield root, bad, marker
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path, app_env):
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(app_env[0]))
    monkeypatch.setenv("CESAA_DASHBOARD_RUNS", str(tmp_path / "runs"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_an_error_card_for_every_bad_checkpoint(app_env, page):
    from streamlit.testing.v1 import AppTest

    root, bad, marker = app_env
    at = AppTest.from_file(MAIN, default_timeout=60)
    for name, fragment in bad.items():
        at.session_state["nav_ckpt"] = str((root / name).resolve())
        if page != "overview":
            at.switch_page(f"views/{page}.py")
        at.run()
        assert not at.exception, (page, name, [e.value for e in at.exception])
        cards = [e.value for e in at.error]
        assert any(fragment in c for c in cards), (page, name, cards)
        assert not any("Unexpected error" in c for c in cards), (page, name, cards)  # not a bug
    assert not marker.exists()  # the pickle was refused, never executed
    # the same session still works with the good checkpoint
    at.session_state["nav_ckpt"] = str((root / "good").resolve())
    if page != "overview":
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
    if page == "overview":  # the listing names the broken ones and still shows the good one
        assert any(
            "schema-version" in c and "unsupported" in c for c in [e.value for e in at.error]
        )


def test_uploads_are_capped_by_the_server_config():
    # Streamlit's server refuses an upload over server.maxUploadSize (MB) before the app sees it;
    # AppTest bypasses the server, so this checks that the cap is configured for `streamlit run`
    from cesaa.data.schema import tomllib  # tomli on Python 3.10

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert 1 <= config["server"]["maxUploadSize"] <= 1024


def test_an_upload_over_the_dashboard_limit_is_refused_with_its_size(monkeypatch):
    import sys

    monkeypatch.syspath_prepend(str(REPO / "app"))
    monkeypatch.setenv("CESAA_MAX_UPLOAD_MB", "0.001")  # about 1 kB
    sys.modules.pop("jobs", None)
    import jobs
    from loaders import LoadError

    content = b"label,domain,x\n" + b"1,a,0.5\n" * 400  # about 3 kB
    with pytest.raises(
        LoadError, match=r"big\.csv is 0\.0 MB, over the dashboard's upload limit of 0\.001 MB"
    ):
        jobs.upload_frame("big.csv", content)
    monkeypatch.setenv("CESAA_MAX_UPLOAD_MB", "1")
    assert len(jobs.upload_frame("small.csv", content)) == 400
