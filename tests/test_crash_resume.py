"""Crash safety: ``kill -9`` a training run mid-epoch, resume it with ``--resume``, get the same run.

Every file of a run folder is written to a temporary file and renamed into place, and
``train_state.json`` is written last (the commit point), so a kill at any moment leaves the last
committed epoch intact; a resumed run repeats the interrupted epoch with the same seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cesaa.checkpoint import load_checkpoint, read_tensors
from cesaa.cli import main

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "train",
    "--data",
    "synthetic:rows=12000,domains=3,seed=0",
    "--set",
    "train.epochs=3",
    "--set",
    "train.batch_size=128",
    "--set",
    "train.patience=5",
    "--quiet",
]


def _committed_epoch(run: Path) -> int:
    try:
        return json.loads((run / "train_state.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def _records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


# The run under test, with one change: a few optimizer steps into epoch 2 (epoch 1 committed) it
# writes a marker and blocks, so the kill lands mid-epoch by construction, not by timing.
PAUSED_RUN = """
import json, sys, time
from pathlib import Path
import torch
from cesaa.cli import main

run, marker = Path(sys.argv[1]), Path(sys.argv[2])
step, after_commit = torch.optim.Adam.step, []

def paused_step(self, *args, **kwargs):
    state = run / "train_state.json"
    if state.is_file() and json.loads(state.read_text())["epoch"] >= 0:
        after_commit.append(1)
        if len(after_commit) == 3:  # the third step of epoch 2
            marker.write_text("mid-epoch 2")
            time.sleep(3600)
    return step(self, *args, **kwargs)

torch.optim.Adam.step = paused_step
sys.exit(main([*sys.argv[3:], "--out", str(run)]))
"""


def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    run, marker = tmp_path / "killed", tmp_path / "mid-epoch"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(run), str(marker), *ARGS],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file():  # blocked inside epoch 2's third optimizer step
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not reach epoch 2 in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _committed_epoch(run) == 0  # killed before epoch 2 committed
    # nothing is half-written: every weights file loads, the checkpoint verifies its sha256
    for path in run.glob("*.safetensors"):
        read_tensors(path)
    assert load_checkpoint(run).meta["status"] == "running"

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    assert main([*ARGS, "--out", str(tmp_path / "straight")]) == 0
    assert _records(run) == _records(tmp_path / "straight")
    killed = json.loads((run / "meta.json").read_text())
    straight = json.loads((tmp_path / "straight" / "meta.json").read_text())
    assert killed["status"] == "complete"
    assert killed["metrics"] == straight["metrics"]
    assert killed["weights_sha256"] == straight["weights_sha256"]


def test_resume_without_a_committed_epoch_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "meta.json: file is missing (is" in capsys.readouterr().err
    run = tmp_path / "r"  # killed before its first epoch committed
    src = "synthetic:rows=2000,domains=2,seed=0"
    assert (
        main(["train", "--data", src, "--set", "train.epochs=1", "--out", str(run), "--quiet"]) == 0
    )
    (run / "train_state.json").unlink()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert (
        "train_state.json: file is missing; no completed epoch to resume from"
        in capsys.readouterr().err
    )
