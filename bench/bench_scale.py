"""Scale benchmark: training rows/s with 1 vs 2 torchrun processes, and peak memory streaming Parquet.

    python -m bench.bench_scale            # full: 200k-row DDP runs, a 10M-row Parquet stream
    python -m bench.bench_scale --quick    # seconds-long smoke run for CI (numbers mean nothing)

1. **Data parallel**: ``torchrun --nproc_per_node=N -m cesaa train`` (gloo, CPU, one torch thread per
   process) on the same synthetic data and global batch; rows/s = training rows / epoch time
   (median over the epochs after the first; an epoch's time includes its validation pass).
2. **Out-of-core**: a Parquet file of ``--stream-rows`` rows (a 1M-row planted table written 10
   times, row groups of 64k rows) is opened as ``stream:`` (one validating pass that fits the
   encoders), then a model predicts every row of it, keeping only routing statistics.  Each step runs
   in a fresh process whose peak resident memory (``ru_maxrss``) is reported next to what the same
   rows take in memory as a DataFrame.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import _common, _report

REPO = _report.REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_run(nproc: int, rows: int, epochs: int, batch: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    sets = [f"train.epochs={epochs}", f"train.batch_size={batch}", "train.patience=0"]
    sets += ["train.device=cpu", "train.mi_scope=global"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cesaa", "train"]
    cmd += ["--data", f"synthetic:rows={rows},domains=4,seed=0", "--out", str(out), "--quiet"]
    cmd += [a for s in sets for a in ("--set", s)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"torchrun failed ({r.returncode}): {r.stderr[-2000:]}")
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [h["time_s"] for h in hist[1:]] or [hist[0]["time_s"]]
    train_rows = int(round(0.8 * rows))
    meta = json.loads((out / "meta.json").read_text())
    return {
        "nproc": nproc,
        "epoch_s": statistics.median(times),
        "rows_per_s": train_rows / statistics.median(times),
        "wall_s": time.perf_counter() - t0,
        "test_auc": meta["metrics"]["test"]["auc"],
    }


def write_parquet(path: Path, rows: int, block: int) -> tuple[Path, int]:
    """``rows`` rows: a planted table of ``block`` rows repeated; returns the schema and bytes of
    the in-memory DataFrame of all rows (what a whole read would hold before encoding)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from cesaa.data.synthetic import make_planted_frame

    planted = make_planted_frame(block, 4, seed=0)
    table = pa.Table.from_pandas(planted.frame, preserve_index=False)
    frame_bytes = int(planted.frame.memory_usage(deep=True).sum()) * rows // block
    with pq.ParquetWriter(path, table.schema) as w:
        left = rows
        while left > 0:
            w.write_table(table.slice(0, min(block, left)), row_group_size=65_536)
            left -= block
    s = planted.schema
    schema = {
        "data": path.name,
        "label": s.label,
        "domain": s.domain,
        "domains": list(s.domains),
        "categorical": list(s.categorical),
        "numeric": list(s.numeric),
        "user": s.user,
        "item": s.item,
        "time": s.time,
    }
    schema_path = path.with_suffix(".yaml")
    schema_path.write_text(yaml.safe_dump(schema))
    return schema_path, frame_bytes


def _peak_rss_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` (Linux; unlike ``ru_maxrss`` it does not
    inherit the parent's peak across fork + exec), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_worker(schema: str, step: str) -> dict:
    """One step in this (fresh) process; prints its timings and peak RSS as JSON."""
    import torch

    torch.set_num_threads(1)
    from analysis.stream import stream_routing_stats
    from cesaa.data.stream import open_stream
    from cesaa.models.registry import build_model, default_config

    base = _peak_rss_mib()
    t0 = time.perf_counter()
    data = open_stream(f"stream:{schema}")  # fits the encoders on the hashed training rows
    out = {"open_s": time.perf_counter() - t0, "rows": data.description["rows"]}
    if step == "predict":
        data = open_stream(f"stream:{schema}", split="none", encoders=data.encoders)  # all rows
        torch.manual_seed(0)
        model = build_model(default_config("cesaa"), data.spec)
        t1 = time.perf_counter()
        stats = stream_routing_stats(model, data.test.eval_batches(8192), num_domains=4)
        out["predict_s"] = time.perf_counter() - t1
        out["stats_rows"] = stats.rows
    out["base_rss_mib"] = base
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def run_stream(schema: Path, step: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench.bench_scale", "--stream-worker", str(schema), step]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"stream worker failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stream-worker"]:
        print(json.dumps(stream_worker(argv[1], argv[2])))
        return
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="synthetic rows for the DDP runs")
    p.add_argument("--stream-rows", type=int, default=None, help="rows of the streamed file")
    args = p.parse_args(argv)
    rows = args.rows or (6_000 if args.quick else 200_000)
    stream_rows = args.stream_rows or (200_000 if args.quick else 10_000_000)
    epochs, batches = (2, (512,)) if args.quick else (3, (1024, 4096))
    machine = _report.machine(threads=1)
    t0 = time.perf_counter()

    ddp = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            for nproc in (1, 2):
                _report.log(f"torchrun --nproc_per_node={nproc}: {rows} rows, batch {batch}")
                run = ddp_run(nproc, rows, epochs, batch, Path(tmp) / f"run{nproc}-{batch}")
                ddp.append({**run, "batch": batch})
        _report.log(f"writing a {stream_rows}-row Parquet file")
        t1 = time.perf_counter()
        block = min(stream_rows, 1_000_000)
        schema, frame_bytes = write_parquet(Path(tmp) / "big.parquet", stream_rows, block)
        write_s = time.perf_counter() - t1
        file_mib = (Path(tmp) / "big.parquet").stat().st_size / 2**20
        streams = {}
        for step in ("open", "predict"):
            _report.log(f"stream step {step!r}")
            streams[step] = run_stream(schema, step)

    one = {r["batch"]: r for r in ddp if r["nproc"] == 1}
    rows_ddp = [
        (
            f"{r['nproc']} process{'es' if r['nproc'] > 1 else ''}",
            f"{r['batch']:,}",
            f"{r['rows_per_s']:,.0f}",
            f"{r['rows_per_s'] / one[r['batch']]['rows_per_s']:.2f}x",
            f"{r['epoch_s']:.2f}",
            f"{r['wall_s']:.1f}",
            f"{r['test_auc']:.4f}",
        )
        for r in ddp
    ]
    o, pr = streams["open"], streams["predict"]
    rows_stream = [
        (
            "open: validate every row + fit encoders",
            f"{o['rows']:,}",
            f"{o['open_s']:.1f}",
            f"{o['rows'] / o['open_s']:,.0f}",
            f"{o['peak_rss_mib']:,.0f}",
        ),
        (
            "open + predict every row (routing stats)",
            f"{pr['rows']:,}",
            f"{pr['open_s'] + pr['predict_s']:.1f}",
            f"{pr['rows'] / pr['predict_s']:,.0f}",
            f"{pr['peak_rss_mib']:,.0f}",
        ),
    ]
    notes = ("Quick mode: tiny sizes, the numbers mean nothing.\n\n" if args.quick else "") + (
        f"Data parallel: `synthetic:rows={rows},domains=4`, {epochs} epochs, "
        "gloo, one torch thread per process, `mi_scope=global`; `torchrun --nproc_per_node=1` is the "
        "plain single-process path.  The machine's 2 cores are shared with other work (see the "
        "load average), so the speed-up is a lower bound of what two free cores give."
    )
    body = "\n\n".join(
        [
            _report.header(
                "Scale: data-parallel training and out-of-core Parquet",
                _report.command("bench.bench_scale", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            "### Training rows/s, 1 vs 2 processes (torchrun, DistributedDataParallel)",
            _report.table(
                [
                    "processes",
                    "global batch",
                    "rows/s",
                    "speed-up",
                    "epoch s",
                    "wall s",
                    "test AUC",
                ],
                rows_ddp,
            ),
            f"### Streaming {stream_rows:,} rows from Parquet (bounded memory)",
            f"File: {file_mib:,.0f} MiB on disk, row groups of 65,536 rows, read in pieces of "
            f"65,536 rows (written in {write_s:.0f} s).  The same rows as one pandas DataFrame: "
            f"{frame_bytes / 2**20:,.0f} MiB before encoding.  Process memory after importing "
            f"torch: {o['base_rss_mib']:,.0f} MiB.",
            _report.table(["step", "rows", "seconds", "rows/s", "peak RSS MiB"], rows_stream),
        ]
    )
    _common.write("scale", args, body)


if __name__ == "__main__":
    main()
