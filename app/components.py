"""Reusable pieces of the dashboard: the checkpoint picker, error cards, charts, metric tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import catalog
import derived
import loaders
import pandas as pd
import streamlit as st

PENDING = "_nav_pending"  # a checkpoint to select on the next run (set by Train / Ablations)
METRIC_COLUMNS = ["AUC", "GAUC", "logloss"]


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


def checkpoint_only(path: str, what: str) -> None:
    """Stop the page with one line when ``path`` has no live model: ``what`` needs it."""
    why = loaders.needs_model(path, what)
    if why is not None:
        st.info(why, icon=":material/info:")
        st.stop()


def entries() -> list[dict]:
    return catalog.list_runs(catalog.roots(st.session_state.get("nav_folder")))


def no_checkpoints() -> None:
    st.info(
        "No checkpoints found in "
        + ", ".join(f"`{r}`" for r in catalog.roots(st.session_state.get("nav_folder")))
        + f".  Create the shipped ones with `{catalog.MAKE_COMMAND}`, train one on the "
        "**Train** page, or point *Also look in folder* at a folder of run folders."
    )
    st.stop()


def current_path() -> str:
    """The selected checkpoint's path; stops the page with a card when there is none or it is
    broken (the other checkpoints stay selectable in the sidebar)."""
    found = entries()
    if not found:
        no_checkpoints()
    path = st.session_state.get("nav_ckpt") or found[0]["path"]
    entry = next((e for e in found if e["path"] == path), found[0])
    if "error" in entry:
        error_card(f"Checkpoint {entry['label']} cannot be read", entry["error"])
        st.stop()
    return entry["path"]


def error_card(title: str, message: str, hint: str | None = None) -> None:
    hint = hint or "Pick another checkpoint in the sidebar, or regenerate this one."
    st.error(f"**{title}**\n\n{message}\n\n{hint}", icon=":material/error:")


def require(fn: Callable[..., Any], *args: Any, title: str = "Cannot show this", **kw: Any) -> Any:
    """``fn(*args, **kw)``; on a ``LoadError`` show an error card and stop the page."""
    try:
        return fn(*args, **kw)
    except loaders.LoadError as e:
        error_card(title, str(e))
        st.stop()


def attempt(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, str | None]:
    """``(fn(...), None)`` or ``(None, message)`` for a ``LoadError`` (for optional sections)."""
    try:
        return fn(*args, **kw), None
    except loaders.LoadError as e:
        return None, str(e)


def chart(fig: Any, key: str) -> None:
    from analysis.figures import html_config

    st.plotly_chart(fig, key=key, theme=None, config=html_config())


def aligned_heatmaps(
    path_a: str, path_b: str, kind: str, titles: tuple[str, str], keys: tuple[str, str]
) -> dict:
    """A's P(expert | domain) next to B's with B's experts aligned to A's
    (``analysis.compare``); returns the comparison dict."""
    from analysis.figures import activation_heatmap

    res = require(derived.comparison, path_a, path_b, kind, title="Cannot align the experts")
    sa = derived.summary(path_a)
    names, perm = sa["domain_names"], res["permutation"]
    left, right = st.columns(2)
    with left:
        fig = activation_heatmap(sa[f"activation_{kind}"], names, sa["expert_names"], titles[0])
        chart(fig, key=keys[0])
    with right:
        aligned = res["activation_b_aligned"]  # B's columns in A's order
        names_b = loaders.expert_names(path_b)  # PLE's say which domain's expert each is
        fig = activation_heatmap(aligned, names, [names_b[int(j)] for j in perm], titles[1])
        chart(fig, key=keys[1])
    return res


def metric_table(path: str, routing: tuple = loaders.AS_TRAINED) -> pd.DataFrame:
    df = derived.metrics_frame(path, routing)[METRIC_COLUMNS + ["rows"]]
    return df.astype({"rows": "int64"})


# the direction and unit of each metric, on every delta table's header
METRIC_DIRECTION = {
    "AUC": "AUC (higher is better)",
    "GAUC": "GAUC (higher is better)",
    "logloss": "logloss, nats (lower is better)",
}


def delta_table(base: pd.DataFrame, new: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Per-domain metrics of two evaluations side by side with the change (new - base); each
    metric's header says its direction and unit, the change column says which minus which."""
    cols = [c for c in METRIC_COLUMNS if not base[c].isna().all()]
    parts = {}
    for c in cols:
        head = METRIC_DIRECTION[c]
        parts[(head, names[0])] = base[c]
        parts[(head, names[1])] = new[c]
        parts[(head, f"Δ = {names[1]} − {names[0]}")] = new[c] - base[c]
    return pd.DataFrame(parts)


def show_table(df: pd.DataFrame, key: str) -> None:
    st.dataframe(df.style.format(precision=4, na_rep="–"), key=key)


def alarm_list(found: list[dict]) -> None:
    if not found:
        st.success(
            "No health alarms: routing and per-domain quality look sane.",
            icon=":material/check_circle:",
        )
        return
    boxes = {
        "critical": (st.error, ":material/error:"),
        "warning": (st.warning, ":material/warning:"),
        "unchecked": (st.info, ":material/help:"),  # could not be decided: says why
    }
    for a in found:
        box, icon = boxes.get(a["level"], boxes["warning"])
        box(f"**{a['title']}** — {a['message']}", icon=icon)


def alarm_summary(found: list[dict], domain_names: list[str], key: str) -> None:
    """The health alarms as ``analysis.alarm_summary`` folds them (past 8 domains, one line per
    kind of per-domain alarm with the per-domain boxes in an expander), then the raw values
    table (widget key ``key``)."""
    from analysis.alarm_summary import summarize_alarms

    groups = summarize_alarms(found, domain_names)
    if not any(g.grouped for g in groups):
        alarm_list(found)
    else:
        for g in groups:
            if not g.grouped:
                alarm_list([g.alarms[0].to_dict()])
                continue
            critical = g.level == "critical"
            box = st.error if critical else st.warning
            box(f"**{g.title}**", icon=":material/error:" if critical else ":material/warning:")
            with st.expander(f"Per-domain detail: {g.code} ({len(g.alarms)} alarms)"):
                alarm_list([a.to_dict() for a in g.alarms])
    if found:
        from analysis.alarm_summary import alarm_table

        show_table(alarm_table(found), key=key)


def gate_selector(path: str, key: str) -> str | None:
    """A selector of the record's gates (shown when there are several); the chosen gate's name,
    ``None`` for the primary gate."""
    gates, _ = attempt(loaders.gate_names, path)  # an error shows on the page's first table
    if not gates or len(gates) < 2:
        return None
    if st.session_state.get(f"{key}_for") != path:  # another path: back to its primary gate
        st.session_state[key] = gates[0]
        st.session_state[f"{key}_for"] = path
    chosen = st.selectbox(
        "Gate",
        gates,
        key=key,
        help="Every gate of the record; the first is the primary one (the other pages' default).",
    )
    return None if chosen == gates[0] else chosen


def routing_controls(path: str, prefix: str) -> tuple:
    """k slider, shared-expert toggle and knock-out multiselect; returns the routing tuple
    ``(top_k, use_shared, knocked_out)`` (``loaders.AS_TRAINED`` when nothing changed).  The
    controls reset when another checkpoint is selected."""
    from analysis.capabilities import experts_left

    caps = loaders.capabilities(path)
    e, trained_k = caps["num_experts"], caps["top_k"]
    if not caps["has_gate"]:
        st.info(f"Model **{caps['name']}** has no gate: there is no routing to change.")
        return loaders.AS_TRAINED
    keys = {name: f"{prefix}_{name}" for name in ("k", "k_want", "shared", "knock")}
    if st.session_state.get(f"{prefix}_for") != path:
        for key in keys.values():
            st.session_state.pop(key, None)
        st.session_state[f"{prefix}_for"] = path
    c1, c2, c3 = st.columns([2, 1, 2])
    with c3:
        knocked = st.multiselect(
            "Knock out experts",
            list(range(e)),
            key=keys["knock"],
            format_func=lambda i: loaders.expert_names(path)[i],
            max_selections=e - 1,
            help="Knocked-out experts are never selected; their gate mass goes to the others.",
        )
    left = experts_left(caps, knocked)  # the fewest experts any row's gate has left
    if left < 1:
        st.error(
            "These knock-outs leave a domain's gate with no expert: showing the model as trained."
        )
        return loaders.AS_TRAINED
    default_k = trained_k if trained_k is not None else caps["row_experts"]
    # the k the user asked for, written back on every run: the slider's range changes with the
    # knock-outs, which makes it a new widget that would otherwise restart at k=1; a knock-out
    # that leaves fewer experts lowers k only while it is in force
    want = st.session_state.get(f"{prefix}_k_want", default_k)
    st.session_state[keys["k"]] = min(want, left)

    def remember_k() -> None:
        st.session_state[f"{prefix}_k_want"] = st.session_state[keys["k"]]

    with c1:
        if left > 1:
            k = st.slider(
                "k (experts per row)" if trained_k else "k (keep the k largest gate weights)",
                1,
                left,
                key=keys["k"],
                on_change=remember_k,
                help=f"Trained with k={trained_k}." if trained_k else "Dense gate: all experts.",
            )
        else:
            k = 1
            st.caption("k = 1 (one expert left)")
    with c2:
        shared = st.toggle(
            "Shared expert on",
            value=True,
            key=keys["shared"],
            disabled=caps["num_shared"] == 0,
            help="Switch the always-on shared experts off at inference."
            if caps["num_shared"]
            else "This model has no shared expert.",
        )
    if trained_k is not None:
        top_k = None if k == trained_k else k
    else:  # a dense gate: k = every expert left in each row's gate is the gate as trained
        top_k = None if k >= left else k
    return (top_k, bool(shared) or caps["num_shared"] == 0, tuple(sorted(knocked)))
