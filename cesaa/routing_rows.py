"""Row-level routing snapshots during training: the gate of a fixed, seeded sample of validation
rows after every epoch, so that router saturation (does a row's top-k at epoch t still hold at the
end?) can be measured.  Written beside the aggregate snapshots of ``cesaa.train``:
``RUN_DIR/routing/rows_epoch_XXX.npz`` with

- ``rows`` [n] int64: positions of the sampled rows in the validation split (the same every epoch:
  ``numpy.random.default_rng(seed)``, without replacement, sorted);
- ``domain`` [n] int64; ``probs`` [n, E] float32 dense gate probabilities;
- ``topk_idx`` [n, k] int64 the selected experts (absent for dense gates).

Models without a gate write nothing.  Read by ``analysis.saturation``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cesaa.data.table import EncodedTable

ROUTING_DIR = "routing"
ROW_SAMPLE_SIZE = 2000
ROW_SNAPSHOT = "rows_epoch_{epoch:03d}.npz"


def row_sample(num_rows: int, size: int = ROW_SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """The sampled row positions [min(size, num_rows)], ascending (same for every epoch)."""
    if size < 1:
        raise ValueError(f"size={size} must be >= 1")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, size=min(size, num_rows), replace=False)).astype(np.int64)


@torch.no_grad()
def write_row_snapshot(
    run: str | Path,
    model: nn.Module,
    table: EncodedTable,
    epoch: int,
    *,
    size: int = ROW_SAMPLE_SIZE,
    seed: int = 0,
) -> Path | None:
    """Write ``routing/rows_epoch_<epoch>.npz`` for ``model`` on a fixed sample of ``table``;
    returns the file (``None`` for a model without a gate or an empty table)."""
    if len(table) == 0:
        return None
    rows = row_sample(len(table), size, seed)
    sub = table.subset(torch.as_tensor(rows))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        sub = sub.to(device)
        out = model(sub.cat, sub.num, sub.domain)
    finally:
        model.train(was_training)
    if out.probs is None:
        return None
    arrays = {
        "rows": rows,
        "domain": sub.domain.cpu().numpy().astype(np.int64),
        "probs": out.probs.detach().float().cpu().numpy(),
    }
    if out.topk_idx is not None:
        arrays["topk_idx"] = out.topk_idx.cpu().numpy().astype(np.int64)
    path = Path(run) / ROUTING_DIR / ROW_SNAPSHOT.format(epoch=epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
