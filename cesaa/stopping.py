"""When early stopping may stop: after ``patience`` epochs without improvement, never before
``min_steps`` optimizer steps, and never in an epoch in which the routing was still forming.

Why a minimum in steps (see ``docs/training.md``): on data whose signal is a product of two learned
factors (user x item), every model first sits on a plateau while the factors grow from their small
initial values.  With Adam each weight moves about ``lr`` per step whatever its gradient's size, so
the plateau lasts a number of optimizer *steps* (about 1/lr times a constant), not epochs; on a
small table with large batches an epoch is only a few dozen steps and epoch-counted patience stops
the model on the plateau.  The best epoch is still chosen on validation, so training longer never
selects worse weights; it only costs time.

Why wait for the routing (``routing_rise``): a gated model's domain -> expert routing forms late.
The training batches' I(D; E) (``train/batch_mi``) stays near 0 for several epochs and then rises
steeply; meanwhile a small table may already overfit, so the validation monitor peaks *before* the
routing has formed and patience ran out while it was forming (the shipped 40-domain checkpoint of
an earlier grid stopped at epoch 7 with the batch MI at 0.15, 0.61, 0.93 nats in its last three
epochs, and kept epoch 4 with I(D;E) about 1 % of its bound).  So patience may not stop a run in an
epoch whose batch MI rose by more than ``routing_rise`` (a fraction) over the epoch before: the
validation monitor then sees the routed model before the run ends.  A model with no routing (no
``batch_mi``, or 0) is never held.  The best epoch is still chosen on validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MI_KEY = "train/batch_mi"  # the epoch's mean I(D; E) over its training batches (cesaa.epoch)
MI_FLOOR = 1e-6  # nats: a batch MI below this is float noise, not routing


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``rows`` training rows (the last batch may be short)."""
    return math.ceil(rows / batch_size)


def routing_forming(history: Sequence[dict], rise: float) -> bool:
    """True when the last epoch's ``train/batch_mi`` exceeds ``MI_FLOOR`` and ``(1 + rise)`` times
    the epoch before's (0 before the first epoch): the routing is still forming.  False with
    ``rise <= 0`` (not waiting), no epoch, or no batch MI logged."""
    if rise <= 0 or not history:
        return False
    now = float(history[-1].get(MI_KEY, 0.0))
    before = float(history[-2].get(MI_KEY, 0.0)) if len(history) > 1 else 0.0
    if not (math.isfinite(now) and math.isfinite(before)):
        return False
    return now > MI_FLOOR and now > (1.0 + rise) * before


def should_stop(
    bad_epochs: int,
    patience: int,
    epochs_done: int,
    rows: int,
    batch_size: int,
    min_steps: int,
    forming: bool = False,
) -> bool:
    """True when ``bad_epochs >= patience > 0``, ``epochs_done`` epochs hold ``>= min_steps``
    optimizer steps and the routing is not ``forming`` (:func:`routing_forming`)."""
    if patience <= 0 or bad_epochs < patience or forming:
        return False
    return epochs_done * steps_per_epoch(rows, batch_size) >= min_steps
