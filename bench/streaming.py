"""Streaming routing statistics: rows/s and peak memory of ``RoutingStats.update`` over 1M and 10M
rows.  Memory must not grow with the number of rows.

Each size runs in a fresh process (so peak memory is that run's alone).  The process generates
gate outputs chunk by chunk, as a model would emit them: dense probabilities (softmax of random
logits, E experts), the top-k experts of each row and a domain, and folds every chunk into a
``analysis.stats.RoutingStats`` (validation included: ``update`` checks each chunk).  Reported:
rows/s of ``update`` alone and of generation + update, the peak of Python/numpy allocations
during the loop (``tracemalloc``) and the process's peak resident memory (``ru_maxrss``).

    python -m bench.streaming            # full: 1M and 10M rows (about 2 min on 2 cores)
    python -m bench.streaming --quick    # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from bench import _common, _report

SECTION = "streaming"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(rows: int, chunk: int, experts: int, k: int, domains: int, seed: int = 0) -> dict:
    """Stream ``rows`` generated gate outputs through ``RoutingStats.update`` (in this process)."""
    from analysis.stats import RoutingStats

    rng = np.random.default_rng(seed)

    def gate_outputs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = rng.standard_normal((n, experts))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)  # [n, E] rows sum to 1
        topk = np.argpartition(-probs, k - 1, axis=1)[:, :k]  # [n, k] the k largest
        return probs, topk, rng.integers(0, domains, n)

    stats = RoutingStats.empty(domains, experts)
    p, t, d = gate_outputs(min(chunk, rows))
    stats.update(p, d, topk_idx=t)  # warm-up (imports, first-call costs), not counted
    del p, t, d
    base_rss = _rss_mib()
    tracemalloc.start()
    update_s = 0.0
    t0 = time.perf_counter()
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        probs, topk, dom = gate_outputs(n)
        t1 = time.perf_counter()
        stats = stats.update(probs, dom, topk_idx=topk)
        update_s += time.perf_counter() - t1
        done += n
    total_s = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stats.rows == rows
    return {
        "rows": rows,
        "update_s": update_s,
        "total_s": total_s,
        "traced_peak_mib": peak / 2**20,
        "base_rss_mib": base_rss,
        "peak_rss_mib": _rss_mib(),
        "stats_bytes": sum(getattr(stats, f).nbytes for f in stats.__dataclass_fields__),
    }


def run_worker(rows: int, args) -> dict:
    cmd = [sys.executable, "-m", "bench.streaming", "--worker", str(rows)]
    cmd += ["--chunk", str(args.chunk), "--experts", str(args.experts), "--k", str(args.k)]
    cmd += ["--domains", str(args.domains)]
    env = {**os.environ, "PYTHONPATH": str(_common.REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_common.REPO)
    if r.returncode != 0:
        raise RuntimeError(f"streaming worker failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes")
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--domains", type=int, default=3)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:  # a child process: no torch needed
        args = p.parse_args(argv)
        out = worker(args.worker, args.chunk, args.experts, args.k, args.domains)
        print(json.dumps(out))
        return 0
    args, argv = _common.parse(p, argv)
    sizes = [int(s) for s in args.rows.split(",")]
    if args.quick:
        sizes, args.chunk = [50_000, 200_000], 16_384
    machine = _report.machine()  # before the run: its load average at the start
    t0 = time.perf_counter()
    results = []
    for n in sizes:
        _report.log(f"streaming {n:,} rows")
        results.append(run_worker(n, args))
    rows = [
        [
            f"{r['rows']:,}",
            f"{r['update_s']:.2f}",
            f"{r['rows'] / r['update_s']:,.0f}",
            f"{r['rows'] / r['total_s']:,.0f}",
            f"{r['traced_peak_mib']:.1f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['peak_rss_mib'] - r['base_rss_mib']:.1f}",
        ]
        for r in results
    ]
    first, last = results[0], results[-1]
    growth = last["traced_peak_mib"] - first["traced_peak_mib"]
    chunk_mib = args.chunk * (args.experts * 8 * 2 + args.k * 8 + 8) / 2**20
    verdict = (
        f"From {first['rows']:,} to {last['rows']:,} rows ({last['rows'] / first['rows']:.0f}x) "
        f"the traced peak changes by {growth:+.2f} MiB: "
        f"**memory {'does not grow' if abs(growth) < 0.25 * max(first['traced_peak_mib'], 1) else 'GROWS'} "
        f"with N.**  The statistics themselves take {last['stats_bytes']:,} bytes; the peak is set "
        f"by one chunk's arrays (about {chunk_mib:.1f} MiB of gate outputs per {args.chunk:,}-row "
        "chunk, plus the temporaries of validation and update)."
    )
    notes = (
        f"E={args.experts} experts, k={args.k}, D={args.domains} domains, chunks of "
        f"{args.chunk:,} rows; every size in a fresh process.  'update rows/s' times "
        "`RoutingStats.update` only (input validation + sums); 'end-to-end' adds generating the "
        "gate outputs.  'traced peak' is tracemalloc's peak of allocations made during the loop "
        "(numpy buffers included); 'peak RSS' is the process's ru_maxrss (torch and numpy "
        "imports included), 'RSS growth' its increase during the loop."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Streaming routing statistics: rows/s and peak memory",
                _report.command("bench.streaming", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                [
                    "rows",
                    "update s",
                    "update rows/s",
                    "end-to-end rows/s",
                    "traced peak MiB",
                    "peak RSS MiB",
                    "RSS growth MiB",
                ],
                rows,
            ),
            verdict,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
