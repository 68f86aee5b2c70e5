"""Overview: the selected checkpoint's or record's model card, per-domain quality and alarms."""

from __future__ import annotations

import components
import derived
import loaders
import model_card
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.collection import NO_LABELS

st.title("Overview")
st.write("What the selected model is, how it trained, how it does per domain, what looks wrong.")

path = components.current_path()
model_card.show(path)

st.subheader("Quality on the test split")
names = loaders.domain_names(path)
if not loaders.labeled(path):
    st.info(NO_LABELS)
else:
    m = components.require(derived.metrics, path)
    cols = st.columns(3)
    for col, key in zip(cols, ("auc", "gauc", "logloss"), strict=True):
        if m.get(key) is not None and m.get(key) == m.get(key):
            col.metric(key.upper() if key != "logloss" else "logloss", f"{m[key]:.4f}")
    left, right = st.columns([3, 2])
    with left:
        components.chart(figures.metric_bars(m, names, "auc"), key="ov_auc_bars")
    with right:
        components.show_table(components.metric_table(path), key="ov_metrics")

st.subheader("Health alarms")
found = components.require(derived.alarms, path)
components.alarm_summary(found, names, key="ov_alarm_values")
st.caption(
    "Each alarm fires on a constructed bad case and stays silent on healthy routing (decisive "
    "per-domain routing is healthy); an alarm that cannot be decided says so.  Load, dead "
    "experts and collapse use the gate's own notion (gate weight for dense gates, selections for "
    "sparse ones).  Definitions, thresholds and the tests that pin them: docs/measures.md § alarms."
)

st.subheader("All checkpoints")
rows, broken = [], []
for e in components.entries():
    if "error" in e:
        broken.append(e)
        continue
    try:
        rows.append(
            {"checkpoint": e["label"], **loaders.declared(e["path"], loaders.token(e["path"]))}
        )
    except loaders.LOAD_ERRORS as err:
        broken.append({**e, "error": str(err)})
st.dataframe(pd.DataFrame(rows), key="ov_all", hide_index=True)
st.caption(
    "Each row as its record declares it (kind of gate, k, gated and always-on shared experts, "
    "alpha where the model has one)."
)
for e in broken:
    components.error_card(f"{e['label']} cannot be read", e["error"], "The others stay usable.")
