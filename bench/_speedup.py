"""bench.throughput's summary over its measuring processes: medians, ranges, ours / theirs
ratios and the goal verdicts (pure functions of the measurements)."""

from __future__ import annotations

import statistics


def summarize(results: list[dict]) -> dict:
    """Medians and ratios over processes from ``measure``'s results.

    Returns ``train`` / ``infer``: {label: median over processes of each process's median rows/s},
    ``train_range``: {label: (min, max) over every round of every process}, and ``ratios``:
    {(ours, theirs): {"train": [per-process ratio], "infer": [...]}} for every label of ours
    against each torch-rechub label present; with CESAA's one-pass inference measured in every
    process, ``cesaa_one_pass`` (median rows/s) and ``slices_speedup`` (per process: CESAA's
    inference rows/s over its one-pass rows/s).
    """
    labels = list(results[0]["train"])
    per = {
        kind: [{lab: statistics.median(r[kind][lab]) for lab in labels} for r in results]
        for kind in ("train", "infer")
    }
    out: dict = {
        kind: {lab: statistics.median(p[lab] for p in per[kind]) for lab in labels}
        for kind in ("train", "infer")
    }
    every = {lab: [x for r in results for x in r["train"][lab]] for lab in labels}
    out["train_range"] = {lab: (min(v), max(v)) for lab, v in every.items()}
    if all(r.get("cesaa_one_pass") for r in results):
        one = [statistics.median(r["cesaa_one_pass"]) for r in results]
        out["cesaa_one_pass"] = statistics.median(one)
        out["slices_speedup"] = [p["CESAA"] / o for p, o in zip(per["infer"], one, strict=True)]
    theirs = [lab for lab in labels if lab.startswith("torch-rechub")]
    out["ratios"] = {
        (ours, peer): {kind: [p[ours] / p[peer] for p in per[kind]] for kind in ("train", "infer")}
        for ours in labels
        if ours not in theirs
        for peer in theirs
    }
    return out


def ratio_cell(ratios: list[float]) -> str:
    """``"1.64x"`` for one process; ``"1.64x (1.58-1.69)"``: median (range) over several."""
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{med:.2f}x"
    return f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def verdicts(ratios: dict, goals) -> list[str]:
    """One line per goal ``(ours, theirs, training goal, inference goal)`` whose pair was measured: met when the median ratio over
    processes reaches the goal; how many processes reached it."""
    lines = []
    for ours, theirs, g_train, g_infer in goals:
        if (ours, theirs) not in ratios:
            continue
        parts = []
        for kind, goal in (("training", g_train), ("inference", g_infer)):
            r = ratios[(ours, theirs)]["train" if kind == "training" else "infer"]
            ok = statistics.median(r) >= goal
            reached = sum(x >= goal for x in r)
            parts.append(
                f"{kind} {ratio_cell(r)} (goal >= {goal}x: **{'met' if ok else 'missed'}**"
                + (f", reached in {reached} of {len(r)} processes" if len(r) > 1 else "")
                + ")"
            )
        lines.append(f"- {ours} / {theirs}: " + ", ".join(parts))
    return lines
