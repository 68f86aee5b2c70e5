"""Compare: two checkpoints side by side, the second one's experts aligned to the first one's, and
where their routing differs."""

from __future__ import annotations

import catalog
import components
import derived
import loaders
import streamlit as st

from analysis import figures
from analysis.collection import NO_LABELS
from analysis.compare import rows_mismatch

st.title("Compare")
st.write(
    "Two checkpoints on the same test rows; expert indices are matched (Hungarian) first, on "
    "which rows each expert takes."
)

path = components.current_path()
a = None  # A's per-domain metrics (a record without labels has none)
if loaders.labeled(path):
    a = components.require(components.metric_table, path, title="Cannot evaluate this checkpoint")
else:  # said first: a comparison refused below stops the page
    st.info(f"A: {NO_LABELS}")
others = [e for e in components.entries() if "error" not in e and e["path"] != path]
if not others:
    st.info("Only one checkpoint is available: train another one on the Train page.")
    st.stop()
labels = {e["path"]: e["label"] for e in others}
c1, c2 = st.columns([3, 1])
c1.markdown(f"**A** = `{catalog.label(path)}` (the sidebar's checkpoint)")
other = c1.selectbox("B", list(labels), key="cmp_other", format_func=labels.get)
kind = c2.radio("Routing", ["soft", "hard"], horizontal=True, key="cmp_kind")

why = rows_mismatch(
    components.require(derived.collection, path), components.require(derived.collection, other)
)
if why is None and loaders.domain_names(path) != loaders.domain_names(other):
    why = "their domains have other names: different data"
if why:
    components.error_card(
        "These two checkpoints were not evaluated on the same data",
        f"A and B cannot be compared row by row or domain by domain: {why}.",
        "Pick a B trained on the same data as A (the same data fingerprint), or open B on A's "
        "data with the sidebar's Data source field.",
    )
    st.stop()
st.subheader("Per-domain metrics")
if a is not None and not loaders.labeled(other):
    st.info(f"B: {NO_LABELS}")
elif a is not None:
    b = components.require(components.metric_table, other, title=f"Cannot evaluate {labels[other]}")
    components.show_table(components.delta_table(a, b, ("A", "B")), key="cmp_metrics")

caps_a, caps_b = loaders.capabilities(path), components.require(loaders.capabilities, other)
if not (caps_a["has_gate"] and caps_b["has_gate"]):
    st.info("Routing is compared only when both models have a gate.")
    st.stop()
if caps_a["num_experts"] != caps_b["num_experts"]:  # e.g. a pruned checkpoint and its source
    st.info(
        f"Routing is aligned only between models with as many experts: A has "
        f"{caps_a['num_experts']}, B {caps_b['num_experts']} (the metrics above compare them)."
    )
    st.stop()
res = components.aligned_heatmaps(
    path, other, kind, ("A", "B, experts aligned to A"), ("cmp_heat_a", "cmp_heat_b")
)
c = st.columns(4)
c[0].metric(f"I(D;E) {kind} A (nats)", f"{res[f'mi_{kind}_a']:.3f}")
c[1].metric(f"I(D;E) {kind} B (nats)", f"{res[f'mi_{kind}_b']:.3f}")
agree, chance = res["routing_agreement"], res["agreement_chance"]
c[2].metric("top-1 agreement", "n/a" if agree is None else f"{agree:.1%}")
c[3].metric("by chance", "n/a" if chance is None else f"{chance:.1%}")
margin, ambiguous = res["alignment_margin"], res["ambiguous_experts"]
st.caption(
    f"Experts aligned on **{res['alignment']}**"
    + (
        " (the rows each expert takes in both models)"
        if res["alignment"] == "rows"
        else " (P(e | d) columns: with more experts than domains the match can be a coin toss)"
    )
    + ".  Margin of the match: "
    + ("n/a" if margin is None else f"{margin:.3g}")
    + (
        f"; ambiguous (could swap at no cost): A's experts {ambiguous}"
        if ambiguous
        else "; no expert's partner can change at no cost"
    )
    + ".  docs/measures.md § alignment."
)
names = loaders.domain_names(path)
experts = [f"A {i} ↔ B {j}" for i, j in enumerate(res["permutation"])]
fig = figures.aligned_difference_heatmap(
    res["aligned_diff"], names, experts, f"{kind.capitalize()} P_B(e | d) - P_A(e | d), aligned"
)
components.chart(fig, key="cmp_diff")
st.caption(
    "Blue: B sends the domain more often to the expert, red: less often.  Total variation "
    "distance per domain (0 = routed identically up to relabeling): "
    + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, res["tv_distance"], strict=True))
)
