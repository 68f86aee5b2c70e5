"""A training step of this working tree against another git revision, side by side in time.

Two worker processes stay alive, one per source tree (``bench/_step_worker.py``: the revision is
exported with ``git archive`` into a temporary folder), each with the same model, seed and batches.
The parent asks them in turn for a block of timed steps, at 1 and then 2 torch threads (the order
of the trees and of the thread counts alternating block by block), so a slow phase of a shared
machine hits both; each block gives one ratio of their median step times.  The table reports the
median over blocks and its range, and both trees' first-step losses (equal when the change keeps
the numbers).

    python -m bench.step_ab --against main~3            # CESAA, batch 4096
    python -m bench.step_ab --against v0.3 --model mmoe
    python -m bench.step_ab --against HEAD --quick      # CI smoke run (an A/A comparison)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from bench import _common, _report

SECTION = "step-ab"
WORKER = Path(__file__).with_name("_step_worker.py")


def export_revision(rev: str, dest: Path) -> str:
    """Write revision ``rev`` of this repository into ``dest``; returns its commit hash.
    ``ValueError`` naming the revision when git cannot resolve or export it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(_report.REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        archive = subprocess.run(
            ["git", "-C", str(_report.REPO), "archive", "--format=tar", commit],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        why = getattr(e, "stderr", b"") or str(e)
        why = why.decode() if isinstance(why, bytes) else why
        raise ValueError(
            f"--against {rev!r}: not a revision git can export here ({why.strip()})"
        ) from e
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


class Worker:
    """One ``_step_worker.py`` process for the source tree ``root``."""

    def __init__(self, root: Path, model: str, batch: int, source: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(root), model, str(batch), source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.hello = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the step worker for {self.proc.args[2]} exited (see its stderr)")
        return json.loads(line)

    def run(self, threads: int, steps: int) -> float:
        """Median seconds of ``steps`` timed steps at ``threads`` torch threads."""
        self.proc.stdin.write(f"{threads} {steps}\n")
        self.proc.stdin.flush()
        return statistics.median(self._read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def compare(old: Worker, new: Worker, blocks: int, steps: int, threads: tuple[int, ...]) -> dict:
    """{threads: {"old": [s per block], "new": [...], "ratio": [old / new per block]}}."""
    got = {t: {"old": [], "new": [], "ratio": []} for t in threads}
    for b in range(blocks):
        for t in threads if b % 2 == 0 else threads[::-1]:
            pair = [("old", old), ("new", new)] if b % 2 == 0 else [("new", new), ("old", old)]
            block = {name: w.run(t, steps) for name, w in pair}
            got[t]["old"].append(block["old"])
            got[t]["new"].append(block["new"])
            got[t]["ratio"].append(block["old"] / block["new"])
    return got


def rows(got: dict, batch: int) -> list[list]:
    out = []
    for t, g in got.items():
        r = g["ratio"]
        out.append(
            [
                t,
                f"{statistics.median(g['old']) * 1e3:.2f}",
                f"{statistics.median(g['new']) * 1e3:.2f}",
                f"{batch / statistics.median(g['new']):,.0f}",
                f"{statistics.median(r):.3f}x",
                f"{min(r):.3f}-{max(r):.3f}",
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="git revision to compare the working tree to")
    p.add_argument("--model", default="cesaa", help="registry name (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--blocks", type=int, default=30, help="alternating blocks per thread count")
    p.add_argument("--steps", type=int, default=5, help="timed steps per block")
    args, argv = _common.parse(p, argv)
    threads: tuple[int, ...] = (1, 2)
    if args.quick:
        args.batch, args.blocks, args.steps, threads = 256, 2, 1, (1,)
    if args.threads not in (0, 2):
        p.error("--threads: this benchmark sets 1 and 2 threads itself; leave --threads out")
    t0 = time.perf_counter()
    machine = _report.machine(threads=2)
    with tempfile.TemporaryDirectory(prefix="cesaa-step-ab-") as tmp:
        try:
            commit = export_revision(args.against, Path(tmp))
        except ValueError as e:
            p.error(str(e))
        source = _common.ml100k_source()
        old = Worker(Path(tmp), args.model, args.batch, source)
        new = Worker(_report.REPO, args.model, args.batch, source)
        try:
            got = compare(old, new, args.blocks, args.steps, threads)
        finally:
            old.close()
            new.close()
    head = subprocess.run(
        ["git", "-C", str(_report.REPO), "describe", "--always", "--dirty"],
        capture_output=True, text=True,
    ).stdout.strip() or "the working tree"  # fmt: skip
    notes = (
        f"`{args.model}` at its registry defaults, MovieLens-100k training split, batch "
        f"{args.batch}, seed 0, the trainer's fused Adam and allocator setting.  'old': revision "
        f"`{args.against}` ({commit[:10]}); 'new': this working tree ({head}).  Two processes "
        f"alive side by side, asked in turn for {args.blocks} blocks of {args.steps} timed steps "
        "per thread count (the order of the trees and of the thread counts alternating block by "
        "block); 'old / new': the median over blocks of each block's ratio of median step times "
        "(above 1: the working tree is faster), with its range.  First-step loss: old "
        f"{old.hello['loss']:.7f}, new {new.hello['loss']:.7f}; parameters: old "
        f"{old.hello['parameters']:,}, new {new.hello['parameters']:,}."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "A training step against another revision",
                _report.command("bench.step_ab", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            _report.table(
                ["torch threads", "old ms", "new ms", "new rows/s", "old / new", "range"],
                rows(got, args.batch),
            ),
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
