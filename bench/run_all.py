"""Run every benchmark of the benchmark issue in sequence, each in its own process, and write their
sections of ``docs/benchmarks.md``.

    python -m bench.run_all                 # full suite (about 35 min on 2 quiet cores)
    python -m bench.run_all --quick         # every quick mode (CI smoke run, about 1 min)
    python -m bench.run_all --only speed,throughput
    python -m bench.run_all --skip tune     # e.g. once the defaults are settled

Timing benchmarks (speed, throughput, roofline, streaming, umap_time) run first, while nothing else of the
suite is running; then the training benchmarks, two runs in parallel with one thread each.  A log
per benchmark goes to ``--logs`` (default /tmp/bench-logs).  Estimated full-mode minutes on 2 quiet
cores are in ``ESTIMATE_MIN``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import _report

ORDER = (
    "speed",
    "throughput",
    "roofline",
    "thread_scaling",
    "streaming",
    "record_open",
    "umap_time",
    "accuracy",
    "tune",
    "retrieval",
    "planted",
    "plateau",
)
ESTIMATE_MIN = {
    "speed": 2,
    "throughput": 4,
    "roofline": 3,
    "thread_scaling": 2,
    "streaming": 1,
    "record_open": 5,
    "umap_time": 4,
    "accuracy": 10,
    "tune": 8,
    "retrieval": 3,
    "planted": 5,
    "plateau": 20,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="comma-separated benchmarks to run")
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    p.add_argument("--docs", default="", help=f"markdown file (default: {_report.DOCS})")
    p.add_argument("--logs", default="/tmp/bench-logs")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs of the training benchmarks")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    names = [n for n in ORDER if not args.only or n in args.only.split(",")]
    names = [n for n in names if n not in args.skip.split(",")]
    unknown = set(filter(None, (args.only + "," + args.skip).split(","))) - set(ORDER)
    if unknown:
        p.error(f"unknown benchmarks {sorted(unknown)}; choose from {list(ORDER)}")
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        est = sum(ESTIMATE_MIN[n] for n in names)
        _report.log(f"full suite: {', '.join(names)}; estimated {est} min on 2 quiet cores")
    env = {**os.environ, "PYTHONPATH": str(_report.REPO)}
    failed = []
    t_all = time.perf_counter()
    for name in names:
        # only non-default options, so that the command written into the docs is the plain one
        cmd = [sys.executable, "-m", f"bench.{name}"]
        if args.quick:
            cmd.append("--quick")
        if args.docs:
            cmd += ["--docs", args.docs]
        if args.jobs != 2 and name in ("accuracy", "tune", "retrieval", "planted", "plateau"):
            cmd += ["--jobs", str(args.jobs)]
        log = logs / f"{name}{'-quick' if args.quick else ''}.log"
        _report.log(f"$ {' '.join(cmd[1:])}  (log: {log})")
        t0 = time.perf_counter()
        with open(log, "w", encoding="utf-8") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=_report.REPO)
        dt = time.perf_counter() - t0
        _report.log(
            f"  {name}: {'ok' if rc.returncode == 0 else f'FAILED ({rc.returncode})'} in {dt / 60:.1f} min"
        )
        if rc.returncode != 0:
            failed.append(name)
    _report.log(f"total {(time.perf_counter() - t_all) / 60:.1f} min; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
