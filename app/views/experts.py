"""Experts: what each expert learned (over-represented feature values, its predictions and AUC on
its rows) and which experts are redundant (output similarity, routing overlap)."""

from __future__ import annotations

import components
import inspection
import loaders
import streamlit as st

from analysis.collection import NO_LABELS
from analysis.experts import MIN_EXPECTED, top_values
from analysis.figures.inspection import log_odds_bars, matrix_heatmap

st.title("Experts")
st.write(
    "What each expert is for: the feature values over-represented among the rows routed to it "
    "(against the rows of the same domains routed elsewhere), and which experts overlap."
)

path = components.current_path()
caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate: there are no routed rows to describe.")
    st.stop()
r = components.require(inspection.rows, path)
names = loaders.domain_names(path)
summary, per_domain = components.require(inspection.profiles, path)
n, total, source = len(r["rows"]), r["total"], r["source"]
read = f"All {total:,} rows of {source}"
if n < total:
    read = f"{n:,} of {total:,} rows of {source}, seeded sample"
st.caption(
    f"{read}; an expert's rows are those with it among {r['routed_by']}.  Its share of the work "
    "is read over every row in its gate's own notion (gate weight for a dense gate, where an "
    "expert works on every row it weighs, selections for a sparse one)."
)
st.dataframe(summary, key="ex_summary", hide_index=True)
if r["label"] is None:
    st.caption(NO_LABELS)

c = st.columns([1, 3, 1])
expert = c[0].selectbox("Expert", list(range(caps["num_experts"])), key="ex_expert")
chosen = c[1].multiselect(
    "Domains (empty = every domain that routes rows to it)", names, key="ex_domains"
)
top_n = c[2].number_input("Top N", 3, 50, 15, key="ex_top")
domains = tuple(names.index(d) for d in chosen) if chosen else None
table = components.require(inspection.features, path, expert, domains)
con = components.require(inspection.contrast, path, expert, domains)
if not con["contrast"].any():
    st.warning(
        f"Expert {expert} receives every row of {', '.join(names[d] for d in con['domain'])} "
        "or none of them: the domain alone decides whether a row goes to it, so no feature "
        "value can be over-represented within a domain and the chart below has nothing to "
        "show.  This expert is specialized by domain (see Routing), not empty-handed.",
        icon=":material/info:",
    )
elif not con["contrast"].all():
    st.caption(
        f"{int(con['contrast'].sum())} of {len(con)} domains hold a contrast (rows routed to "
        f"expert {expert} and rows routed elsewhere); the others go to it whole or not at all "
        "and add nothing to the comparison."
    )
fig = log_odds_bars(table, f"Expert {expert}: most over-represented feature values", top_n=top_n)
components.chart(fig, key="ex_logodds")
st.caption(
    "Mantel-Haenszel log-odds ratio stratified by domain, 95% interval; coloured bars are "
    f"significant after Benjamini-Hochberg at 5% ({int(table['significant'].sum())} of "
    f"{int(table['p_value'].notna().sum())} values tested; a value expected in fewer than "
    f"{MIN_EXPECTED:g} of the expert's rows is shown but not tested).  Over-represented does not "
    "mean used by the gate."
)
with st.expander("Top values per feature"):
    st.dataframe(top_values(table, 3), key="ex_top_table", hide_index=True)
st.subheader(f"Expert {expert} per domain")
st.dataframe(per_domain[per_domain["expert"] == expert], key="ex_per_domain", hide_index=True)

st.subheader("Redundant experts")
c = st.columns(2)
method = c[0].radio("Output similarity", ["cka", "cosine"], key="ex_method", horizontal=True)
clustered = c[1].toggle("Order by clustering", True, key="ex_cluster")
sim = components.require(inspection.similarity, path, method)
order = sim["order"] if clustered else list(range(caps["num_experts"]))
labels = [f"expert {i}" for i in order]
left, right = st.columns(2)
with left:
    title = "Linear CKA of expert outputs" if method == "cka" else "Cosine of centred outputs"
    z = sim["similarity"][order][:, order]
    components.chart(
        matrix_heatmap(z, labels, labels, title, zmin=-1 if method == "cosine" else 0, zmax=1),
        key="ex_similarity",
    )
with right:
    z = sim["overlap"][order][:, order]
    fig = matrix_heatmap(z, labels, labels, "Routing overlap (Jaccard of routed rows)", zmax=1)
    components.chart(fig, key="ex_overlap")
