"""The dashboard's sidebar: the global checkpoint picker (shipped checkpoints, the dashboard's runs,
a chosen folder), the selected checkpoint's data source and the upload of a routing record."""

from __future__ import annotations

import catalog
import loaders
import streamlit as st
from components import attempt, error_card

PENDING = "_nav_pending"  # a checkpoint to select on the next run (set by Train / Ablations)


def checkpoint_sidebar() -> None:
    """The global checkpoint picker (sidebar): shipped ones, the dashboard's runs, a chosen folder."""
    with st.sidebar:
        st.text_input(
            "Also look in folder",
            key="nav_folder",
            placeholder="/path/to/runs",
            help="Any folder holding cesaa run folders (searched recursively).",
        )
        record_upload()
        entries = catalog.list_runs(catalog.roots(st.session_state.get("nav_folder")))
        paths = [e["path"] for e in entries]
        pending = st.session_state.pop(PENDING, None)
        if pending in paths:
            st.session_state["nav_ckpt"] = pending
        if st.session_state.get("nav_ckpt") not in paths:
            st.session_state.pop("nav_ckpt", None)
        if not entries:
            st.caption("No checkpoints found.")
            return
        labels = {e["path"]: e["label"] + ("  ⚠ broken" if "error" in e else "") for e in entries}
        st.selectbox(
            "Checkpoint or record",
            paths,
            key="nav_ckpt",
            format_func=labels.get,
            help="Run folders (a model) and routing records (what one forward pass of any gated "
            "model produced: `cesaa record`, docs/record.md).",
        )
        entry = next((e for e in entries if e["path"] == st.session_state.get("nav_ckpt")), None)
        entry = entry or entries[0]
        if entry.get("meta") is not None:  # a checkpoint: its data source can be replaced
            data_source_field(entry["path"])
        if st.button("Refresh list", key="nav_refresh"):
            catalog.list_runs.clear()
            st.rerun()


def data_source_field(path: str) -> None:
    """The selected checkpoint's data source: empty = its own data (found where it was trained or
    relative to its run folder); a source here replaces it (e.g. the data moved)."""
    sources = st.session_state.setdefault(loaders.DATA_SOURCES, {})
    if st.session_state.get("_nav_data_for") != path:  # show this checkpoint's own entry
        st.session_state["nav_data"] = sources.get(path, "")
        st.session_state["_nav_data_for"] = path

    def save() -> None:
        sources[path] = st.session_state["nav_data"].strip()

    st.text_input(
        "Data source",
        key="nav_data",
        on_change=save,
        placeholder="the checkpoint's own data",
        help="Leave empty to use the data the checkpoint was trained on.  If it moved, give its "
        "new location, e.g. table:/new/place/clicks.toml or stream:/data/big.yaml.",
    )
    note, _ = attempt(loaders.data_note, path)
    if note:
        st.caption(note)


def record_upload() -> None:
    """Sidebar: open a routing record uploaded as a zip of its folder (same size limit and error
    cards as data uploads); the record is then selected."""
    import jobs
    import uploads

    with st.expander("Open a record (zip)"):
        up = st.file_uploader(
            "Record folder as .zip",
            ["zip"],
            key="nav_record_zip",
            help="Zip of a folder holding record.json, rows.parquet and sample.parquet; it is "
            f"unpacked under {catalog.runs_root() / 'records'} (set CESAA_DASHBOARD_RUNS to move "
            "it), never in the current directory.",
        )
        if up is None:
            return
        content = up.getvalue()
        done = st.session_state.get("nav_record_done")
        if done and done[0] == (up.name, len(content)):
            st.caption(
                f"Opened {up.name}, unpacked in {done[1]} (under the dashboard's runs folder, "
                "CESAA_DASHBOARD_RUNS)."
            )
            return
        try:
            path = uploads.save_record_zip(
                up.name, content, jobs.max_upload_mb(), catalog.runs_root()
            )
        except loaders.LoadError as e:
            error_card(
                "Cannot open the uploaded record", str(e), "Fix the record and upload again."
            )
            return
        st.session_state["nav_record_done"] = ((up.name, len(content)), path)
        st.session_state[PENDING] = path
        catalog.list_runs.clear()
        st.rerun()
