"""Cached tables of the inspection pages (Experts, Rows, Routing over training), derived from a
loaded checkpoint the same way as ``derived``: ``st.cache_data`` keyed by the checkpoint path, its
``loaders.token`` and the parameters; every number comes from ``analysis``.

Row-level views read a seeded sample of the test split (``MAX_ROWS``), so they open as fast on a
10M-row table as on a small one.
"""

from __future__ import annotations

import derived
import numpy as np
import streamlit as st
from catalog import label
from loaders import (
    SPLIT,
    LoadError,
    capabilities,
    checkpoint,
    data,
    domain_names,
    opened,
    token,
)

from analysis.records.collection import sample_positions

MAX_ROWS = 20_000  # rows of the test split the Experts page reads (seeded sample)
SWAP_ROWS = 1_000  # rows the domain-swap matrices average over


@st.cache_resource(show_spinner="Routing the rows…", max_entries=16)  # read-only, no copy
def _rows(path: str, tok: str, size: int) -> dict:
    import torch

    from analysis.rows import kept_columns

    ckpt, table = checkpoint(path), getattr(data(path), SPLIT)
    idx = sample_positions(len(table), size)
    sub = table.subset(torch.as_tensor(idx))
    model = ckpt.model.eval()
    with torch.no_grad():
        out = model(sub.cat, sub.num, sub.domain)
    if out.probs is None:
        raise LoadError(f"{label(path)}: model {capabilities(path)['name']!r} has no gate")
    probs = out.probs.float().numpy()
    if out.topk_idx is not None:
        topk, how = out.topk_idx.numpy(), "the selected (top-k) experts"
    else:
        topk, how = probs.argmax(1)[:, None], "the top-1 expert of the dense gate"
    cols = kept_columns(sub.cat, sub.num, ckpt.encoders)
    for key in ("user", "item"):
        entry = ckpt.encoders.get(key)
        ids = getattr(sub, key)
        if entry and entry.get("vocab") is not None and ids is not None:
            vocab = np.asarray(["<unseen>", *map(str, entry["vocab"])], dtype=object)
            cols.setdefault(entry["column"], vocab[ids.numpy().clip(0, len(vocab) - 1)])
    return {
        "rows": idx,
        "total": len(table),
        "source": "the test split",
        "domain": sub.domain.numpy(),
        "label": sub.label.numpy().astype(np.float64),
        "prediction": torch.sigmoid(out.logit).double().numpy(),
        "probs": probs,
        "topk": topk.astype(np.int64),
        "routed_by": how,
        "columns": cols,
    }


def rows(path: str, size: int = MAX_ROWS) -> dict:
    """A seeded sample of ``size`` rows of the test split routed once: ``rows`` (positions),
    ``total`` (rows sampled from), ``source``, ``domain``, ``label``, ``prediction``, ``probs``,
    ``topk``, ``routed_by`` and the raw ``columns`` (for a routing record: the same seeded sample of
    its stored rows and kept columns)."""
    if opened(path).has_model:  # the live model: rows it can also re-run (Rows page)
        return _rows(path, token(path), int(size))
    return _record_rows(path, token(path), int(size))


@st.cache_data(show_spinner="Reading the record's rows…", max_entries=16)
def _record_rows(path: str, tok: str, size: int) -> dict:
    from analysis.records.collection import read_rows
    from analysis.records.format import keep_column

    rec = opened(path).record
    g = rec.primary
    idx = sample_positions(rec.rows, size)  # the same seeded positions as the live-model rows
    kept = [keep_column(k) for k in rec.meta.kept]
    t = read_rows(rec, ["domain", "label", "prediction", *g.columns(), *kept], idx)
    if t is None:
        raise LoadError(f"{label(path)}: the record has no rows")
    probs, topk = rec.gate_arrays(t)
    if topk is None:
        topk, how = probs.argmax(1)[:, None], "the top-1 expert of the dense gate"
    else:
        how = "the selected (top-k) experts"
    labels = rec.meta.labels  # a record without labels (tokens) has no label or prediction
    tokens = {"sequence", "position", "token_id"} <= set(rec.meta.kept)
    return {
        "rows": idx,
        "total": rec.rows,
        "source": "the record",
        "domain": t["domain"].to_numpy().astype(np.int64),
        "label": t["label"].to_numpy().astype(np.float64) if labels else None,
        "prediction": t["prediction"].to_numpy().astype(np.float64) if labels else None,
        "probs": probs,
        "topk": topk.astype(np.int64),
        "routed_by": how,
        "columns": {
            k: t[keep_column(k)].to_numpy(zero_copy_only=False)
            for k in rec.meta.kept
            if not (k == "sequence" and tokens)  # a token record's sequence index: no feature
        },
    }


@st.cache_data(show_spinner=False, max_entries=256)
def _features(path: str, tok: str, expert: int, domains: tuple[int, ...] | None) -> object:
    from analysis.experts import feature_log_odds

    r = rows(path)
    if not r["columns"]:
        raise LoadError(f"{label(path)} keeps no feature columns to describe the experts with")
    routed = (r["topk"] == expert).any(axis=1)
    if not routed.any():
        raise LoadError(f"expert {expert} receives no rows of the sampled test split")
    try:
        return feature_log_odds(
            r["columns"], r["domain"], routed, domains=None if domains is None else list(domains)
        )
    except ValueError as e:
        raise LoadError(str(e)) from None


def contrast(path: str, expert: int, domains: tuple[int, ...] | None = None):
    """``analysis.experts.domain_contrast`` of the rows routed to ``expert``."""
    from analysis.experts import domain_contrast

    r = rows(path)
    routed = (r["topk"] == int(expert)).any(axis=1)
    return domain_contrast(r["domain"], routed, domains=None if domains is None else list(domains))


def features(path: str, expert: int, domains: tuple[int, ...] | None = None):
    """``analysis.experts.feature_log_odds`` of the rows routed to ``expert``."""
    return _features(path, token(path), int(expert), domains)


@st.cache_data(show_spinner=False, max_entries=64)
def _profiles(path: str, tok: str) -> tuple:
    from analysis.expert_profiles import expert_profiles

    r = rows(path)
    summary, per_domain = expert_profiles(
        r["domain"],
        r["topk"],
        r["label"],
        r["prediction"],
        num_experts=r["probs"].shape[1],
        num_domains=len(domain_names(path)),
        domain_names=domain_names(path),
    )
    # each expert's share of the work in its gate's notion, over every row of the record:
    # gate weight for dense and structured gates, selections for sparse ones (analysis.gates)
    work = derived.summary(path)["work"]
    summary.insert(2, f"share of {work['notion']}", work["share"])
    return summary.rename(columns={"share": "share of rows routed"}), per_domain


def profiles(path: str) -> tuple:
    """``(summary, per_domain)`` of ``analysis.expert_profiles.expert_profiles``."""
    return _profiles(path, token(path))


@st.cache_data(show_spinner="Comparing expert outputs…", max_entries=64)
def _similarity(path: str, tok: str, method: str) -> dict:
    from analysis.similarity import expert_similarity, routing_overlap, similarity_order

    col = derived.collection(path, sample_size=2000)
    if col.sample is None or col.sample.expert_outputs is None:
        raise LoadError(f"{label(path)}: the model does not return its experts' outputs")
    sim = expert_similarity(col.sample.expert_outputs, method)
    r = rows(path)
    overlap = routing_overlap(r["topk"], r["probs"].shape[1])
    return {"similarity": sim, "overlap": overlap, "order": similarity_order(sim)}


def similarity(path: str, method: str = "cka") -> dict:
    """Expert-output similarity [E, E], routing overlap [E, E] and the clustered order."""
    return _similarity(path, token(path), method)


@st.cache_data(show_spinner=False, max_entries=64)
def _domain_order(path: str, tok: str) -> np.ndarray:
    from analysis.similarity import cluster_order

    return cluster_order(np.nan_to_num(derived.summary(path)["activation_soft"]))


def domain_order(path: str, clustered: bool) -> np.ndarray:
    """Domains ordered by hierarchical clustering of their P(e | d) rows, or the natural order."""
    if not clustered:
        return np.arange(len(domain_names(path)))
    return _domain_order(path, token(path))


@st.cache_data(show_spinner="Routing the rows as every domain…", max_entries=32)
def _swap(path: str, tok: str, size: int, seed: int) -> dict:
    from analysis.rows import domain_swap, swap_matrices

    ckpt, table = checkpoint(path), getattr(data(path), SPLIT)
    import torch

    sub = table.subset(torch.as_tensor(sample_positions(len(table), size, seed)))
    res = domain_swap(ckpt.model, sub.cat, sub.num, sub.domain, ckpt.spec.num_domains)
    return swap_matrices(res, ckpt.spec.num_domains)


def swap(path: str, size: int = SWAP_ROWS, seed: int = 0) -> dict:
    """``analysis.rows.swap_matrices`` over a seeded sample of ``size`` test rows."""
    return _swap(path, token(path), int(size), int(seed))


@st.cache_data(show_spinner=False, max_entries=256)
def _one_row(path: str, tok: str, position: int) -> dict:
    import torch

    from analysis.rows import (
        domain_swap,
        expert_contributions,
        supports_contributions,
        swap_row_table,
    )

    ckpt, table = checkpoint(path), getattr(data(path), SPLIT)
    if not 0 <= position < len(table):
        raise LoadError(f"row {position} is not in the test split (0..{len(table) - 1})")
    sub = table.subset(torch.as_tensor([position]))
    res = domain_swap(ckpt.model, sub.cat, sub.num, sub.domain, ckpt.spec.num_domains)
    out = {"swap": swap_row_table(res, 0, domain_names(path)), "label": float(sub.label[0])}
    why = supports_contributions(ckpt.model)
    out["why_no_contributions"] = why
    if why is None:
        c = expert_contributions(ckpt.model, sub.cat, sub.num, sub.domain)
        out.update(
            method=c.method,
            logit=float(c.logit[0]),
            contributions=c.contributions[0],
            shared=float(c.shared[0]),
            base=float(c.base[0]),
            residual=float(c.residual[0]),
            probs=c.probs[0],
            topk=c.topk_idx[0].tolist(),
        )
    return out


def one_row(path: str, position: int) -> dict:
    """Gate, contributions and domain swap of test row ``position``."""
    return _one_row(path, token(path), int(position))


@st.cache_data(show_spinner=False, max_entries=64)
def _evolution(path: str, tok: str) -> dict:
    from analysis.compare import activation_evolution
    from analysis.saturation import saturation_table, settled_statement

    try:
        table = saturation_table(path)
        act = activation_evolution(path, "soft", domain_names(path))
    except ValueError as e:
        raise LoadError(f"{label(path)}: {e}") from None
    return {"table": table, "statement": settled_statement(table), "activation": act}


def evolution(path: str) -> dict:
    """Saturation / MI / load per epoch, the settled statement and P(e | d) per epoch."""
    return _evolution(path, token(path))
