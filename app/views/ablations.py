"""Ablations: change k, the shared expert and knock experts out at inference; compare alphas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import components
import derived
import jobs
import loaders
import siblings
import streamlit as st

from analysis import figures

st.title("Ablations")
st.write(
    "Re-route the loaded checkpoint at inference (no retraining) and see what each domain loses."
)

path = components.current_path()
components.checkpoint_only(path, "Ablations (another k, shared experts off, knock-outs, alpha)")
ckpt = components.require(loaders.checkpoint, path)
caps = loaders.capabilities(path)
names = list(ckpt.domain_names)
base = components.require(components.metric_table, path)


@st.fragment
def live_toggles() -> None:
    """Only this part reruns when a toggle changes (in the browser)."""
    st.subheader("Live toggles")
    routing = components.routing_controls(path, "abl")
    now = components.require(components.metric_table, path, routing)
    st.caption(
        f"Now: {loaders.describe(routing)} · as trained: k={caps['top_k'] or 'dense'}, "
        f"{caps['num_shared']} shared"
    )
    left, right = st.columns([3, 2])
    with left:
        table = components.delta_table(base, now, ("trained", "now"))
        components.show_table(table, key="abl_delta")
    with right:
        m = derived.metrics(path, routing)
        fig = figures.metric_bars(m, names, "auc", "AUC per domain, now")
        components.chart(fig, key="abl_auc")
    if not caps["has_gate"]:
        return
    left, right = st.columns(2)
    for col, routed, title, key in (
        (left, loaders.AS_TRAINED, "as trained", "abl_heat_trained"),
        (right, routing, "now", "abl_heat_now"),
    ):
        s = derived.summary(path, routed)
        with col:
            fig = figures.activation_heatmap(
                s["activation_hard"], names, s["expert_names"], f"Hard P(expert | domain), {title}"
            )
            components.chart(fig, key=key)


live_toggles()
if caps["has_gate"]:
    left, right = st.columns(2)
    with left:
        kc, err = components.attempt(derived.k_curve, path)
        if err:
            st.info(f"k curve: {err}")
        else:
            components.chart(figures.k_curve_figure(kc), key="abl_kcurve")
    with right:
        ko, err = components.attempt(derived.knockout, path)
        if err:
            st.info(f"Knock-out: {err}")
        else:
            components.chart(figures.knockout_heatmap(ko), key="abl_knockout")

st.subheader("alpha (weight of the mutual-information loss)")
if not caps["has_topk"]:
    st.info(f"alpha only acts on the CESAA family; **{caps['name']}** ignores it.")
    st.stop()
pending = st.session_state.pop("_abl_alpha_pending", None)
sibs = [s for s in siblings.alpha_siblings(path, components.entries()) if s["path"] != path]
opts = {s["path"]: f"alpha={s['alpha']:g} · {s['label']}" for s in sibs}
if pending in opts:
    st.session_state["abl_alpha_pick"] = pending
c1, c2, c3 = st.columns([3, 1, 1])
new_alpha = c2.number_input("New alpha", 0.0, 10.0, 0.05, 0.01, format="%.3f", key="abl_alpha_new")
epochs = c3.number_input("Epochs", 1, 50, 5, key="abl_alpha_epochs")
if c3.button("Train it", key="abl_alpha_train"):
    bar = st.progress(0.0, text="training…")

    def progress(ev: dict) -> None:
        if ev["event"] == "batch":
            done = (ev["epoch"] * ev["steps"] + ev["step"] + 1) / (epochs * ev["steps"])
            bar.progress(min(done, 1.0), text=f"epoch {ev['epoch'] + 1} · loss {ev['loss']:.4f}")

    out = jobs.new_run_dir(f"{Path(path).name}-alpha{new_alpha:g}")
    train_kw = {**dataclasses.asdict(ckpt.train_config), "epochs": int(epochs)}
    components.require(
        jobs.train_checkpoint,
        ckpt.meta["data"]["description"]["source"],
        caps["name"],
        {"alpha": float(new_alpha)},
        train_kw,
        out,
        progress,
        base_config=ckpt.model_config,
        data_of=path,  # its own data, wherever it is now (a moved table, a stream)
        title="Training failed",
    )
    st.session_state["_abl_alpha_pending"] = str(out.resolve())
    st.rerun()
if not opts:
    c1.info("No checkpoint of this model with another alpha: train one here.")
    st.stop()
other = c1.selectbox("Compare with", list(opts), key="abl_alpha_pick", format_func=opts.get)
b = components.require(components.metric_table, other)
components.show_table(
    components.delta_table(base, b, (f"alpha={ckpt.model_config.alpha:g}", "other")),
    key="abl_alpha_delta",
)
alpha = f"alpha={ckpt.model_config.alpha:g}"
components.aligned_heatmaps(
    path,
    other,
    "soft",
    (f"Soft P(expert | domain), {alpha}", f"{opts[other].split(' · ')[0]}, experts aligned"),
    ("abl_alpha_heat_a", "abl_alpha_heat_b"),
)
mi = [
    "n/a" if x is None else f"{x:.3f}"
    for x in (derived.summary(p)["mi_soft_normalized"] for p in (path, other))
]
st.caption(
    f"Soft I(D;E) as a fraction of the most a routing of this shape reaches (0 = ignores the "
    f"domain, 1 = best; higher = more specialized): {mi[0]} here vs {mi[1]} for the other."
)
