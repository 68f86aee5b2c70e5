"""``run_benchmark``: tune every model with the same budget on validation, then train each selected
configuration with fresh seeds and rank the models on test.

Stages: ``tune`` (only the Optuna studies: run it on several machines against one RDB storage),
``final`` (read the studies' best configurations, train seeds 0..S-1, write the leaderboard) or
``all`` (both).  With ``trials = 0`` every model runs with its registry defaults.

Nothing finished is lost when a long benchmark stops: the studies live in the Optuna storage, and
every final run's record is written to ``<out>/final/<model>-seed<s>.json`` as soon as it ends.
Rerunning the same command resumes the studies and trains only the final runs whose record is
missing or was made for another task (other data, parameters, protocol or setup).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cesaa.benchmark.leaderboard import Leaderboard, build_leaderboard
from cesaa.benchmark.protocol import Protocol, RunTask, load_source, run_setup, run_task
from cesaa.benchmark.report import write_leaderboard
from cesaa.benchmark.tuning import (
    TUNE_SEED,
    TuneJob,
    params_from_json,
    run_tune_job,
    study_summary,
)

log = logging.getLogger(__name__)
STAGES = ("all", "tune", "final")


@dataclass
class BenchSpec:
    """Everything a benchmark run needs; ``command`` is recorded in the outputs as given."""

    source: str
    models: tuple[str, ...]
    out: str
    seeds: int = 3
    trials: int = 0
    jobs: int = 1
    storage: str | None = None  # default: journal:<out>/optuna.journal
    study_prefix: str = "cesaa-bench"
    stage: str = "all"
    level: float = 0.95
    protocol: Protocol = field(default_factory=Protocol)
    setup: str | None = None  # "module:function" run in every process (e.g. extra models)
    command: str = ""
    machine: str = ""

    def __post_init__(self) -> None:
        self.models = tuple(m.strip() for m in self.models if m.strip())
        if not self.models:
            raise ValueError("--models: give at least one model name")
        dup = sorted({m for m in self.models if self.models.count(m) > 1})
        if dup:
            raise ValueError(f"--models: {dup} listed twice")
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds} must be >= 1")
        if self.trials < 0:
            raise ValueError(f"--trials={self.trials} must be >= 0")
        if self.jobs < 1:
            raise ValueError(f"--jobs={self.jobs} must be >= 1")
        if not 0.0 < self.level < 1.0:  # NaN fails this too
            raise ValueError(
                f"--level={self.level} must be between 0 and 1 (a confidence level: 0.95, not 95)"
            )
        if self.stage not in STAGES:
            raise ValueError(f"--stage={self.stage!r} must be one of {list(STAGES)}")
        if self.stage != "all" and self.trials == 0:
            raise ValueError(f"--stage={self.stage} needs --trials > 0 (it splits tuning)")

    @property
    def storage_url(self) -> str:
        return self.storage or f"journal:{Path(self.out) / 'optuna.journal'}"

    def study(self, model: str) -> str:
        return f"{self.study_prefix}-{model}"


def _init_worker(setup: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    run_setup(setup)


def parallel_map(
    fn: Callable[[Any], dict],
    items: Sequence[Any],
    jobs: int,
    setup: str | None = None,
    progress: Callable[[str], None] | None = None,
    label: Callable[[Any], str] = str,
) -> list[dict]:
    """``[fn(x) for x in items]`` in ``jobs`` spawned processes (one torch thread each), in order."""
    out: list[dict | None] = [None] * len(items)
    t0 = time.perf_counter()

    def done(i: int, r: dict) -> None:
        out[i] = r
        if progress is not None:
            n = sum(x is not None for x in out)
            progress(
                f"[{n}/{len(items)}] {label(items[i])}: {r.get('summary', '')} "
                f"({time.perf_counter() - t0:.0f} s)"
            )

    if jobs <= 1 or len(items) <= 1:
        for i, x in enumerate(items):
            done(i, fn(x))
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(
            min(jobs, len(items)), mp_context=ctx, initializer=_init_worker, initargs=(setup,)
        ) as ex:
            futures = {ex.submit(fn, x): i for i, x in enumerate(items)}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    return [r for r in out if r is not None]


FINAL_DIR = "final"  # <out>/final/<model>-seed<s>.json: one finished final run each


def final_record_path(out: str | Path, task: dict) -> Path:
    return Path(out) / FINAL_DIR / f"{task['model']}-seed{task['seed']}.json"


def load_final_record(path: Path, task: dict) -> dict | None:
    """The record saved at ``path`` if it was made for exactly ``task``, else None."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file is redone, never trusted
    if saved.get("task") != json.loads(json.dumps(task)):
        return None
    return saved["record"]


def _final_run(job: dict) -> dict:
    task = job["task"]
    rec = run_task(task)
    rec["summary"] = (
        f"test auc {rec['test'].get('auc', float('nan')):.4f}, "
        f"val auc {rec['val'].get('auc', float('nan')):.4f}, {rec['epochs']} epochs"
    )
    path = Path(job["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"task": task, "record": rec}), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a record is there whole or not at all
    return rec


def _check_models(spec: BenchSpec) -> None:
    from cesaa.models.registry import model_names, model_search_space

    run_setup(spec.setup)
    known = set(model_names())
    unknown = [m for m in spec.models if m not in known]
    if unknown:
        raise ValueError(f"--models: unknown model(s) {unknown}; available: {sorted(known)}")
    if spec.trials > 0:
        bare = [m for m in spec.models if model_search_space(m) is None]
        if bare:
            raise ValueError(
                f"--trials {spec.trials}: model(s) {bare} declare no search space, so they cannot "
                "be tuned with the same budget; drop them or use --trials 0"
            )


def warmup_epochs(spec: BenchSpec) -> int:
    """Epochs before the pruner may stop a trial: those holding ``min_steps`` optimizer steps (the
    trainer's own plateau guard, see ``cesaa.stopping``), and at least 2."""
    from cesaa.config import TrainConfig
    from cesaa.stopping import steps_per_epoch

    cfg = TrainConfig(**spec.protocol.train, device=spec.protocol.device)
    p = spec.protocol
    rows = len(load_source(spec.source, p.split_seed, p.max_train, p.split).train)
    return max(2, math.ceil(cfg.min_steps / steps_per_epoch(rows, cfg.batch_size)))


def _pruning(spec: BenchSpec) -> str:
    """How the pruner acts, for the budget line: from which epoch on, or never when the warm-up
    outlasts the epoch cap (the pruner only judges epochs past its warm-up)."""
    from cesaa.config import TrainConfig

    cfg = TrainConfig(**spec.protocol.train, device=spec.protocol.device)
    warmup = warmup_epochs(spec)
    if warmup > cfg.epochs:
        return (
            f"no pruning: min_steps={cfg.min_steps} needs {warmup} epochs of warm-up and runs "
            f"stop at {cfg.epochs} epochs"
        )
    return f"median pruning per epoch after {warmup} epochs"


def tune_models(spec: BenchSpec, progress: Callable[[str], None] | None = None) -> None:
    """Run every model's study until it holds ``spec.trials`` finished trials."""
    warmup = warmup_epochs(spec)
    jobs = [
        TuneJob(
            task=RunTask(spec.source, m, 0, protocol=spec.protocol, setup=spec.setup).to_dict(),
            study_name=spec.study(m),
            storage=spec.storage_url,
            trials=spec.trials,
            sampler_seed=w,
            warmup_epochs=warmup,
        )
        for m in spec.models
        for w in range(min(spec.jobs, spec.trials))
    ]
    if spec.jobs > 1:
        # create every study once, before the workers race to create it
        for j in {j.study_name: j for j in jobs}.values():
            run_tune_job(TuneJob(**{**vars(j), "trials": 0}))
    parallel_map(
        run_tune_job,
        [vars(j) for j in jobs],
        spec.jobs,
        spec.setup,
        progress,
        label=lambda j: f"tuning {j['study_name']}",
    )


def run_benchmark(
    spec: BenchSpec, progress: Callable[[str], None] | None = None
) -> Leaderboard | None:
    """Tune (``trials > 0``), train the selected configurations with seeds 0..S-1, rank them and
    write the leaderboard files into ``spec.out``.  Returns None for ``stage="tune"``."""
    _check_models(spec)
    t0 = time.perf_counter()
    Path(spec.out).mkdir(parents=True, exist_ok=True)
    if spec.trials > 0 and spec.stage in ("all", "tune"):
        tune_models(spec, progress)
        if spec.stage == "tune":
            return None
    tuning: dict[str, dict] = {}
    params: dict[str, dict] = {m: {} for m in spec.models}
    if spec.trials > 0:
        for m in spec.models:
            tuning[m] = study_summary(spec.study(m), spec.storage_url)
            params[m] = params_from_json(tuning[m]["params"])
    tasks = [
        RunTask(spec.source, m, s, params[m], spec.protocol, spec.setup).to_dict()
        for s in range(spec.seeds)
        for m in spec.models
    ]
    saved = [load_final_record(final_record_path(spec.out, t), t) for t in tasks]
    todo = [t for t, r in zip(tasks, saved, strict=True) if r is None]
    if progress is not None and len(todo) < len(tasks):
        progress(
            f"{len(tasks) - len(todo)} of {len(tasks)} final runs already finished in "
            f"{Path(spec.out) / FINAL_DIR}: kept, not retrained"
        )
    fresh = iter(
        parallel_map(
            _final_run,
            [{"task": t, "path": str(final_record_path(spec.out, t))} for t in todo],
            spec.jobs,
            spec.setup,
            progress,
            label=lambda j: f"{j['task']['model']} seed {j['task']['seed']}",
        )
    )
    runs = [r if r is not None else next(fresh) for r in saved]
    lb = build_leaderboard(runs, spec.level, tuning, _meta(spec, runs, time.perf_counter() - t0))
    write_leaderboard(lb, spec.out, runs)
    return lb


def _meta(spec: BenchSpec, runs: list[dict], seconds: float) -> dict:
    p = spec.protocol
    train = ", ".join(f"{k}={v}" for k, v in sorted(p.train.items())) or "TrainConfig defaults"
    budget = (
        f"{spec.trials} Optuna trials per model (TPE; {_pruning(spec)}; pruned trials count) "
        "on the validation split with model "
        f"seed {TUNE_SEED}, then the best trial's configuration "
        f"with fresh seeds 0..{spec.seeds - 1}"
        if spec.trials
        else f"no tuning: registry defaults, seeds 0..{spec.seeds - 1}"
    )
    return {
        "command": spec.command,
        "data": f"{spec.source} (split seed {p.split_seed}"
        + (f", first {p.max_train} training rows" if p.max_train else "")
        + f"; domains {', '.join(runs[0].get('domains', []))})",
        "protocol": f"{train}; device {p.device}; early stopping on validation, test metrics of "
        "the best-validation epoch",
        "budget": budget,
        "machine": spec.machine,
        "finished": f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, wall time "
        f"{seconds / 60:.1f} min with {spec.jobs} process(es)",
        "seeds": spec.seeds,
        "trials": spec.trials,
        "models": list(spec.models),
        "source": spec.source,
    }
