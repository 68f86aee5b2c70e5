"""Overview of a routing record: what model and data it holds, per-domain quality, alarms.

Everything comes from ``record.json`` (metadata, metrics and routing statistics of all rows), so
this page opens a 100M-row record as fast as a small one.
"""

from __future__ import annotations

import json

import components
import derived
import loaders
import pandas as pd
import record_loaders
import streamlit as st

from analysis import figures
from analysis.collection import NO_LABELS


def show(path: str) -> None:
    rec = components.require(record_loaders.record, path, title="Cannot open this record")
    m = rec.meta
    g = m.primary
    caps = record_loaders.capabilities(path)
    st.subheader(f"Routing record · {loaders.label(path)}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Model", m.model_name)
    c2.metric("Experts (k selected)", f"{g.num_experts} ({g.top_k or 'dense'})")
    c3.metric("Rows", f"{m.rows:,}")
    c4.metric("Gates", len(m.gates))
    kinds = pd.Series([e.kind for e in g.experts]).value_counts().to_dict()
    st.caption(
        f"{m.model_description or 'no description'} · domains {', '.join(m.domains)} · experts "
        + ", ".join(f"{v} {k}" for k, v in kinds.items())
        + (f" · {caps['num_shared']} always-on shared" if caps["num_shared"] else "")
        + f" · checked: {rec.checked}"
    )
    st.caption(
        "A record holds what one forward pass produced: views that re-run the model (ablations, "
        "counterfactuals) need the checkpoint."
    )
    with st.expander("Record metadata"):
        st.code(
            json.dumps(
                {
                    "command": m.command,
                    "created": m.created,
                    "data": m.data,
                    "source": m.source,
                    "gates": [
                        {"name": x.name, "experts": x.num_experts, "top_k": x.top_k}
                        for x in m.gates
                    ],
                    "kept columns": list(m.kept),
                    "sample": m.sample,
                },
                indent=1,
            )
        )
    st.subheader("Quality")
    if not m.labels:
        st.info(NO_LABELS)
    else:
        met = components.require(derived.metrics, path)
        cols = st.columns(3)
        for col, key in zip(cols, ("auc", "gauc", "logloss"), strict=True):
            if met.get(key) is not None and met.get(key) == met.get(key):
                col.metric(key.upper() if key != "logloss" else "logloss", f"{met[key]:.4f}")
        left, right = st.columns([3, 2])
        with left:
            components.chart(figures.metric_bars(met, m.domains, "auc"), key="ov_rec_auc_bars")
        with right:
            components.show_table(components.metric_table(path), key="ov_rec_metrics")
    st.subheader("Health alarms")
    found = components.require(derived.alarms, path)
    components.alarm_summary(found, list(m.domains), key="ov_rec_alarm_values")
