"""CESAA's training rows/s against dense MoEs of equal active FLOPs per row and of equal parameters,
expert width by expert width (``bench.thread_scaling``'s efficiency table).

Models: ``cesaa`` (k = 2 of 8 experts + 1 shared: 3 experts active per row), ``mmoe`` (one expert per
domain, 3 on MovieLens-100k age domains: equal active expert FLOPs per row) and ``mmoe-9`` (9
experts: CESAA's 8 domain experts + 1 shared, equal parameters).
"""

from __future__ import annotations

import statistics
import time

import torch

from bench._timing import build, train_step
from bench.roofline import flops_per_row

MODELS = {"cesaa": ("cesaa", {}), "mmoe": ("mmoe", {}), "mmoe-9": ("mmoe", {"mmoe_experts": 9})}
WIDTHS = "64:32,256:64,512:128"  # expert hidden:output widths of the efficiency table


def parse_widths(text: str) -> list[tuple[int, int]]:
    """``"64:32,256:64"`` -> [(64, 32), (256, 64)]; ValueError naming the bad item."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(x.strip().isdigit() and int(x) > 0 for x in parts):
            raise ValueError(
                f"--widths item {item.strip()!r}: expected HIDDEN:OUTPUT, two positive integers "
                "(e.g. 256:64)"
            )
        out.append((int(parts[0]), int(parts[1])))
    return out


def width_rows(spec, table, batch: int, widths, rounds: int, steps: int, gen) -> list[list]:
    """CESAA against MMoE of equal active FLOPs per row and of equal parameters at each expert
    width: one table row per (width, model) with rows/s at 1 and 2 threads and CESAA's rows/s as
    a multiple of the row's model's.  Within a width, models and thread counts alternate round by
    round (each round: one untimed step, then ``steps`` timed; medians), so a slow phase of a
    shared machine hits every model."""
    n = len(table)
    rows = []
    for hidden, out in widths:
        built = {
            label: build(name, spec, expert_hidden=(hidden,), expert_dim=out, **extra)
            for label, (name, extra) in MODELS.items()
        }
        fpr = {label: flops_per_row(m, table, batch) for label, (m, _) in built.items()}
        got = {label: {1: [], 2: []} for label in built}
        labels = list(built)
        for r in range(rounds):
            for threads in (1, 2) if r % 2 == 0 else (2, 1):
                torch.set_num_threads(threads)
                for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
                    model, opt = built[label]
                    model.train()
                    train_step(model, opt, table, torch.randint(n, (batch,), generator=gen))
                    for _ in range(steps):
                        idx = torch.randint(n, (batch,), generator=gen)
                        t0 = time.perf_counter()
                        train_step(model, opt, table, idx)
                        got[label][threads].append(time.perf_counter() - t0)
        med = {lab: {t: statistics.median(v) for t, v in d.items()} for lab, d in got.items()}
        for label in labels:
            m = med[label]
            rows.append(
                [
                    f"{hidden} -> {out}",
                    label,
                    f"{fpr[label] / 1e3:,.1f}",
                    f"{batch / m[1]:,.0f}",
                    f"{batch / m[2]:,.0f}",
                    f"{m[1] / m[2]:.2f}x",
                    "" if label == "cesaa" else f"{m[1] / med['cesaa'][1]:.2f}x",
                    "" if label == "cesaa" else f"{m[2] / med['cesaa'][2]:.2f}x",
                ]
            )
    return rows
