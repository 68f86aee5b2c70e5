"""Planted groups of domains recovered from the routing: clusters of P(e|d) against the truth.

The synthetic generator can plant G groups of domains that share their domain-specific mechanisms
(``synthetic:...,groups=G``; ``truth["domain_group"]``, see ``cesaa.data.synthetic``).  A router
that learned them sends the domains of a group to the same experts.  We cluster the domains by their
routing, P(e|d) [D, E], into G clusters (agglomerative, average linkage, on the distance
1 - L[d, d'] where L is the weighted Jaccard overlap of two domains' P(e|d), the learned overlap of
``analysis.truth``) and compare the clusters with the planted groups:

- ``ari``: adjusted Rand index (``sklearn.metrics.adjusted_rand_score``): 1 = the planted
  partition exactly, about 0 = no better than a random partition of the same sizes, below 0 worse;
- ``nmi``: normalized mutual information of the two partitions, in [0, 1].

Both compare partitions, so they do not depend on how experts or clusters are numbered; they ask
whether domains that share mechanisms share experts and domains that do not, do not.  (Unlike the
mechanism -> expert matching of ``analysis.truth``, a partition of domains is exactly what is
planted here, so a partition score is the right one.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from analysis.load import activation
from analysis.truth import weighted_jaccard


@dataclass(frozen=True)
class GroupRecovery:
    """``ari`` and ``nmi`` (module docstring); ``groups``: the planted group per domain;
    ``clusters``: the cluster of each domain's routing (numbered in order of first appearance)."""

    ari: float
    nmi: float
    groups: list[int]
    clusters: list[int]

    @property
    def num_groups(self) -> int:
        return len(set(self.groups))


def group_recovery(source: object, groups: list[int], kind: str = "soft") -> GroupRecovery:
    """Cluster the domains by their routing into as many clusters as planted ``groups`` and score
    the clusters against them.  ``source``: a [D, E] array of P(e|d) or counts, or anything
    ``analysis.load.activation`` reads (a ``RoutingStats``; ``kind`` soft or hard)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or (source < 0).any() or not np.isfinite(source).all():
            raise ValueError(f"P(e|d) must be a finite non-negative [D, E] array, got {source!r}")
        total = source.sum(axis=1, keepdims=True)
        act = source / np.where(total > 0, total, 1.0)
    else:
        act = activation(source, kind)
    groups = [int(g) for g in groups]
    d = act.shape[0]
    if len(groups) != d:
        raise ValueError(f"{len(groups)} planted groups given for {d} domains")
    empty = np.flatnonzero(~(np.nan_to_num(act).sum(axis=1) > 0))
    if empty.size:
        raise ValueError(f"routing has no mass for domains {empty.tolist()} (no rows?)")
    g = len(set(groups))
    if g < 2 or g >= d:
        raise ValueError(f"{g} planted groups of {d} domains: need 2 <= groups < domains")
    dist = np.clip(1.0 - weighted_jaccard(act), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    fit = AgglomerativeClustering(n_clusters=g, metric="precomputed", linkage="average")
    raw = fit.fit_predict(dist)
    order = {c: i for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    clusters = [order[c] for c in raw.tolist()]
    return GroupRecovery(
        ari=float(adjusted_rand_score(groups, clusters)),
        nmi=float(normalized_mutual_info_score(groups, clusters)),
        groups=groups,
        clusters=clusters,
    )
