"""End-to-end: the dashboard in a real headless Chromium, driven by Playwright.

Starts ``streamlit run app/main.py`` on a free localhost port, changes k on the Ablations page and
checks that the per-domain metrics change, trains a tiny model on the Train page, downloads the
report and checks it, opens a routing record (written before the server starts, into the folder
the sidebar scans) and saves screenshots (``test-artifacts/screenshots/`` by default; set
``CESAA_SCREENSHOTS=docs/img`` to refresh the documentation's).  Uses Debian's ``/usr/bin/chromium``
(``.ci/run`` installs it); never ``playwright install``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analysis.export import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = list(CHROMIUM_ARGS)  # the launch flags that work on these machines (SETUP-NOTES)
RECORD = "e2e-record"  # the routing record the dashboard fixture writes

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="/usr/bin/chromium missing (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        not (REPO / "checkpoints" / "cesaa" / "meta.json").is_file(),
        reason="shipped checkpoints missing: run .venv/bin/python scripts/make_checkpoints.py",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict, log: Path) -> subprocess.Popen:
    """``streamlit run app/main.py`` on ``port``; returns once the health endpoint answers."""
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port)]
    cmd += ["--server.headless", "true", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"streamlit did not start; see {log}")


def chart_texts(page, key: str) -> list[str]:
    """The value labels printed on a keyed plotly chart (SVG text)."""
    return page.locator(f".st-key-{key} text.bartext").evaluate_all(
        "els => els.map(e => e.textContent)"
    )


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script run finished (no running indicator) and the next frame painted."""
    page.wait_for_function(
        "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def goto_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    from analysis.records.checkpoint import record_checkpoint

    tmp = tmp_path_factory.mktemp("e2e")
    # a routing record of the shipped checkpoint on its own test split (6,000 rows), in the
    # dashboard's runs folder, which the sidebar scans
    record_checkpoint(REPO / "checkpoints" / "cesaa", tmp / "runs" / RECORD, sample_size=300)
    env = {**os.environ, "CESAA_DASHBOARD_RUNS": str(tmp / "runs")}
    port = free_port()
    proc = start_server(port, env, tmp / "streamlit.log")
    try:
        yield f"http://127.0.0.1:{port}", tmp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dashboard_in_a_real_browser(dashboard):
    from playwright.sync_api import sync_playwright

    url, tmp = dashboard
    shots = Path(os.environ.get("CESAA_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
            page.goto(url)
            page.wait_for_selector(".st-key-ov_auc_bars .main-svg", timeout=90_000)
            wait_idle(page)
            assert page.get_by_text("Unexpected error").count() == 0
            page.wait_for_timeout(2000)  # data grids paint their canvas after the charts
            page.screenshot(path=shots / "overview.jpg", type="jpeg", quality=70)

            # Ablations: k 2 -> 1 changes the per-domain AUC
            goto_page(page, "Ablations")
            page.wait_for_selector(".st-key-abl_auc text.bartext", timeout=60_000)
            wait_idle(page)
            before = chart_texts(page, "abl_auc")
            slider = page.get_by_role("slider", name="k (experts per row)")
            assert slider.input_value() == "2"
            slider.focus()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "([sel, old]) => { const t = [...document.querySelectorAll(sel)]"
                ".map(e => e.textContent); return t.length === old.length && t.join() !== old.join(); }",
                arg=[".st-key-abl_auc text.bartext", before],
                timeout=30_000,
            )
            wait_idle(page)
            after = chart_texts(page, "abl_auc")
            assert len(after) == len(before) == 4 and after != before
            assert slider.input_value() == "1"
            page.screenshot(path=shots / "ablations.jpg", type="jpeg", quality=70)

            # Experts and Rows on the default checkpoint: their charts paint, no error card
            for title, key, shot in (
                ("Experts", "ex_logodds", "experts.jpg"),
                ("Rows", "rw_swap_logit", "rows.jpg"),
            ):
                goto_page(page, title)
                page.wait_for_selector(f".st-key-{key} .main-svg", timeout=90_000)
                wait_idle(page)
                assert page.get_by_text("Unexpected error").count() == 0, title
                page.screenshot(path=shots / shot, type="jpeg", quality=70)

            # Train: a tiny model, saved as a checkpoint and selected
            goto_page(page, "Train")
            for name, value in (("Rows", "2000"), ("Epochs (at most)", "1"), ("Name", "e2e-tiny")):
                box = page.get_by_label(name, exact=True)
                box.fill(value)
                box.press("Enter")
                wait_idle(page)
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_text("it is selected in the sidebar now").wait_for(timeout=120_000)
            wait_idle(page)
            assert (tmp / "runs" / "e2e-tiny" / "meta.json").is_file()
            page.screenshot(path=shots / "train.jpg", type="jpeg", quality=70)

            # the Train page trains with routing snapshots: routing over training of that run
            goto_page(page, "Routing over training")
            page.wait_for_selector(".st-key-ev_lines .main-svg", timeout=60_000)
            wait_idle(page)
            assert (
                page.get_by_text("Routing settled at epoch").count()
                + page.get_by_text("Only one epoch has a snapshot").count()
                == 1
            )
            page.screenshot(path=shots / "evolution.jpg", type="jpeg", quality=70)

            # Report of the new checkpoint: download the JSON and the HTML
            goto_page(page, "Report")
            button = page.get_by_role("button", name="Download JSON")
            button.wait_for(timeout=120_000)
            wait_idle(page)
            with page.expect_download() as got:
                button.click()
            report = json.loads(Path(got.value.path()).read_text())
            assert report["model_card"]["name"] == "cesaa"
            assert report["checkpoint"]["path"].endswith("e2e-tiny")
            assert 0.0 <= report["metrics"]["auc"] <= 1.0
            with page.expect_download() as got:
                page.get_by_role("button", name="Download HTML").click()
            assert "<html" in Path(got.value.path()).read_text()[:500].lower()
            page.screenshot(path=shots / "report.jpg", type="jpeg", quality=70)
        finally:
            browser.close()


def test_a_record_backed_session_in_a_real_browser(dashboard):
    from playwright.sync_api import sync_playwright

    url, tmp = dashboard
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(url)
            page.wait_for_selector(".st-key-ov_auc_bars .main-svg", timeout=90_000)
            wait_idle(page)

            # select the record in the sidebar: its Overview reads the record alone
            page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name=f"{RECORD} (record)").click()
            page.get_by_text(f"Routing record · {RECORD}").wait_for(timeout=90_000)
            page.wait_for_selector(".st-key-ov_auc_bars .main-svg", timeout=90_000)
            wait_idle(page)
            assert page.locator(".st-key-ov_auc_bars text.bartext").count() == 4  # domains
            assert page.get_by_text("Unexpected error").count() == 0

            # Ablations re-runs the model: one line that it needs a checkpoint, no error card
            goto_page(page, "Ablations")
            note = page.get_by_text("needs a checkpoint")
            note.first.wait_for(timeout=60_000)
            wait_idle(page)
            assert note.count() == 1
            assert page.get_by_text("The selected item is a routing record").count() == 1
            assert page.locator(".st-key-abl_auc").count() == 0
            assert page.locator('[data-testid="stException"]').count() == 0

            # Experts reads the record alone: its chart paints from the record's rows
            goto_page(page, "Experts")
            page.wait_for_selector(".st-key-ex_logodds .main-svg", timeout=90_000)
            wait_idle(page)
            page.get_by_text("rows of the record").first.wait_for(timeout=30_000)
            assert page.get_by_text("Unexpected error").count() == 0
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
