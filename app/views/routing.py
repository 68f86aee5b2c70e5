"""Routing: P(expert | domain), expert load, co-activation, top-1 margin, gate entropy."""

from __future__ import annotations

import components
import derived
import inspection
import loaders
import numpy as np
import streamlit as st

from analysis import figures
from analysis.capabilities import not_applicable

st.title("Routing")
st.write("Which experts each domain sends its rows to, and how decisively (test split).")

path = components.current_path()
caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate: there is no routing to show.")
    st.stop()
gate = components.gate_selector(path, "rt_gate")
s = components.require(derived.summary, path, gate=gate)
names, experts = s["domain_names"], s["expert_names"]
work = s.get("work") or {}
if s.get("gate_kind"):
    st.caption(
        f"Gate kind: **{s['gate_kind']}**; an expert's load and whether it is dead are read by "
        f"its {work.get('notion', 'selections')}."
    )

many = len(names) > 8
c = st.columns([1, 1, 3])
clustered = c[0].toggle("Cluster domains", many, key="rt_cluster", help="by their P(e | d) rows")
contrast = c[1].toggle(
    "Contrast colours",
    False,
    key="rt_contrast",
    help="Off: every probability on one 0..1 scale, the uniform gate's 1/E marked.  On: the "
    "colours stretch over the values shown, so small differences look large.",
)
shown = c[2].multiselect("Only these domains (empty = all)", names, key="rt_domains")
order = [d for d in inspection.domain_order(path, clustered) if not shown or names[d] in shown]
rows = [names[d] for d in order]
left, right = st.columns(2)
with left:
    fig = figures.activation_heatmap(
        np.asarray(s["activation_soft"])[order],
        rows,
        experts,
        "Soft P(expert | domain): mean gate probability",
        contrast=contrast,
    )
    components.chart(fig, key="rt_soft")
with right:
    fig = figures.activation_heatmap(
        np.asarray(s["activation_hard"])[order],
        rows,
        experts,
        "Hard P(expert | domain): share of selections",
        contrast=contrast,
    )
    components.chart(fig, key="rt_hard")

lb = s["load_balance"]
left, right = st.columns(2)
with left:
    components.chart(figures.load_bars(s["load_hard"], experts, soft=s["load_soft"]), key="rt_load")
    why = not_applicable(caps, "load_balance")  # e.g. PLE: domain-specific experts
    cv = f"Load CV not shown: {why}" if why else f"Load CV {lb['cv']:.3f} (0 = balanced)"
    dead = [experts[i] for i in s.get("dead_experts", lb["dead_experts"])]
    st.caption(f"{cv} · dead experts (by {work.get('notion', 'selections')}): {dead or 'none'}")
with right:
    components.chart(figures.coactivation_heatmap(lb["coactivation"], experts), key="rt_coact")

margins = {"top1_margin": lb["top1_margin"]}
margins.update(
    {f"top1_margin/{n}": v for n, v in zip(names, lb["top1_margin_per_domain"], strict=True)}
)
left, right = st.columns(2)
with left:
    fig = figures.metric_bars(
        margins, names, "top1_margin", "Top-1 margin (largest - 2nd gate prob.)"
    )
    components.chart(fig, key="rt_margin")
with right:
    size = st.select_slider("Rows drawn", [500, 1000, 2000, 5000], 2000, key="rt_sample")
    ent = components.require(derived.row_entropies, path, size, gate)
    fig = figures.entropy_violin(ent["values"], ent["domain"], names, max_entropy=ent["max"])
    components.chart(fig, key="rt_entropy")

pairs = derived.gate_pairs(path)
if pairs:
    st.subheader("Across consecutive gates")
    labels = [f"{a} → {b}" for a, b in pairs]
    pick = st.selectbox("Pair of gates", labels, key="rt_pair")
    a, b = pairs[labels.index(pick)]
    c = components.require(derived.cross_gate, path, a, b)
    st.caption(
        f"I(top expert at {a}; top expert at {b}) = {c['mi']:.4f} nats, "
        f"{c['mi_normalized']:.1%} of its ceiling min(H) = {c['mi_ceiling']:.4f} nats "
        "(0: the first choice says nothing about the next), over every row of the record."
    )
    fig = figures.activation_heatmap(
        np.asarray(c["co_selection"], dtype=float),
        c["expert_names_first"],
        c["expert_names_second"],
        f"P(top expert at {b} | top expert at {a})",
    )
    components.chart(fig, key="rt_cross")
