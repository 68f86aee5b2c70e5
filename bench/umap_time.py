"""UMAP projection time for 5k and 20k points: cold, warm and cached, through
``analysis.embeddings.cached_projection`` (the path the report and dashboard use).

Each size runs in a fresh Python process:

- ``import umap``: the import alone (numba compiles or loads its on-disk cache);
- cold: the first ``cached_projection`` (empty cache) in the process, i.e. the first UMAP fit,
  including numba's JIT compilation of the code paths that are not cached on disk;
- warm: a second fit in the same process with another key (JIT done, cache miss);
- cached: the first key again, read from the ``.npz`` cache.

Points: expert-output-like data, 8 Gaussian clusters in 32 dimensions; UMAP parameters of
``analysis.embeddings.project`` (n_neighbors 15, min_dist 0.1, umap's default epochs,
random_state 0).

    python -m bench.umap_time            # full: 5k and 20k points (about 4 min on 2 cores)
    python -m bench.umap_time --quick    # CI smoke run (300 points, 20 epochs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import _common, _report

SECTION = "umap"


def points(n: int, dim: int = 32, clusters: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (clusters, dim))
    return centers[rng.integers(0, clusters, n)] + rng.normal(0, 1, (n, dim))


def worker(n: int, n_epochs: int | None) -> dict:
    from analysis.embeddings import cached_projection, project

    x = points(n)
    t0 = time.perf_counter()
    import umap  # noqa: F401

    out = {"n": n, "import_s": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory() as cache:

        def key(seed: int) -> dict:
            return {"bench": "umap_time", "n": n, "n_epochs": n_epochs, "seed": seed}

        def fit(seed: int):
            return lambda: project(x, "umap", n_epochs=n_epochs, seed=seed)

        for name, seed in (("cold_s", 0), ("warm_s", 1), ("cached_s", 0)):
            t1 = time.perf_counter()
            xy = cached_projection(cache, key(seed), fit(seed))
            out[name] = time.perf_counter() - t1
            assert xy.shape == (n, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="5000,20000")
    p.add_argument("--epochs", type=int, default=0, help="UMAP n_epochs (0: umap's default)")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        args = p.parse_args(argv)
        print(json.dumps(worker(args.worker, args.epochs or None)))
        return 0
    args, argv = _common.parse(p, argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.epochs = [300], args.epochs or 20
    machine = _report.machine(threads=1)  # before the run: its load average at the start
    t0 = time.perf_counter()
    from analysis.embeddings import umap_available

    results, skipped = [], None
    if not umap_available():
        skipped = "umap-learn is not installed (the 'dashboard' or 'dev' extra)"
    else:
        for n in sizes:
            _report.log(f"UMAP on {n:,} points in a fresh process")
            cmd = [sys.executable, "-m", "bench.umap_time", "--worker", str(n)]
            cmd += ["--epochs", str(args.epochs)]
            env = {**os.environ, "PYTHONPATH": str(_common.REPO)}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_common.REPO)
            if r.returncode != 0:
                raise RuntimeError(f"UMAP worker failed: {r.stderr[-2000:]}")
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    rows = [
        [
            f"{r['n']:,}",
            f"{r['import_s']:.1f}",
            f"{r['cold_s']:.1f}",
            f"{r['import_s'] + r['cold_s']:.1f}",
            f"{r['warm_s']:.1f}",
            f"{r['cached_s'] * 1e3:.1f} ms",
            f"{(r['import_s'] + r['cold_s']) / r['cached_s']:,.0f}x",
        ]
        for r in results
    ]
    epochs = args.epochs or "umap's default (500 below 10k points, 200 above)"
    notes = (
        f"Points in 32 dimensions (8 Gaussian clusters); n_neighbors 15, min_dist 0.1, n_epochs "
        f"{epochs}, random_state 0 (umap then runs single-threaded).  Every size in a fresh "
        "process: 'cold' pays numba's compilation of the code paths it does not keep in its "
        "on-disk cache (the cache state is whatever earlier runs on this machine left; "
        "SETUP-NOTES measured 22-28 s for a cold `import umap`); 'cold total' = import + "
        "first fit, what a user waits for without the cache."
    )
    if skipped:
        notes += f"\n\nSkipped: {skipped}."
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "UMAP projection time: cold, warm and cached",
                _report.command("bench.umap_time", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                [
                    "points",
                    "import umap s",
                    "cold fit s",
                    "cold total s",
                    "warm fit s",
                    "cached",
                    "cold total / cached",
                ],
                rows,
            ),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
