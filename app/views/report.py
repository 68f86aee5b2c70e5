"""Report: export the diagnostic report of the selected checkpoint (HTML, JSON, CSV, PDF, PNG)."""

from __future__ import annotations

import components
import jobs
import projections
import streamlit as st

st.title("Report")
st.write("Everything the other pages show, as files: a self-contained HTML page, JSON and CSV.")

path = components.current_path()
c1, c2 = st.columns(2)
size = c1.select_slider("Rows sampled", [500, 1000, 2000], 2000, key="rep_sample")
umap, _ = components.attempt(projections.projection, path, size, "umap", compute=False)
cached = umap is not None
embedding = c2.radio(
    "Embedding",
    ["umap", "pca"],
    index=0 if cached else 1,
    horizontal=True,
    key="rep_embedding",
    help="UMAP is slow unless cached; PCA is instant.",
)

rep = components.require(projections.report, path, size, embedding, title="Cannot build the report")
head = rep.headline()
c = st.columns(4)
c[0].metric("AUC", "n/a" if head["auc"] is None else f"{head['auc']:.4f}")
c[1].metric(
    "normalized soft I(D;E)",
    "n/a" if head["mi_soft_normalized"] is None else f"{head['mi_soft_normalized']:.3f}",
)
c[2].metric("alarms", head["alarms"])
c[3].metric(
    "truth recovery", "n/a" if head["recovery_score"] is None else f"{head['recovery_score']:.3f}"
)

files = projections.report_files_cached(path, size, embedding)
c = st.columns(3)
for col, (fmt, (data, mime, name)) in zip(c, files.items(), strict=True):
    col.download_button(f"Download {fmt.upper()}", data, name, mime, key=f"rep_dl_{fmt}")

st.subheader("PDF and PNG")
for fmt in ("pdf", "png"):
    problem = jobs.static_problem(fmt)
    if problem:
        st.caption(f"{fmt.upper()} unavailable here: {problem}")
        continue
    key = f"rep_static_{fmt}"
    if st.button(f"Render {fmt.upper()}", key=f"rep_render_{fmt}"):
        with st.spinner(f"Rendering {fmt.upper()} with headless Chromium…"):
            st.session_state[key] = (path, size, embedding, jobs.static_file(rep, fmt))
    got = st.session_state.get(key)
    if got and got[:3] == (path, size, embedding):
        if isinstance(got[3], str):
            st.warning(got[3])
        else:
            data, mime, name = got[3]
            st.download_button(f"Download {fmt.upper()}", data, name, mime, key=f"rep_dl_{fmt}")

with st.expander("Report JSON (headline and notes)"):
    st.json({"headline": head, "notes": rep.notes, "command": rep.command}, expanded=False)
