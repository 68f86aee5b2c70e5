"""Overview: the selected checkpoint's model card, per-domain quality and health alarms."""

from __future__ import annotations

import json

import components
import derived
import loaders
import pandas as pd
import record_loaders
import streamlit as st

from analysis import figures
from cesaa.models import model_description

st.title("Overview")
st.write(
    "What the selected checkpoint is, how it trained, how it does per domain, what looks wrong."
)

path = components.current_path()
if record_loaders.is_record(path):
    import record_overview

    record_overview.show(path)
    st.stop()
ckpt = components.require(loaders.checkpoint, path, title="Cannot load this checkpoint")
meta, cfg = ckpt.meta, ckpt.model_config
caps = loaders.capabilities(path)
desc = meta["data"].get("description", {})

st.subheader(f"Model card · {loaders.label(path)}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Model", cfg.name)
c2.metric("Experts (k selected)", f"{caps['num_experts']} ({caps['top_k'] or 'dense'})")
c3.metric("Shared experts", caps["num_shared"])
c4.metric("alpha (MI weight)", f"{cfg.alpha:g}" if caps["has_topk"] else "–")
st.caption(
    f"{model_description(cfg.name)} · data `{desc.get('source')}` · domains "
    f"{', '.join(ckpt.domain_names)} · status {meta.get('status')} · best epoch "
    f"{meta.get('metrics', {}).get('best_epoch')}"
)
end = meta.get("run_end")  # how the run ended (cesaa.convergence), absent in older checkpoints
if end and end.get("verdict") != "converged":
    st.warning(f"This run {end['message']}.  Its numbers measure its training, not its model.")
elif end:
    st.caption(f"The run {end['message']}.")
with st.expander("Configuration and data"):
    st.code(
        json.dumps({"model": meta["model"], "train": meta.get("train"), "data": desc}, indent=1)
    )

hist = components.require(loaders.history, path)
if hist:
    components.chart(figures.training_curve(hist), key="ov_history")
else:
    st.info("No training history (metrics.jsonl) in this checkpoint.")

st.subheader("Quality on the test split")
m = components.require(derived.metrics, path)
cols = st.columns(3)
for col, key in zip(cols, ("auc", "gauc", "logloss"), strict=True):
    if key in m:
        col.metric(key.upper() if key != "logloss" else "logloss", f"{m[key]:.4f}")
left, right = st.columns([3, 2])
with left:
    components.chart(figures.metric_bars(m, ckpt.domain_names, "auc"), key="ov_auc_bars")
with right:
    components.show_table(components.metric_table(path), key="ov_metrics")

st.subheader("Health alarms")
found = components.require(derived.alarms, path)
components.alarm_summary(found, ckpt.domain_names, key="ov_alarm_values")
st.caption(
    "Each alarm fires on a constructed bad case and stays silent on healthy routing (decisive "
    "per-domain routing is healthy).  Definitions, thresholds and the tests that pin them: "
    "docs/measures.md § alarms."
)

st.subheader("All checkpoints")
rows, broken = [], []
for e in components.entries():
    if e.get("record"):
        continue  # routing records: listed on their own Overview and in the sidebar
    if "error" in e:
        broken.append(e)
        continue
    mc = e["meta"]["model"]["config"]
    rows.append(
        {
            "checkpoint": e["label"],
            "model": mc["name"],
            "k": mc.get("top_k"),
            "shared": mc.get("num_shared"),
            "alpha": mc.get("alpha"),
            "test AUC": e["meta"].get("metrics", {}).get("test", {}).get("auc"),
            "status": e["meta"].get("status"),
        }
    )
st.dataframe(pd.DataFrame(rows), key="ov_all", hide_index=True)
for e in broken:
    components.error_card(f"{e['label']} cannot be read", e["error"], "The others stay usable.")
