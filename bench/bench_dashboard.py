"""Dashboard timings in a real browser (a benchmark script, not a timed test).

    .venv/bin/python bench/bench_dashboard.py [--runs 3] [--toggles 6] [--no-write]

Measures, on the default shipped checkpoint (``checkpoints/cesaa``) unless said otherwise:

- start -> first chart: from launching ``streamlit run app/main.py`` (a fresh process each run) to
  the first plotly chart painted on the Overview page;
- k toggle -> updated charts: on the Ablations page, from an arrow-key press on the k slider until
  both the per-domain AUC chart and the "now" routing heatmap show the new values, plus the next
  animation frame.  k alternates between
  the trained value and its neighbours, so both first visits (model run) and cached values count;
- inspection pages (Experts, Rows, Routing over training): from a click on the page's link to its
  first chart painted, on the first visit (cold: the page computes) and on a second visit (warm),
  on three selections in the sidebar: the default checkpoint (D=4), the many-domain shipped
  checkpoint ``checkpoints/cesaa-d40`` (D=40, E=32) and a routing record of ``checkpoints/cesaa``
  (written once per invocation with ``cesaa record`` into the server's runs folder, a temporary
  folder the sidebar scans).  On the record, Rows and Routing over training need the model or the
  run folder: their one-line info card is what gets painted and timed;
- domain swap of 1,000 rows: ``analysis.rows.domain_swap`` + ``swap_matrices`` on 1,000 test rows
  of each checkpoint, in-process (the computation behind the Rows page's matrices; median of 5).

Writes a table into ``docs/benchmarks.md`` between ``<!-- bench:dashboard -->`` and
``<!-- /bench:dashboard -->`` (only that section; other benchmarks own the rest of the file).
Needs ``/usr/bin/chromium`` (Debian) and the ``playwright`` Python package.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from analysis.export import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:dashboard -->", "<!-- /bench:dashboard -->"
CHROMIUM = "/usr/bin/chromium"
ARGS = list(CHROMIUM_ARGS)  # the launch flags that work on these machines (SETUP-NOTES)
FIRST_CHART_TARGET_S, TOGGLE_TARGET_S = 10.0, 1.0
PAGE_WARM_TARGET_S, SWAP_TARGET_S = 2.0, 1.0
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
SWAP_CHECKPOINTS = ("cesaa", "cesaa-d40")
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


def swap_timings(root: Path, reps: int = 5, rows: int = 1000) -> dict[str, float]:
    """Median seconds of a domain swap of ``rows`` test rows per shipped checkpoint."""
    import torch

    from analysis.rows import domain_swap, swap_matrices
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data

    torch.set_num_threads(1)
    out = {}
    for name in SWAP_CHECKPOINTS:
        path = root / name
        if not (path / "meta.json").is_file():
            continue
        ckpt = load_checkpoint(path)
        desc = ckpt.meta["data"]["description"]
        test = load_data(
            desc["source"], split=desc["split"], seed=desc["seed"], encoders=ckpt.encoders
        ).test
        sub = test.subset(torch.arange(min(rows, len(test))))
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            res = domain_swap(ckpt.model, sub.cat, sub.num, sub.domain, ckpt.spec.num_domains)
            swap_matrices(res, ckpt.spec.num_domains)
            times.append(time.perf_counter() - t)
        out[f"{name} (D={ckpt.spec.num_domains})"] = statistics.median(times)
    return out


def table(
    firsts: list[float],
    lats: list[float],
    runs: int,
    pages: dict[tuple[str, str], list[list[float]]] | None = None,
    swaps: dict[str, float] | None = None,
    machine_line: str = "",
) -> str:
    def row(name: str, xs: list[float], target: float) -> str:
        med, worst = statistics.median(xs), max(xs)
        ok = "yes" if worst <= target else "no"
        return f"| {name} | {len(xs)} | {med:.2f} | {min(xs):.2f} | {worst:.2f} | ≤ {target:g} | {ok} |"

    def what(name: str, title: str) -> str:
        painted = "first chart"
        if name.startswith("record") and title != "Experts":
            painted = "info card (needs the model / run folder)"
        return f"{title} on {name}: click → {painted}"

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "## Dashboard",
            "",
            "Browser timings of `streamlit run app/main.py` on the default shipped checkpoint "
            "(`checkpoints/cesaa`), the many-domain one (`checkpoints/cesaa-d40`) and a routing "
            "record of `checkpoints/cesaa` (6,000 test rows, written by `cesaa record`), "
            "headless Debian Chromium driven by Playwright; "
            f"`bench/bench_dashboard.py`, {runs} fresh server processes, {when}.  ",
            f"Machine: {machine_line}",
            "",
            "| measurement | n | median s | min s | max s | target s | met |",
            "|---|---|---|---|---|---|---|",
            row("process start → first chart painted (Overview)", firsts, FIRST_CHART_TARGET_S),
            row("k toggle → updated charts (Ablations)", lats, TOGGLE_TARGET_S),
            *[
                row(f"{what(*key)}, {kind}", [v[i] for v in visits], target)
                for key, visits in (pages or {}).items()
                for i, (kind, target) in enumerate(
                    (("cold (computes)", FIRST_CHART_TARGET_S), ("warm", PAGE_WARM_TARGET_S))
                )
            ],
            *[
                row(f"domain swap of 1,000 rows, {name}", [sec], SWAP_TARGET_S)
                for name, sec in (swaps or {}).items()
            ],
            "",
            "The first chart waits for the first script run, most of it importing torch and "
            "loading the checkpoint and its data; a k toggle reruns the page's live-toggle "
            "fragment with the model re-routed at inference (cached per k after its first "
            "visit) until the AUC bars and the routing heatmap show the new values.  A page visit "
            "runs after the selection's Overview painted (its model and data loaded).  Routing "
            "over training counts its info card as painted on a checkpoint without snapshots.  "
            "The domain swap runs in-process (median of 5), one CPU thread.",
        ]
    )


def _machine() -> str:
    """``bench._report.machine()``: CPU model, cores, RAM, versions, load average now."""
    if str(REPO) not in sys.path:  # run as ``python bench/bench_dashboard.py``
        sys.path.insert(0, str(REPO))
    from bench._report import machine

    return machine(threads=1)


def write_section(path: Path, content: str) -> None:
    """Replace this benchmark's section of ``path`` (between the markers), or append it."""
    block = f"{START}\n{content}\n{END}"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="fresh server processes (default 3)")
    p.add_argument("--toggles", type=int, default=6, help="k changes per run (default 6)")
    p.add_argument("--no-write", action="store_true", help="print only, leave the docs alone")
    p.add_argument(
        "--swap-checkpoints",
        default=str(REPO / "checkpoints"),
        help="folder holding the checkpoints timed for the domain swap (default checkpoints/)",
    )
    args = p.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    machine_line = _machine()  # load average before the runs
    (REPO / "runs").mkdir(exist_ok=True)
    firsts, lats, pages = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp, sync_playwright() as pw:
        runs = Path(tmp) / "runs"
        write_record(runs)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for i in range(args.runs):
                first, lat, visits = one_run(browser, args.toggles, runs)
                firsts.append(first)
                lats.extend(lat)
                for key, v in visits.items():
                    pages.setdefault(key, []).append(v)
                print(f"run {i + 1}: first chart {first:.2f} s, k toggles {lat}", file=sys.stderr)
                for (name, title), v in visits.items():
                    print(
                        f"  {title} on {name}: cold {v[0]:.2f} s, warm {v[1]:.2f} s",
                        file=sys.stderr,
                    )
        finally:
            browser.close()
    swaps = swap_timings(Path(args.swap_checkpoints))
    out = table(firsts, lats, args.runs, pages, swaps, machine_line)
    print(out)
    if not args.no_write:
        write_section(DOC, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
