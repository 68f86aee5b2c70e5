"""Write a leaderboard as markdown, CSV, JSON and one self-contained HTML page (no scripts, no links).

Files in the output folder: ``leaderboard.md``, ``leaderboard.csv`` (one row per scope, metric and
model), ``leaderboard.json`` (``Leaderboard.to_dict``: everything, read back by the dashboard),
``leaderboard.html`` and ``runs.json`` (every run's record).
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

from cesaa.benchmark.leaderboard import METRICS, OVERALL, Cell, Leaderboard, domain_tally

FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html")
TITLES = {"auc": "AUC", "gauc": "GAUC", "logloss": "logloss"}


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def p_text(p: float) -> str:
    """A p-value as shown: "<0.001" below 0.001 (never "0.000", which reads as exactly 0), else
    3 decimals; "" when there is none."""
    if p is None or not math.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _diff(c: Cell) -> str:
    if c.is_best:
        return "best"
    if not math.isfinite(c.diff_mean):
        return "n/a"
    ci = f" [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if math.isfinite(c.ci_low) else " [n/a: 1 seed]"
    return f"{c.diff_mean:+.4f}{ci}"


def overall_rows(lb: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The overall table: one row per model, ranked by mean test AUC."""
    pct = f"{lb.level:.0%}"
    cols = [
        "rank",
        "model",
        "AUC",
        "GAUC",
        "logloss",
        f"Δ AUC vs best [{pct} CI]",
        "p (Holm)",
        "stalled",
        "detectable Δ (80 % power)",
        "best epoch",
        "train s / run",
        "tuning",
    ]
    cell = {(c.metric, c.model): c for c in lb.cells if c.scope == OVERALL}
    rows = []
    for m in lb.models:
        auc = cell[("auc", m.model)]
        tune = m.tune
        tuned = (
            f"{tune.get('complete', 0)} complete + {tune.get('pruned', 0)} pruned trials, "
            f"{tune.get('seconds', 0.0):.0f} s"
            if tune
            else "defaults"
        )
        rows.append(
            [
                str(auc.rank),
                m.model,
                *(_pm(cell[(k, m.model)].mean, cell[(k, m.model)].std) for k in METRICS),
                _diff(auc),
                p_text(auc.p_holm),
                m.stalled,  # next to the verdict: a stalled run measures training, not a model
                "" if auc.is_best else _f(auc.detectable),
                _pm(*m.best_epoch, 1),
                _pm(*m.train_seconds, 1),
                tuned,
            ]
        )
    return cols, rows


def domain_rows(lb: Leaderboard, metric: str) -> tuple[list[str], list[list[str]]]:
    """Per-domain mean ± std of one metric; a '*' marks each domain's best model."""
    cell = {(c.scope, c.model): c for c in lb.cells if c.metric == metric}
    rows = []
    for m in lb.models:
        row = [m.model]
        for d in lb.domains:
            c = cell[(d, m.model)]
            row.append(_pm(c.mean, c.std) + (" *" if c.is_best else ""))
        rows.append(row)
    return ["model", *lb.domains], rows


def tally_rows(lb: Leaderboard, metric: str) -> tuple[list[str], list[list[str]]]:
    """Per model: domains won, level with the best, significantly worse (``domain_tally``)."""
    cols = ["model", "best in", "level with the best in", "worse in"]
    d = len(lb.domains)
    rows = [
        [t.model, f"{t.best} / {d}", f"{t.level_with_best} / {d}", f"{t.worse} / {d}"]
        for t in domain_tally(lb, metric)
    ]
    return cols, rows


DETECTABLE_NOTE = (
    "Detectable Δ: the smallest true difference to the best that these paired seeds detect with "
    "80 % power (two-sided paired t-test at 1 − the level, from the paired seed-to-seed SD): a "
    "model whose Δ is not significant is level with the best only to within this noise floor."
)
TALLY_NOTE = (
    "Domains where the model has the best mean, where its seed-paired difference to that "
    "domain's best is not significant (Holm-corrected paired t-test at 1 − the level; with one "
    "seed nothing is significant), and where it is significantly worse."
)


def _md_table(cols: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _intro(lb: Leaderboard) -> list[str]:
    meta = lb.meta
    lines = []
    if meta.get("command"):
        lines.append(f"Command: `{meta['command']}`")
    for key, label in (
        ("data", "Data"),
        ("protocol", "Protocol"),
        ("budget", "Budget"),
        ("machine", "Machine"),
        ("finished", "Finished"),
    ):
        if meta.get(key):
            lines.append(f"{label}: {meta[key]}")
    return lines


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "model defaults"


def to_markdown(lb: Leaderboard) -> str:
    """The whole leaderboard as markdown (what ``leaderboard.md`` holds)."""
    parts = ["# Leaderboard", "\n\n".join(_intro(lb))]
    parts.append(
        "Test metrics of the best-validation epoch, mean ± sample std over seeds.  Δ: the model "
        "minus the best model, paired by seed, with a Student-t interval; p: paired t-test, "
        "Holm-corrected over the models compared with the best.  " + DETECTABLE_NOTE
    )
    parts.append("## Overall\n\n" + _md_table(*overall_rows(lb)))
    if lb.domains:
        parts.append(
            f"## Domains won (test AUC)\n\n{TALLY_NOTE}\n\n" + _md_table(*tally_rows(lb, "auc"))
        )
    for metric in METRICS:
        parts.append(
            f"## Per domain: test {TITLES[metric]}\n\n" + _md_table(*domain_rows(lb, metric))
        )
    parts.append(
        "## Selected configurations\n\n"
        + _md_table(["model", "params"], [[m.model, _params_text(m.params)] for m in lb.models])
    )
    return "\n\n".join(p for p in parts if p) + "\n"


def to_csv_rows(lb: Leaderboard) -> list[dict]:
    return [
        {
            "scope": c.scope,
            "metric": c.metric,
            "model": c.model,
            "rank": c.rank,
            "mean": c.mean,
            "std": c.std,
            "seeds": c.n,
            "diff_to_best": c.diff_mean,
            "diff_std": c.diff_std,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "p_value": c.p_value,
            "p_holm": c.p_holm,
            "detectable": c.detectable,
        }
        for c in lb.cells
    ]


def _html_table(cols: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}
td{text-align:right}td:nth-child(-n+2){text-align:left}th{background:#f3f3f3}
code{background:#f6f6f6;padding:.1em .3em}"""


def to_html(lb: Leaderboard) -> str:
    """A self-contained page (inline CSS, no scripts, no external resources)."""
    intro = "".join(f"<p>{html.escape(line)}</p>" for line in _intro(lb))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cesaa leaderboard</title>",
        f"<style>{_CSS}</style></head><body><h1>Leaderboard</h1>{intro}",
        "<h2>Overall</h2>",
        _html_table(*overall_rows(lb)),
        f"<p>{html.escape(DETECTABLE_NOTE)}</p>",
    ]
    if lb.domains:
        parts += [
            "<h2>Domains won (test AUC)</h2>",
            f"<p>{html.escape(TALLY_NOTE)}</p>",
            _html_table(*tally_rows(lb, "auc")),
        ]
    for metric in METRICS:
        parts += [
            f"<h2>Per domain: test {TITLES[metric]}</h2>",
            _html_table(*domain_rows(lb, metric)),
        ]
    parts += [
        "<h2>Selected configurations</h2>",
        _html_table(["model", "params"], [[m.model, _params_text(m.params)] for m in lb.models]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _json_safe(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def write_leaderboard(lb: Leaderboard, out: str | Path, runs: list[dict] | None = None) -> Path:
    """Write the four leaderboard files (and ``runs.json`` when ``runs``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(to_markdown(lb), encoding="utf-8")
    rows = to_csv_rows(lb)
    with open(out / "leaderboard.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "leaderboard.json").write_text(
        json.dumps(_json_safe(lb.to_dict()), indent=1), encoding="utf-8"
    )
    (out / "leaderboard.html").write_text(to_html(lb), encoding="utf-8")
    if runs is not None:
        (out / "runs.json").write_text(json.dumps(_json_safe(runs), indent=1), encoding="utf-8")
    return out


def read_leaderboard(folder: str | Path) -> Leaderboard:
    """Read ``leaderboard.json`` of a ``cesaa bench`` output folder.

    Raises ``FileNotFoundError`` naming the file when it is missing and ``ValueError`` naming it when
    it is not a leaderboard (bad JSON or missing keys).
    """
    path = Path(folder) / "leaderboard.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a `cesaa bench` output folder")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        d = _nan_back(d)
        return Leaderboard.from_dict(d)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a leaderboard ({type(e).__name__}: {e})") from None


def _nan_back(d: dict) -> dict:
    """JSON nulls of the numeric cell fields back to nan."""
    for c in d.get("cells", []):
        for k, v in c.items():
            if v is None and k not in ("scope", "metric", "model"):
                c[k] = math.nan
    return d
