"""How well learned routing recovers the planted domain -> mechanism structure of the synthetic data.

Shapes: D = domains, E = selectable experts, K = planted mechanisms, K' = the mechanisms compared.

The built-in synthetic data (``cesaa.data.synthetic``) plants K mechanisms; domain d's label depends
on the set M(d) of mechanisms it uses: the shared mechanism (used by every domain) plus its
domain-specific ones.  A router only reveals *which domains share experts*: an expert may learn
two mechanisms or one mechanism may be spread over two experts, and expert indices are arbitrary.
What is identifiable, and therefore what we score, is the domain x domain overlap structure.

Headline ``score`` (the recovery score, in [0, 1]):

- true overlap of two domains: the Jaccard index of their mechanism sets,
  T[d, d'] = |M(d) ∩ M(d')| / |M(d) ∪ M(d')|; by default without the shared mechanism, which
  CESAA's always-on shared experts carry outside the gate (``include_shared=True`` keeps it, for
  models without shared experts);
- learned overlap: the weighted Jaccard (Ruzicka) index of their routing distributions,
  L[d, d'] = sum_e min(P(e|d), P(e|d')) / sum_e max(P(e|d), P(e|d')), which equals the Jaccard
  index of two expert sets when each domain spreads its mass uniformly over its set;
- error = mean over domain pairs d < d' of |T - L|; the reference is routing that ignores the
  domain (L = 1 everywhere), whose error is mean(1 - T);
- score = 1 - error / reference error, clipped to [0, 1]: 1 = the learned overlaps equal the
  planted ones, 0 = no better than domain-blind routing.  For the default synthetic data the
  domain-specific mechanism sets are disjoint (T = 0 off the diagonal), so score = 1 - mean L.
  NaN when every domain uses the same mechanisms (domain-blind routing is then the truth).

Being a function of the P(e|d) rows only, the score does not change when experts are permuted.
It is not fooled by wrong domain sets: experts that each serve two domains where the truth has
one make the domains overlap, so L > T.

Identity scores, after matching (they ask: does each mechanism have an expert that serves exactly
its domains?).  A mechanism's domain set is the set of domains that use it; a live expert's domain
set is the domains whose entry of its column-normalized profile P(e|d) / sum_d' P(e|d') is at least
``LABEL_FRACTION`` of the largest.  Mechanisms and live experts are matched one to one by the
Hungarian algorithm maximizing the Jaccard index of their domain sets (ties broken by the L1
distance of their profiles).  Over the K' compared mechanisms (unmatched ones count 0):

- ``set_jaccard`` = mean over mechanisms of J(domains of m, domains of its expert), in [0, 1];
- ``exact_match`` = the fraction of mechanisms whose expert serves exactly their domains.

(The earlier ARI / NMI of the matched labels compared partitions only, so they gave 1 to experts
that all serve the wrong domain sets; they are gone.)

Ceilings at the model's (E, k, D): what the best routing of that shape can reach, reported with
each score and the fraction of it reached (``*_ceiling``, ``*_fraction``):

- ``score``, when the planted domain sets do not overlap (T = 0 off the diagonal, the synthetic
  default): a hard row selects k distinct experts, so P(e|d) <= 1/k; the domains' pairwise
  overlaps sum_e min(P(e|d), P(e|d')) then total at least O* = E g(D/E), with
  g(c) = q (q - 1) / (2k) + q (c - q/k), q = floor(c k) (the least overlap a column holding c of the
  domains' mass can carry), and since L = o / (2 - o) is convex,
  score <= 1 - f(O* / P) with f(o) = o / (2 - o) and P = D (D - 1) / 2 pairs.  This is 1 when
  E >= k D; e.g. E = 8, D = 4, k = 4 gives 0.8.  Soft routing: the same with k = 1.  An upper
  bound (None when the planted sets overlap, where no closed form is known).
- ``set_jaccard`` and ``exact_match``: min(E, K') / K' (each expert matches at most one
  mechanism); an upper bound, reached when E >= K' and k <= E / 2 (every mechanism can get an
  expert of its own; a construction is in tests/test_known_answers_truth.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from analysis.measures import activation, json_safe
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays

LABEL_FRACTION = 0.5  # an expert serves domain d when its profile entry >= 0.5 x its largest
DEAD_FRACTION = 0.01  # experts with mean P(e|d) < 1% of 1/E are left out of the matching


@dataclass
class TruthRecovery:
    """Result of ``truth_recovery`` (see the module docstring for the definitions).

    - ``score``: the recovery score in [0, 1] (NaN when undefined); ``score_ceiling``: the most
      any routing with the model's (E, k, D) can reach (NaN when unknown); ``score_fraction``:
      score / ceiling.
    - ``set_jaccard``, ``exact_match``: identity scores in [0, 1]; ``set_jaccard_ceiling``,
      ``exact_match_ceiling`` (the same value), ``set_jaccard_fraction``,
      ``exact_match_fraction``.
    - ``matching``: one dict per matched pair: ``mechanism`` (name), ``expert`` (index),
      ``jaccard`` of their domain sets, ``cost`` (L1 distance of the profiles, in [0, 2]),
      ``mechanism_domains``, ``expert_domains``.
    - ``details``: ``true_similarity`` and ``learned_similarity`` ([D, D] lists),
      ``similarity_error``, ``blind_error``, ``kind``, ``include_shared``, ``mechanisms`` compared,
      ``live_experts``, ``domain_names``, ``experts_per_row`` (the k used for the ceilings),
      ``ceiling_note``.
    """

    score: float
    score_ceiling: float
    score_fraction: float
    set_jaccard: float
    exact_match: float
    set_jaccard_ceiling: float
    exact_match_ceiling: float
    set_jaccard_fraction: float
    exact_match_fraction: float
    matching: list[dict[str, Any]]
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _activation(source: Any, kind: str, k: float | None) -> tuple[np.ndarray, float]:
    """P(e|d) [D, E] and the experts per row k that caps each P(e|d) at 1/k (soft: 1)."""
    k_used = 1.0
    if isinstance(source, RoutingStats):
        act = activation(source, kind)
        if kind == "hard":
            seen = source.count > 0
            k_used = float(np.min(source.select_count[seen].sum(axis=1) / source.count[seen]))
    else:
        joint = check_routing_arrays(joint=source).joint
        total = joint.sum(axis=1, keepdims=True)
        act = np.where(total > 0, joint / np.where(total > 0, total, 1.0), np.nan)
    missing = np.flatnonzero(np.isnan(act).any(axis=1))
    if missing.size:
        raise ValueError(f"routing has no mass for domains {missing.tolist()} (no rows?)")
    if k is not None:
        if isinstance(source, RoutingStats):
            raise ValueError("k goes with a bare P(e|d) array; a RoutingStats knows its own k")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k <= act.shape[1]:
            raise ValueError(f"k must be a number in [1, E={act.shape[1]}], got {k!r}")
        k_used = float(k)
    return act, max(k_used, 1.0)


def _truth(truth: Any, num_domains: int, include_shared: bool) -> tuple[np.ndarray, list[str]]:
    """The [D, K'] 0/1 membership of the compared mechanisms and their names."""
    if truth is None:
        raise ValueError(
            "truth is None: only the built-in synthetic data has a planted truth "
            "(meta['data']['truth'] of a checkpoint trained on it)"
        )
    shared = None
    names = None
    if isinstance(truth, dict):
        if "domain_mechanism" not in truth:
            raise ValueError(f"truth dict needs 'domain_mechanism', got keys {sorted(truth)}")
        shared = truth.get("shared_mechanism")
        names = truth.get("mechanism_names")
        truth = truth["domain_mechanism"]
    m = check_routing_arrays(joint=truth).joint
    if not np.isin(m, (0, 1)).all():
        raise ValueError("truth domain_mechanism must hold 0/1 entries")
    if m.shape[0] != num_domains:
        raise ValueError(f"truth has {m.shape[0]} domains (rows) but the routing has {num_domains}")
    names = list(names) if names is not None else [f"m{k}" for k in range(m.shape[1])]
    if len(names) != m.shape[1]:
        raise ValueError(f"truth has {len(names)} mechanism_names for {m.shape[1]} mechanisms")
    keep = m.sum(axis=0) > 0
    if shared is not None and not include_shared:
        if not 0 <= int(shared) < m.shape[1]:
            raise ValueError(f"truth shared_mechanism={shared} outside [0, {m.shape[1]})")
        keep[int(shared)] = False
    if not keep.any():
        raise ValueError(
            "truth has no domain-specific mechanisms: there is no structure to recover"
        )
    return m[:, keep], [n for n, k in zip(names, keep, strict=True) if k]


def weighted_jaccard(a: np.ndarray) -> np.ndarray:
    """Weighted Jaccard sum min / sum max between the rows of a [D, X] non-negative array."""
    lo = np.minimum(a[:, None, :], a[None, :, :]).sum(axis=-1)
    hi = np.maximum(a[:, None, :], a[None, :, :]).sum(axis=-1)
    return np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 1.0)


def _labels(profiles: np.ndarray) -> list[tuple[int, ...]]:
    """Domains each column of a [D, X] profile serves: entries >= LABEL_FRACTION x the largest."""
    out = []
    for col in profiles.T:
        out.append(tuple(int(d) for d in np.flatnonzero(col >= LABEL_FRACTION * col.max())))
    return out


def overlap_score_ceiling(num_domains: int, num_experts: int, k: float = 1.0) -> float:
    """Upper bound on the recovery ``score`` for planted domain sets that do not overlap, when
    every P(e|d) <= 1/k (hard routing with k distinct experts per row; soft: k = 1).  See the
    module docstring; 1 when E >= k D."""
    d, e = int(num_domains), int(num_experts)
    if d < 2:
        raise ValueError(f"the overlap score needs at least 2 domains, got {d}")
    cap = 1.0 / k
    c = d / e  # the domains' total mass per expert, spread evenly (the least overlap)
    q = math.floor(c / cap + 1e-9)
    rest = max(c - q * cap, 0.0)
    least_overlap = e * (q * (q - 1) / 2 * cap + q * rest)  # O*, summed over domain pairs
    mean_o = least_overlap / (d * (d - 1) / 2)
    return float(max(0.0, 1.0 - mean_o / (2.0 - mean_o)))


def _set_jaccard(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _ratio(value: float, ceiling: float) -> float:
    if math.isnan(value) or math.isnan(ceiling) or ceiling <= 1e-12:
        return math.nan
    return float(value / ceiling)


def truth_recovery(
    source: Any,
    truth: Any,
    *,
    kind: str = "hard",
    include_shared: bool = False,
    domain_names: list[str] | None = None,
    k: float | None = None,
) -> TruthRecovery:
    """Score how well learned routing recovers the planted domain -> mechanism structure.

    ``source``: a ``RoutingStats`` (P(e|d) of ``kind`` "hard": the experts actually selected, or
    "soft": the gate probabilities) or a [D, E] non-negative array of P(e|d) or counts.
    ``truth``: the synthetic data's truth dict (``meta["data"]["truth"]``: ``domain_mechanism``
    [D, K] 0/1, ``shared_mechanism``, ``mechanism_names``) or a bare [D, K] 0/1 array (then no
    mechanism is treated as shared).  ``k``: experts selected per row, for the ceilings of a bare
    array (default 1; a ``RoutingStats`` reads its own from the selections).  See the module
    docstring for the definitions.
    """
    if kind not in ("soft", "hard"):
        raise ValueError(f"kind must be 'soft' or 'hard', got {kind!r}")
    act, k_used = _activation(source, kind, k)
    d, e = act.shape
    if d < 2:
        raise ValueError(f"truth_recovery needs at least 2 domains, got {d}")
    member, mech_names = _truth(truth, d, include_shared)
    names = [str(n) for n in domain_names] if domain_names is not None else None
    if names is not None and len(names) != d:
        raise ValueError(f"domain_names has {len(names)} names but there are {d} domains")

    t_sim = weighted_jaccard(member.astype(np.float64))
    l_sim = weighted_jaccard(act)
    iu = np.triu_indices(d, k=1)
    error = float(np.mean(np.abs(t_sim[iu] - l_sim[iu])))
    blind = float(np.mean(1.0 - t_sim[iu]))
    score = float(np.clip(1.0 - error / blind, 0.0, 1.0)) if blind > 1e-12 else math.nan
    disjoint = bool(np.all(t_sim[iu] == 0))
    score_ceiling = overlap_score_ceiling(d, e, k_used) if disjoint else math.nan

    usage = act.mean(axis=0)  # [E]
    live = np.flatnonzero(usage >= DEAD_FRACTION / e)
    exp_prof = act[:, live] / act[:, live].sum(axis=0, keepdims=True)  # [D, E_live]
    mech_prof = member / member.sum(axis=0, keepdims=True)  # [D, K']
    l1 = np.abs(mech_prof[:, :, None] - exp_prof[:, None, :]).sum(axis=0)  # [K', E_live]
    mech_lab = _labels(mech_prof)
    exp_lab = _labels(exp_prof)
    jac = np.array([[_set_jaccard(a, b) for b in exp_lab] for a in mech_lab]).reshape(l1.shape)
    mech_idx, exp_idx = linear_sum_assignment(-jac + 1e-6 * l1)  # most Jaccard, then closest
    n_mech = member.shape[1]
    set_jaccard = float(jac[mech_idx, exp_idx].sum() / n_mech)
    exact = float(np.sum(jac[mech_idx, exp_idx] == 1.0) / n_mech)
    id_ceiling = min(e, n_mech) / n_mech

    def dom(ix: tuple[int, ...]) -> list[Any]:
        return [names[i] for i in ix] if names is not None else list(ix)

    matching = [
        {
            "mechanism": mech_names[i],
            "expert": int(live[j]),
            "jaccard": float(jac[i, j]),
            "cost": float(l1[i, j]),
            "mechanism_domains": dom(mech_lab[i]),
            "expert_domains": dom(exp_lab[j]),
        }
        for i, j in zip(mech_idx, exp_idx, strict=True)
    ]
    details = {
        "kind": kind,
        "include_shared": include_shared,
        "true_similarity": t_sim.tolist(),
        "learned_similarity": l_sim.tolist(),
        "similarity_error": error,
        "blind_error": blind,
        "mechanisms": mech_names,
        "live_experts": live.tolist(),
        "domain_names": names,
        "experts_per_row": k_used,
        "ceiling_note": (
            "score ceiling: an upper bound for non-overlapping planted domain sets"
            if disjoint
            else "score ceiling unknown: the planted domain sets overlap"
        ),
    }
    return TruthRecovery(
        score=score,
        score_ceiling=score_ceiling,
        score_fraction=_ratio(score, score_ceiling),
        set_jaccard=set_jaccard,
        exact_match=exact,
        set_jaccard_ceiling=id_ceiling,
        exact_match_ceiling=id_ceiling,
        set_jaccard_fraction=_ratio(set_jaccard, id_ceiling),
        exact_match_fraction=_ratio(exact, id_ceiling),
        matching=matching,
        details=details,
    )


RECOVERY_ROWS = ("score", "set_jaccard", "exact_match")


def recovery_table(recovery: dict[str, Any]) -> pd.DataFrame:
    """A ``TruthRecovery.to_dict()`` as a table: index score / set_jaccard / exact_match;
    columns ``value``, ``ceiling`` (at the model's E, k, D) and ``fraction`` (of the ceiling);
    NaN where undefined."""
    if not isinstance(recovery, dict) or any(k not in recovery for k in RECOVERY_ROWS):
        raise ValueError("recovery must be a TruthRecovery.to_dict() dict")

    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    return pd.DataFrame(
        {
            "value": [num(recovery[k]) for k in RECOVERY_ROWS],
            "ceiling": [num(recovery[f"{k}_ceiling"]) for k in RECOVERY_ROWS],
            "fraction": [num(recovery[f"{k}_fraction"]) for k in RECOVERY_ROWS],
        },
        index=pd.Index(list(RECOVERY_ROWS), name="measure"),
    )
