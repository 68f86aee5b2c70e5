"""Stratified odds ratios and multiple-comparison correction: the statistics behind
``analysis.experts`` (what each expert learned), kept apart from the routing logic.

- :func:`mh_log_odds`: the Mantel-Haenszel log odds ratio over strata with its
  Robins-Breslow-Greenland standard error;
- :func:`benjamini_hochberg`: BH q-values (false discovery rate).

Numpy in, numpy out; no knowledge of experts or domains.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

Z95 = float(norm.ppf(0.975))


def mh_log_odds(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mantel-Haenszel log odds ratio and its Robins-Breslow-Greenland SE.

    a, b, c, d: [S, V] cell counts (already smoothed) per stratum S and value V, all 0 where the
    stratum holds no information on the value; returns [V], [V] (NaN for a value no stratum
    informs on).
    """
    n = np.where(a + b + c + d > 0, a + b + c + d, 1.0)  # empty cells (no value): all terms 0
    r_i, s_i = a * d / n, b * c / n
    p_i, q_i = (a + d) / n, (b + c) / n
    r, s = r_i.sum(0), s_i.sum(0)
    lor = np.log(r / s)
    var = (p_i * r_i).sum(0) / (2 * r**2)
    var += (p_i * s_i + q_i * r_i).sum(0) / (2 * r * s)
    var += (q_i * s_i).sum(0) / (2 * s**2)
    return lor, np.sqrt(var)


def benjamini_hochberg(p: Any) -> np.ndarray:
    """BH q-values of the p-values ``p`` [m] (monotone step-up, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out
