"""Information: mutual information between domain and expert, entropies, planted-truth recovery."""

from __future__ import annotations

import components
import derived
import loaders
import streamlit as st

from analysis import figures
from analysis.information import ceiling_note, mi_table
from analysis.truth import recovery_table

st.title("Information")
st.write("How much the routing depends on the domain, in nats (test split).")

path = components.current_path()
caps = components.require(loaders.capabilities, path)
if not caps["has_gate"]:
    st.info(f"Model **{caps['name']}** has no gate: no routing information to measure.")
    st.stop()
gate = components.gate_selector(path, "info_gate")
s = components.require(derived.summary, path, gate=gate)
names = s["domain_names"]

DOC = "docs/measures.md"
st.markdown(
    "**Mutual information I(D;E)** — raw, the most a routing of this shape (E, k, D, domain shares) "
    "reaches, and the share of it"
)
components.show_table(mi_table(s), key="info_mi_table")


def fraction(kind: str) -> str:
    x = s[f"mi_{kind}_normalized"]
    return "n/a" if x is None else f"{x:.3f}"


c = st.columns(4)
c[0].metric(
    "I(D;E) soft",
    f"{s['mi_soft']:.4f}",
    help=f"Nats, whole test split, dense gate probabilities. {DOC} § mutual information.",
)
c[1].metric(
    "I(D;E) hard",
    f"{s['mi_hard']:.4f}",
    help=f"Nats, from the experts actually selected (k per row). {DOC} § mutual information.",
)
c[2].metric("soft, fraction of ceiling", fraction("soft"), help=f"{ceiling_note(s, 'soft')}. {DOC}")
c[3].metric("hard, fraction of ceiling", fraction("hard"), help=f"{ceiling_note(s, 'hard')}. {DOC}")
st.caption(
    f"Soft: {ceiling_note(s, 'soft')}.  Hard (k = {s['mean_selected_per_row']:.2f} experts per "
    f"row, E = {s['num_experts']}): {ceiling_note(s, 'hard')}.  0 = routing ignores the domain.  "
    f"Definitions: {DOC} § ceilings.  The training log's `train/mi` is a per-batch estimate during "
    "training, not this split-level value."
)
if s.get("mi_built_in") is not None:
    st.info(
        f"This gate is structured: each domain's gate can weigh only some experts, so part of "
        f"I(D;E) is built in.  A gate spreading every domain evenly over the experts it can "
        f"reach would already have {s['mi_built_in']:.4f} nats (soft I(D;E) measured: "
        f"{s['mi_soft']:.4f}): read the measured value against this, not against 0.",
        icon=":material/info:",
    )

left, right = st.columns(2)
with left:
    st.markdown("**Gate entropy** (nats; `_norm` = divided by log E)")
    components.show_table(
        components.require(derived.gating_entropy, path, gate=gate), key="info_entropy"
    )
with right:
    fig = figures.similarity_heatmap(s["domain_similarity_soft"], names)
    components.chart(fig, key="info_similarity")

st.subheader("Planted truth")
truth = derived.truth(path)
if not truth:
    st.info("Only the built-in synthetic data has a planted domain → mechanism truth.")
    st.stop()
kind = st.radio("Routing", ["hard", "soft"], horizontal=True, key="info_kind")
rec, err = components.attempt(derived.truth_recovery, path, kind)
if err:
    st.warning(err)
else:
    components.show_table(recovery_table(rec), key="info_recovery_table")
    c = st.columns(3)
    for col, (key, label, what) in zip(
        c,
        [
            ("score", "Recovery score", "domains share experts as they share planted mechanisms"),
            ("set_jaccard", "Domain-set Jaccard", "each mechanism's domains vs its expert's"),
            (
                "exact_match",
                "Exact matches",
                "mechanisms whose expert serves exactly their domains",
            ),
        ],
        strict=True,
    ):
        ceiling = rec[f"{key}_ceiling"]
        col.metric(
            label,
            "n/a" if rec[key] is None else f"{rec[key]:.3f}",
            help=(
                f"{what}; ceiling at this (E, k, D): "
                + ("unknown" if ceiling is None else f"{ceiling:.3f}")
                + f". {DOC} § planted-truth recovery."
            ),
        )
    st.caption(
        "1 = the planted structure exactly; the ceiling is the most any routing with this "
        "model's experts and k can reach (an upper bound), the fraction is score / ceiling.  "
        "Recovery score 0 = no better than routing that ignores the domain."
    )
groups, err = components.attempt(derived.group_recovery, path, kind)
if err:
    st.warning(err)
elif groups is not None:
    c = st.columns(2)
    c[0].metric(
        "Planted groups recovered (ARI)",
        f"{groups['ari']:.3f}",
        help=f"The data plant {groups['groups']} groups of domains sharing their mechanisms; "
        "the domains clustered by their routing P(e|d) into as many clusters, against them: "
        f"adjusted Rand index, 1 = the planted partition, about 0 = chance. {DOC} § planted "
        "groups.",
    )
    c[1].metric("Planted groups recovered (NMI)", f"{groups['nmi']:.3f}")
fig = figures.truth_vs_learned(
    truth["domain_mechanism"],
    s[f"activation_{kind}"],
    names,
    truth.get("mechanism_names"),
    s["expert_names"],
)
components.chart(fig, key="info_truth")
