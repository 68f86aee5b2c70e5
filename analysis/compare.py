"""Compare the routing of two models (seeds, alphas, k's) and follow routing over training epochs.

Shapes: N = rows, D = domains, E = selectable experts, T = epochs with a snapshot.

Expert indices are arbitrary, so b's experts are aligned to a's first (``analysis.alignment``:
on the rows each expert takes when both runs saw the same rows, else on P(e | d) profiles), with
a measure of how ambiguous the match is.

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

from analysis.alignment import (
    COSTS,
    Alignment,
    align_experts,
    align_experts_on_profiles,
    align_experts_on_rows,
    aligned_activation,
    coassignment,
)
from analysis.collect import Collection
from analysis.measures import activation, json_safe, mutual_information
from analysis.stats import RoutingStats
from analysis.validation import check_routing_arrays

ROUTING_DIR = "routing"
_SNAPSHOT = re.compile(r"^epoch_(\d+)\.json$")
__all__ = [
    "COSTS",
    "Alignment",
    "Comparison",
    "activation_evolution",
    "align_experts",
    "align_experts_on_profiles",
    "align_experts_on_rows",
    "aligned_activation",
    "coassignment",
    "compare",
    "read_routing_snapshots",
    "routing_evolution",
]
EVOLUTION_COLUMNS = [
    "epoch",
    "rows",
    "mi_soft",
    "mi_hard",
    "mi_soft_normalized",
    "mi_hard_normalized",
]


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


def rows_mismatch(a: Collection, b: Collection) -> str | None:
    """None when two evaluations ran over the same rows (same number, the same domain and label
    per row, the same domain names); else why not, in words.  Per-domain differences and row-level
    agreement between unrelated rows mean nothing, so Compare checks this first."""
    names_a, names_b = a.domain_names, b.domain_names
    if len(a.domain) != len(b.domain):
        return f"they were evaluated on different rows ({len(a.domain):,} vs {len(b.domain):,})"
    if names_a is not None and names_b is not None and tuple(names_a) != tuple(names_b):
        return f"their domains differ ({list(names_a)[:4]}… vs {list(names_b)[:4]}…)"
    if not np.array_equal(a.domain, b.domain):
        return "the same number of rows, but not the same domain per row: different data"
    la, lb = np.asarray(a.labels, np.float64), np.asarray(b.labels, np.float64)
    both = a.has_labels and b.has_labels  # a record without labels: the domains must do
    if both and not np.array_equal(la, lb, equal_nan=True):
        return "the same domains per row, but not the same labels: different data"
    return None
