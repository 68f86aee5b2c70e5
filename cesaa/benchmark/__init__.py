"""Fair model comparison on any data: equal-budget tuning (Optuna), seed-paired ranking, reports.

Uses only the training and metrics code (never ``analysis``).  Entry points: ``cesaa bench`` (see
:mod:`cesaa.benchmark.cli`) and :func:`run_benchmark`.
"""

from __future__ import annotations

from cesaa.benchmark.leaderboard import Leaderboard, build_leaderboard
from cesaa.benchmark.protocol import Protocol, RunTask, run_task
from cesaa.benchmark.report import read_leaderboard, write_leaderboard
from cesaa.benchmark.runner import BenchSpec, run_benchmark
from cesaa.benchmark.stats import holm, paired_difference

__all__ = [
    "BenchSpec",
    "Leaderboard",
    "Protocol",
    "RunTask",
    "build_leaderboard",
    "holm",
    "paired_difference",
    "read_leaderboard",
    "run_benchmark",
    "run_task",
    "write_leaderboard",
]
