"""The report's inspection section: what each expert learned, the domain swap, routing over
training.  ``inspection_section`` computes JSON values (stored in ``Report.inspection``);
``inspection_html`` renders them.  Kept apart from the other report modules so that each section
is one small file.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.expert_profiles import expert_profiles
from analysis.experts import domain_contrast, feature_log_odds
from analysis.measures import json_safe
from analysis.rows import domain_swap, kept_columns, swap_matrices
from analysis.saturation import saturation_table, settled_statement

MAX_ROWS = 5_000  # rows of the split the expert tables read (seeded sample)
SWAP_ROWS = 1_000
TOP_N = 5


def _sample(n: int, size: int, seed: int = 0) -> torch.Tensor:
    if n <= size:
        return torch.arange(n)
    return torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n, size, replace=False)))


@torch.no_grad()
def inspection_section(
    model: nn.Module,
    table: Any,
    encoders: dict,
    domain_names: list[str],
    run_dir: str | Path | None = None,
    *,
    max_rows: int = MAX_ROWS,
    swap_rows: int = SWAP_ROWS,
    top_n: int = TOP_N,
) -> dict:
    """Experts (profiles and their ``top_n`` significant feature values), the domain-swap
    matrices and, when ``run_dir`` has routing snapshots, saturation per epoch."""
    out: dict[str, Any] = {"notes": {}, "domain_names": list(domain_names)}
    d = len(domain_names)
    sub = table.subset(_sample(len(table), max_rows))
    model.eval()
    o = model(sub.cat, sub.num, sub.domain)
    if o.probs is None:
        out["notes"]["experts"] = "the model has no gate: no routed rows to describe"
    else:
        e = o.probs.shape[1]
        topk = o.topk_idx.numpy() if o.topk_idx is not None else o.probs.argmax(1)[:, None].numpy()
        dom = sub.domain.numpy()
        summary, _ = expert_profiles(
            dom,
            topk,
            sub.label.numpy(),
            torch.sigmoid(o.logit).double().numpy(),
            num_experts=e,
            num_domains=d,
            domain_names=domain_names,
        )
        cols = kept_columns(sub.cat, sub.num, encoders)
        top, by_domain = [], []
        for x in range(e):
            routed = (topk == x).any(axis=1)
            if not routed.any() or not cols:
                continue
            if not domain_contrast(dom, routed)["contrast"].any():
                by_domain.append(x)  # chosen by the domain alone: nothing to contrast
                continue
            t = feature_log_odds(cols, dom, routed)
            t = t[t["significant"] & (t["ci_low"] > 0)].head(top_n)  # over-represented only
            for r in t.itertuples():
                top.append(
                    {"expert": x, "feature": r.feature, "value": r.value,
                     "log_odds": r.log_odds, "ci_low": r.ci_low, "ci_high": r.ci_high,
                     "routed_with": r.routed_with, "other_with": r.other_with, "q": r.q_value}
                )  # fmt: skip
        out["experts"] = summary.to_dict("records")
        out["top_values"] = top
        out["domain_only_experts"] = by_domain
        out["rows"] = len(sub)
    swap_sub = table.subset(_sample(len(table), swap_rows, seed=1))
    m = swap_matrices(domain_swap(model, swap_sub.cat, swap_sub.num, swap_sub.domain, d), d)
    out["swap"] = {k: v.tolist() for k, v in m.items()}
    out["swap_rows"] = len(swap_sub)
    if run_dir is not None:
        sat = saturation_table(run_dir)
        out["evolution"] = sat.to_dict("records")
        out["settled"] = settled_statement(sat)
    return json_safe(out)


def _table(rows: list[dict], columns: list[str], fmt: str = ".3f") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else format(v, fmt)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def inspection_html(section: dict | None) -> str:
    """The section as HTML tables (no figures: the dashboard has the interactive views)."""
    if not section:
        return "<p class='note'>No inspection section in this report.</p>"
    parts = []
    if "experts" in section:
        parts.append(f"<h3>What each expert learned ({section['rows']:,} rows)</h3>")
        parts.append(
            _table(
                section["experts"],
                ["expert", "rows", "share", "domains", "mean_prediction", "label_rate", "auc"],
            )  # fmt: skip
        )
        parts.append(
            "<p>Most over-represented feature values per expert (Mantel-Haenszel log-odds "
            "stratified by domain, 95% interval, significant at BH q &lt; 0.05):</p>"
        )
        parts.append(
            _table(
                section["top_values"],
                [
                    "expert",
                    "feature",
                    "value",
                    "log_odds",
                    "ci_low",
                    "ci_high",
                    "routed_with",
                    "other_with",
                    "q",
                ],
            )  # fmt: skip
            if section["top_values"]
            else "<p class='note'>No significant feature value for any expert.</p>"
        )
        only = section.get("domain_only_experts", [])
        if only:
            parts.append(
                f"<p class='note'>Experts {', '.join(map(str, only))} receive every row of their "
                "domains or none: the domain alone picks them, so no feature value can be "
                "over-represented within a domain (specialized by domain, not empty).</p>"
            )
    else:
        parts.append(f"<p class='note'>{html.escape(section['notes'].get('experts', ''))}</p>")
    s, domain_names = section["swap"], section["domain_names"]
    parts.append(
        f"<h3>Domain swap ({section['swap_rows']:,} rows)</h3><p>Mean |Δlogit| when a row of the "
        "row's domain is routed as the column's domain:</p>"
    )
    rows = [
        {"domain": n, **{m: s["mean_abs_dlogit"][i][j] for j, m in enumerate(domain_names)}}
        for i, n in enumerate(domain_names)
    ]
    parts.append(_table(rows, ["domain", *domain_names]))
    if "evolution" in section:
        parts.append(f"<h3>Routing over training</h3><p>{html.escape(section['settled'])}</p>")
        if section["evolution"]:
            parts.append(
                _table(
                    section["evolution"], ["epoch", "saturation", "mi_hard_normalized", "load_cv"]
                )  # fmt: skip
            )
    return "".join(parts)
