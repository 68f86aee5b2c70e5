"""What the benchmark scripts share: the command line, the data, the ranking protocol, parallel runs.

Every script takes ``--quick`` (a seconds-long smoke run for CI; its numbers mean nothing) and
``--docs PATH`` (where its section is written; ``--docs -`` prints only).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench import _report

REPO = _report.REPO
DATA_DIR = Path(os.environ.get("CESAA_DATA_DIR", REPO.parent / "shared" / "data"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (CI); numbers mean nothing")
    p.add_argument(
        "--docs",
        default=str(_report.DOCS),
        help="markdown file whose section is (re)written; '-' prints only (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of this process (0: torch's default, all cores; --quick: 1)",
    )
    p.add_argument(
        "--allocator",
        choices=("retain", "default"),
        default="retain",
        help="retain: glibc keeps freed memory (cesaa.allocator, as cesaa's trainer, predict and "
        "CLI do); default: glibc's defaults (default: %(default)s)",
    )
    return p


def set_allocator(choice: str) -> str:
    """Apply ``--allocator`` in this process and in the processes it spawns (they inherit
    ``CESAA_MALLOC``): returns the setting's one-line description.  ``ValueError`` when the
    process already runs with the other setting (glibc's cannot be undone)."""
    from cesaa import allocator

    os.environ[allocator.ENV] = choice
    try:
        return allocator.retain_freed_memory().describe()
    except ValueError as e:
        raise ValueError(f"--allocator {choice}: {e}; run the benchmark in a fresh process") from e


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list]:
    """Parse ``argv`` (default ``sys.argv[1:]``), set the torch thread count and the allocator
    (``--allocator``, see :func:`set_allocator`)."""
    import sys

    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    set_allocator(args.allocator)
    threads = args.threads or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    return args, argv


def add_jobs(p: argparse.ArgumentParser, default: int = 2) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        default=default,
        help="runs in parallel, one torch thread each (default: %(default)s)",
    )


def ml100k_source() -> str:
    """The MovieLens-100k source string; ``FileNotFoundError`` naming the folder when missing."""
    folder = DATA_DIR / "movielens-100k"
    if not (folder / "u.data").is_file():
        raise FileNotFoundError(f"MovieLens-100k not found in {folder} (set CESAA_DATA_DIR)")
    return f"movielens-100k:{folder}"


def rechub_status() -> str | None:
    """None when torch-rechub is importable (its adapters are registered), else why not."""
    from bench import _rechub

    return _rechub.register()


def write(name: str, args: argparse.Namespace, body: str) -> None:
    """Print the section and write it into ``args.docs`` (unless ``--docs -``)."""
    print(body)
    if args.docs != "-":
        path = _report.write_section(name, body, args.docs)
        _report.log(f"wrote section {name!r} of {path}")


def _init_worker(threads: int, allocator_choice: str | None = None) -> None:
    """A spawned process's set-up: ``threads`` torch threads and the allocator setting
    (``allocator_choice``, or the ``CESAA_MALLOC`` inherited from :func:`set_allocator`)."""
    import torch

    from cesaa import allocator

    torch.set_num_threads(threads)
    if allocator_choice is not None:
        set_allocator(allocator_choice)
    else:
        allocator.retain_freed_memory()


def in_fresh_process(
    fn: Callable[..., Any], *args: Any, threads: int, allocator_choice: str
) -> Any:
    """``fn(*args)`` in a new spawned process with ``threads`` torch threads and
    ``--allocator allocator_choice``; its result (the process then exits)."""
    with ProcessPoolExecutor(
        1,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, allocator_choice),
    ) as ex:
        return ex.submit(fn, *args).result()


def run_all(
    fn: Callable[[Any], dict],
    tasks: Sequence[Any],
    jobs: int,
    label: Callable[[Any], str] = str,
) -> list[dict]:
    """``[fn(t) for t in tasks]``, in ``jobs`` spawned processes with one torch thread each
    (``jobs=1``: in this process, with its current thread count).  Results in task order."""
    results: list[dict | None] = [None] * len(tasks)
    t0 = time.perf_counter()

    def done(i: int, r: dict) -> None:
        results[i] = r
        n = sum(x is not None for x in results)
        _report.log(
            f"[{n}/{len(tasks)}] {label(tasks[i])}: {r.get('summary', '')} "
            f"({time.perf_counter() - t0:.0f} s)"
        )

    if jobs <= 1:
        for i, t in enumerate(tasks):
            done(i, fn(t))
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(
            jobs, mp_context=ctx, initializer=_init_worker, initargs=(1,)
        ) as ex:
            futures = {ex.submit(fn, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    return [r for r in results if r is not None]


def group(results: Iterable[dict], key: str) -> dict[Any, list[dict]]:
    """Results grouped by ``r[key]``, groups in first-seen order."""
    out: dict[Any, list[dict]] = {}
    for r in results:
        out.setdefault(r[key], []).append(r)
    return out
