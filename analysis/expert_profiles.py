"""Per expert, on the rows routed to it: how many, from which domains, the model's predictions and
accuracy there.

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Numpy in, plain DataFrames out; the routing record or an ``analysis.collect`` pass can feed it
(domain, top-k experts, labels and predictions).  What the rows routed to an expert have in common
(over-represented feature values) is ``analysis.experts``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.validation import check_routing_arrays


def expert_profiles(
    domain: Any,
    topk_idx: Any,
    labels: Any,
    preds: Any,
    *,
    num_experts: int,
    num_domains: int | None = None,
    domain_names: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per expert, on the rows routed to it: ``(summary, per_domain)``.

    ``summary``: one row per expert: ``expert``, ``rows``, ``share`` (of all rows), ``domains``
    (how many domains send it rows), ``mean_prediction``, ``label_rate``, ``auc`` (NaN when its
    rows hold one class only).  ``per_domain``: ``expert``, ``domain``, ``rows``,
    ``mean_prediction``, ``label_rate``, ``auc`` for every (expert, domain) with rows.  With
    ``labels`` and ``preds`` both ``None`` (a record without labels) the three label columns are
    left out.
    """
    from sklearn.metrics import roc_auc_score

    arr = check_routing_arrays(
        domain=domain,
        topk_idx=topk_idx,
        labels=labels,
        preds=preds,
        num_experts=num_experts,
        num_domains=num_domains,
    )
    dom, y, p = arr.domain, arr.labels, arr.preds
    n_dom = arr.num_domains or 1
    names = (
        list(domain_names) if domain_names is not None else [f"domain_{d}" for d in range(n_dom)]
    )
    if len(names) != n_dom:
        raise ValueError(f"domain_names has {len(names)} names but there are {n_dom} domains")

    labeled = y is not None

    def auc(yy: np.ndarray, pp: np.ndarray) -> float:
        return float(roc_auc_score(yy, pp)) if 0 < yy.sum() < len(yy) else float("nan")

    def quality(m: np.ndarray) -> dict[str, float]:
        if not labeled:
            return {}
        if not m.any():
            return {
                "mean_prediction": float("nan"),
                "label_rate": float("nan"),
                "auc": float("nan"),
            }
        return {
            "mean_prediction": float(p[m].mean()),
            "label_rate": float(y[m].mean()),
            "auc": auc(y[m], p[m]),
        }

    summary, per_domain = [], []
    n = len(dom)
    for e in range(num_experts):
        m = (arr.topk_idx == e).any(axis=1)
        rows = int(m.sum())
        summary.append(
            {
                "expert": e,
                "rows": rows,
                "share": rows / n if n else float("nan"),
                "domains": int(len(np.unique(dom[m]))),
                **quality(m),
            }
        )
        for d in np.unique(dom[m]):
            md = m & (dom == d)
            per_domain.append(
                {
                    "expert": e,
                    "domain": names[int(d)],
                    "rows": int(md.sum()),
                    **quality(md),
                }
            )
    cols = ["expert", "domain", "rows"] + (
        ["mean_prediction", "label_rate", "auc"] if labeled else []
    )
    return pd.DataFrame(summary), pd.DataFrame(per_domain, columns=cols)
