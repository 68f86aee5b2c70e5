"""Keep freed memory in the process: glibc's ``mallopt`` so that tensors of a few MB are not
handed back to the kernel after every step and faulted in again on the next.

Why: torch's CPU tensors come from ``malloc``.  With glibc's defaults a freed block above the
dynamic mmap threshold is unmapped, and free space at the top of the heap beyond twice that
threshold is trimmed; the next batch's tensors of the same sizes are then new pages, each one a
page fault (zeroed by the kernel) on first touch.  At inference batch sizes (8,192 rows: tensors of
1-7 MB) that is thousands of faults per batch: measured with ``bench.throughput`` on a 2-core VM,
our MMoE spent about as long faulting pages in as computing.  :func:`retain_freed_memory` fixes
the mmap threshold at ``mmap_threshold`` (blocks below it come from the heap and are reused) and
trims the heap only beyond ``trim_threshold`` of free space at its top; blocks above
``mmap_threshold`` are still mapped and unmapped one by one, so a single huge tensor is returned
to the kernel as before.

The cost: up to ``trim_threshold`` of freed heap stays resident after a peak.  The setting is
process-wide (every library in the process allocates through the same ``malloc``), applied once
and never undone; ``cesaa.train.train`` and ``cesaa.evaluation.predict`` apply it, so does the
``cesaa`` command.  ``CESAA_MALLOC=default`` in the environment keeps glibc's defaults.
Other C libraries (musl, macOS) are left alone and the returned setting says why.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

MIB = 1 << 20
# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE / 2: 32 MiB on 64-bit
MMAP_THRESHOLD = 32 * MIB
TRIM_THRESHOLD = 256 * MIB
ENV = "CESAA_MALLOC"
_OPTED_OUT = f"{ENV}=default"  # the reason of a setting that kept glibc's defaults on request


@dataclass(frozen=True)
class AllocatorSetting:
    """What :func:`retain_freed_memory` did: ``applied`` and, when not, ``reason``."""

    applied: bool
    mmap_threshold: int | None = None  # bytes
    trim_threshold: int | None = None  # bytes
    reason: str = ""

    def describe(self) -> str:
        """One line for a benchmark's machine description."""
        if not self.applied:
            return f"C allocator defaults ({self.reason})"
        return (
            f"glibc malloc keeps freed memory (mmap threshold {self.mmap_threshold // MIB} MiB, "
            f"trim threshold {self.trim_threshold // MIB} MiB; cesaa.allocator)"
        )


_CURRENT: AllocatorSetting | None = None


def current() -> AllocatorSetting:
    """The setting in force in this process: the last :func:`retain_freed_memory` result, or
    'not applied' before any call."""
    return _CURRENT or AllocatorSetting(False, reason="cesaa.allocator not applied")


def retain_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> AllocatorSetting:
    """Set glibc's mmap and trim thresholds for this process (once; later calls return the
    first call's result, and refuse a ``CESAA_MALLOC`` or thresholds other than the ones in
    force).  On another C library, with ``CESAA_MALLOC=default``, or when
    ``mallopt`` refuses a value, nothing is changed and the result says why.

    ``ValueError`` for a threshold outside [1 MiB, 32 MiB] (mmap; glibc's cap, the lower bound
    ours), a trim threshold below 1 MiB, or ``CESAA_MALLOC`` set to anything but ``retain`` or
    ``default``.
    """
    global _CURRENT
    if not MIB <= mmap_threshold <= MMAP_THRESHOLD:
        raise ValueError(
            f"mmap_threshold={mmap_threshold} must be in [{MIB}, {MMAP_THRESHOLD}] bytes"
        )
    if trim_threshold < MIB:
        raise ValueError(f"trim_threshold={trim_threshold} must be >= {MIB} bytes")
    choice = _env_choice()
    if _CURRENT is not None:
        # what the first call fixed for this process (None: nothing, e.g. not glibc)
        fixed = (
            "retain" if _CURRENT.applied else "default" if _CURRENT.reason == _OPTED_OUT else None
        )
        asked = (mmap_threshold, trim_threshold)
        if fixed is not None and choice != fixed:
            problem = f"{ENV}={choice}"
        elif _CURRENT.applied and asked != (_CURRENT.mmap_threshold, _CURRENT.trim_threshold):
            problem = f"thresholds {asked}"
        else:
            return _CURRENT
        raise ValueError(
            f"{problem} asked, but this process already runs with {_CURRENT.describe()}: "
            "the setting is applied once per process"
        )
    _CURRENT = _apply(choice, mmap_threshold, trim_threshold)
    return _CURRENT


def _env_choice() -> str:
    """``CESAA_MALLOC``: 'retain' (also when unset) or 'default'; ``ValueError`` otherwise."""
    choice = os.environ.get(ENV, "").strip().lower() or "retain"
    if choice not in ("retain", "default"):
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected 'retain' or 'default'")
    return choice


def _apply(choice: str, mmap_threshold: int, trim_threshold: int) -> AllocatorSetting:
    if choice == "default":
        return AllocatorSetting(False, reason=_OPTED_OUT)
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        return AllocatorSetting(False, reason=f"C library {libc_name or 'unknown'}, not glibc")
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname on every Linux (no library search)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return AllocatorSetting(False, reason=f"mallopt not found: {e}")
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 when it refuses a value.  The mmap threshold first: a
    # trim threshold set alone switches glibc's dynamic mmap threshold off at 128 KiB, which
    # maps and unmaps every tensor above that size (worse than the defaults)
    if not mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        return AllocatorSetting(False, reason=f"mallopt refused M_MMAP_THRESHOLD={mmap_threshold}")
    if not mallopt(_M_TRIM_THRESHOLD, trim_threshold):
        return AllocatorSetting(
            False, reason=f"mallopt refused M_TRIM_THRESHOLD={trim_threshold} (mmap threshold set)"
        )
    return AllocatorSetting(True, mmap_threshold, trim_threshold)
