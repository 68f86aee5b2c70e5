"""Tokens: a language model's routing token by token, layer by layer (records with one row per
token, e.g. from ``analysis.records.transformers_moe.record_transformers``)."""

from __future__ import annotations

import components
import loaders
import numpy as np
import streamlit as st
import token_loaders

from analysis import figures
from analysis.figures.inspection import log_odds_bars
from analysis.figures.tokens import token_text_html

st.title("Tokens")
st.write(
    "Which expert each token goes to, layer by layer: the text coloured by its top-1 expert, "
    "P(expert | source) per layer and the tokens that over-route to an expert."
)

path = components.current_path()
if not token_loaders.has_tokens(path):
    st.info(
        "This page shows records with one row per token (sequence, position, token id), such as "
        "a transformers MoE language model recorded with "
        "`analysis.records.transformers_moe.record_transformers`; the selected item holds none."
    )
    st.stop()
rec = components.require(loaders.record, path, title="Cannot open this record")
names = list(rec.domains)
gates = [g.name for g in rec.meta.gates]
c = st.columns([1, 1, 1])
gate = c[0].selectbox("Layer (gate)", gates, key="tk_layer")
g = rec.meta.gate(gate)
s = token_loaders.layer_summary(path, gate)
c[1].metric("I(source; expert), hard", f"{s['mi_hard']:.3f} nats")
c[2].metric("normalized (of its ceiling)", f"{s['mi_hard_normalized']:.1%}")

left, right = st.columns(2)
with left:
    fig = figures.activation_heatmap(
        np.asarray(s["activation_soft"]), names, s["expert_names"],
        f"{gate}: soft P(expert | source), mean router probability",
    )  # fmt: skip
    components.chart(fig, key="tk_soft")
with right:
    fig = figures.activation_heatmap(
        np.asarray(s["activation_hard"]), names, s["expert_names"],
        f"{gate}: hard P(expert | source), share of top-{g.top_k or 1} selections",
    )  # fmt: skip
    components.chart(fig, key="tk_hard")

st.subheader("Text coloured by expert")
t = components.require(token_loaders.tokens, path, gate)
c = st.columns([1, 1])
source = c[0].selectbox("Source", names, key="tk_source")
count = c[1].number_input("Sequences", 1, 20, 3, key="tk_count")
mine = t[t["domain"] == names.index(source)]
seqs = list(dict.fromkeys(mine["sequence"]))[: int(count)]
if not seqs:
    st.info(f"No sequence of {source} among the first {len(t):,} tokens of the record.")
for sq in seqs:
    rows = mine[mine["sequence"] == sq].sort_values("position")
    st.html(
        token_text_html(
            list(rows["token"]),
            np.stack(rows["top"].to_numpy()),
            g.num_experts,
            probs=np.stack(rows["probs"].to_numpy()),
            expert_names=g.expert_names,
        )
    )
st.caption(
    f"First {len(seqs)} sequences of {source}; background = top-1 expert at {gate}; hover a token "
    f"for its top-{g.top_k or 1} experts and their router probabilities."
)

st.subheader("Tokens that over-route to an expert")
expert = st.selectbox("Expert", list(range(g.num_experts)), key="tk_expert")
table = components.require(token_loaders.token_log_odds, path, gate, expert)
fig = log_odds_bars(table, f"{gate}, expert {expert}: most over-represented tokens", top_n=15)
components.chart(fig, key="tk_logodds")
st.caption(
    f"Tokens among the first {len(t):,} of the record: Mantel-Haenszel log-odds ratio of being "
    f"routed to expert {expert} (among its top-{g.top_k or 1}), stratified by source, 95% interval; "
    "coloured bars are significant after Benjamini-Hochberg at 5%."
)
