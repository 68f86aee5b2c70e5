"""Rows: one row's gate, each expert's contribution to its logit, and the same row routed as
every other domain; over a sample, how much the domain conditioning drives each domain."""

from __future__ import annotations

import components
import inspection
import loaders
import numpy as np
import pandas as pd
import streamlit as st

from analysis.figures.inspection import contribution_bars, matrix_heatmap
from analysis.rows import lookup_rows

st.title("Rows")
st.write(
    "Look a row up, see where its gate sent it and what each expert added to its logit, then "
    "route the same row as every other domain (test split)."
)

path = components.current_path()
components.checkpoint_only(path, "The Rows page (contributions and domain swap)")
caps = components.require(loaders.capabilities, path)
names = loaders.domain_names(path)
r = components.require(inspection.rows, path) if caps["has_gate"] else None

st.subheader("One row")
if r is not None:
    cols = list(r["columns"])
    c = st.columns([2, 2, 1])
    column = c[0].selectbox("Look up by", ["(a random row)", *cols], key="rw_column")
    if column == "(a random row)":
        seed = c[1].number_input("Seed", 0, 10**6, 0, key="rw_seed")
        found = np.random.default_rng(int(seed)).choice(len(r["rows"]), size=1)
    else:
        value = c[1].text_input("Value", key="rw_value")
        found = lookup_rows(r["columns"], column, value) if value else np.zeros(0, np.int64)
        if not value:
            st.info(f"Type a value of `{column}`.")
            st.stop()
        if not len(found):
            st.info(f"No sampled test row has {column} = {value!r}.")
            st.stop()
    pick = c[2].selectbox("Match", list(range(len(found))), key="rw_pick")
    i = int(found[pick])
    position = int(r["rows"][i])
else:
    position = int(st.number_input("Test row", 0, None, 0, key="rw_position"))
components.checkpoint_only(path, "A row's expert contributions and its domain swap")
row = components.require(inspection.one_row, path, position)
own = row["swap"].loc[row["swap"]["own"]].iloc[0]
c = st.columns(4)
c[0].metric("Domain", own["domain"])
c[1].metric("Prediction", f"{own['prediction']:.3f}")
c[2].metric("Label", f"{row['label']:.0f}")
c[3].metric("Selected experts", ", ".join(map(str, own["selected"] or [])) or "dense")
if r is not None:
    st.dataframe(
        pd.DataFrame({k: [v[i]] for k, v in r["columns"].items()}), key="rw_values", hide_index=True
    )

if row.get("why_no_contributions"):
    st.info(row["why_no_contributions"])
else:
    e = len(row["contributions"])
    parts = [f"expert {j}" for j in range(e)] + ["shared experts", "domain + bias"]
    values = [*row["contributions"], row["shared"], row["base"]]
    keep = [j for j, v in enumerate(values) if v != 0 or j >= e]
    left, right = st.columns(2)
    with left:
        title = f"Parts of the logit {row['logit']:.3f} ({row['method']})"
        fig = contribution_bars([parts[j] for j in keep], [values[j] for j in keep], title)
        components.chart(fig, key="rw_contrib")
        if row["method"] == "exact":
            st.caption(
                "Exact: the head is linear in the experts' mix, so the parts sum to the logit."
            )
        else:
            st.caption(
                "Leave-one-out: the logit minus the logit with that part removed (gate not "
                f"renormalized).  The head is non-linear, so the parts miss the logit by "
                f"{row['residual']:+.3f}."
            )
    with right:
        probs = np.asarray(row["probs"])[None, :]
        fig = matrix_heatmap(
            probs, [str(j) for j in range(e)], ["gate"], "Gate probabilities", zmax=1
        )
        components.chart(fig, key="rw_gate")

st.markdown("**The same row as every domain**")
st.dataframe(row["swap"], key="rw_swap", hide_index=True)

st.subheader("Domain swap over a sample")
c = st.columns([1, 1, 3])
size = c[0].select_slider("Rows", [200, 500, 1000, 2000], inspection.SWAP_ROWS, key="rw_size")
clustered = c[1].toggle("Cluster domains", len(names) > 8 and caps["has_gate"], key="rw_cluster")
shown = c[2].multiselect("Only these domains (empty = all)", names, key="rw_domains")
m = components.require(inspection.swap, path, size)
order = inspection.domain_order(path, clustered and caps["has_gate"])
if shown:
    order = [d for d in order if names[d] in shown]
labels = [names[d] for d in order]
left, right = st.columns(2)
with left:
    z = m["mean_abs_dlogit"][np.ix_(order, order)]
    fig = matrix_heatmap(
        z, labels, labels, "Mean |Δlogit| routed as the column's domain", colorbar="|Δlogit|",
        x_title="as if from", y_title="row's own domain",
    )  # fmt: skip
    components.chart(fig, key="rw_swap_logit")
with right:
    if caps["has_gate"]:
        z = m["mean_tv"][np.ix_(order, order)]
        fig = matrix_heatmap(
            z, labels, labels, "Mean gate total-variation distance", zmax=1, colorbar="TV",
            x_title="as if from", y_title="row's own domain",
        )  # fmt: skip
        components.chart(fig, key="rw_swap_tv")
    else:
        st.info(f"Model **{caps['name']}** has no gate: only the prediction can change.")
top = pd.DataFrame(
    {
        "domain": names,
        "rows": m["rows"].astype(int),
        "mean |Δlogit| to other domains": m["to_others"],
    }
).sort_values("mean |Δlogit| to other domains", ascending=False)
st.caption("Domains whose predictions depend most on the domain conditioning:")
st.dataframe(top.head(10), key="rw_swap_top", hide_index=True)
