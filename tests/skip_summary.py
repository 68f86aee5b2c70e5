"""A terminal-summary section that says why tests were skipped, one line per reason with its count
(``-q`` alone prints only "N skipped"; a fresh clone without ../shared/data skips the data tests,
and the summary should say so).  ``conftest.py`` imports the hook."""

from __future__ import annotations

from collections import Counter


def skip_reasons(reports) -> Counter:
    """Reason -> number of skipped tests, from pytest's skipped reports."""
    reasons: Counter = Counter()
    for rep in reports:
        longrepr = getattr(rep, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reasons[str(longrepr[2]).removeprefix("Skipped: ")] += 1
    return reasons


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    reasons = skip_reasons(terminalreporter.stats.get("skipped", []))
    if not reasons:
        return
    terminalreporter.section("why tests were skipped")
    for reason, n in reasons.most_common():
        terminalreporter.line(f"{n:4d} skipped: {reason}")
