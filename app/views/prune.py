"""Prune: which experts this model could do without, and what that would cost."""

from __future__ import annotations

import components
import jobs
import loaders
import pruning
import streamlit as st

from analysis import figures
from analysis.prune_plans import describe_plan

st.title("Prune")
st.write("Which experts this model could do without, and what that would cost.")

path = components.current_path()
components.checkpoint_only(path, "Pruning and merging experts")
ckpt = components.require(loaders.checkpoint, path)
caps = loaders.capabilities(path)
if not caps["has_gate"] or caps["num_experts"] < 2:
    st.info(f"**{caps['name']}** has no gate over several experts: nothing to prune or merge.")
    st.stop()
found = components.require(pruning.prune, path)
curve, names = found["curve"], loaders.expert_names(path)
e = int(caps["num_experts"])
st.caption(
    f"Each plan is chosen and its cost predicted on the validation split (at most "
    f"{pruning.PLAN_ROWS:,} rows, a seeded sample), then measured on the "
    f"{loaders.SPLIT} split with the edited model (ΔAUC against this model; 95% paired "
    "row-bootstrap interval).  knockout: greedy knock-outs by measured cost; reap: lowest "
    "router-weighted output norm; merge: average the most redundant experts (output CKA)."
)
budgets = sorted(int(k) for k in curve["keep"].unique())
keep = st.select_slider("Experts to keep", budgets, value=budgets[-2], key="prn_keep")
components.chart(figures.prune_cost_figure(curve, keep), key="prn_curve")

at = curve[curve["keep"] == keep].copy()
at.insert(2, "what", [describe_plan(p, names) for p in at["plan"]])
components.show_table(at.drop(columns=["plan", "keep"]), key="prn_plans")

best = found["error"].iloc[0]
st.markdown(
    f"**Which criterion predicts its cost best:** {best['criterion']} "
    f"(mean absolute error {best['mean_abs_error']:.4f} AUC over the budgets below {e})."
)
components.show_table(found["error"], key="prn_error")

st.subheader("One plan, per domain")
crits = list(at["criterion"])
crit = st.selectbox("Criterion", crits, key="prn_crit")
plan = at[at["criterion"] == crit]["plan"].iloc[0]
st.caption(describe_plan(plan, names))
components.show_table(components.require(pruning.plan_cost, path, plan), key="prn_domains")

refusal = jobs.prune_refusal(path)
if refusal is None:
    if st.button("Write it as a new checkpoint", key="prn_write"):
        out = jobs.new_run_dir(f"{ckpt.path.name}-{crit}-keep{keep}")
        written = components.require(jobs.write_pruned, path, plan, out, title="Cannot write it")
        st.success(
            f"Written to `{written}`: pick it in the sidebar; Compare shows it against this one."
        )
else:
    st.caption(f"{refusal}.")

st.subheader("Evidence per expert")
st.caption(
    "reap: mean gate weight x output norm on the expert's rows; dead_units: share of its ReLU "
    "units silent on all its rows (1 = collapsed); top_domain_share: largest share of its gate "
    "weight from one domain; underfit: logloss of the expert alone on its rows minus the "
    "model's (nats); cka_nearest / overlap_nearest: output similarity and routing overlap with "
    "its most similar expert; knockout_*: the change when the expert alone is knocked out "
    "(validation rows; the worst domain by ΔAUC)."
)
components.show_table(found["evidence"], key="prn_evidence")
