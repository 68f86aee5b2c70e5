"""Compare the routing of two models (seeds, alphas, k's) and follow routing over training epochs.

Shapes: N = rows, D = domains, E = selectable experts, T = epochs with a snapshot.

Expert indices are arbitrary: expert 3 of one run need not be expert 3 of another.  Experts are
therefore aligned first, one to one, by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``), on one of two bases:

- ``rows`` (used whenever both runs were evaluated on the same rows): the co-assignment table
  C[i, j] = rows whose top-1 expert is i in a and j in b; the matching maximizes the rows that
  agree, sum_i C[i, perm[i]].  Two experts serving the same domain are told apart by *which rows*
  they take, so a relabelled copy of a run aligns exactly (agreement 1).
- ``profiles``: each expert's column of P(e | d) (how much each domain uses it), matched on the L1
  distance (or cosine similarity).  Only D numbers describe an expert, so with E > D two experts
  used by the same domain have near-identical columns and their match is a coin toss; use it only
  when per-row routing is not available.

Every alignment reports how ambiguous it is: ``margin`` = how much worse the best matching that
changes any one used pair is (rows for ``rows``, as a fraction of N; L1 distance for
``profiles``), and the experts whose pair can change at no cost (``ambiguous``).

Routing snapshots: with ``TrainConfig.routing_snapshots=True`` the trainer writes
``RUN_DIR/routing/epoch_XXX.json`` after each epoch, each ``RoutingStats.to_dict()`` of the
validation split; ``routing_evolution`` and ``activation_evolution`` read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from analysis.collect import Collection
from analysis.measures import activation, json_safe, mutual_information
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays

COSTS = ("l1", "cosine")
ROUTING_DIR = "routing"
_SNAPSHOT = re.compile(r"^epoch_(\d+)\.json$")
EVOLUTION_COLUMNS = [
    "epoch",
    "rows",
    "mi_soft",
    "mi_hard",
    "mi_soft_normalized",
    "mi_hard_normalized",
]


def _profiles(act: Any, name: str, num_domains: int | None = None) -> np.ndarray:
    joint = check_routing_arrays(joint=act, num_domains=num_domains).joint
    total = joint.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        bad = np.flatnonzero(total[:, 0] <= 0).tolist()
        raise ValueError(f"{name} has no routing mass for domains {bad} (all-zero rows)")
    return joint / total


@dataclass
class Alignment:
    """Result of ``align_experts_on_rows`` / ``align_experts_on_profiles``.

    - ``permutation`` [E_a]: b's expert matched to each expert of a (-1: left unmatched).
    - ``basis``: "rows" or "profiles" (see the module docstring).
    - ``margin``: how much the best matching beats the best one that changes a used pair: a
      fraction of the rows (``rows``) or an L1 distance (``profiles``); 0 = ambiguous.  NaN when
      no pair can change (a single expert).
    - ``ambiguous``: a's experts whose partner can change at no cost (sorted).
    - ``agreement``: for ``rows``, the fraction of rows whose top-1 experts agree after the
      alignment, sum_i C[i, perm[i]] / N; ``None`` for ``profiles``.
    """

    permutation: np.ndarray
    basis: str
    margin: float
    ambiguous: list[int]
    agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float, list[int], float]:
    """Min-cost one-to-one matching of a [E_a, E_b] cost; with its margin and ambiguous rows.

    The margin of a matched pair (i, j) is the extra cost of the best matching without it; pairs
    whose row of ``cost`` is constant (an expert of a the criterion cannot tell apart) are left
    out of the margin and the ambiguity.
    """
    rows, cols = linear_sum_assignment(cost)
    best = float(cost[rows, cols].sum())
    perm = np.full(cost.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    forbid = float(np.abs(cost).sum() + 1.0) * 2  # larger than any matching's total cost
    margins: dict[int, float] = {}
    for i, j in zip(rows, cols, strict=True):
        if np.ptp(cost[i]) == 0 or min(cost.shape) < 2:
            continue
        alt = cost.copy()
        alt[i, j] = forbid
        r2, c2 = linear_sum_assignment(alt)
        margins[int(i)] = float(alt[r2, c2].sum()) - best
    tol = 1e-9 * max(1.0, abs(best))
    ambiguous = sorted(i for i, m in margins.items() if m <= tol)
    margin = min(margins.values()) if margins else float("nan")
    return perm, max(margin, 0.0) if margins else margin, ambiguous, best


def align_experts(act_a: Any, act_b: Any, *, cost: str = "l1") -> np.ndarray:
    """Match the experts of b to those of a on their P(e | d) profiles; returns ``perm`` [E_a].

    ``perm[i]`` is the expert of b matched to expert i of a, so ``act_b[:, perm]`` lists b's
    experts in a's order.  act_a [D, E_a], act_b [D, E_b]: P(e | d) (or non-negative counts; rows
    are normalized).  ``cost``: "l1" = sum_d |a[d, i] - b[d, j]| (default) or "cosine" =
    -cos(a[:, i], b[:, j]).  With E_b < E_a, the experts of a left unmatched get -1.  With E > D
    prefer ``align_experts_on_rows`` (see the module docstring); ``align_experts_on_profiles``
    also says how ambiguous this match is.
    """
    return align_experts_on_profiles(act_a, act_b, cost=cost).permutation


def align_experts_on_profiles(act_a: Any, act_b: Any, *, cost: str = "l1") -> Alignment:
    """``align_experts`` with its ambiguity: an ``Alignment`` whose margin is in cost units."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
    a = _profiles(act_a, "act_a")
    b = _profiles(act_b, "act_b", num_domains=a.shape[0])
    if cost == "l1":
        c = np.abs(a[:, :, None] - b[:, None, :]).sum(axis=0)  # [E_a, E_b]
    else:
        na = np.linalg.norm(a, axis=0)[:, None]
        nb = np.linalg.norm(b, axis=0)[None, :]
        c = -(a.T @ b) / np.where(na * nb > 0, na * nb, 1.0)  # [E_a, E_b]
    perm, margin, ambiguous, _ = _assign(c)
    return Alignment(perm, "profiles", margin, ambiguous)


def coassignment(sel_a: Any, sel_b: Any, num_experts: int) -> np.ndarray:
    """[E, E] int64 table C[i, j] = rows whose top-1 expert is i in a and j in b (or, for
    [N, k] selections, row-wise pairs (i in a's k, j in b's k), each row adding k_a x k_b)."""
    xa = check_routing_arrays(expert=sel_a, num_experts=num_experts).expert
    xb = check_routing_arrays(expert=sel_b, num_experts=num_experts).expert
    if xa.shape[0] != xb.shape[0]:
        raise ValueError(f"sel_b has {xb.shape[0]} rows but sel_a has {xa.shape[0]}")
    xa = xa if xa.ndim == 2 else xa[:, None]
    xb = xb if xb.ndim == 2 else xb[:, None]
    e = num_experts
    cell = (xa[:, :, None] * e + xb[:, None, :]).ravel()
    return np.bincount(cell, minlength=e * e).reshape(e, e).astype(np.int64)


def align_experts_on_rows(sel_a: Any, sel_b: Any, num_experts: int) -> Alignment:
    """Match b's experts to a's on the same rows: maximize the rows whose selected experts agree,
    on the ``coassignment`` table.  ``sel_a``, ``sel_b``: [N] top-1 or [N, k] selected experts of
    the same rows in the same order.  Returns an ``Alignment`` whose ``agreement`` is
    sum_i C[i, perm[i]] / (N min(k_a, k_b)) in [0, 1] (for top-1: the fraction of rows whose
    experts agree) and whose ``margin`` is in the same unit.  a's experts that were never
    selected are matched arbitrarily and not counted as ambiguous.
    """
    xa = check_routing_arrays(expert=sel_a, num_experts=num_experts).expert
    xb = check_routing_arrays(expert=sel_b, num_experts=num_experts).expert
    table = coassignment(xa, xb, num_experts)
    perm, margin, ambiguous, best = _assign(-table.astype(np.float64))
    k = min(xa.shape[1] if xa.ndim == 2 else 1, xb.shape[1] if xb.ndim == 2 else 1)
    units = xa.shape[0] * k  # most agreeing (row, expert) pairs any matching can reach
    if units == 0:
        return Alignment(perm, "rows", float("nan"), [], None)
    return Alignment(perm, "rows", margin / units, ambiguous, -best / units)


def aligned_activation(act_b: Any, perm: Any) -> np.ndarray:
    """b's P(e | d) with its experts in a's order: [D, len(perm)] float64.

    act_b [D, E_b]; ``perm`` [E_a] from ``align_experts``: column i of the result is column
    ``perm[i]`` of ``act_b`` (b's expert matched to a's expert i), NaN where ``perm[i]`` is -1
    (a's expert left unmatched).
    """
    b = np.asarray(act_b, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"act_b must be 2-D [domains, experts], got shape {b.shape}")
    p = np.asarray(perm)
    if p.ndim != 1 or (p.size and not np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"perm must be a 1-D integer array, got shape {p.shape} of {p.dtype}")
    p = p.astype(np.int64)
    bad = (p < -1) | (p >= b.shape[1])
    if bad.any():
        raise ValueError(
            f"perm[{int(np.flatnonzero(bad)[0])}] = {int(p[bad][0])} is not an expert of act_b "
            f"(shape {b.shape}) nor -1"
        )
    out = np.full((b.shape[0], p.size), np.nan)
    matched = p >= 0
    out[:, matched] = b[:, p[matched]]
    return out


@dataclass
class Comparison:
    """Result of ``compare``: b's routing aligned to a's experts.

    - ``permutation`` [E]: b's expert matched to each expert of a (see ``Alignment``).
    - ``alignment``: "rows" (matched on which rows each expert takes; used whenever per-row
      top-1 experts of the same rows are given) or "profiles" (matched on P(e | d) columns).
    - ``alignment_margin``, ``ambiguous_experts``: how ambiguous the match is (``Alignment``).
    - ``aligned_diff`` [D, E]: P_b(perm[e] | d) - P_a(e | d), in a's expert order.
    - ``tv_distance`` [D]: total variation distance sum_e |aligned_diff| / 2 per domain, in [0, 1]
      (0 = the domain is routed identically up to the relabeling).
    - ``routing_agreement``: fraction of rows whose top-1 expert agrees after alignment (``None``
      without per-row selections); ``agreement_chance``: the agreement expected if the two
      runs chose independently with their own top-1 frequencies.
    - ``mi_soft_a``, ``mi_soft_b``, ``mi_hard_a``, ``mi_hard_b``: I(D; E) of each run, nats.
    """

    permutation: np.ndarray
    alignment: str
    alignment_margin: float
    ambiguous_experts: list[int]
    aligned_diff: np.ndarray
    tv_distance: np.ndarray
    routing_agreement: float | None
    agreement_chance: float | None
    mi_soft_a: float
    mi_soft_b: float
    mi_hard_a: float
    mi_hard_b: float
    kind: str
    cost: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists and floats; NaN -> None)."""
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


def _unpack(x: Any, name: str) -> tuple[RoutingStats, np.ndarray | None]:
    if isinstance(x, Collection):
        if x.stats is None:
            raise ValueError(f"{name}: {x.no_routing_reason}")
        return x.stats, x.top1
    if isinstance(x, RoutingStats):
        return x, None
    raise ValueError(f"{name} must be a RoutingStats or a Collection, got {type(x).__name__}")


def compare(
    stats_a: RoutingStats | Collection,
    stats_b: RoutingStats | Collection,
    sel_a: Any = None,
    sel_b: Any = None,
    *,
    kind: str = "soft",
    cost: str = "l1",
) -> Comparison:
    """Align b's experts to a's and compare their P(e | d) of ``kind`` ("soft" or "hard").

    ``stats_a``/``stats_b``: ``RoutingStats`` or ``Collection`` (whose ``top1`` is then the
    default ``sel_a``/``sel_b``).  ``sel_a``, ``sel_b``: [N] top-1 expert of every row, of the same
    rows in the same order for both runs; with them the experts are aligned on rows
    (``align_experts_on_rows``) and ``routing_agreement`` is computed, without them on the P(e | d)
    profiles with ``cost`` (``align_experts_on_profiles``).  Both runs must have the same numbers
    of domains and experts.
    """
    sa, top_a = _unpack(stats_a, "stats_a")
    sb, top_b = _unpack(stats_b, "stats_b")
    if sa.shape != sb.shape:
        raise ValueError(
            f"stats_b has shape {sb.shape} (domains, experts) but stats_a has {sa.shape}; "
            "compare needs runs with the same domains and experts"
        )
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {list(COSTS)}, got {cost!r}")
    act_a, act_b = activation(sa, kind), activation(sb, kind)
    sel_a = top_a if sel_a is None else sel_a
    sel_b = top_b if sel_b is None else sel_b
    if (sel_a is None) != (sel_b is None):
        raise ValueError("give per-row top-1 experts for both runs (sel_a and sel_b) or neither")
    agreement = chance = None
    e = sa.num_experts
    if sel_a is not None:
        xa = check_routing_arrays(expert=sel_a, num_experts=e).expert
        xb = check_routing_arrays(expert=sel_b, num_experts=e).expert
        if xa.ndim != 1 or xb.ndim != 1:
            raise ValueError(
                f"sel_a and sel_b must be 1-D [rows] top-1 experts, got {xa.shape} and {xb.shape}"
            )
        if xa.shape != xb.shape:
            raise ValueError(f"sel_b has {xb.shape[0]} rows but sel_a has {xa.shape[0]}")
    if sel_a is not None and xa.size:
        align = align_experts_on_rows(xa, xb, e)
        perm = align.permutation
        agreement = float(np.mean(perm[xa] == xb))
        pa = np.bincount(xa, minlength=e) / xa.size
        pb = np.bincount(xb, minlength=e) / xb.size
        chance = float(np.sum(pa * pb[perm]))
    else:
        align = align_experts_on_profiles(act_a, act_b, cost=cost)
        perm = align.permutation
    diff = aligned_activation(act_b, perm) - act_a
    return Comparison(
        permutation=perm,
        alignment=align.basis,
        alignment_margin=align.margin,
        ambiguous_experts=align.ambiguous,
        aligned_diff=diff,
        tv_distance=np.abs(diff).sum(axis=1) / 2,
        routing_agreement=agreement,
        agreement_chance=chance,
        mi_soft_a=mutual_information(sa, "soft"),
        mi_soft_b=mutual_information(sb, "soft"),
        mi_hard_a=mutual_information(sa, "hard"),
        mi_hard_b=mutual_information(sb, "hard"),
        kind=kind,
        cost=cost,
    )


# ---- routing over training epochs ----------------------------------------------------------------


def read_routing_snapshots(run_dir: str | Path) -> list[tuple[int, RoutingStats]]:
    """``[(epoch, stats), ...]`` from ``RUN_DIR/routing/epoch_XXX.json``, by epoch.

    The epoch is the number in the file name.  A folder without snapshots gives ``[]``; a missing
    run folder or an unreadable snapshot raises ``ValueError`` naming the file.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run_dir {run} is not a folder")
    folder = run / ROUTING_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _SNAPSHOT.match(path.name)
        if m is None:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append((int(m.group(1)), RoutingStats.from_dict(data)))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a routing snapshot ({err})") from None
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return sorted(found, key=lambda t: t[0])


def routing_evolution(run_dir: str | Path) -> pd.DataFrame:
    """One row per snapshot epoch: ``epoch``, ``rows``, ``mi_soft``, ``mi_hard`` (nats) and their
    normalized versions (in [0, 1]).  Empty (with these columns) when the run saved none."""
    rows = [
        (
            epoch,
            s.rows,
            mutual_information(s, "soft"),
            mutual_information(s, "hard"),
            mutual_information(s, "soft", normalized=True),
            mutual_information(s, "hard", normalized=True),
        )
        for epoch, s in read_routing_snapshots(run_dir)
    ]
    return pd.DataFrame(rows, columns=EVOLUTION_COLUMNS)


def activation_evolution(
    run_dir: str | Path, kind: str = "soft", domain_names: list[str] | None = None
) -> pd.DataFrame:
    """P(e | d) per snapshot epoch in long form: columns ``epoch``, ``domain``, ``expert``, ``p``.

    ``domain`` is the name from ``domain_names`` (default ``domain_<d>``); ``expert`` the index.
    ``df.pivot_table(index=["epoch", "domain"], columns="expert", values="p")`` or a 3-D array
    ``p.to_numpy().reshape(T, D, E)`` recover the matrices.  Empty when the run saved none.
    """
    out = []
    for epoch, s in read_routing_snapshots(run_dir):
        act = activation(s, kind)
        d, e = act.shape
        names = (
            list(domain_names) if domain_names is not None else [f"domain_{i}" for i in range(d)]
        )
        if len(names) != d:
            raise ValueError(f"domain_names has {len(names)} names but there are {d} domains")
        out.append(
            pd.DataFrame(
                {
                    "epoch": epoch,
                    "domain": np.repeat(names, e),
                    "expert": np.tile(np.arange(e), d),
                    "p": act.ravel(),
                }
            )
        )
    if not out:
        return pd.DataFrame(columns=["epoch", "domain", "expert", "p"])
    return pd.concat(out, ignore_index=True)
