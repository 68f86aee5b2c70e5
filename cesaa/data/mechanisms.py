"""The planted generator's building blocks (``cesaa.data.synthetic``): the heterogeneity dial's
weights, category draws, mechanism assignment, the multiplicative mechanism and the intercept that
sets the base rate.  Pure functions of a ``numpy.random.Generator`` and their arguments."""

from __future__ import annotations

import numpy as np

MULT_RANK = 2  # rank of each multiplicative mechanism


def dial_weights(num_domains: int, per_domain: int, heterogeneity: float) -> np.ndarray:
    """[D, K] mechanism weights of the heterogeneity dial (K = m * (D + 1)): the first m columns
    common, sqrt((1 - h) / m); domain d's own columns m * (d + 1) .. m * (d + 2) - 1, sqrt(h / m).
    Every row has unit squared norm (the signal's variance does not move with h)."""
    m, h = per_domain, float(heterogeneity)
    w = np.zeros((num_domains, m * (num_domains + 1)))
    w[:, :m] = np.sqrt((1.0 - h) / m)
    for d in range(num_domains):
        w[d, m * (d + 1) : m * (d + 2)] = np.sqrt(h / m)
    return w


def bilinear(
    rng: np.random.Generator, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int
) -> np.ndarray:
    """Standardized <U[user], V[item]> / sqrt(r) with U, V standard normal [*, r]: no designed main
    effects (only the weak one left by uneven item / user popularity, see the module docstring)."""
    u = rng.standard_normal((n_users, MULT_RANK))
    v = rng.standard_normal((n_items, MULT_RANK))
    f = (u[user] * v[item]).sum(1) / np.sqrt(MULT_RANK)  # [N]
    return (f - f.mean()) / (f.std() + 1e-12)


def draw_category(rng: np.random.Generator, card: int, n: int, zipf: bool) -> np.ndarray:
    """Zipf-like popularity (p ~ rank^-0.6, shuffled ids) for id columns, mildly uneven otherwise."""
    p = np.arange(1, card + 1, dtype=np.float64) ** (-0.6 if zipf else -0.2)
    p = rng.permutation(p)
    return rng.choice(card, size=n, p=p / p.sum())


def assign_mechanisms(
    rng: np.random.Generator, d_count: int, k_count: int, per_domain: int
) -> np.ndarray:
    """[D, K] 0/1: column 0 (shared) all ones; specific mechanisms disjoint when K - 1 >= D * m."""
    membership = np.zeros((d_count, k_count), dtype=np.int64)
    membership[:, 0] = 1
    specific = rng.permutation(np.arange(1, k_count))
    if len(specific) >= d_count * per_domain:
        for d in range(d_count):
            membership[d, specific[d * per_domain : (d + 1) * per_domain]] = 1
        return membership
    seen: set[tuple[int, ...]] = set()
    for d in range(d_count):  # overlapping: distinct subsets while there are enough of them
        for _ in range(100):
            pick = tuple(sorted(rng.choice(specific, size=per_domain, replace=False).tolist()))
            if pick not in seen:
                break
        seen.add(pick)
        membership[d, list(pick)] = 1
    return membership


def intercept_for(x: np.ndarray, base_rate: float) -> float:
    """b with mean(sigmoid(b + x)) = base_rate, by bisection (monotone in b)."""
    lo, hi = -20.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if (1.0 / (1.0 + np.exp(-(mid + x)))).mean() < base_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
