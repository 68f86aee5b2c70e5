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
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from analysis.export import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/bench_dashboard.py``
    sys.path.insert(0, str(REPO))

from bench._dashboard_browser import one_run, write_record  # noqa: E402
from bench._report import machine  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:dashboard -->", "<!-- /bench:dashboard -->"
CHROMIUM = "/usr/bin/chromium"
ARGS = list(CHROMIUM_ARGS)  # the launch flags that work on these machines (SETUP-NOTES)
FIRST_CHART_TARGET_S, TOGGLE_TARGET_S = 10.0, 1.0
PAGE_WARM_TARGET_S, SWAP_TARGET_S = 2.0, 1.0
SWAP_CHECKPOINTS = ("cesaa", "cesaa-d40")


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

    machine_line = machine(threads=1)  # CPU, versions, load average before the runs
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
