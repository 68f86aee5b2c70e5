"""How a training run ended: converged, stalled on a plateau, or cut by the epoch cap while still
improving ("not converged").

On data whose signal is a product of learned factors every model first sits on a plateau (see
``docs/training.md``); a run that never leaves it, or that the epoch cap stops mid-climb, is not a
measurement of its architecture.  :func:`classify_run` reads the per-epoch validation AUC and says
which case a run is, so that ``meta.json``, ``cesaa train``, the Overview and the leaderboard can
say so next to the number.

The plateau's level is the **domain-only reference**: the validation AUC of scoring every row by
its domain's positive rate on the training split (:func:`domain_rate_auc`), what a model that
learned nothing beyond the domain reaches.  A run is on a plateau when its best validation AUC
stays below ``reference + min_gain``.  Without a reference (a streamed split) the first epoch's
level is the floor instead: the run "never rose meaningfully above its first epoch".  Why not the
first epoch always: on a large table the first epoch holds thousands of optimizer steps and may
already be the best, so "no rise after epoch 1" would flag healthy runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cesaa.metrics import auc

CONVERGED = "converged"
PLATEAU = "plateau"
NOT_CONVERGED = "not_converged"
VERDICTS = (CONVERGED, PLATEAU, NOT_CONVERGED)
# AUC above the floor that counts as leaving the plateau.  On the planted multiplicative table
# (docs/benchmarks.md, plateau section) HMoE stays 0.03 above the domain-only level for 30 epochs
# while the models that learned the product reach +0.2; on MovieLens-100k every model ends 0.2
# above it.  Seed-to-seed noise of a validation AUC is 0.002-0.007.  The price: on data where the
# features add less than 0.05 AUC to the domain alone, every run reads "plateau".
MIN_GAIN = 0.05


@dataclass(frozen=True)
class RunEnd:
    """The verdict on one run, with the numbers it was read from (AUC on the validation split)."""

    verdict: str  # one of VERDICTS
    epochs: int  # epochs completed
    best_epoch: int  # 1-based epoch of the best validation AUC
    first: float  # validation AUC after epoch 1
    best: float  # best validation AUC
    reference: float | None  # domain-only validation AUC (None: not computed)
    min_gain: float
    message: str  # one sentence for people

    @property
    def stalled(self) -> bool:
        """On a plateau or not converged: the run's number measures its training, not its model."""
        return self.verdict != CONVERGED

    def to_dict(self) -> dict:
        return asdict(self)


def domain_rate_auc(
    train_domain: np.ndarray, train_label: np.ndarray, val_domain: np.ndarray, val_label: np.ndarray
) -> float:
    """Validation AUC of the domain-only predictor: each row scored by its domain's positive rate
    on the training rows (a domain without training rows gets the overall rate).

    0.5 when every domain has the same rate; nan when the validation labels hold one class.
    """
    td, tl = np.asarray(train_domain, dtype=np.int64), np.asarray(train_label, dtype=np.float64)
    vd, vl = np.asarray(val_domain, dtype=np.int64), np.asarray(val_label, dtype=np.float64)
    if td.shape != tl.shape or vd.shape != vl.shape:
        raise ValueError(
            f"domain and label differ in length: train {td.shape} vs {tl.shape}, "
            f"validation {vd.shape} vs {vl.shape}"
        )
    if len(td) == 0:
        raise ValueError("domain_rate_auc: no training rows")
    size = int(max(td.max(), vd.max(initial=0))) + 1
    count = np.bincount(td, minlength=size)
    pos = np.bincount(td, weights=tl, minlength=size)
    rate = np.where(count > 0, pos / np.maximum(count, 1), tl.mean())
    if len(np.unique(vl)) < 2:
        return math.nan
    return auc(vl, rate[vd])


def classify_run(
    val_auc: Sequence[float],
    *,
    epochs_cap: int,
    stopped_early: bool,
    patience: int,
    reference: float | None = None,
    min_gain: float = MIN_GAIN,
) -> RunEnd:
    """Classify a finished run from its validation AUC per epoch.

    - ``plateau``: best < floor + ``min_gain``, the floor being ``reference`` (the domain-only
      AUC), or the first epoch's AUC when there is no reference (None or nan);
    - ``not_converged``: otherwise, when the run ended at ``epochs_cap`` without an early stop and
      its best epoch lies within the last ``max(patience, 1)`` epochs (early stopping would not
      have stopped it yet: it was still improving);
    - ``converged``: every other run.

    Raises ``ValueError`` on an empty curve, a curve without a finite value, or ``epochs_cap < 1``.
    """
    vals = np.asarray(list(val_auc), dtype=np.float64)
    if len(vals) == 0:
        raise ValueError("classify_run: no epochs (empty validation curve)")
    if epochs_cap < 1:
        raise ValueError(f"epochs_cap={epochs_cap} must be >= 1")
    finite = np.isfinite(vals)
    if not finite.any():
        raise ValueError("classify_run: the validation AUC is nan in every epoch")
    best_i = int(np.nanargmax(vals))
    best, first = float(vals[best_i]), float(vals[finite][0])
    ref = reference if reference is not None and math.isfinite(reference) else None
    floor = first if ref is None else ref
    epochs = len(vals)
    window = max(patience, 1)
    at_cap = epochs >= epochs_cap and not stopped_early
    what = "its first epoch" if ref is None else "the domain-only level"
    if best < floor + min_gain:
        verdict = PLATEAU
        msg = (
            f"stalled on a plateau: best validation AUC {best:.4f} (epoch {best_i + 1}) never "
            f"rose {min_gain:g} above {what} ({floor:.4f})"
        )
    elif at_cap and epochs - (best_i + 1) < window:
        verdict = NOT_CONVERGED
        msg = (
            f"did not converge: the {epochs_cap}-epoch cap stopped it while still improving (best "
            f"validation AUC {best:.4f} at epoch {best_i + 1}); raise train.epochs"
        )
    else:
        verdict = CONVERGED
        msg = f"converged: best validation AUC {best:.4f} at epoch {best_i + 1} of {epochs}"
    return RunEnd(verdict, epochs, best_i + 1, first, best, ref, min_gain, msg)


def stalled_text(verdicts: Sequence[str | None]) -> str:
    """A leaderboard cell: how many of a model's seeds stalled, e.g. "2 of 10 seeds (plateau 1,
    not converged 1)", "none of 5 seeds", or "n/a" when no run recorded its verdict."""
    known = [v for v in verdicts if v is not None]
    if not known:
        return "n/a"
    plateau = sum(v == PLATEAU for v in known)
    capped = sum(v == NOT_CONVERGED for v in known)
    n = len(known)
    if plateau + capped == 0:
        return f"none of {n} seeds"
    parts = [f"plateau {plateau}"] * bool(plateau) + [f"not converged {capped}"] * bool(capped)
    return f"{plateau + capped} of {n} seeds ({', '.join(parts)})"
