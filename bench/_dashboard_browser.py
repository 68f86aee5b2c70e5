"""Drive the dashboard in a real browser for ``bench.bench_dashboard``: start ``streamlit run
app/main.py`` on a free port, write the routing record its sidebar offers, and time (Playwright) the
first chart, the k toggles on the Ablations page and the inspection pages' cold and warm visits on
each sidebar selection.  The CSS selectors below say what "painted" means for each measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._report import REPO

LIVE = ':not([data-stale="true"])'  # an element of the current script run, not a stale one
ALERT = f'[data-testid="stElementContainer"]{LIVE} [data-testid="stAlert"]'
# page link -> what its first chart is (or the info card a checkpoint without snapshots gets)
INSPECTION = {
    "Experts": f".st-key-ex_logodds{LIVE} .main-svg",
    "Rows": f".st-key-rw_swap_logit{LIVE} .main-svg",
    "Routing over training": f".st-key-ev_lines{LIVE} .main-svg, {ALERT}",
}
# on a routing record: Experts reads the record; the other two say what they need (an info card)
INSPECTION_RECORD = {
    "Experts": INSPECTION["Experts"],
    "Rows": ALERT,
    "Routing over training": ALERT,
}
RECORD = "bench-record"  # the routing record's folder name in the server's runs folder
# what the pages are timed on: (table label, sidebar option or None = the default, the Overview's
# first chart once that selection is loaded, page selectors)
SELECTIONS = (
    ("cesaa (D=4)", None, None, INSPECTION),
    ("cesaa-d40 (D=40)", "cesaa-d40", f".st-key-ov_auc_bars{LIVE} .main-svg", INSPECTION),
    (
        "record of cesaa (D=4)",
        f"{RECORD} (record)",
        f".st-key-ov_rec_auc_bars{LIVE} .main-svg",
        INSPECTION_RECORD,
    ),
)
BARS = ".st-key-abl_auc text.bartext"
# what the charts show now: the AUC bar labels and the "now" heatmap's cells (plotly's gd.data)
SNAPSHOT = """() => {
  const bars = [...document.querySelectorAll('.st-key-abl_auc text.bartext')].map(e => e.textContent);
  const gd = document.querySelector('.st-key-abl_heat_now .js-plotly-plot');
  const z = gd && gd.data ? JSON.stringify(gd.data[0].z) : null;
  return JSON.stringify([bars, z]);
}"""
CHANGED = (
    "(old) => { const now = (" + SNAPSHOT + ")(); const [b, z] = JSON.parse(now);"
    " const [ob, oz] = JSON.parse(old);"
    " return b.length === ob.length && b.join() !== ob.join() && z !== null && z !== oz; }"
)
FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, log, runs: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port)]
    cmd += ["--server.headless", "true", "--server.fileWatcherType", "none"]
    env = {**os.environ, "CESAA_DASHBOARD_RUNS": str(runs)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def write_record(runs: Path) -> Path:
    """``cesaa record checkpoints/cesaa`` into the runs folder the dashboard's sidebar scans."""
    out = runs / RECORD
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, "-m", "cesaa", "record", str(REPO / "checkpoints" / "cesaa")]
    cmd += ["--out", str(out), "--sample", "300"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return out


def select(page, option: str, ready: str) -> None:
    """Pick ``option`` in the sidebar's checkpoint box (on the Overview) and wait until the
    Overview of that selection painted ``ready``, so its model and data are loaded before the
    page visits (as they are for the default checkpoint)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text="Overview").first.click()
    page.wait_for_selector("h1:has-text('Overview')", timeout=60_000)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_selector(ready, timeout=180_000)
    page.wait_for_function(
        "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000
    )
    page.evaluate(FRAME)


def wait_health(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{port}/_stcore/health"
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("streamlit did not answer its health check")


def snapshot(page) -> str:
    return page.evaluate(SNAPSHOT)


def visit(page, title: str, selector: str) -> float:
    """Seconds from a click on the page link ``title`` to its first chart painted."""
    t = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
    page.wait_for_selector(selector, timeout=120_000)
    page.evaluate(FRAME)
    return time.perf_counter() - t


def one_run(
    browser, toggles: int, runs: Path
) -> tuple[float, list[float], dict[tuple[str, str], list[float]]]:
    """(seconds from process start to the first painted chart, k-toggle latencies, inspection
    page visits: (selection, title) -> [cold, warm])."""
    port = free_port()
    log = open(REPO / "runs" / "bench-dashboard.log", "w")  # noqa: SIM115
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    t0 = time.perf_counter()
    proc = launch(port, log, runs)
    try:
        wait_health(port)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=120_000)
        page.evaluate(FRAME)
        first = time.perf_counter() - t0

        page.locator('[data-testid="stSidebarNav"] a', has_text="Ablations").first.click()
        page.wait_for_selector(BARS, timeout=120_000)
        page.wait_for_selector(".st-key-abl_knockout .main-svg", timeout=120_000)
        slider = page.get_by_role("slider", name="k (experts per row)")
        slider.focus()
        keys = ["ArrowLeft", "ArrowRight", "ArrowRight", "ArrowLeft"]
        lat = []
        for i in range(toggles):
            old = snapshot(page)
            t = time.perf_counter()
            page.keyboard.press(keys[i % len(keys)])
            page.wait_for_function(CHANGED, arg=old, timeout=30_000)
            page.evaluate(FRAME)
            lat.append(time.perf_counter() - t)
            time.sleep(0.3)  # let the run finish before the next key press
        pages: dict[tuple[str, str], list[float]] = {}
        for name, option, ready, selectors in SELECTIONS:
            if option is not None:
                select(page, option, ready)
            for _ in range(2):  # cold, then warm
                for title, selector in selectors.items():
                    pages.setdefault((name, title), []).append(visit(page, title, selector))
                    time.sleep(0.3)
        return first, lat, pages
    finally:
        page.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
