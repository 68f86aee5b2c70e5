"""bench.step_ab: the working tree against a revision, two workers side by side."""

from __future__ import annotations

import subprocess

import pytest

from bench import _report, step_ab


def _git_ok() -> bool:
    try:
        subprocess.run(
            ["git", "-C", str(_report.REPO), "rev-parse", "HEAD"], capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _git_ok(), reason="needs the repository's git history")


def test_an_a_a_comparison_keeps_the_loss_and_writes_its_section(tmp_path, ml100k_path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n", encoding="utf-8")
    assert step_ab.main(["--quick", "--docs", str(docs), "--against", "HEAD"]) == 0
    body = docs.read_text(encoding="utf-8").split("<!-- bench:step-ab -->")[1]
    assert "python -m bench.step_ab --quick" in body and "Quick mode" in body
    notes = body.split("First-step loss: old ")[1]
    old, new = notes.split(", new ")[0], notes.split(", new ")[1].split(";")[0]
    # HEAD and a working tree at HEAD run the same code on the same batch: the same loss
    assert old == new and float(old) > 0
    row = [r for r in body.splitlines() if r.startswith("| 1 |")]
    assert len(row) == 1 and row[0].count("|") == 7


def test_a_bad_revision_is_named(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        step_ab.main(["--quick", "--docs", "-", "--against", "no-such-revision"])
    assert exc.value.code == 2
    assert "--against 'no-such-revision': not a revision git can export here" in (
        capsys.readouterr().err
    )
