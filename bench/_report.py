"""Write a benchmark's tables into ``docs/benchmarks.md``, between its own markers.

Each benchmark owns one section::

    <!-- bench:NAME -->
    ... replaced as a whole by the next run of that benchmark ...
    <!-- /bench:NAME -->

``write_section`` creates the file and the section when missing and never touches anything outside
the section's markers (other benchmarks, the dashboard benchmark, hand-written text).  Helpers to
format tables, ``mean ± std`` cells and the machine description live here too, so every section
states the exact command and machine that produced its numbers.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every table below was produced by the command shown in its section, on the machine described there;
each benchmark rewrites only its own section (between `<!-- bench:NAME -->` markers). How to run them
all, and what each one measures: [`bench/README.md`](../bench/README.md).
"""


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name {name!r} must be letters, digits, '_', '.' or '-'")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` set to ``body`` (appended at the end when missing)."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    n_begin, n_end = text.count(begin), text.count(end)
    if n_begin != n_end or n_begin > 1:
        raise ValueError(
            f"section {name!r}: found {n_begin} start and {n_end} end markers; expected one of each"
        )
    if n_begin == 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    start, stop = text.index(begin), text.index(end)
    if stop < start:
        raise ValueError(f"section {name!r}: the end marker comes before the start marker")
    return text[:start] + block + text[stop + len(end) :]


def write_section(name: str, body: str, path: str | Path = DOCS) -> Path:
    """Replace (or create) section ``name`` of the markdown file ``path``; atomic write."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    new = replace_section(text, name, body)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        mode = path.stat().st_mode & 0o777
    else:  # what open() would give a new file (mkstemp's files are 0600)
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---- what produced the numbers ---------------------------------------------------------------------


def command(module: str, argv: Sequence[str]) -> str:
    """The command line of a benchmark run, e.g. ``python -m bench.speed --quick``."""
    return " ".join(["python -m", module, *(shlex.quote(a) for a in argv)])


def cpu_description(cpuinfo: str) -> str | None:
    """The CPU as ``/proc/cpuinfo`` text describes it: model name, then family / model / stepping
    and the vector extensions (a VM may show only "AMD EPYC", which names no generation).
    None when the text has no model name."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name")
    if not name:
        return None
    ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if fields.get(k)]
    flags = set(fields.get("flags", "").split())
    ext = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX"))
           if flag in flags]  # fmt: skip
    detail = ", ".join([*ids, *ext])
    return f"{name} ({detail})" if detail else name


def _cpu_model() -> str:
    try:
        described = cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        described = None
    return described or platform.processor() or platform.machine()


def _kernels() -> str | None:
    """The vector instruction set torch's CPU kernels were dispatched to (e.g. AVX2, AVX512)."""
    import torch

    try:
        return f"torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"
    except (AttributeError, RuntimeError):
        return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _allocator() -> str:
    from cesaa import allocator

    return allocator.current().describe()


def machine(threads: int | None = None) -> str:
    """One line: CPU, cores, RAM, OS, Python / torch / numpy versions, torch threads, load."""
    import torch

    mem = _memory_gib()
    parts = [
        f"{_cpu_model()}, {os.cpu_count()} logical cores",
        f"{mem:.0f} GiB RAM" if mem else None,
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        f"torch threads {threads if threads is not None else torch.get_num_threads()}",
        _kernels(),
        _allocator(),
    ]
    try:
        load = os.getloadavg()
        parts.append(f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    except OSError:
        pass
    return "; ".join(p for p in parts if p)


def header(title: str, cmd: str, machine_line: str, elapsed_s: float, notes: str = "") -> str:
    """The top of a section: title, command, machine, date, wall time and optional notes."""
    date = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    run = f"Run: {date}, wall time {elapsed_s / 60:.1f} min"
    try:
        run += ", load average at end {:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    except OSError:
        pass
    lines = [
        f"## {title}",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {machine_line}  ",
        run,
    ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines)


# ---- formatting ------------------------------------------------------------------------------------


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table; the first column is left-aligned, the others right-aligned."""
    out = ["| " + " | ".join(columns) + " |"]
    out.append("|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|")
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pm(values: Iterable[float], digits: int = 4) -> str:
    """``"0.7812 ± 0.0011"`` (mean ± sample std over seeds); ``"n/a"`` without finite values."""
    m, s = mean_std(values)
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def gpu_note() -> str:
    """One line on the GPU rows: which device ran, or that none did (never an estimate)."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)} present; the rows above ran on the CPU."
    return "GPU rows: not measured (no CUDA device on this machine)."


# ---- one section in the making ---------------------------------------------------------------------

QUICK_NOTE = "**Quick mode: a smoke run, these numbers mean nothing.**"


class SectionRun:
    """What every benchmark section starts and ends with, in one place.

    Created before the work (the machine line then carries the load average at the start, and the
    wall clock starts); ``body(notes, *parts)`` returns the section: the header with title, exact
    command, machine, date and wall time, the notes (plus the quick-mode warning), then ``parts``.
    """

    def __init__(
        self, title: str, module: str, argv: Sequence[str], quick: bool, threads: int | None = None
    ) -> None:
        import time

        self.title, self.module, self.argv, self.quick = title, module, list(argv), quick
        self.machine = machine(threads)
        self._clock = time.perf_counter
        self.t0 = self._clock()

    def body(self, notes: str, *parts: str) -> str:
        if self.quick:
            notes = f"{notes}\n\n{QUICK_NOTE}" if notes else QUICK_NOTE
        elapsed = self._clock() - self.t0
        head = header(self.title, command(self.module, self.argv), self.machine, elapsed, notes)
        return "\n\n".join([head, *(p for p in parts if p)])
