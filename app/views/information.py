"""Information: mutual information between domain and expert, entropies, planted-truth recovery."""

from __future__ import annotations

import components
import derived
import loaders
import streamlit as st

from analysis import figures

st.title("Information")
st.write("How much the routing depends on the domain, in nats (test split).")

path = components.current_path()
caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate: no routing information to measure.")
    st.stop()
s = components.require(derived.summary, path)
names = s["domain_names"]

c = st.columns(4)
c[0].metric("I(D;E) soft", f"{s['mi_soft']:.4f}")
c[1].metric("I(D;E) hard", f"{s['mi_hard']:.4f}")
c[2].metric("normalized soft", f"{s['mi_soft_normalized']:.3f}")
c[3].metric("normalized hard", f"{s['mi_hard_normalized']:.3f}")
st.caption("Normalized: I / min(H(D), log E), 0 = routing ignores the domain, 1 = the most it can.")

left, right = st.columns(2)
with left:
    st.markdown("**Gate entropy** (nats; `_norm` = divided by log E)")
    components.show_table(components.require(derived.gating_entropy, path), key="info_entropy")
with right:
    fig = figures.similarity_heatmap(s["domain_similarity_soft"], names)
    components.chart(fig, key="info_similarity")

st.subheader("Planted truth")
truth = derived.truth(path)
if not truth:
    st.info("Only the built-in synthetic data has a planted domain → mechanism truth.")
    st.stop()
kind = st.radio("Routing", ["hard", "soft"], horizontal=True, key="info_kind")
rec, err = components.attempt(derived.truth_recovery, path, kind)
if err:
    st.warning(err)
else:
    c = st.columns(3)
    c[0].metric("Recovery score", "n/a" if rec["score"] is None else f"{rec['score']:.3f}")
    c[1].metric("ARI (matched experts)", "n/a" if rec["ari"] is None else f"{rec['ari']:.3f}")
    c[2].metric("NMI (matched experts)", "n/a" if rec["nmi"] is None else f"{rec['nmi']:.3f}")
    st.caption(
        "1 = domains share experts exactly as they share planted mechanisms; 0 = no better "
        "than routing that ignores the domain."
    )
fig = figures.truth_vs_learned(
    truth["domain_mechanism"],
    s[f"activation_{kind}"],
    names,
    truth.get("mechanism_names"),
    s["expert_names"],
)
components.chart(fig, key="info_truth")
