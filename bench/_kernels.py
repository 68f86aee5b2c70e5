"""The speed goals with narrower vector units: ``bench.speed --kernels avx2,default``.

Reruns ``bench._dispatch.goal_ratios`` in fresh processes whose torch kernels
(``ATEN_CPU_CAPABILITY``) and MKL kernels (``MKL_ENABLE_INSTRUCTIONS``) are restricted to one
instruction set, so that one machine shows what the same code does on a CPU without its wider vector
units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench import _common, _report

# torch's ATen kernel sets (ATEN_CPU_CAPABILITY) and the MKL instruction limit matching each
MKL_FOR = {"avx512": "AVX512", "avx2": "AVX2", "default": "SSE4_2"}


def goal_ratios_under(kernels: str, batch: int, reps: int, warmup: int, threads: int) -> dict:
    """``goal_ratios`` in a fresh process whose torch kernels (and MKL's) are restricted to the
    instruction set ``kernels`` (avx512, avx2 or default): a stand-in, on this CPU, for a CPU
    without the wider vector units.  Raises ``ValueError`` for an unknown set."""
    if kernels not in MKL_FOR:
        raise ValueError(f"--kernels: unknown kernel set {kernels!r}; use {sorted(MKL_FOR)}")
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": kernels,
        "MKL_ENABLE_INSTRUCTIONS": MKL_FOR[kernels],
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_common.REPO), os.environ.get("PYTHONPATH")])
        ),
    }
    code = (
        "import json, torch; from bench._dispatch import goal_ratios; "
        f"torch.set_num_threads({threads}); "
        f"print(json.dumps(goal_ratios({batch}, {reps}, {warmup})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(
            f"--kernels {kernels}: the measuring process failed (exit {out.returncode}): "
            + out.stderr.strip()[-2000:]
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernel_table(results: list[dict], goals: tuple[tuple[int, int, float], ...]) -> str:
    """The goals under each kernel set: one row per set, and the worst case over the sets."""
    rows = []
    worst = {(e, k): 0.0 for e, k, _ in goals}
    for r in results:
        row = [f"`{r['requested']}` (torch: {r['kernels']})"]
        for e, k, limit in goals:
            got = r[f"E{e}k{k}"]
            worst[e, k] = max(worst[e, k], got)
            row.append(f"{got:.2f}x ({'met' if got <= limit else 'missed'})")
        rows.append(row)
    cols = ["kernel set", *[f"E={e}, k={k} (goal <= {limit}x)" for e, k, limit in goals]]
    verdict = "; ".join(
        f"E={e}, k={k}: worst {worst[e, k]:.2f}x, "
        + ("**met** under every set" if worst[e, k] <= limit else "**missed** under at least one")
        for e, k, limit in goals
    )
    intro = (
        "Each row reruns the two goal cases in a fresh process with torch's kernels "
        "(`ATEN_CPU_CAPABILITY`) and MKL's (`MKL_ENABLE_INSTRUCTIONS`) restricted to one "
        "instruction set: what the same code does on a CPU without the wider units.  A stand-in, "
        "not another CPU: caches, memory and clock stay this machine's."
    )
    return "\n\n".join(
        [
            "### The goals with narrower vector units (this CPU, kernels restricted)",
            intro,
            _report.table(cols, rows),
            f"**Across kernel sets:** {verdict}.",
        ]
    )
