"""Routing over training: router saturation, MI and load per epoch, and when routing settled.

Shapes: T = epochs with a snapshot, n = sampled rows, E = selectable experts, k = experts per row.

**Router saturation** (OLMoE, Muennighoff et al. 2024, sec. 5): for a fixed sample of rows, the
share of each row's top-k experts at epoch t that are also among its top-k at the final epoch,

    saturation(t) = mean_rows |TopK_t(x) & TopK_T(x)| / k,

in [0, 1]; 1 = every row already goes to its final experts; k / E = what unrelated uniform
routing gives on average.  It follows expert *identities*: a relabelling of the experts between
epochs reads as unsaturated even when the partition of the rows is the same.  Dense gates use the
top-k of their probabilities (``k`` given by the caller).

Row snapshots are written by ``cesaa.routing_rows`` when training with
``TrainConfig.routing_snapshots=True``; the aggregate ones (MI, load) by ``cesaa.train``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import read_routing_snapshots
from analysis.measures import expert_load, mutual_information
from analysis.validation import check_routing_arrays

ROUTING_DIR = "routing"
_ROWS = re.compile(r"^rows_epoch_(\d+)\.npz$")
SETTLED_THRESHOLD = 0.9


def topk_from_probs(probs: Any, k: int) -> np.ndarray:
    """[n, k] the k largest-probability experts of each row (ties: lower index first)."""
    p = check_routing_arrays(probs=probs).probs
    if not 1 <= k <= p.shape[1]:
        raise ValueError(f"k={k} must be in [1, {p.shape[1]}]")
    return np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)


def topk_overlap(topk_a: Any, topk_b: Any) -> np.ndarray:
    """[n] |A & B| / k for each row's two top-k sets (same rows, same k)."""
    a = check_routing_arrays(topk_idx=topk_a).topk_idx
    b = check_routing_arrays(topk_idx=topk_b).topk_idx
    if a.shape != b.shape:
        raise ValueError(f"topk_a has shape {a.shape} but topk_b has {b.shape}")
    return (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1) / a.shape[1]


def router_saturation(topk_by_epoch: list[Any]) -> np.ndarray:
    """[T] saturation of each epoch's top-k against the last one's (the last is 1)."""
    if not topk_by_epoch:
        raise ValueError("topk_by_epoch is empty: no snapshots")
    final = topk_by_epoch[-1]
    return np.array([float(topk_overlap(t, final).mean()) for t in topk_by_epoch])


def chance_saturation(num_experts: int, k: int) -> float:
    """The saturation unrelated routing gives on average: k / E (a row's top-k set at epoch t and
    an independent uniform top-k set share k * k / E experts in expectation)."""
    if not 1 <= k <= num_experts:
        raise ValueError(f"k={k} must be in [1, num_experts={num_experts}]")
    return k / num_experts


def settled_epoch(
    epochs: list[int],
    saturation: Any,
    threshold: float = SETTLED_THRESHOLD,
    chance: float = 0.0,
) -> int | None:
    """The first epoch from which saturation stays >= ``threshold`` of the way from ``chance``
    (k / E, see ``chance_saturation``) to 1, i.e. (s - chance) / (1 - chance) >= threshold; None
    with no epochs, or when chance is 1 (k = E: every row takes every expert, nothing to settle)."""
    s = np.asarray(saturation, dtype=np.float64)
    if len(epochs) != len(s):
        raise ValueError(f"epochs has {len(epochs)} entries but saturation has {len(s)}")
    if not len(s) or chance >= 1.0 - 1e-12:
        return None
    s = (s - chance) / (1.0 - chance)
    below = np.flatnonzero(s < threshold)
    i = 0 if below.size == 0 else int(below[-1]) + 1
    return int(epochs[min(i, len(s) - 1)])


def read_row_snapshots(run_dir: str | Path) -> list[tuple[int, dict[str, np.ndarray]]]:
    """``[(epoch, arrays), ...]`` from ``RUN_DIR/routing/rows_epoch_XXX.npz``, by epoch; ``[]``
    when there are none.  An unreadable file or a sample that changes between epochs raises
    ``ValueError`` naming the file."""
    folder = Path(run_dir) / ROUTING_DIR
    if not Path(run_dir).is_dir():
        raise ValueError(f"run_dir {run_dir} is not a folder")
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        m = _ROWS.match(path.name)
        if m is None:
            continue
        try:
            with np.load(path) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a row snapshot ({err})") from None
        missing = {"rows", "domain", "probs"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        found.append((int(m.group(1)), arrays))
    found.sort(key=lambda t: t[0])
    if found:
        ref = found[0][1]["rows"]
        for epoch, arrays in found[1:]:
            if not np.array_equal(arrays["rows"], ref):
                raise ValueError(f"rows_epoch_{epoch:03d}.npz samples other rows than epoch 1")
    return found


def saturation_table(run_dir: str | Path, k: int | None = None) -> pd.DataFrame:
    """One row per snapshot epoch: ``epoch``, ``saturation`` (NaN without row snapshots),
    ``mi_hard``, ``mi_soft_normalized``, ``mi_hard_normalized``, ``load_cv`` (coefficient of
    variation of the hard load; 0 = balanced) and ``load_max`` (largest expert share).

    ``k``: top-k for dense gates (default: the snapshot's own k, else 1).
    """
    rows = read_row_snapshots(run_dir)
    sat: dict[int, float] = {}
    chance = np.nan
    if rows:
        tops = []
        for _, arrays in rows:
            if "topk_idx" in arrays and k is None:
                tops.append(arrays["topk_idx"])
            else:
                tops.append(topk_from_probs(arrays["probs"], k or 1))
        sat = dict(zip([e for e, _ in rows], router_saturation(tops), strict=True))
        chance = chance_saturation(rows[0][1]["probs"].shape[1], tops[0].shape[1])
    out = []
    for epoch, stats in read_routing_snapshots(run_dir):
        load = expert_load(stats, "hard")
        out.append(
            {
                "epoch": epoch,
                "saturation": sat.get(epoch, np.nan),
                "mi_hard": mutual_information(stats, "hard"),
                "mi_soft_normalized": mutual_information(stats, "soft", normalized=True),
                "mi_hard_normalized": mutual_information(stats, "hard", normalized=True),
                "load_cv": float(load.std() / load.mean()) if load.mean() > 0 else np.nan,
                "load_max": float(load.max()),
            }
        )
    for epoch in sorted(set(sat) - {r["epoch"] for r in out}):
        out.append({"epoch": epoch, "saturation": sat[epoch]})
    cols = ["epoch", "saturation", "mi_hard", "mi_soft_normalized", "mi_hard_normalized"]
    cols += ["load_cv", "load_max"]
    out_df = pd.DataFrame(out, columns=cols).sort_values("epoch").reset_index(drop=True)
    return out_df.assign(saturation_chance=chance)


def settled_statement(table: pd.DataFrame, threshold: float = SETTLED_THRESHOLD) -> str:
    """One sentence saying when routing settled (or that it cannot tell)."""
    t = table.dropna(subset=["saturation"])
    if t.empty:
        return (
            "No row-level snapshots: train with routing snapshots on to see when routing settled."
        )
    epochs = t["epoch"].astype(int).tolist()
    if len(epochs) < 2:
        return "Only one epoch has a snapshot: saturation needs at least two."
    chance = float(t["saturation_chance"].iloc[0]) if "saturation_chance" in t else 0.0
    chance = 0.0 if np.isnan(chance) else chance
    if chance >= 1.0 - 1e-12:
        return (
            "Cannot tell when routing settled: every row takes every expert (k = E), so any two "
            "epochs agree completely by construction."
        )
    e = settled_epoch(epochs, t["saturation"].to_numpy(), threshold, chance)
    need = chance + threshold * (1 - chance)
    if e == epochs[-1]:
        return (
            f"Routing had not settled before the last epoch ({epochs[-1]}): until then fewer than "
            f"{need:.1%} of the sampled rows' top-k experts matched the final ones ({threshold:.0%} "
            f"of the way from the {chance:.1%} that unrelated routing gives, k/E, to 100%)."
        )
    return (
        f"Routing settled at epoch {e} of {epochs[-1]}: from then on at least {need:.1%} of the "
        f"sampled rows' top-k experts are already their final ones ({threshold:.0%} of the way "
        f"from the {chance:.1%} that unrelated routing gives, k/E, to 100%)."
    )
