"""What each expert learned: the feature values over-represented among the rows routed to it (its
predictions and accuracy on those rows are ``analysis.expert_profiles``).

Shapes: N = rows, D = domains, E = selectable experts, k = experts selected per row.

Numpy in, plain data out; the routing record or an ``analysis.collect`` pass can feed every
function (domain, top-k experts, labels, predictions and the kept feature columns).

**Over-representation** of a feature value v among the rows routed to expert e is measured
against the rows *of the same domains* that were not routed to e, stratified by domain
(Mantel-Haenszel), so that an expert used mostly by one domain does not inherit that domain's
feature mix.  Per domain stratum i the 2 x 2 table is

    a = routed rows with v,   b = routed rows without v,
    c = other rows with v,    d = other rows without v

A stratum informs on v only when it holds routed and other rows, rows with v and rows without;
the others have a d = b c = 0 and contribute nothing (adding domains that lack v leaves the
estimate unchanged).  The informative strata get ``smoothing`` added to each cell:

    log OR_MH = log( sum_i a_i d_i / n_i  /  sum_i b_i c_i / n_i )

with the Robins-Breslow-Greenland standard error; with one stratum it is Haldane's smoothed
log-odds ratio log((a+.5)(d+.5) / ((b+.5)(c+.5))) with Woolf's SE sqrt(sum 1/cell).  Range: the
real line; 0 = v is as common among the expert's rows as among the others; > 0 over-represented
(e^x times the odds).  The 95% interval is +-1.96 SE; p-values are two-sided normal and the
q-values Benjamini-Hochberg over every value of every feature tested for this expert
(``significant`` = q < ``fdr``).  It is **not** causal: a value can be over-represented because
it co-occurs with the feature the gate actually reads.

A value is **tested** only when its expected number of routed rows under no association,
``expected_routed`` = sum_i n_routed,i * n_with_v,i / n_i (unsmoothed), is at least
``min_expected`` (default 20): below that the normal approximation is far off in the tail that
the multiple-comparison correction looks at, and ids seen in a handful of rows came out
"significant" on routing shuffled within domains (17 of 80 expert tables on two trained CESAAs'
routing, against the 5% the correction promises; 4 of 80 with the default).  Untested values keep their log-odds
and interval, with ``p_value`` / ``q_value`` NaN and ``significant`` False.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

# re-exported: documented as analysis.experts.expert_profiles before it moved
from analysis.expert_profiles import expert_profiles as expert_profiles
from analysis.odds import Z95, benjamini_hochberg, mh_log_odds
from analysis.validation import check_routing_arrays, to_numpy

LOG_ODDS_COLUMNS = [
    "feature",
    "value",
    "routed_with",
    "routed_rows",
    "other_with",
    "other_rows",
    "share_routed",
    "share_other",
    "expected_routed",
    "log_odds",
    "ci_low",
    "ci_high",
    "z",
    "p_value",
    "q_value",
    "significant",
]
MIN_EXPECTED = 20.0  # expected routed rows below which a value is not tested (module doc)


def routed_mask(topk_idx: Any, expert: int, num_experts: int | None = None) -> np.ndarray:
    """[N] bool: rows whose selected experts include ``expert``."""
    arr = check_routing_arrays(topk_idx=topk_idx, num_experts=num_experts)
    e = int(expert)
    if arr.num_experts is not None and not 0 <= e < arr.num_experts:
        raise ValueError(f"expert={e} must be in [0, {arr.num_experts})")
    return (arr.topk_idx == e).any(axis=1)


def _feature_codes(values: Any, name: str, numeric_bins: int) -> tuple[np.ndarray, list[str]]:
    """Integer codes [N] (-1 = missing) and the value labels of one feature column.

    Floating-point columns with more than ``numeric_bins`` distinct values are cut into quantile
    bins (labels ``[lo, hi]``); everything else is one value per distinct entry.
    """
    s = pd.Series(np.asarray(values) if not isinstance(values, pd.Series) else values.to_numpy())
    if s.ndim != 1:
        raise ValueError(f"feature {name!r} must be 1-D [rows], got shape {np.shape(values)}")
    if pd.api.types.is_float_dtype(s) and s.nunique() > numeric_bins:
        cut = pd.qcut(s, numeric_bins, duplicates="drop")
        codes = cut.cat.codes.to_numpy().astype(np.int64)
        labels = [f"[{iv.left:.3g}, {iv.right:.3g}]" for iv in cut.cat.categories]
        return codes, labels
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def feature_log_odds(
    features: Mapping[str, Any] | pd.DataFrame,
    domain: Any,
    routed: Any,
    *,
    domains: list[int] | None = None,
    smoothing: float = 0.5,
    numeric_bins: int = 5,
    min_rows: int = 1,
    min_expected: float = MIN_EXPECTED,
    fdr: float = 0.05,
) -> pd.DataFrame:
    """Which feature values are over-represented among the ``routed`` rows (see the module doc).

    - ``features``: column name -> [N] values (raw strings/ints, or floats that get quantile bins).
    - ``domain`` [N] int; ``routed`` [N] bool (e.g. ``routed_mask(topk_idx, e)``).
    - ``domains``: restrict to these domain indices (the domain filter); default every domain
      with at least one routed row.  The comparison rows are the not-routed rows of those domains.
    - ``min_rows``: values seen in fewer rows (routed + other) are left out of the table.
    - ``min_expected``: values with fewer expected routed rows (``expected_routed``) stay in the
      table untested (p and q NaN, not significant; see the module doc).

    Returns one row per (feature, value), columns ``LOG_ODDS_COLUMNS``, ranked by
    :func:`rank_values`: significantly over-represented values first, then the other tested
    values, then the untested ones, each group by the lower end of the 95% interval.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing} must be >= 0")
    if not 0 < fdr < 1:
        raise ValueError(f"fdr={fdr} must be in (0, 1)")
    if numeric_bins < 2:
        raise ValueError(f"numeric_bins={numeric_bins} must be >= 2")
    if not min_expected >= 0:
        raise ValueError(f"min_expected={min_expected} must be >= 0")
    dom = check_routing_arrays(domain=domain).domain
    routed = to_numpy(routed, "routed")
    if routed.shape != dom.shape:
        raise ValueError(f"routed has shape {routed.shape} but domain has {dom.shape}")
    routed = routed.astype(bool)
    if not len(features):
        raise ValueError("features is empty: keep at least one feature column")
    if domains is None:
        keep_domains = np.unique(dom[routed])
    else:
        keep_domains = np.asarray(sorted({int(x) for x in domains}), dtype=np.int64)
    in_scope = np.isin(dom, keep_domains)
    frames = []
    for name in features:
        values = features[name]
        if len(values) != len(dom):
            raise ValueError(f"feature {name!r} has {len(values)} rows but domain has {len(dom)}")
        codes, labels = _feature_codes(values, str(name), numeric_bins)
        frames.append(
            _one_feature(str(name), codes, labels, dom, routed, in_scope, keep_domains, smoothing)
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LOG_ODDS_COLUMNS)
    out = out[(out["routed_with"] + out["other_with"]) >= min_rows].reset_index(drop=True)
    tested = (out["expected_routed"] >= min_expected).to_numpy()
    out.loc[~tested, "p_value"] = np.nan
    q = np.full(len(out), np.nan)
    q[tested] = benjamini_hochberg(out["p_value"].to_numpy()[tested])
    out["q_value"] = q
    out["significant"] = tested & (q < fdr)
    return rank_values(out)[LOG_ODDS_COLUMNS]


def rank_values(table: pd.DataFrame) -> pd.DataFrame:
    """A ``feature_log_odds`` table in display order: significant over-represented values (q <
    fdr, interval above 0) first, then the other tested values, then the untested ones (too few
    expected rows: wide intervals that would otherwise crowd out the significant values, e.g. rare
    ids at 40 domains); within each group by ``ci_low``, highest first."""
    tested = table["p_value"].notna()
    group = np.where(table["significant"] & (table["ci_low"] > 0), 0, np.where(tested, 1, 2))
    order = np.lexsort((-table["ci_low"].fillna(-np.inf).to_numpy(), group))
    return table.iloc[order].reset_index(drop=True)


def _one_feature(
    name: str,
    codes: np.ndarray,
    labels: list[str],
    dom: np.ndarray,
    routed: np.ndarray,
    in_scope: np.ndarray,
    keep_domains: np.ndarray,
    smoothing: float,
) -> pd.DataFrame:
    v = len(labels)
    ok = in_scope & (codes >= 0)
    strata = np.searchsorted(keep_domains, dom[ok])  # [n] in [0, S)
    s_count = max(len(keep_domains), 1)
    idx = (strata * 2 + routed[ok]) * v + codes[ok]
    counts = np.bincount(idx, minlength=s_count * 2 * v).reshape(s_count, 2, v).astype(np.float64)
    other_with, routed_with = counts[:, 0, :], counts[:, 1, :]  # [S, V]
    routed_tot = routed_with.sum(1, keepdims=True)  # [S, 1]
    other_tot = other_with.sum(1, keepdims=True)
    live = ((routed_tot > 0) & (other_tot > 0))[:, 0]  # strata with both groups
    with_v = (routed_with + other_with)[live]  # [S', V]
    # a stratum informs about v only when it holds rows with v and rows without; the others have
    # a d - b c terms of 0 and contribute nothing (smoothing them would pull the estimate towards
    # the stratum's routed share, even flipping its sign when many domains lack the value)
    informs = (with_v > 0) & (with_v < (routed_tot + other_tot)[live])
    add = np.where(informs, smoothing, 0.0)
    a = np.where(informs, routed_with[live], 0.0) + add
    b = np.where(informs, (routed_tot - routed_with)[live], 0.0) + add
    c = np.where(informs, other_with[live], 0.0) + add
    d = np.where(informs, (other_tot - other_with)[live], 0.0) + add
    with np.errstate(divide="ignore", invalid="ignore"):
        lor, se = mh_log_odds(a, b, c, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = lor / se
    p = 2 * norm.sf(np.abs(z))
    rw, ow = routed_with.sum(0), other_with.sum(0)
    rn, on = float(routed_tot.sum()), float(other_tot.sum())
    n_live = (routed_tot + other_tot)[live]  # [S', 1]
    expected = (routed_tot[live] * (routed_with + other_with)[live] / n_live).sum(0)  # [V]
    return pd.DataFrame(
        {
            "feature": name,
            "value": labels,
            "routed_with": rw.astype(np.int64),
            "routed_rows": int(rn),
            "other_with": ow.astype(np.int64),
            "other_rows": int(on),
            "share_routed": rw / rn if rn else np.nan,
            "share_other": ow / on if on else np.nan,
            "expected_routed": expected,
            "log_odds": lor,
            "ci_low": lor - Z95 * se,
            "ci_high": lor + Z95 * se,
            "z": z,
            "p_value": np.where(np.isfinite(p), p, 1.0),
        }
    )


def domain_contrast(domain: Any, routed: Any, *, domains: list[int] | None = None) -> pd.DataFrame:
    """Per domain in scope: how many rows went to the expert and how many elsewhere.

    The log-odds compare routed with other rows *within* each domain, so a domain whose rows all
    went to the expert (or none did) holds no contrast.  When no domain in scope does
    (``contrast`` all False) the expert is chosen by the domain alone: no feature value can be
    over-represented, and an empty table then means "specialized by domain", not "learned nothing".
    Columns ``domain``, ``routed``, ``other``, ``contrast``; the scope is as in
    :func:`feature_log_odds` (``domains``, default every domain with a routed row).
    """
    dom = check_routing_arrays(domain=domain).domain
    routed = to_numpy(routed, "routed").astype(bool)
    if routed.shape != dom.shape:
        raise ValueError(f"routed has shape {routed.shape} but domain has {dom.shape}")
    keep = np.unique(dom[routed]) if domains is None else np.unique(np.asarray(domains, int))
    n_routed = np.array([int((routed & (dom == d)).sum()) for d in keep], dtype=np.int64)
    n_other = np.array([int((~routed & (dom == d)).sum()) for d in keep], dtype=np.int64)
    return pd.DataFrame(
        {
            "domain": keep.astype(np.int64),
            "routed": n_routed,
            "other": n_other,
            "contrast": (n_routed > 0) & (n_other > 0),
        }
    )


def top_values(table: pd.DataFrame, top_n: int = 5, *, significant_only: bool = False):
    """The ``top_n`` most over-represented values of each feature (by the lower CI end)."""
    if top_n < 1:
        raise ValueError(f"top_n={top_n} must be >= 1")
    t = table[table["significant"]] if significant_only else table
    t = t.sort_values("ci_low", ascending=False, kind="stable")
    return t.groupby("feature", sort=False).head(top_n).reset_index(drop=True)
