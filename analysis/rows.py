"""Single rows and counterfactual domains: each expert's contribution to a row's logit, and the
same row routed as if it came from another domain.

Shapes: n = rows, D = domains, E = selectable experts, k = experts selected per row, H = expert
width.  Inputs are the model's own tensors (``cat`` [n, C] long, ``num`` [n, M] float, ``domain``
[n] long); outputs are numpy arrays and DataFrames.

**Contributions** (CESAA-family models: a gate, stacked experts and a tower on h):
``contribution_e = logit - head(h without g_e * Expert_e(x))`` for each selected expert,
``shared = logit - head(h without the shared experts' part)`` and ``base = head(h = 0)`` (what the
domain embedding and the bias give alone).  When the head is linear in h (a tower without hidden
layers), this is the **exact** decomposition ``logit = base + shared + sum_e contribution_e``
(``method = "exact"``).  Otherwise each number is the **leave-one-expert-out** change of the logit
(``method = "leave-one-out"``): the gate is not renormalized, the rest of the row stays as it is,
and the parts need not add up to the logit (``residual`` says by how much they do not).

**Domain swap**: the row's features with the domain index set to each domain d' in turn; every
model in the registry reads its domain only through that index, so the change of the logit and of
the gate is exactly what the domain conditioning does to this row.  Aggregated over rows of domain
d: ``mean |logit(d') - logit(d)|`` and the mean total-variation distance
``0.5 * sum_e |P(e | x, d') - P(e | x, d)|`` (0 = the same gate, 1 = disjoint experts).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.validation import check_routing_arrays


@dataclass
class Contributions:
    """Per-row decomposition of the logit (see the module doc).

    ``logit`` [n]; ``contributions`` [n, E] (0 for experts not selected); ``shared`` [n];
    ``base`` [n]; ``gates`` [n, E]; ``probs`` [n, E]; ``topk_idx`` [n, k]; ``method`` "exact" or
    "leave-one-out"; ``residual`` [n] = logit - (base + shared + sum of contributions).
    """

    method: str
    logit: np.ndarray
    contributions: np.ndarray
    shared: np.ndarray
    base: np.ndarray
    gates: np.ndarray
    probs: np.ndarray
    topk_idx: np.ndarray

    @property
    def residual(self) -> np.ndarray:
        return self.logit - (self.base + self.shared + self.contributions.sum(axis=1))


@dataclass
class SwapResult:
    """Every row routed as each domain.  ``own`` [n] the row's own domain; ``logits`` [n, D];
    ``probs`` [n, D, E] and ``topk_idx`` [n, D, k] (``None`` for models without a gate / a sparse
    gate)."""

    own: np.ndarray
    logits: np.ndarray
    probs: np.ndarray | None
    topk_idx: np.ndarray | None

    @property
    def delta_logit(self) -> np.ndarray:
        """[n, D] logit as domain d' minus the logit as the row's own domain."""
        own = self.logits[np.arange(len(self.own)), self.own]
        return self.logits - own[:, None]

    @property
    def tv(self) -> np.ndarray | None:
        """[n, D] total-variation distance of the gate as d' from the gate as the own domain."""
        if self.probs is None:
            return None
        own = self.probs[np.arange(len(self.own)), self.own]  # [n, E]
        return 0.5 * np.abs(self.probs - own[:, None, :]).sum(axis=2)


def _check_inputs(model: Any, cat: Any, num: Any, domain: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, t in (("cat", cat), ("num", num), ("domain", domain)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (cat.shape[0] == num.shape[0] == domain.shape[0]):
        raise ValueError(
            f"cat, num and domain must have the same rows, got {cat.shape[0]}, {num.shape[0]}, "
            f"{domain.shape[0]}"
        )


def supports_contributions(model: nn.Module) -> str | None:
    """None when ``expert_contributions`` can decompose ``model``, else why not."""
    if not (hasattr(model, "select") and hasattr(model, "experts")):
        return (
            f"model {type(model).__name__} is not a CESAA-family model (gate + stacked experts + "
            "tower): per-expert contributions need its internals; the domain swap works for it"
        )
    if not hasattr(model, "head_logit"):
        return f"model {type(model).__name__} has no prediction head (head_logit)"
    return None


def head_is_linear(model: nn.Module) -> bool:
    """True when every prediction tower is a single ``nn.Linear`` (logit linear in h)."""
    towers = [model.tower] if hasattr(model, "tower") else list(model.towers)
    return all(
        isinstance(t, nn.Sequential) and len(t) == 1 and isinstance(t[0], nn.Linear) for t in towers
    )


@torch.no_grad()
def expert_contributions(model: nn.Module, cat: Any, num: Any, domain: Any) -> Contributions:
    """Each selected expert's contribution to each row's logit (see the module doc)."""
    _check_inputs(model, cat, num, domain)
    why = supports_contributions(model)
    if why is not None:
        raise ValueError(why)
    from cesaa.models.output import RoutingOverride

    was_training = model.training
    model.eval()
    try:
        c = model.select(cat, num, domain, RoutingOverride(), keep_shared_outputs=True)
        outs = model.expert_outputs(c.x)  # [n, E, H], one per gate slot
        g = c.gate.gates  # [n, E]
        h_spec = torch.einsum("ne,neh->nh", g, outs)  # [n, H]
        concat = model.cfg.fusion == "concat"
        h_sh = c.h[:, : h_spec.shape[1]] if concat else c.h - h_spec  # [n, H]

        def head(sh: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
            h = torch.cat([sh, spec], dim=1) if concat else sh + spec
            return model.head_logit(h, domain)  # [n]

        logit = head(h_sh, h_spec)
        contrib = torch.zeros_like(g)
        for e in range(g.shape[1]):
            on = g[:, e] != 0
            if on.any():
                minus = h_spec - g[:, e : e + 1] * outs[:, e]
                contrib[:, e] = torch.where(on, logit - head(h_sh, minus), 0.0)
        shared = logit - head(torch.zeros_like(h_sh), h_spec)
        base = head(torch.zeros_like(h_sh), torch.zeros_like(h_spec))
    finally:
        model.train(was_training)

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().cpu().numpy()

    return Contributions(
        method="exact" if head_is_linear(model) else "leave-one-out",
        logit=np_(logit),
        contributions=np_(contrib),
        shared=np_(shared),
        base=np_(base),
        gates=np_(g),
        probs=np_(c.gate.probs),
        topk_idx=c.gate.topk_idx.cpu().numpy().astype(np.int64),
    )


@torch.no_grad()
def domain_swap(
    model: nn.Module, cat: Any, num: Any, domain: Any, num_domains: int, batch_size: int = 16384
) -> SwapResult:
    """Run every row as each of the ``num_domains`` domains (eval mode, no gradient)."""
    _check_inputs(model, cat, num, domain)
    own = check_routing_arrays(domain=domain, num_domains=num_domains).domain
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    was_training = model.training
    model.eval()
    n = cat.shape[0]
    logits = np.zeros((n, num_domains))
    probs: np.ndarray | None = None
    topk: np.ndarray | None = None
    # one forward per chunk of (row, domain) pairs: rows repeated for several domains at once
    per = max(1, batch_size // max(n, 1))  # domains per forward pass
    try:
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            b = cat[sl].shape[0]
            for d0 in range(0, num_domains, per):
                ds = torch.arange(d0, min(d0 + per, num_domains), device=domain.device)
                m = len(ds)
                out = model(cat[sl].repeat(m, 1), num[sl].repeat(m, 1), ds.repeat_interleave(b))
                logits[sl, d0 : d0 + m] = out.logit.double().cpu().numpy().reshape(m, b).T
                if out.probs is not None:
                    if probs is None:
                        probs = np.zeros((n, num_domains, out.probs.shape[1]))
                    p = out.probs.double().cpu().numpy().reshape(m, b, -1)
                    probs[sl, d0 : d0 + m] = p.transpose(1, 0, 2)
                if out.topk_idx is not None:
                    if topk is None:
                        topk = np.zeros((n, num_domains, out.topk_idx.shape[1]), np.int64)
                    t = out.topk_idx.cpu().numpy().reshape(m, b, -1)
                    topk[sl, d0 : d0 + m] = t.transpose(1, 0, 2)
    finally:
        model.train(was_training)
    return SwapResult(own=own, logits=logits, probs=probs, topk_idx=topk)


def swap_matrices(result: SwapResult, num_domains: int) -> dict[str, np.ndarray]:
    """D x D summaries over the rows (row = own domain d, column = as-if domain d'):

    ``mean_abs_dlogit``, ``to_others`` [D] (its mean over the other domains), ``mean_tv`` (NaN without a gate), ``selection_changed`` (share of rows
    whose set of selected experts changes; NaN for dense gates), ``rows`` [D] per own domain.
    Rows of a domain without rows are NaN.
    """
    own = result.own
    d_ = num_domains
    counts = np.bincount(own, minlength=d_).astype(np.float64)

    def by_domain(x: np.ndarray) -> np.ndarray:
        sums = np.zeros((d_, d_))
        np.add.at(sums, own, x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts[:, None]

    out = {"rows": counts, "mean_abs_dlogit": by_domain(np.abs(result.delta_logit))}
    off = np.where(np.eye(d_, dtype=bool), np.nan, out["mean_abs_dlogit"])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a single domain has no other
        out["to_others"] = np.nanmean(off, axis=1)
    tv = result.tv
    out["mean_tv"] = by_domain(tv) if tv is not None else np.full((d_, d_), np.nan)
    if result.topk_idx is not None:
        srt = np.sort(result.topk_idx, axis=2)  # [n, D, k]
        own_sel = srt[np.arange(len(own)), own]  # [n, k]
        changed = (srt != own_sel[:, None, :]).any(axis=2).astype(np.float64)
        out["selection_changed"] = by_domain(changed)
    else:
        out["selection_changed"] = np.full((d_, d_), np.nan)
    return out


def swap_row_table(
    result: SwapResult, i: int, domain_names: list[str] | None = None
) -> pd.DataFrame:
    """One row's domain swap: per as-if domain ``domain``, ``prediction``, ``delta_logit``,
    ``tv`` (gate distance from the own domain), ``selected`` (the experts), ``own`` (bool)."""
    n, d_ = result.logits.shape
    if not 0 <= i < n:
        raise ValueError(f"row {i} is out of range [0, {n})")
    names = domain_names or [f"domain_{d}" for d in range(d_)]
    tv = result.tv
    return pd.DataFrame(
        {
            "domain": names,
            "prediction": 1.0 / (1.0 + np.exp(-result.logits[i])),
            "delta_logit": result.delta_logit[i],
            "tv": tv[i] if tv is not None else np.nan,
            "selected": (
                [sorted(map(int, t)) for t in result.topk_idx[i]]
                if result.topk_idx is not None
                else [None] * d_
            ),
            "own": np.arange(d_) == result.own[i],
        }
    )


def lookup_rows(columns: dict[str, Any], column: str, value: Any, limit: int = 50) -> np.ndarray:
    """Positions of the rows whose ``column`` equals ``value`` (compared as text, so ``"42"``
    finds the id 42), at most ``limit``; ``columns`` maps kept column names to [n] values."""
    if column not in columns:
        raise ValueError(f"column {column!r} is not kept; kept columns: {sorted(columns)}")
    if limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    values = pd.Series(np.asarray(columns[column])).astype(str).str.strip()
    return np.flatnonzero(values.to_numpy() == str(value).strip())[:limit]


def kept_columns(cat: Any, num: Any, encoders: dict) -> dict[str, np.ndarray]:
    """The feature columns of encoded rows back in their raw values: categorical codes through
    the encoders' vocabularies (code 0 = ``"<unseen>"``), numeric columns un-standardized.

    ``cat`` [n, C] codes, ``num`` [n, M]; ``encoders`` as in ``meta.json`` (``cesaa.data``).
    """
    cat = np.asarray(cat.numpy() if hasattr(cat, "numpy") else cat)
    num = np.asarray(num.numpy() if hasattr(num, "numpy") else num, dtype=np.float64)
    cats, nums = encoders.get("categorical", []), encoders.get("numeric", [])
    if cat.ndim != 2 or cat.shape[1] != len(cats):
        raise ValueError(f"cat has shape {cat.shape} but the encoders have {len(cats)} columns")
    if num.ndim != 2 or num.shape[1] != len(nums):
        raise ValueError(f"num has shape {num.shape} but the encoders have {len(nums)} columns")
    out: dict[str, np.ndarray] = {}
    for j, entry in enumerate(cats):
        vocab = np.asarray(["<unseen>", *map(str, entry["vocab"])], dtype=object)
        out[entry["column"]] = vocab[cat[:, j]]
    for j, entry in enumerate(nums):
        out[entry["column"]] = num[:, j] * entry["std"] + entry["mean"]
    return out
