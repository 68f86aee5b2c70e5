"""Opening a routing record: the Overview's numbers of a 10M-row record in the time of a 10k-row one.

The bench writes synthetic records (generated here, in a temporary folder, never in the repo) with
``analysis.records.RecordWriter``: D domains, E experts, a top-k gate, softmax of random logits,
in row groups as they are generated.  It then times, for each size, in a fresh process per size:

- ``open``: ``open_record(path, check="footer")`` - record.json and the Parquet footers (range
  checks from row-group statistics, P(e|d) sums); what the dashboard's sidebar and Overview read;
- ``overview``: ``open`` + ``analysis.measures.summarize`` of the stored statistics (P(e|d), MI,
  entropy, load) - the Overview's routing numbers;
- ``auto``: ``open_record(path)`` as the dashboard opens a record (every row checked up to 1M rows);
- ``rows``: ``record_collection`` (reads prediction, label, domain and top-1 of every row; O(N),
  what per-row views such as metrics recomputation need; not on the Overview's path).

Each time is the median of ``--repeats`` runs.

    python -m bench.record_open                  # 10k and 10M rows (about 5 min on 2 cores)
    python -m bench.record_open --quick          # CI smoke run
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import _common, _report

SECTION = "record_open"


def write_record(path: Path, rows: int, d: int, e: int, k: int, chunk: int = 1_000_000) -> float:
    """A synthetic record of ``rows`` rows; returns the seconds it took."""
    from analysis.records import ExpertInfo, GateInfo, RecordMeta, RecordWriter

    meta = RecordMeta(
        model_name="synthetic",
        model_description="random softmax gate (bench.record_open)",
        domains=tuple(f"domain_{i}" for i in range(d)),
        gates=(GateInfo("gate", tuple(ExpertInfo(f"expert_{j}") for j in range(e)), top_k=k),),
        command="python -m bench.record_open",
    )
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 1.5, (d, e))  # each domain prefers some experts
    t0 = time.perf_counter()
    with RecordWriter(path, meta, sample_size=2000, row_group_rows=262_144) as w:
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            dom = rng.integers(0, d, n)
            logits = rng.standard_normal((n, e)) + bias[dom]  # [n, E]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            top = np.argsort(-p, axis=1)[:, :k]
            pred = 1 / (1 + np.exp(-rng.standard_normal(n)))
            w.write(
                domain=dom,
                label=(rng.uniform(size=n) < pred).astype(np.float32),
                prediction=pred,
                probs={"gate": p},
                topk={"gate": top},
                expert_outputs=lambda local: (rng.standard_normal((len(local), e, 8)), None),
            )
            done += n
    return time.perf_counter() - t0


def worker(path: str, repeats: int) -> dict:
    """Time the opening steps of the record at ``path`` (in this process)."""
    from analysis.measures import summarize
    from analysis.records import open_record
    from analysis.records.collection import record_collection

    def timed(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def overview() -> None:
        rec = open_record(path, check="footer")
        summarize(rec.stats["gate"], list(rec.domains))

    overview()  # warm-up: imports and first-call costs
    return {
        "open_s": timed(lambda: open_record(path, check="footer")),
        "overview_s": timed(overview),
        "auto_s": timed(lambda: open_record(path)),
        "rows_s": timed(lambda: record_collection(open_record(path, check="footer"))),
    }


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", default="10000,10000000", help="record sizes (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per step (median)")
    p.add_argument("--worker", default=None, help=argparse_hidden())
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        args = p.parse_args(argv)
        print(json.dumps(worker(args.worker, args.repeats)))
        return 0
    args, argv = _common.parse(p, argv)
    sizes = [int(s) for s in args.rows.split(",")]
    if args.quick:
        sizes, args.repeats = [1_000, 20_000], 1
    d, e, k = 8, 16, 2
    machine = _report.machine()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cesaa-bench-record-"))
    results = []
    try:
        for n in sizes:
            path = tmp / f"rec-{n}"
            _report.log(f"writing a {n:,}-row record")
            write_s = write_record(path, n, d, e, k)
            size_mb = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.record_open",
                    "--worker",
                    str(path),
                    "--repeats",
                    str(args.repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=_report.REPO,
            )
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.append({"rows": n, "write_s": write_s, "mb": size_mb, **res})
            shutil.rmtree(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        [
            f"{r['rows']:,}",
            f"{r['mb']:.1f}",
            f"{r['write_s']:.1f}",
            f"{r['open_s'] * 1e3:.1f}",
            f"{r['overview_s'] * 1e3:.1f}",
            f"{r['auto_s'] * 1e3:.1f}",
            f"{r['rows_s']:.2f}",
        ]
        for r in results
    ]
    small, big = results[0], results[-1]
    ratio = big["overview_s"] / small["overview_s"]
    verdict = (
        f"Overview numbers of the {big['rows']:,}-row record: {big['overview_s'] * 1e3:.1f} ms, "
        f"{ratio:.2f}x the {small['rows']:,}-row record's {small['overview_s'] * 1e3:.1f} ms "
        f"({big['rows'] / small['rows']:.0f}x the rows).  Of that, opening (record.json and the "
        f"footer checks) takes {small['open_s'] * 1e3:.1f} ms and {big['open_s'] * 1e3:.1f} ms: "
        "the footer's range checks grow with the number of row groups (one per 262,144 rows), "
        "the rest is `summarize` of the stored sums, independent of N.  Reading every row's "
        f"scalars (`all rows`) grows with N: {big['rows_s']:.2f} s against "
        f"{small['rows_s']:.2f} s - that is why the Overview reads the statistics stored in "
        "record.json instead.  `auto open` is how the dashboard opens a record: every row is "
        "checked up to 1M rows (so small records pay a full check), only the footers above.  "
        "Times are medians on a shared machine; the load average is in the header."
    )
    notes = (
        f"Synthetic records: D={d} domains, E={e} experts, top-{k} gate, a 2,000-row "
        "expert-output sample; Parquet row groups of 262,144 rows; every size opened in a fresh "
        f"process; times are medians of {args.repeats} runs.  'write s' includes generating the "
        "rows and the per-domain metrics computed at close."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Opening a routing record: Overview time against record size",
                _report.command("bench.record_open", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                [
                    "rows",
                    "MiB on disk",
                    "write s",
                    "open ms",
                    "overview ms",
                    "auto open ms",
                    "all rows s",
                ],
                rows,
            ),
            verdict,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
