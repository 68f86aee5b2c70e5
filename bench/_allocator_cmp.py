"""bench.throughput --compare-allocator: the goal pairs under both ``--allocator`` settings, and
each model's inference alone in a fresh process (the way a user's ``cesaa evaluate`` or dashboard
runs one model), with the page faults per batch that the setting is about."""

from __future__ import annotations

import resource
import statistics

import torch

from bench import _common, _report
from bench._speedup import ratio_cell

ROUNDS = 7  # inference passes over the table per process, after one warm-up pass


def _infer_alone(label: str, name: str, eval_batch: int, quick: bool) -> dict:
    """One model's inference rows/s (median over ROUNDS passes) and minor page faults per batch,
    in this process: built, one warm-up pass, then the timed passes."""
    from bench._timing import build, infer
    from cesaa.data import load_data

    if name.startswith("rechub_"):
        _common.rechub_status()
    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    if quick:
        table = table.subset(torch.arange(min(len(table), 4 * eval_batch)))
    model = build(name, data.spec)[0]
    infer(model, table, eval_batch)
    rps, faults = [], []
    batches = -(-len(table) // eval_batch)
    for _ in range(2 if quick else ROUNDS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rps.append(len(table) / infer(model, table, eval_batch))
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / batches)
    return {"label": label, "rps": statistics.median(rps), "faults": statistics.median(faults)}


def inference_alone(plan, choices: tuple[str, ...], threads: int) -> dict[str, dict[str, dict]]:
    """{choice: {label: {"rps", "faults"}}}: every model of ``plan`` alone in a fresh spawned
    process per (model, setting), one process at a time, settings alternating per model."""
    out: dict[str, dict[str, dict]] = {c: {} for c in choices}
    for label, name in plan.models:
        for choice in choices:
            out[choice][label] = _common.in_fresh_process(
                _infer_alone,
                label,
                name,
                plan.eval_batch,
                plan.quick,
                threads=threads,
                allocator_choice=choice,
            )
        _report.log(f"inference alone: {label} done")
    return out


def section(
    main: dict, other: dict, alone: dict, choices: tuple[str, str], processes: int, goals
) -> str:
    """Markdown: the goal pairs' ratios under both settings (``summarize`` outputs of the shared
    processes) and the models' inference alone under both."""
    a, b = choices
    rows = [
        [
            f"{ours} / {theirs}",
            ratio_cell(main["ratios"][(ours, theirs)]["train"]),
            ratio_cell(other["ratios"][(ours, theirs)]["train"]),
            ratio_cell(main["ratios"][(ours, theirs)]["infer"]),
            ratio_cell(other["ratios"][(ours, theirs)]["infer"]),
        ]
        for ours, theirs, _, _ in goals
        if (ours, theirs) in main["ratios"] and (ours, theirs) in other["ratios"]
    ]
    alone_rows = [
        [
            lab,
            f"{alone[a][lab]['rps']:,.0f}",
            f"{alone[a][lab]['faults']:,.0f}",
            f"{alone[b][lab]['rps']:,.0f}",
            f"{alone[b][lab]['faults']:,.0f}",
            f"{alone[a][lab]['rps'] / alone[b][lab]['rps']:.2f}x",
        ]
        for lab in alone[a]
    ]
    pair_rows = [
        [
            f"{ours} / {theirs}",
            f"{alone[a][ours]['rps'] / alone[a][theirs]['rps']:.2f}x",
            f"{alone[b][ours]['rps'] / alone[b][theirs]['rps']:.2f}x",
        ]
        for ours, theirs, _, _ in goals
        if ours in alone[a] and theirs in alone[a]
    ]
    plural = "es" if processes > 1 else ""
    return (
        f"### The allocator setting: `--allocator {a}` (above) vs `{b}`\n\n"
        f"**All models in one process.**  The rounds above again in {processes} more fresh "
        f"process{plural} with `--allocator {b}`, after them; ratios ours / theirs.  Both "
        "libraries share each process, so each setting applies to both.\n\n"
        + _report.table(
            ["pair", f"training ({a})", f"training ({b})", f"inference ({a})", f"inference ({b})"],
            rows,
        )
        + "\n\n**Each model alone in a fresh process** (as `cesaa evaluate` or the dashboard runs "
        f"one model): inference rows/s, median of {ROUNDS} passes over the table after a "
        "warm-up pass, and the minor page faults per batch (`ru_minflt`), one process per model "
        "and setting.\n\n"
        + _report.table(
            [
                "model",
                f"rows/s ({a})",
                f"faults / batch ({a})",
                f"rows/s ({b})",
                f"faults / batch ({b})",
                f"{a} / {b}",
            ],
            alone_rows,
        )
        + "\n\n"
        + _report.table(["pair, each alone", f"inference ({a})", f"inference ({b})"], pair_rows)
    )
