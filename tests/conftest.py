from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from skip_summary import pytest_terminal_summary  # noqa: F401  (the skip reasons section)

torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and the machine has 2 cores)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CESAA_DATA_DIR", REPO.parent / "shared" / "data"))
ML100K = DATA_DIR / "movielens-100k"


@pytest.fixture(scope="session", autouse=True)
def record_cache(tmp_path_factory):
    """Checkpoints' cached records (analysis.records.checkpoint.cached_record) go to one folder
    per test session, never to the user's cache."""
    old = os.environ.get("CESAA_RECORD_CACHE")
    os.environ["CESAA_RECORD_CACHE"] = str(tmp_path_factory.mktemp("record-cache"))
    yield
    if old is None:
        os.environ.pop("CESAA_RECORD_CACHE", None)
    else:
        os.environ["CESAA_RECORD_CACHE"] = old


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100k not found at {ML100K} (set CESAA_DATA_DIR)")
    return ML100K


@pytest.fixture(scope="session")
def small_data():
    """A small planted synthetic dataset shared by the trainer/checkpoint/CLI tests."""
    from cesaa.data import load_data

    return load_data("synthetic:rows=20000,domains=3,seed=0")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and steadier on a busy machine.  A module opts in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
