"""Per-expert evidence for pruning and merging: one row per expert, pure functions of arrays.

Shapes: N = rows, D = domains, E = experts (gate slots), k = experts selected per row,
H = expert output width, U = ReLU units of one expert.

- **REAP score** (Lasby et al. 2025, router-weighted expert activation pruning):
  ``S_e = mean over the rows routed to e of g_e(x) * ||f_e(x)||_2`` (rows with a non-zero gate
  weight; a dense gate routes every row).  Range [0, inf); 0 = the expert adds nothing to the
  rows that pick it (never selected: NaN).  Units of the expert's output; comparable between
  experts of one model, **not** across models.
- **Dead units** (HoME's expert collapse, Wang et al. 2025): the share of an expert's ReLU units
  that output exactly 0 on every one of its own rows.  Range [0, 1]; 1 = every unit dead (the
  expert emits a constant 0 on its rows), 0 = every unit fires on at least one.  NaN without rows.
- **Top-domain share** (HoME's degradation: an expert meant for several domains taken over by
  one): the largest share of the expert's total gate weight that comes from one domain.  Range
  [1/D, 1] for an expert with weight; 1 = one domain provides all of it.  It is **not** corrected
  for domain sizes (a domain with most rows pulls every expert's share up): read it with the
  domains' row shares.
- **Underfitting** (HoME): the logloss on the expert's own rows when the expert alone serves them
  (its gate weight 1, the others off, shared experts on) minus the model's logloss on those rows.
  0 = the expert alone predicts its rows as well as the mixture; > 0 worse (nats).
- **Redundancy**: the most similar other expert by linear CKA of their outputs on the same rows
  (``analysis.similarity``) and the routing overlap (Jaccard) with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.similarity import expert_similarity, routing_overlap
from analysis.validation import check_routing_arrays, to_numpy

EVIDENCE_COLUMNS = [
    "expert",
    "selections",
    "gate_weight",
    "reap",
    "nearest",
    "cka_nearest",
    "overlap_nearest",
    "dead_units",
    "top_domain",
    "top_domain_share",
    "own_logloss",
    "alone_logloss",
    "underfit",
    "knockout_delta_auc",
    "knockout_delta_gauc",
    "knockout_delta_logloss",
    "knockout_worst_domain",
    "knockout_worst_domain_delta_auc",
]
DOMAIN_COLUMNS = [
    "expert",
    "domain",
    "selections",
    "gate_weight",
    "weight_share",
    "knockout_delta_auc",
    "knockout_delta_gauc",
    "knockout_delta_logloss",
]
KNOCKOUT = ("delta_auc", "delta_gauc", "delta_logloss")


def _gates(gates: Any) -> np.ndarray:
    """The mixing weights [N, E]: finite, >= 0 (rows may sum below 1: a k = 1 Switch gate)."""
    g = to_numpy(gates, "gates").astype(np.float64)
    if g.ndim != 2 or g.shape[1] == 0:
        raise ValueError(f"gates must be 2-D [rows, experts], got shape {g.shape}")
    if not np.isfinite(g).all() or (g < 0).any():
        raise ValueError("gates must be finite and >= 0 (the weights that mix the experts)")
    return g


def reap_scores(gates: Any, output_norm: Any) -> np.ndarray:
    """[E] REAP score from the mixing weights ``gates`` [N, E] and ``output_norm`` [N, E] =
    ||f_e(x)||_2 (see the module doc); NaN for an expert no row routes to."""
    g = _gates(gates)
    norm = to_numpy(output_norm, "output_norm").astype(np.float64)
    if norm.shape != g.shape:
        raise ValueError(f"output_norm has shape {norm.shape}, gates {g.shape}")
    if (norm < 0).any() or not np.isfinite(norm).all():
        raise ValueError("output_norm must be finite and >= 0 (an L2 norm)")
    routed = g > 0
    n = routed.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (g * norm).sum(axis=0) / n, np.nan)


def dead_unit_share(activations: Sequence[Any]) -> float:
    """Share of ReLU units that are 0 on every row: ``activations`` is one [n, U_l] array per
    layer (the expert's post-ReLU outputs on its own n rows).  NaN when n = 0."""
    if isinstance(activations, (str, bytes)) or not isinstance(activations, Sequence):
        raise ValueError("activations must be a list of [rows, units] arrays, one per layer")
    if not activations:
        raise ValueError("activations must hold at least one layer")
    layers = [to_numpy(a, f"activations[{i}]") for i, a in enumerate(activations)]
    rows = {a.shape[0] for a in layers}
    if any(a.ndim != 2 for a in layers) or len(rows) != 1:
        raise ValueError(
            f"activations must be 2-D with the same rows, got {[a.shape for a in layers]}"
        )
    if (np.concatenate([a.ravel() for a in layers]) < 0).any():
        raise ValueError("activations hold negative values: pass outputs after the ReLU")
    if rows.pop() == 0:
        return float("nan")
    dead = sum(int((a.max(axis=0) == 0).sum()) for a in layers)
    return dead / sum(a.shape[1] for a in layers)


def domain_weights(gates: Any, domain: Any, topk_idx: Any = None, *, num_domains: int):
    """[D, E] total gate weight and [D, E] selections per (domain, expert).  Selections count the
    rows whose ``topk_idx`` names the expert (without ``topk_idx``: rows with weight > 0)."""
    g = _gates(gates)
    arr = check_routing_arrays(
        domain=domain, topk_idx=topk_idx, num_domains=num_domains, num_experts=g.shape[1]
    )
    d = arr.domain
    if d.shape[0] != g.shape[0]:
        raise ValueError(f"domain has {d.shape[0]} rows but gates has {g.shape[0]}")
    e = g.shape[1]
    weight = np.zeros((num_domains, e))
    np.add.at(weight, d, g)
    if arr.topk_idx is not None:
        sel = np.zeros_like(g)
        np.put_along_axis(sel, arr.topk_idx, 1.0, axis=1)
    else:
        sel = (g > 0).astype(np.float64)
    count = np.zeros((num_domains, e))
    np.add.at(count, d, sel)
    return weight, count


def top_domain_share(weight: Any) -> tuple[np.ndarray, np.ndarray]:
    """From [D, E] gate weight per domain: ([E] the largest domain share of each expert's weight,
    [E] that domain's index); NaN and -1 for an expert without weight."""
    w = to_numpy(weight, "weight").astype(np.float64)
    if w.ndim != 2 or (w < 0).any():
        raise ValueError(f"weight must be [domains, experts] and >= 0, got shape {w.shape}")
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, w.max(axis=0) / total, np.nan)
    return share, np.where(total > 0, w.argmax(axis=0), -1)


def nearest_experts(expert_outputs: Any, topk_idx: Any, num_experts: int):
    """For each expert: (its most CKA-similar other expert [E], that CKA [E], their routing
    overlap [E]); -1 / NaN where no other expert has a defined CKA."""
    sim = expert_similarity(expert_outputs, "cka")
    np.fill_diagonal(sim, np.nan)
    overlap = (
        routing_overlap(topk_idx, num_experts)
        if topk_idx is not None
        else np.full((num_experts, num_experts), np.nan)
    )
    near = np.full(num_experts, -1)
    cka = np.full(num_experts, np.nan)
    ov = np.full(num_experts, np.nan)
    for e in range(num_experts):
        if np.isfinite(sim[e]).any():
            j = int(np.nanargmax(sim[e]))
            near[e], cka[e], ov[e] = j, sim[e, j], overlap[e, j]
    return near, cka, ov


def evidence_table(
    *,
    gates: Any,
    domain: Any,
    topk_idx: Any,
    output_norm: Any,
    expert_outputs: Any,
    dead_units: Any,
    own_logloss: Any,
    alone_logloss: Any,
    domain_names: Sequence[str],
    expert_labels: Sequence[str] | None = None,
    knockout: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-expert evidence (``EVIDENCE_COLUMNS``, one row per expert) and its per-domain part
    (``DOMAIN_COLUMNS``, one row per (expert, domain)).

    ``gates`` [N, E] mixing weights, ``domain`` [N], ``topk_idx`` [N, k] or None (dense gate),
    ``output_norm`` [N, E], ``expert_outputs`` [n, E, H] on a sample of rows, and per expert
    ``dead_units``, ``own_logloss`` (the model's on the expert's rows) and ``alone_logloss``
    ([E] each, see the module doc).  ``gate_weight`` is the mean weight per row (of the
    domain's rows in the per-domain part); ``weight_share`` the share of the expert's total
    weight that comes from that domain.  ``knockout``: each expert knocked out alone
    (``analysis.prune_cost.single_knockouts``: columns ``expert``, ``scope`` = "overall" or a
    domain name, ``delta_auc``, ``delta_gauc``, ``delta_logloss``); without it (a record, no
    model) the ``knockout_*`` columns are NaN.
    """
    names = list(domain_names)
    weight, count = domain_weights(gates, domain, topk_idx, num_domains=len(names))
    e = weight.shape[1]
    labels = list(expert_labels) if expert_labels is not None else [f"expert {i}" for i in range(e)]
    if len(labels) != e:
        raise ValueError(f"expert_labels has {len(labels)} names for {e} experts")
    per = {
        n: to_numpy(v, n).astype(np.float64).reshape(-1)
        for n, v in (
            ("dead_units", dead_units),
            ("own_logloss", own_logloss),
            ("alone_logloss", alone_logloss),
        )
    }
    for n, v in per.items():
        if v.shape != (e,):
            raise ValueError(f"{n} must hold one value per expert ({e}), got {v.shape[0]}")
    share, top = top_domain_share(weight)
    near, cka, ov = nearest_experts(expert_outputs, topk_idx, e)
    n_rows = to_numpy(gates, "gates").shape[0]
    table = pd.DataFrame(
        {
            "expert": labels,
            "selections": count.sum(axis=0).astype(np.int64),
            "gate_weight": weight.sum(axis=0) / max(n_rows, 1),
            "reap": reap_scores(gates, output_norm),
            "nearest": [labels[j] if j >= 0 else "" for j in near],
            "cka_nearest": cka,
            "overlap_nearest": ov,
            "dead_units": per["dead_units"],
            "top_domain": [names[t] if t >= 0 else "" for t in top],
            "top_domain_share": share,
            "own_logloss": per["own_logloss"],
            "alone_logloss": per["alone_logloss"],
            "underfit": per["alone_logloss"] - per["own_logloss"],
        }
    )
    ko = _knockout_lookup(knockout, e, names)
    overall = np.array([[ko[(i, "overall")][m] for m in KNOCKOUT] for i in range(e)])
    table["knockout_delta_auc"] = overall[:, 0]
    table["knockout_delta_gauc"] = overall[:, 1]
    table["knockout_delta_logloss"] = overall[:, 2]
    worst = [_worst(ko, i, names) for i in range(e)]
    table["knockout_worst_domain"] = [w[0] for w in worst]
    table["knockout_worst_domain_delta_auc"] = [w[1] for w in worst]
    total = weight.sum(axis=0)
    n_dom = np.bincount(to_numpy(domain, "domain").astype(np.int64), minlength=len(names))
    rows = []
    for i in range(e):
        for d, name in enumerate(names):
            w_share = weight[d, i] / total[i] if total[i] > 0 else np.nan
            mean = weight[d, i] / n_dom[d] if n_dom[d] > 0 else np.nan
            rows.append((labels[i], name, int(count[d, i]), mean, w_share, *ko[(i, name)].values()))
    return table[EVIDENCE_COLUMNS], pd.DataFrame(rows, columns=DOMAIN_COLUMNS)


def _knockout_lookup(knockout: pd.DataFrame | None, e: int, names: list[str]) -> dict:
    """{(expert, scope): {delta_auc, delta_gauc, delta_logloss}} (NaN where not given)."""
    nan = dict.fromkeys(KNOCKOUT, np.nan)
    out = {(i, s): dict(nan) for i in range(e) for s in ("overall", *names)}
    if knockout is None:
        return out
    missing = [c for c in ("expert", "scope", *KNOCKOUT) if c not in knockout.columns]
    if missing:
        raise ValueError(f"knockout lacks columns {missing}")
    for r in knockout.itertuples(index=False):
        if (int(r.expert), r.scope) in out:
            out[(int(r.expert), r.scope)] = {m: float(getattr(r, m)) for m in KNOCKOUT}
    return out


def _worst(ko: dict, i: int, names: list[str]) -> tuple[str, float]:
    """The domain whose AUC the knock-out of expert i lowers most ("" / NaN when unknown)."""
    vals = [(ko[(i, n)]["delta_auc"], n) for n in names if np.isfinite(ko[(i, n)]["delta_auc"])]
    if not vals:
        return "", float("nan")
    v, n = min(vals)
    return n, v
