"""Reusable pieces of the dashboard: the checkpoint picker, error cards, charts, metric tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import catalog
import derived
import loaders
import pandas as pd
import streamlit as st

METRIC_COLUMNS = ["AUC", "GAUC", "logloss"]


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
