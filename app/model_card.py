"""The Overview's model card: what the opened path holds, asked of it (``loaders.opened``).

A checkpoint adds its configuration, how the run ended and its training curve; every path shows
its gates as its record declares them (kind, k, shared experts and whether they are gated,
alpha), so a checkpoint and its record read the same.
"""

from __future__ import annotations

import json

import catalog
import components
import loaders
import streamlit as st

from analysis import figures


def gates_line(path: str) -> str:
    """One line per gate: kind, experts, k, gated / always-on shared experts, alpha, inferred."""
    rec = loaders.record(path)
    out = []
    for g in rec.meta.gates:
        shared = f"{len(g.shared)} gated shared" if g.shared else "no gated shared"
        alpha = g.hyperparameter("alpha")
        hyper = (
            "hyperparameters not declared"
            if g.hyper is None
            else (f"alpha {alpha:g}" if alpha is not None else "no alpha")
        )
        k = f"k {g.top_k}" if g.top_k else "all experts mix"
        note = f" ({', '.join(g.inferred)} inferred)" if g.inferred else ""
        out.append(f"`{g.name}`: {g.kind}{note}, {g.num_experts} experts, {k}, {shared}, {hyper}")
    if rec.meta.always_on:
        out.append(f"{len(rec.meta.always_on)} always-on (ungated) shared experts")
    return " · ".join(out) or "no gate"


def show(path: str) -> None:
    """The card: the checkpoint's (config, run end, history) when it has a live model, the
    record's otherwise; the gates as declared in both."""
    if loaders.needs_model(path, "") is None:
        _checkpoint(path)
    else:
        _record(path)


def _checkpoint(path: str) -> None:
    from cesaa.models import model_description

    ckpt = components.require(loaders.checkpoint, path, title="Cannot load this checkpoint")
    meta, cfg = ckpt.meta, ckpt.model_config
    caps = loaders.capabilities(path)
    desc = meta["data"].get("description", {})
    st.subheader(f"Model card · {catalog.label(path)}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Model", cfg.name)
    c2.metric("Experts (k selected)", f"{caps['num_experts']} ({caps['top_k'] or 'dense'})")
    c3.metric("Shared experts", caps["num_shared"])
    c4.metric("alpha (MI weight)", f"{cfg.alpha:g}" if caps["has_topk"] else "–")
    st.caption(
        f"{model_description(cfg.name)} · data `{desc.get('source')}` · domains "
        f"{', '.join(ckpt.domain_names)} · status {meta.get('status')} · best epoch "
        f"{meta.get('metrics', {}).get('best_epoch')}"
    )
    line, _ = components.attempt(gates_line, path)  # needs the record (the data)
    if line:
        st.caption(f"Gates as recorded: {line}")
    end = meta.get("run_end")  # how the run ended (cesaa.convergence), absent in older ones
    if end and end.get("verdict") != "converged":
        st.warning(f"This run {end['message']}.  Its numbers measure its training, not its model.")
    elif end:
        st.caption(f"The run {end['message']}.")
    with st.expander("Configuration and data"):
        st.code(
            json.dumps({"model": meta["model"], "train": meta.get("train"), "data": desc}, indent=1)
        )
    hist = components.require(loaders.history, path)
    if hist:
        components.chart(figures.training_curve(hist), key="ov_history")
    else:
        st.info("No training history (metrics.jsonl) in this checkpoint.")


def _record(path: str) -> None:
    rec = components.require(loaders.record, path, title="Cannot open this record")
    m, g = rec.meta, rec.meta.primary
    st.subheader(f"Routing record · {catalog.label(path)}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Model", m.model_name)
    c2.metric(
        "Experts (k selected)", "–" if g is None else f"{g.num_experts} ({g.top_k or 'dense'})"
    )
    c3.metric("Rows", f"{m.rows:,}")
    c4.metric("Gates", len(m.gates))
    st.caption(
        f"{m.model_description or 'no description'} · domains {', '.join(m.domains)} · "
        f"{gates_line(path)} · checked: {rec.checked}"
    )
    st.caption(
        "A record holds what one forward pass produced: views that re-run the model (ablations, "
        "counterfactuals) need the checkpoint."
    )
    with st.expander("Record metadata"):
        st.code(
            json.dumps(
                {
                    "command": m.command,
                    "created": m.created,
                    "data": m.data,
                    "source": m.source,
                    "gates": [x.to_dict() | {"experts": x.expert_names} for x in m.gates],
                    "kept columns": list(m.kept),
                    "sample": m.sample,
                },
                indent=1,
                default=str,
            )
        )
