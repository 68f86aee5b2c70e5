"""Embeddings: 2-D maps of the experts' outputs, colored by domain or by expert."""

from __future__ import annotations

import components
import loaders
import projections
import streamlit as st

from analysis import figures

st.title("Embeddings")
st.write("Where a sample of test rows lands in the experts' output space: do domains separate?")

path = components.current_path()
c1, c2, c3, c4 = st.columns(4)
size = c1.select_slider("Rows sampled", [500, 1000, 2000, 5000], 2000, key="emb_sample")
color = c2.radio("Color by", ["domain", "expert"], horizontal=True, key="emb_color")
method = c3.radio("Projection", ["UMAP", "PCA"], horizontal=True, key="emb_method")
mode = c4.radio(
    "Points",
    ["routed", "per_expert"],
    horizontal=True,
    key="emb_mode",
    help="routed: one point per row (its gate-weighted mix); per_expert: one per selected expert.",
)

caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate and no experts: nothing to project.")
    st.stop()
points, labels = components.require(projections.embedding_points, path, size, mode)
names = loaders.domain_names(path) if color == "domain" else loaders.expert_names(path)


def draw(xy, title: str, key: str) -> None:
    fig = figures.embedding_scatter(xy, labels[color], names, f"{title}: {len(xy)} points")
    components.chart(fig, key=key)


slot = st.empty()
if method == "PCA":
    with slot.container():
        draw(projections.projection(path, size, "pca", mode), "PCA", "emb_pca")
    st.stop()
xy = projections.projection(path, size, "umap", mode, compute=False)
if xy is not None:
    with slot.container():
        draw(xy, "UMAP (cached)", "emb_umap")
    st.stop()
with slot.container():
    draw(projections.projection(path, size, "pca", mode), "PCA while UMAP is computed", "emb_pca")
if not projections.umap_available():
    st.info("umap-learn is not installed (pip install umap-learn): PCA shown instead.")
    st.stop()
auto = st.toggle("Compute UMAP when it is not cached", value=True, key="emb_auto")
if not auto:
    st.caption("UMAP is not cached for this sample; PCA shown.")
    st.stop()
with st.spinner("Computing UMAP (the first fit in a process compiles for about a minute)…"):
    xy = components.require(projections.projection, path, size, "umap", mode, compute=True)
with slot.container():
    draw(xy, "UMAP", "emb_umap")
