"""The AppTest harness shared by the dashboard test files: paths, cache-clearing and env fixtures,
running a page, reading plotly figure JSON, and the direct cesaa + analysis oracle.

Test files import the fixtures by name (``from apptest_support import ...``) so pytest finds them.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
SHIPPED = REPO / "checkpoints"
DEFAULT = SHIPPED / "cesaa"
PAGES = (
    "overview",
    "routing",
    "information",
    "embeddings",
    "ablations",
    "compare",
    "report",
    "experts",
    "rows",
)

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


def finish_training(at, timeout: float = 120) -> None:
    """Wait for the Train page's background run, then let the page pick up its result."""
    if "tr_job" not in at.session_state:  # it already finished within the click's run
        return
    job = at.session_state["tr_job"]
    job.wait(timeout)
    assert not job.running, "training did not finish in time"
    at.run(timeout=60)
