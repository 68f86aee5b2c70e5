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

Secondary, after matching: experts and mechanisms are described by their domain profiles
(column-normalized P(e|d), and M's column spread uniformly over its domains), matched one to one by
the Hungarian algorithm on the L1 distance between profiles; each side of a matched pair is labeled
by its set of domains (for an expert: the domains whose profile entry is at least half its largest),
and ``ari`` / ``nmi`` compare the two labelings (1 = the matched experts serve exactly the
mechanisms' domains; about 0 when the routing ignores the domain).  With few mechanisms these are
coarse; the headline is ``score``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from analysis.measures import activation
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays

LABEL_FRACTION = 0.5  # an expert serves domain d when its profile entry >= 0.5 x its largest
DEAD_FRACTION = 0.01  # experts with mean P(e|d) < 1% of 1/E are left out of the matching


@dataclass
class TruthRecovery:
    """Result of ``truth_recovery`` (see the module docstring for the definitions).

    - ``score``: the recovery score in [0, 1] (NaN when undefined).
    - ``ari``, ``nmi``: adjusted Rand index and normalized mutual information of the matched
      experts' domain labels vs the mechanisms' (ARI can be slightly negative).
    - ``matching``: one dict per matched pair: ``mechanism`` (name), ``expert`` (index), ``cost``
      (L1 distance of the profiles, in [0, 2]), ``mechanism_domains``, ``expert_domains``.
    - ``details``: ``true_similarity`` and ``learned_similarity`` ([D, D] lists),
      ``similarity_error``, ``blind_error``, ``kind``, ``include_shared``, ``mechanisms`` compared,
      ``live_experts``, ``domain_names``.
    """

    score: float
    ari: float
    nmi: float
    matching: list[dict[str, Any]]
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("score", "ari", "nmi"):
            out[key] = None if math.isnan(out[key]) else float(out[key])
        return out


def _activation(source: Any, kind: str) -> np.ndarray:
    if isinstance(source, RoutingStats):
        act = activation(source, kind)
    else:
        joint = check_routing_arrays(joint=source).joint
        total = joint.sum(axis=1, keepdims=True)
        act = np.where(total > 0, joint / np.where(total > 0, total, 1.0), np.nan)
    missing = np.flatnonzero(np.isnan(act).any(axis=1))
    if missing.size:
        raise ValueError(f"routing has no mass for domains {missing.tolist()} (no rows?)")
    return act


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


def _jaccard(a: np.ndarray) -> np.ndarray:
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


def truth_recovery(
    source: Any,
    truth: Any,
    *,
    kind: str = "hard",
    include_shared: bool = False,
    domain_names: list[str] | None = None,
) -> TruthRecovery:
    """Score how well learned routing recovers the planted domain -> mechanism structure.

    ``source``: a ``RoutingStats`` (P(e|d) of ``kind`` "hard": the experts actually selected, or
    "soft": the gate probabilities) or a [D, E] non-negative array of P(e|d) or counts.
    ``truth``: the synthetic data's truth dict (``meta["data"]["truth"]``: ``domain_mechanism``
    [D, K] 0/1, ``shared_mechanism``, ``mechanism_names``) or a bare [D, K] 0/1 array (then no
    mechanism is treated as shared).  See the module docstring for the definitions.
    """
    if kind not in ("soft", "hard"):
        raise ValueError(f"kind must be 'soft' or 'hard', got {kind!r}")
    act = _activation(source, kind)
    d, e = act.shape
    if d < 2:
        raise ValueError(f"truth_recovery needs at least 2 domains, got {d}")
    member, mech_names = _truth(truth, d, include_shared)
    names = [str(n) for n in domain_names] if domain_names is not None else None
    if names is not None and len(names) != d:
        raise ValueError(f"domain_names has {len(names)} names but there are {d} domains")

    t_sim = _jaccard(member.astype(np.float64))
    l_sim = _jaccard(act)
    iu = np.triu_indices(d, k=1)
    error = float(np.mean(np.abs(t_sim[iu] - l_sim[iu])))
    blind = float(np.mean(1.0 - t_sim[iu]))
    score = float(np.clip(1.0 - error / blind, 0.0, 1.0)) if blind > 1e-12 else math.nan

    usage = act.mean(axis=0)  # [E]
    live = np.flatnonzero(usage >= DEAD_FRACTION / e)
    exp_prof = act[:, live] / act[:, live].sum(axis=0, keepdims=True)  # [D, E_live]
    mech_prof = member / member.sum(axis=0, keepdims=True)  # [D, K']
    cost = np.abs(mech_prof[:, :, None] - exp_prof[:, None, :]).sum(axis=0)  # [K', E_live]
    mech_idx, exp_idx = linear_sum_assignment(cost)
    mech_lab = _labels(mech_prof)
    exp_lab = _labels(exp_prof)
    codes: dict[tuple[int, ...], int] = {}
    true_codes = [codes.setdefault(mech_lab[i], len(codes)) for i in mech_idx]
    learned_codes = [codes.setdefault(exp_lab[j], len(codes)) for j in exp_idx]
    ari = float(adjusted_rand_score(true_codes, learned_codes)) if len(mech_idx) else math.nan
    nmi = (
        float(normalized_mutual_info_score(true_codes, learned_codes))
        if len(mech_idx)
        else math.nan
    )

    def dom(ix: tuple[int, ...]) -> list[Any]:
        return [names[i] for i in ix] if names is not None else list(ix)

    matching = [
        {
            "mechanism": mech_names[i],
            "expert": int(live[j]),
            "cost": float(cost[i, j]),
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
    }
    return TruthRecovery(score=score, ari=ari, nmi=nmi, matching=matching, details=details)
