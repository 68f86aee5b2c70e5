"""Cached tables derived from an opened path: routing collections, metrics, routing summaries,
entropies, knock-out importance, the k curve, health alarms, planted-truth recovery, comparisons
(pruning plans and their cost: ``app/pruning.py``).

As trained, everything reads the path's record (``loaders.opened``), gate by gate; re-routed
(``routing`` other than ``AS_TRAINED``: another k, knocked-out experts, shared experts off) it
re-runs the live model, which only a checkpoint has.  Each is ``st.cache_data`` keyed by the path,
its ``loaders.token`` and the parameters it depends on; the public function adds the token.  Every
number comes from ``analysis`` or ``cesaa``; a problem the user can fix is a ``LoadError``.
"""

from __future__ import annotations

import streamlit as st
from catalog import label
from loaders import (
    AS_TRAINED,
    SPLIT,
    LoadError,
    capabilities,
    checkpoint,
    data,
    describe,
    domain_names,
    expert_names,
    labeled,
    needs_model,
    opened,
    override,
    token,
)

# ---- routing collections and metrics -------------------------------------------------------------


@st.cache_data(show_spinner="Running the model…", max_entries=128)
def _collect(path: str, tok: str, routing: tuple, sample_size: int):
    from analysis.collect import collect

    ckpt, table = checkpoint(path), getattr(data(path), SPLIT)
    try:
        col = collect(
            ckpt.model,
            table,
            num_domains=ckpt.spec.num_domains,
            routing=None if routing == AS_TRAINED else override(routing),
            sample_size=sample_size,
        )
    except ValueError as e:
        raise LoadError(f"Cannot route {label(path)} with {describe(routing)}: {e}") from None
    col.domain_names = tuple(ckpt.domain_names)
    return col


def collection(
    path: str, routing: tuple = AS_TRAINED, sample_size: int = 0, gate: str | None = None
):
    """The ``analysis.Collection`` of ``gate`` (default: primary): as trained, read from the
    path's record (its expert-output sample cut to ``sample_size`` rows when that is smaller);
    re-routed, ``analysis.collect`` of the live model on the test split."""
    if tuple(routing) == AS_TRAINED:
        from dataclasses import replace

        from analysis.records.collection import head_sample

        op = opened(path)
        col = op.collection(gate)
        if sample_size and col.sample is not None and sample_size < len(col.sample):
            seed = int(op.record.meta.sample.get("seed", 0))
            col = replace(col, sample=head_sample(col.sample, sample_size, seed))
            col.domain_names = tuple(op.domains)
        return col
    why = needs_model(path, "Re-routing")
    if why is not None:
        raise LoadError(why)
    return _collect(path, token(path), tuple(routing), int(sample_size))


@st.cache_data(show_spinner=False, max_entries=128)
def _metrics(path: str, tok: str, routing: tuple) -> dict:
    from cesaa.metrics import evaluate_predictions

    col = collection(path, routing)
    table = getattr(data(path), SPLIT)
    user = table.user.numpy() if table.user is not None else None
    return evaluate_predictions(
        col.labels, col.predictions, col.domain, user=user, domain_names=domain_names(path)
    )


def metrics(path: str, routing: tuple = AS_TRAINED) -> dict:
    """Overall and per-domain AUC / GAUC / logloss on the test split (flat keys): the record's as
    trained, the live model's re-routed."""
    if not labeled(path):
        from analysis.collection import NO_LABELS

        raise LoadError(NO_LABELS)
    if tuple(routing) == AS_TRAINED:
        m = opened(path).record.meta.metrics
        return {k: (float("nan") if v is None else v) for k, v in m.items()}
    return _metrics(path, token(path), tuple(routing))


def metrics_frame(path: str, routing: tuple = AS_TRAINED):
    from cesaa.metrics import metrics_table

    return metrics_table(metrics(path, routing), domain_names(path))


# ---- routing measures ----------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=128)
def _summary(path: str, tok: str, routing: tuple, gate: str | None) -> dict | None:
    from analysis.measures import summarize

    col = collection(path, routing, gate=gate)
    if col.stats is None:
        return None
    g = opened(path).gate(gate)  # the gate's kind picks the notion of load (analysis.gates)
    return summarize(
        col.stats,
        domain_names(path),
        expert_names(path, gate),
        gate_kind=None if g is None else g.kind,
        reach=None if g is None else g.reach,
    )


def summary(path: str, routing: tuple = AS_TRAINED, gate: str | None = None) -> dict:
    """``analysis.measures.summarize`` of ``gate``'s routing in the notion that fits its kind;
    ``LoadError`` for a gate-less model."""
    out = _summary(path, token(path), tuple(routing), gate)
    if out is None:
        raise LoadError(collection(path, routing).no_routing_reason or "the model has no gate")
    return out


def stats(path: str, routing: tuple = AS_TRAINED, gate: str | None = None):
    col = collection(path, routing, gate=gate)
    if col.stats is None:
        raise LoadError(col.no_routing_reason or "the model has no gate")
    return col.stats


@st.cache_data(show_spinner=False, max_entries=64)
def _gating_entropy(path: str, tok: str, routing: tuple, gate: str | None):
    from analysis.measures import gating_entropy

    return gating_entropy(stats(path, routing, gate), domain_names(path))


def gating_entropy(path: str, routing: tuple = AS_TRAINED, gate: str | None = None):
    return _gating_entropy(path, token(path), tuple(routing), gate)


@st.cache_data(show_spinner="Reading the rows…", max_entries=32)
def _row_entropies(path: str, tok: str, size: int, gate: str | None) -> dict:
    from analysis.measures import row_entropy_by_domain
    from analysis.records.collection import gate_rows

    rows = gate_rows(opened(path).record, gate, size)
    if rows is None:
        raise LoadError("the record has no gate probabilities to compute row entropies from")
    return row_entropy_by_domain(rows["probs"], rows["domain"])


def row_entropies(path: str, sample_size: int, gate: str | None = None) -> dict:
    """Per-row gate entropy of a seeded draw of ``sample_size`` rows from the record's rows:
    ``{values, domain, max}`` for the violin plot (``analysis.measures.row_entropy_by_domain``)."""
    return _row_entropies(path, token(path), int(sample_size), gate)


@st.cache_data(show_spinner="Reading every row of both gates…", max_entries=32)
def _cross_gate(path: str, tok: str, first: str, second: str) -> dict:
    import numpy as np

    from analysis.gate_report import cross_gate

    out = cross_gate(opened(path).record, first, second)
    co = [[np.nan if v is None else v for v in row] for row in out["co_selection"]]
    return {**out, "co_selection": np.asarray(co, dtype=np.float64)}


def gate_pairs(path: str) -> list[tuple[str, str]]:
    """Consecutive gates (``analysis.gate_report.gate_sequence``)."""
    from analysis.gate_report import gate_sequence

    return gate_sequence(opened(path).record)


def cross_gate(path: str, first: str, second: str) -> dict:
    """How the top expert at ``first`` predicts the top expert at ``second`` (co-selection and
    I between the two choices, ``analysis.gate_report.cross_gate``)."""
    return _cross_gate(path, token(path), first, second)


# ---- causal tests: knock-out and the k curve -----------------------------------------------------


@st.cache_data(show_spinner="Knocking out each expert…", max_entries=32)
def _knockout(path: str, tok: str):
    from analysis.causal import knockout_importance

    table = getattr(data(path), SPLIT)
    try:
        return knockout_importance(checkpoint(path).model, table, domain_names(path))
    except ValueError as e:
        raise LoadError(str(e)) from None


def knockout(path: str):
    """Knock-out importance table (``analysis.causal.knockout_importance``)."""
    return _knockout(path, token(path))


@st.cache_data(show_spinner="Re-routing with every k…", max_entries=32)
def _k_curve(path: str, tok: str):
    from analysis.causal import k_curve

    table = getattr(data(path), SPLIT)
    try:
        return k_curve(checkpoint(path).model, table, domain_names(path))
    except ValueError as e:
        raise LoadError(str(e)) from None


def k_curve(path: str):
    """Per-domain AUC against k (``analysis.causal.k_curve``)."""
    return _k_curve(path, token(path))


# ---- health alarms and planted truth -------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def _alarms(path: str, tok: str) -> list[dict]:
    from analysis.gate_report import record_alarms

    col = collection(path)
    m = metrics(path) if labeled(path) else {}  # no labels: no quality alarms
    found = record_alarms(opened(path).record, m, col.prediction_std_per_domain())
    return [a.to_dict() for a in found]


def alarms(path: str) -> list[dict]:
    """Health alarms of every gate as the record declares it (``gate_report.record_alarms``)."""
    return _alarms(path, token(path))


def truth(path: str) -> dict | None:
    """The planted truth of the synthetic data (None for other data and for records)."""
    if needs_model(path, "") is not None:
        return None
    return checkpoint(path).meta["data"].get("truth") or data(path).truth


@st.cache_data(show_spinner=False, max_entries=64)
def _truth_recovery(path: str, tok: str, kind: str) -> dict:
    from analysis.truth import truth_recovery

    try:
        rec = truth_recovery(
            stats(path),
            truth(path),
            kind=kind,
            include_shared=capabilities(path)["num_shared"] == 0,
            domain_names=domain_names(path),
        )
    except ValueError as e:
        raise LoadError(f"truth recovery undefined: {e}") from None
    return rec.to_dict()


def truth_recovery(path: str, kind: str = "hard") -> dict:
    return _truth_recovery(path, token(path), kind)


@st.cache_data(show_spinner=False, max_entries=64)
def _group_recovery(path: str, tok: str, kind: str) -> dict | None:
    from analysis.domain_groups import group_recovery

    planted = (truth(path) or {}).get("domain_group")
    if planted is None:
        return None
    try:
        rec = group_recovery(stats(path), planted, kind)
    except ValueError as e:
        raise LoadError(f"group recovery undefined: {e}") from None
    return {"ari": rec.ari, "nmi": rec.nmi, "groups": rec.num_groups, "clusters": rec.clusters}


def group_recovery(path: str, kind: str = "hard") -> dict | None:
    """The planted groups of domains recovered from the routing (``analysis.domain_groups``);
    None when the data plant no groups."""
    return _group_recovery(path, token(path), kind)


# ---- comparison of two checkpoints ---------------------------------------------------------------


@st.cache_data(show_spinner="Aligning experts…", max_entries=64)
def _comparison(path_a: str, tok_a: str, path_b: str, tok_b: str, kind: str) -> dict:
    from analysis.compare import aligned_activation, compare
    from analysis.measures import activation

    a, b = collection(path_a), collection(path_b)
    if a.rows != b.rows or a.num_domains != b.num_domains:
        raise LoadError(
            f"{label(path_a)} and {label(path_b)} were not evaluated on the same rows and domains "
            f"({a.rows} vs {b.rows} rows, {a.num_domains} vs {b.num_domains} domains): "
            "compare checkpoints trained on the same data"
        )
    try:
        res = compare(a, b, kind=kind)
    except ValueError as e:
        raise LoadError(str(e)) from None
    aligned = aligned_activation(activation(b.stats, kind), res.permutation)
    return {
        **res.to_dict(),
        "permutation": [int(i) for i in res.permutation],
        "activation_b_aligned": aligned.tolist(),
    }


def comparison(path_a: str, path_b: str, kind: str = "soft") -> dict:
    """``analysis.compare.compare`` of two checkpoints' routing on the same rows (b aligned to a),
    plus ``activation_b_aligned``: b's P(expert | domain) [D, E] with its columns in a's order."""
    return _comparison(path_a, token(path_a), path_b, token(path_b), kind)
