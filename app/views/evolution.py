"""Routing over training: router saturation, MI and load per epoch, P(e | d) at any epoch."""

from __future__ import annotations

import catalog
import components
import inspection
import loaders
import streamlit as st

from analysis.figures.inspection import evolution_lines, matrix_heatmap

st.title("Routing over training")
st.write(
    "When the routing settled: per epoch, the share of a fixed sample of validation rows whose "
    "top-k experts are already their final ones, the domain-expert information and the load."
)

path = components.current_path()
components.checkpoint_only(path, "Routing over training (the run folder's snapshots)")
caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate: there is no routing to follow.")
    st.stop()
ev = components.require(inspection.evolution, path)
table, act = ev["table"], ev["activation"]
if table.empty:
    st.info(
        f"{catalog.label(path)} was trained without routing snapshots.  Train with "
        "`--set train.routing_snapshots=true` (the shipped checkpoints have them once "
        f"regenerated with `{catalog.MAKE_COMMAND}`)."
    )
    st.stop()
st.markdown(f"**{ev['statement']}**")
components.chart(evolution_lines(table), key="ev_lines")
st.caption(
    "Saturation (OLMoE): mean over the sampled rows of |top-k now ∩ top-k at the last epoch| / k; "
    "1 = settled, k/E = unrelated.  It follows expert identities, so a relabelling of experts "
    "reads as unsettled.  MI is normalized to [0, 1]; load CV 0 = balanced."
)
with st.expander("Per-epoch numbers"):
    st.dataframe(table, key="ev_table", hide_index=True)

if not act.empty:
    names = loaders.domain_names(path)
    epochs = sorted(act["epoch"].unique().tolist())
    c = st.columns([3, 1])
    epoch = c[0].select_slider("Epoch", epochs, epochs[-1], key="ev_epoch")
    clustered = c[1].toggle("Cluster domains", len(names) > 8, key="ev_cluster")
    mat = act[act["epoch"] == epoch].pivot_table(index="domain", columns="expert", values="p")
    mat = mat.reindex(names)
    order = inspection.domain_order(path, clustered)
    z = mat.to_numpy()[order]
    fig = matrix_heatmap(
        z, [str(e) for e in mat.columns], [names[d] for d in order],
        f"Soft P(expert | domain) after epoch {epoch}", zmax=1.0,
        x_title="expert", y_title="domain",
    )  # fmt: skip
    components.chart(fig, key="ev_activation")
