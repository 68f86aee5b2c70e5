"""The test suite's own promises: skips say why in the summary, hard dependencies are imported
(never skipped), and Python 3.10, which pyproject declares, gets a TOML parser."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_summary_says_why_tests_were_skipped(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from skip_summary import pytest_terminal_summary  # noqa: F401\n"
    )
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('i', range(3))\n"
        "def test_data(i):\n    pytest.skip('shared data folder ../shared/data is absent')\n\n"
        "def test_ok():\n    pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO / "tests"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    ).stdout
    assert "why tests were skipped" in out, out
    assert "3 skipped: shared data folder ../shared/data is absent" in out, out


def test_no_test_skips_on_a_hard_dependency():
    """``importorskip`` of a package pyproject requires would hide a broken install as a skip."""
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    hard = {
        re.split(r"[<>=!;\[ ]", d.strip().strip('",'))[0] for d in deps.splitlines() if '"' in d
    }
    hard = {h.replace("-", "_") for h in hard if h}
    found = []
    for path in (REPO / "tests").glob("*.py"):
        for name in re.findall(r"importorskip\(\s*[\"']([\w.]+)[\"']", path.read_text()):
            if name.split(".")[0] in hard | {"tomllib"}:
                found.append(f"{path.name}: importorskip({name!r})")
    assert not found, found


def test_python_310_gets_a_toml_parser():
    """pyproject declares Python >= 3.10, where tomllib does not exist: tomli stands in there."""
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r"requires-python = \">=3.10\"", text)
    assert re.search(r"\"tomli>=[\d.]+; python_version < '3.11'\"", text), "no tomli for 3.10"
    schema = (REPO / "cesaa" / "data" / "schema.py").read_text()
    assert "import tomli as tomllib" in schema
