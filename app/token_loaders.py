"""Cached reads of a token-level routing record (a language model's: one row per token, one gate per
MoE layer; ``analysis.records.transformers_moe``) for the Tokens page; every number comes from
``analysis``.

The token views read the record's first ``MAX_TOKENS`` rows (whole sequences, in record order),
so they open as fast on a 10M-token record as on a small one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from catalog import label
from loaders import LoadError, needs_model, record, token

MAX_TOKENS = 20_000
TOKEN_COLUMNS = ("sequence", "position", "token_id")


def has_tokens(path: str) -> bool:
    """True for a record that keeps one row per token (sequence, position and token id)."""
    return needs_model(path, "") is not None and set(TOKEN_COLUMNS) <= set(record(path).meta.kept)


@st.cache_data(show_spinner=False, max_entries=64)
def _layer_summary(path: str, tok: str, gate: str) -> dict:
    from analysis.measures import summarize

    rec = record(path)
    g = rec.meta.gate(gate)
    return summarize(
        rec.stats[gate], list(rec.domains), g.expert_names, gate_kind=g.kind, reach=g.reach
    )


def layer_summary(path: str, gate: str) -> dict:
    """``analysis.measures.summarize`` of one gate (layer) from the record's stored statistics."""
    return _layer_summary(path, token(path), gate)


@st.cache_data(show_spinner="Reading the record's tokens…", max_entries=16)
def _tokens(path: str, tok: str, gate: str) -> pd.DataFrame:
    from analysis.records.format import keep_column

    rec = record(path)
    g = rec.meta.gate(gate)
    text = "token" if "token" in rec.meta.kept else "token_id"
    cols = ["domain", *(keep_column(k) for k in ("sequence", "position", text))]
    cols += g.columns()
    parts, n = [], 0
    for t in rec.iter_batches(cols):
        parts.append(t)
        n += t.num_rows
        if n >= MAX_TOKENS:
            break
    if not parts:
        raise LoadError(f"{label(path)}: the record has no rows")
    import pyarrow as pa

    t = pa.concat_tables(parts).slice(0, MAX_TOKENS)
    probs, top = rec.gate_arrays(t, gate)
    if top is None:
        top = probs.argmax(1)[:, None]
    seq = t[keep_column("sequence")].to_numpy()
    cut = n > MAX_TOKENS and (seq != seq[-1]).any()  # the last sequence may go on: leave it out
    whole = seq != seq[-1] if cut else np.ones(len(seq), bool)
    return pd.DataFrame(
        {
            "domain": t["domain"].to_numpy().astype(np.int64),
            "sequence": seq,
            "position": t[keep_column("position")].to_numpy(),
            "token": t[keep_column(text)].to_numpy(zero_copy_only=False).astype(str),
            "top": list(top),
            "probs": list(probs),
        }
    )[whole]


def tokens(path: str, gate: str) -> pd.DataFrame:
    """The first whole sequences (up to ``MAX_TOKENS`` tokens): one row per token with its domain,
    sequence, position, text (or id), selected experts ``top`` [k] and probabilities ``probs`` [E]
    at ``gate``."""
    return _tokens(path, token(path), gate)


@st.cache_data(show_spinner=False, max_entries=256)
def _token_log_odds(path: str, tok: str, gate: str, expert: int) -> pd.DataFrame:
    from analysis.experts import feature_log_odds

    t = tokens(path, gate)
    routed = (np.stack(t["top"].to_numpy()) == expert).any(axis=1)
    if not routed.any():
        raise LoadError(f"expert {expert} of {gate} receives no token of the first sequences")
    try:
        return feature_log_odds({"token": t["token"].to_numpy()}, t["domain"].to_numpy(), routed)
    except ValueError as e:
        raise LoadError(str(e)) from None


def token_log_odds(path: str, gate: str, expert: int) -> pd.DataFrame:
    """``analysis.experts.feature_log_odds`` of the tokens routed to ``expert`` at ``gate``
    (stratified by domain: which tokens over-route to it within their source)."""
    return _token_log_odds(path, token(path), gate, int(expert))
