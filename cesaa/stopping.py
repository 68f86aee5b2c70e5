"""When early stopping may stop: after ``patience`` epochs without improvement, and never before
``min_steps`` optimizer steps.

Why a minimum in steps (see ``docs/training.md``): on data whose signal is a product of two learned
factors (user x item), every model first sits on a plateau while the factors grow from their small
initial values.  With Adam each weight moves about ``lr`` per step whatever its gradient's size, so
the plateau lasts a number of optimizer *steps* (about 1/lr times a constant), not epochs; on a
small table with large batches an epoch is only a few dozen steps and epoch-counted patience stops
the model on the plateau.  The best epoch is still chosen on validation, so training longer never
selects worse weights; it only costs time.
"""

from __future__ import annotations

import math


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``rows`` training rows (the last batch may be short)."""
    return math.ceil(rows / batch_size)


def should_stop(
    bad_epochs: int, patience: int, epochs_done: int, rows: int, batch_size: int, min_steps: int
) -> bool:
    """True when ``bad_epochs >= patience > 0`` and ``epochs_done`` epochs hold ``>= min_steps``
    optimizer steps."""
    if patience <= 0 or bad_epochs < patience:
        return False
    return epochs_done * steps_per_epoch(rows, batch_size) >= min_steps
