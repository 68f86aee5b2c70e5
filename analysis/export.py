"""Static export of report figures: PNG through kaleido >= 1, PDF through headless Chromium.

Both need a Chromium binary; without one (or without kaleido / playwright) the functions return a
message starting with ``"skipped: "`` instead of raising, so ``cesaa report`` always writes its
HTML, JSON and CSV files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
INSTALL_HINT = "install it (Debian: apt-get install chromium) or set BROWSER_PATH"


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$BROWSER_PATH``, then the usual names on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file() and os.access(env, os.X_OK):
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def kaleido_problem() -> str | None:
    """None when kaleido >= 1 is installed, else why PNG export cannot run."""
    if importlib.util.find_spec("kaleido") is None:
        return "kaleido is not installed (pip install 'kaleido>=1')"
    try:
        major = int(metadata.version("kaleido").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return "kaleido's version is unknown"
    if major < 1:
        return f"kaleido {metadata.version('kaleido')} does not work with plotly >= 6; need >= 1"
    return None


def static_problem(fmt: str) -> str | None:
    """None when ``fmt`` ("png" or "pdf") can be exported here, else the reason."""
    if fmt not in ("png", "pdf"):
        return f"unknown static format {fmt!r} (png, pdf)"
    if find_chromium() is None:
        return f"no Chromium found ({INSTALL_HINT})"
    return kaleido_problem() if fmt == "png" else None


@contextmanager
def _browser_env(path: str):
    """Let kaleido/choreographer find the Chromium we found."""
    old = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old


def export_png(
    figures: Mapping[str, Any], out_dir: str | Path, *, width: int = 900, scale: float = 1.0
) -> dict[str, Path] | str:
    """Write ``<out_dir>/<name>.png`` for every figure (one browser session for all of them).

    Returns the written paths by name, or a ``"skipped: ..."`` message.
    """
    problem = static_problem("png")
    if problem:
        return f"skipped: PNG export: {problem}"
    if not figures:
        return {}
    import plotly.io as pio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.png" for name in figures}
    figs = list(figures.values())
    heights = [f.layout.height or 450 for f in figs]
    for attempt in range(2):  # a browser that returns without writing (seen under load) retries
        for p in paths.values():
            p.unlink(missing_ok=True)  # a file from an earlier export must not pass for this one's
        try:
            with _browser_env(find_chromium()):
                pio.write_images(
                    figs,
                    [paths[n] for n in figures],
                    format="png",
                    width=width,
                    height=heights,
                    scale=scale,
                )
        except Exception as e:  # a browser failure must not lose the report
            log.warning("PNG export failed: %s", e)
            return f"skipped: PNG export failed ({type(e).__name__}: {e})"
        missing = [n for n, p in paths.items() if not p.is_file() or p.stat().st_size == 0]
        if not missing:
            return paths
        log.warning("PNG export wrote no file for %s (attempt %d)", missing, attempt + 1)
    return f"skipped: PNG export wrote no file for {missing} in {out} (the browser returned early)"


def export_pdf(html_text: str, pdf_path: str | Path, *, timeout_s: float = 120.0) -> Path | str:
    """Print a self-contained HTML page to ``pdf_path`` with headless Chromium (Playwright when
    installed, else ``chromium --print-to-pdf``).  Returns the path or a ``"skipped: ..."``
    message."""
    problem = static_problem("pdf")
    if problem:
        return f"skipped: PDF export: {problem}"
    chromium = find_chromium()
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cesaa-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html_text, encoding="utf-8")
        try:
            if importlib.util.find_spec("playwright") is not None:
                _pdf_playwright(chromium, page, pdf_path, timeout_s)
            else:
                _pdf_cli(chromium, page, pdf_path, timeout_s)
        except Exception as e:  # a browser failure must not lose the report
            log.warning("PDF export failed: %s", e)
            return f"skipped: PDF export failed ({type(e).__name__}: {e})"
    if not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        return "skipped: PDF export failed (Chromium wrote no file)"
    return pdf_path


def _pdf_playwright(chromium: str, page_path: Path, pdf_path: Path, timeout_s: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.plotly-graph-div'))"
                ".every(d => d.querySelector('.main-svg'))",
                timeout=timeout_s * 1000,
            )
            page.emulate_media(media="print")
            tmp = pdf_path.with_name(f".{pdf_path.name}.tmp")
            page.pdf(
                path=str(tmp),
                format="A4",
                print_background=True,
                margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"},
            )
            os.replace(tmp, pdf_path)
        finally:
            browser.close()


def _pdf_cli(chromium: str, page_path: Path, pdf_path: Path, timeout_s: float) -> None:
    cmd = [
        chromium,
        *CHROMIUM_ARGS,
        "--no-pdf-header-footer",
        "--virtual-time-budget=15000",
        f"--print-to-pdf={pdf_path}",
        page_path.as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
