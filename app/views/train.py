"""Train: a new model from the browser, saved as a checkpoint that opens in the other pages."""

from __future__ import annotations

import os
from pathlib import Path

import catalog
import components
import jobs
import pandas as pd
import sidebar
import streamlit as st

from cesaa.config import TrainConfig
from cesaa.models import model_names

SPLITS = {
    "random": "random (8:1:1)",
    "time": "by time (the latest 10 % of rows are the test set)",
    "temporal": "by user (each user's latest 10 % of rows are the test set)",
}
SMALL = {"embed_dim": 8, "expert_hidden": (32,), "expert_dim": 16, "tower_hidden": (16,)}
ML_DEFAULT = Path(os.environ.get("CESAA_DATA_DIR", catalog.REPO.parent / "shared" / "data"))


@st.fragment(run_every=1.0)
def show_job(job) -> None:
    """Progress of the background run (refreshed every second), with Cancel; the other pages
    stay usable while it trains."""
    if job.running:
        st.progress(job.progress, text=f"Training **{job.out.name}**: {job.text}")
        if job.losses:
            st.line_chart(pd.DataFrame({"training loss": job.losses}), height=200)
        if st.button("Cancel", key="tr_cancel"):
            job.cancel()
        return
    st.session_state.pop("tr_job", None)
    if job.cancelled:
        st.session_state["tr_note"] = f"Cancelled {job.out.name}; its partial folder was removed."
    elif job.error is not None:
        st.session_state["tr_failed"] = job.error
    else:
        st.session_state["tr_last"] = str(job.out.resolve())
        st.session_state[sidebar.PENDING] = str(job.out.resolve())
        st.session_state["_tr_trained"] = True
    st.rerun()


st.title("Train")
st.write("Train a small model on synthetic data, a MovieLens folder or your own file.")

failed = st.session_state.pop("tr_failed", None)
if failed:
    components.error_card("Training failed", failed, "Change the data or the settings and retry.")
note = st.session_state.pop("tr_note", None)
if note:
    st.info(note)
last = st.session_state.get("tr_last")
if last:
    st.success(
        f"Saved **{catalog.label(last)}** — it is selected in the sidebar now.",
        icon=":material/check_circle:",
    )
    st.page_link("views/overview.py", label="Open it in Overview", icon=":material/home:")

kind = st.radio(
    "Data",
    ["Synthetic", "MovieLens folder", "Upload CSV/Parquet"],
    key="tr_source",
    horizontal=True,
)
schema, upload = None, None
if kind == "Synthetic":
    c = st.columns(3)
    # 100,000 rows: 30 epochs of the CLI's schedule (batch 1024) are 2,370 optimizer steps, enough
    # for the routing to form (20,000 rows were 480 steps, and CESAA's I(D;E) stayed 0)
    rows = c[0].number_input(
        "Rows",
        2000,
        500_000,
        100_000,
        1000,
        key="tr_rows",
        help="Fewer rows train faster, but with fewer optimizer steps than the routing needs "
        "to form (about 1,000 at the default learning rate)",
    )
    domains = c[1].number_input("Domains", 2, 8, 4, key="tr_domains")
    seed = c[2].number_input("Seed", 0, 10_000, 0, key="tr_seed")
    source = f"synthetic:rows={rows},domains={domains},seed={seed}"
    default_name = jobs.default_run_name("synthetic")
elif kind == "MovieLens folder":
    c = st.columns([1, 3])
    version = c[0].selectbox("Version", ["100k", "1m"], key="tr_ml_version")
    folder = c[1].text_input("Folder", str(ML_DEFAULT / f"movielens-{version}"), key="tr_ml_folder")
    source = f"movielens-{version}:{folder}"
    default_name = jobs.default_run_name(f"movielens-{version}")
else:
    upload = st.file_uploader(
        "CSV / Parquet file", ["csv", "tsv", "parquet", "pq"], key="tr_upload"
    )
    if upload is None:
        st.info("Upload a file with a binary label column, a domain column and feature columns.")
        st.stop()
    frame = components.require(
        jobs.upload_frame, upload.name, upload.getvalue(), title="Cannot read the upload"
    )
    st.dataframe(frame.head(5), key="tr_preview")
    proposals = components.require(jobs.proposed_roles, frame, title="Cannot read the columns")
    st.caption(
        "Proposed column roles (the reason is beside each); change any of them. User and item "
        "columns are also categorical features."
    )
    roles = {}
    for p in proposals:
        c = st.columns([2, 2, 5])
        c[0].markdown(f"`{p.column}`")
        roles[p.column] = c[1].selectbox(
            f"Role of {p.column}",
            jobs.ROLES,
            index=jobs.ROLES.index(p.role),
            key=f"tr_role_{p.column}",
            label_visibility="collapsed",
        )
        c[2].caption(p.reason if roles[p.column] == p.role else "changed by you")
    st.caption(
        "Columns that could be the domain, best first: a domain needs rows of its own, and more "
        "values filled more evenly give routing more to separate."
    )
    others = tuple(c for c, r in roles.items() if r in ("label", "user", "item", "time"))
    st.dataframe(jobs.domain_table(frame, others), hide_index=True, key="tr_domain_choices")
    schema, why = components.attempt(jobs.roles_schema, roles)
    if why is not None:
        hint = "Change the roles above: one label, one domain and at least one feature column."
        components.error_card("The column roles are incomplete", why, hint)
        st.stop()
    source = None
    default_name = jobs.default_run_name("upload", upload.name)

split = "random"
if kind != "Synthetic":  # synthetic data has no users or times to split by
    split = st.radio("Split", list(SPLITS), format_func=SPLITS.get, key="tr_split", horizontal=True)
    if schema is not None:
        needs = {"time": ["time"], "temporal": ["time", "user"]}.get(split, [])
        missing = [r for r in needs if schema.get(r) is None]
        if missing:
            components.error_card(
                f"The split {SPLITS[split]!r} needs a {' and a '.join(missing)} column",
                f"no column has the role {' or '.join(missing)}",
                "Mark the column above, or choose the random split.",
            )
            st.stop()

st.subheader("Model")
c = st.columns(5)
model = c[0].selectbox("Model", model_names(), index=model_names().index("cesaa"), key="tr_model")
topk, gated = model in ("cesaa", "sparse_moe"), model in ("cesaa", "sparse_moe", "mmoe")
experts = c[1].number_input("Experts", 2, 16, 8, key="tr_experts", disabled=not gated)
k = c[2].number_input("k", 1, 16, 2, key="tr_k", disabled=not topk)
shared = c[3].number_input("Shared experts", 0, 4, 1, key="tr_shared", disabled=model != "cesaa")
alpha = c[4].number_input(
    "alpha", 0.0, 10.0, 0.01, 0.01, format="%.3f", key="tr_alpha", disabled=model != "cesaa"
)
c = st.columns(3)
SCHEDULE = TrainConfig()  # the CLI's schedule: early stopping never before min_steps steps
epochs = c[0].number_input(
    "Epochs (at most)",
    1,
    100,
    SCHEDULE.epochs,
    key="tr_epochs",
    help=f"Early stopping after {SCHEDULE.patience} epochs without a better validation "
    f"{SCHEDULE.monitor}, never before {SCHEDULE.min_steps} optimizer steps and never while "
    f"the routing is still forming (the training batches' I(D;E) rose more than "
    f"{SCHEDULE.routing_rise:.0%} in the last epoch): the same schedule as `cesaa train`.",
)
# the name follows the data (the uploaded file's name) until the user types one
if st.session_state.pop("_tr_trained", False) or st.session_state.get("tr_name") in (
    None,
    "",
    st.session_state.get("_tr_default_name"),
):
    st.session_state["tr_name"] = default_name
st.session_state["_tr_default_name"] = default_name
name = c[1].text_input("Name", key="tr_name", help="The run folder's name.")
c[2].caption(f"Written to `{catalog.runs_root()}`")

kw = dict(SMALL, num_experts=int(experts), top_k=min(int(k), int(experts)))
if model == "cesaa":
    kw.update(num_shared=int(shared), alpha=float(alpha))
if model == "mmoe":
    kw["mmoe_experts"] = int(experts)
job = st.session_state.get("tr_job")
if job is not None:
    show_job(job)
    st.stop()
if not st.button("Train", type="primary", key="tr_go"):
    st.stop()
if upload is not None:
    source = components.require(
        jobs.save_upload,
        upload.name,
        upload.getvalue(),
        schema,
        title="The upload does not match its schema",
    )
out = jobs.new_run_dir(name)
train_kw = {"epochs": int(epochs), "routing_snapshots": True}  # for Routing over training
st.session_state["tr_job"] = jobs.TrainJob(source, model, kw, train_kw, out, split).start()
st.rerun()
