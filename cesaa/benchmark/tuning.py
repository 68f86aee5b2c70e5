"""Tuning with an equal budget per model: one Optuna study per model, TPE, per-epoch pruning.

Every model gets the same number of trials (pruned trials count) under the same protocol (epoch cap,
early stopping); a trial samples the model's declared search space
(:func:`cesaa.models.registry.model_search_space`), trains on the training split with the tuning
seed and is scored by its best validation monitor (the test split is never read for selection).
After each epoch the validation monitor is reported to Optuna and the median pruner may stop the
trial.  Studies live in an Optuna storage: a journal file in the output folder by default (safe for
several processes), or any storage URL (``sqlite:///tune.db``, ``postgresql://...`` to share one
study between machines, ``journal:PATH``).  Optuna is imported lazily: ``pip install optuna``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cesaa.benchmark.protocol import RunTask, run_task

SURPLUS = "surplus"  # user attr of a trial started past the budget by a racing worker (not trained)
NO_IMPROVEMENT = "no_improvement"  # user attr of a failed trial that trained (it used its share)
OWNER, BEAT = "owner", "heartbeat"  # user attrs: "host:pid" of the worker, time of its last epoch
STALE_AFTER_S = 6 * 3600.0  # a running trial of another machine silent this long is interrupted
TUNE_SEED = 10_000  # model seed of every tuning trial: distinct from the final seeds 0..S-1


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "tuning (--trials > 0) needs optuna: pip install optuna (or the 'dev' extra)"
        ) from None
    return optuna


def open_storage(url: str) -> Any:
    """An Optuna storage from a URL: ``journal:PATH`` (a journal file, safe for several processes on
    one machine or a shared file system), or an RDB URL (``sqlite:///PATH``, ``postgresql://...``,
    ``mysql://...``; several machines share one study through it)."""
    optuna = _optuna()
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(
            f"--storage {url!r}: expected journal:PATH or an RDB URL such as sqlite:///tune.db"
        )
    return url


@dataclass
class TuneJob:
    """One worker's share of one model's study (every worker runs until the study has ``trials``)."""

    task: dict  # a RunTask as dict: source, model, protocol, setup (seed and params set per trial)
    study_name: str
    storage: str
    trials: int
    sampler_seed: int = 0
    warmup_epochs: int = 2  # the pruner never stops a trial before this many epochs


class _Pruned(Exception):
    pass


def _counts(t: Any) -> bool:
    """Whether a trial uses the budget: complete, pruned (not surplus), running, or failed because
    its training never improved.  A trial failed otherwise (its worker was killed or crashed) is
    redone."""
    from optuna.trial import TrialState

    if t.user_attrs.get(SURPLUS):
        return False
    return t.state != TrialState.FAIL or bool(t.user_attrs.get(NO_IMPROVEMENT))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str, beat: float, now: float, stale_after_s: float) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return now - beat < stale_after_s
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def fail_interrupted(study: Any, stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark the running trials whose worker is gone (a killed benchmark) as failed, so that they
    stop holding a share of the budget and are redone; returns their numbers.  A worker on this
    machine is gone when its process is; one elsewhere when its last heartbeat (an epoch) is
    older than ``stale_after_s``."""
    from optuna.trial import TrialState

    now, gone = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        beat = float(t.user_attrs.get(BEAT, 0.0))
        if owner is None or _alive(owner, beat, now, stale_after_s):
            continue  # a trial of an older version has no owner: left alone
        study.tell(t.number, state=TrialState.FAIL)
        gone.append(t.number)
    return gone


def _budget_used(study: Any) -> int:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(_counts(t) for t in study.get_trials(deepcopy=False, states=done))


def _objective(job: TuneJob) -> Any:
    from cesaa.models.registry import model_search_space

    optuna = _optuna()
    base = RunTask.from_dict(job.task)
    space = model_search_space(base.model)
    if space is None:
        raise ValueError(f"model {base.model!r} declares no search space; tune it with --trials 0")
    monitor = base.protocol.train.get("monitor", "auc")
    sign = -1.0 if monitor == "logloss" else 1.0

    def objective(trial: Any) -> float:
        trial.set_user_attr(OWNER, _owner())
        trial.set_user_attr(BEAT, time.time())
        before = sum(
            _counts(t) for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number
        )
        if before >= job.trials:  # parallel workers raced past the budget: train nothing
            trial.set_user_attr(SURPLUS, True)
            trial.study.stop()
            raise optuna.TrialPruned()
        params = space(trial)
        trial.set_user_attr("params", _jsonable(params))
        seen = {"epochs": 0, "seconds": 0.0}

        def report(event: dict) -> None:
            if event.get("event") != "epoch":
                return
            seen["epochs"] += 1
            seen["seconds"] += float(event.get("time_s", 0.0))
            trial.set_user_attr(BEAT, time.time())
            value = event.get(f"val/{monitor}", math.nan)
            if math.isfinite(value):
                trial.report(sign * value, event["epoch"])
                if trial.should_prune():
                    raise _Pruned()

        task = RunTask(**{**vars(base), "params": params, "seed": TUNE_SEED, "phase": "tune"})
        from cesaa.monitor import NoImprovementError

        try:
            rec = run_task(task, callback=report)
        except NoImprovementError:
            trial.set_user_attr(NO_IMPROVEMENT, True)
            raise
        except _Pruned:
            trial.set_user_attr("epochs", seen["epochs"])
            trial.set_user_attr("seconds", seen["seconds"])
            raise optuna.TrialPruned() from None
        trial.set_user_attr("epochs", rec["epochs"])
        trial.set_user_attr("seconds", rec["seconds"])
        return sign * rec["val"].get(monitor, math.nan)

    return objective


def run_tune_job(job: TuneJob | dict) -> dict:
    """Run trials of one study until it holds ``job.trials`` finished (complete or pruned) trials."""
    optuna = _optuna()
    job = TuneJob(**job) if isinstance(job, dict) else job
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = optuna.create_study(
        study_name=job.study_name,
        storage=open_storage(job.storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=job.sampler_seed, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=job.warmup_epochs),
        load_if_exists=True,
    )
    fail_interrupted(study)  # a killed earlier run's trials are redone, not counted

    def stop(study: Any, _trial: Any) -> None:
        if _budget_used(study) >= job.trials:
            study.stop()

    # workers racing for the last trial may start one too many: it is marked surplus and trains
    # nothing, so exactly ``trials`` trials (complete, pruned or failed) are trained and counted
    if _budget_used(study) < job.trials:
        from cesaa.monitor import NoImprovementError

        # a configuration whose training never improves on its initial weights is a failed trial
        # (it used its share of the budget), not the end of the benchmark
        study.optimize(
            _objective(job), n_trials=job.trials, callbacks=[stop], catch=(NoImprovementError,)
        )
    return {"study": job.study_name, "summary": f"study {job.study_name} has its trials"}


def study_summary(study_name: str, storage: str) -> dict:
    """Best params (as the search space returned them) and the trial counts of a finished study.

    Raises ``ValueError`` when the study has no complete trial (every trial pruned or failed).
    """
    optuna = _optuna()
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(
            f"study {study_name!r} not found in {storage}: run --stage tune (or all) first, with "
            "the same --storage and --study-prefix"
        ) from None
    trials = [t for t in study.get_trials(deepcopy=False) if _counts(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"study {study_name!r}: no complete trial (all pruned or failed)")
    best = max(complete, key=lambda t: t.value)
    return {
        "study": study_name,
        "params": best.user_attrs.get("params", {}),
        "best_value": float(best.value),
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "seconds": float(sum(t.user_attrs.get("seconds", 0.0) for t in trials)),
        "epochs": int(sum(t.user_attrs.get("epochs", 0) for t in trials)),
    }


def _jsonable(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def params_from_json(params: dict) -> dict:
    """Undo ``_jsonable``: lists (tuple fields stored in JSON) back to tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
