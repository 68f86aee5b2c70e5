"""cesaa.allocator: glibc keeps freed memory instead of faulting it in again on every batch.

The known answer comes from glibc's documented rules (mallopt(3)): freeing a block served by mmap
raises the dynamic mmap threshold to that block's size and the trim threshold to twice it, and
``free`` gives the top of the heap back to the kernel (keeping M_TOP_PAD, 128 KiB) once more than
the trim threshold is free there.  So after one 8 MiB block (mmapped, then freed: thresholds about
8 and 16 MiB), eight 4 MiB blocks come from the heap top, and freeing them leaves 32 MiB free there:
under the defaults it is trimmed, and every later round faults 32 MiB - 128 KiB of pages in again
(8,160 faults of 4 KiB); with the setting (trim threshold 256 MiB) it stays, and later rounds fault
nothing.  ``ru_minflt`` (minor page faults) is the kernel's count, in a fresh process each time.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cesaa import allocator

ROUNDS_SCRIPT = """
import ctypes, resource
from cesaa import allocator
setting = allocator.retain_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
MIB = 1 << 20
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(8 * MIB); libc.memset(p, 1, 8 * MIB); libc.free(p)  # mmapped: thresholds adapt
rounds = []
for _ in range(5):
    before = faults()
    blocks = [libc.malloc(4 * MIB) for _ in range(8)]
    for b in blocks:
        libc.memset(b, 1, 4 * MIB)  # touch every page
    rounds.append(faults() - before)
    for b in reversed(blocks):
        libc.free(b)
print(int(setting.applied), libc.mallinfo2().keepcost, *rounds)
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; other C libraries are left alone"
)


def _rounds(env_value: str | None) -> tuple[bool, int, list[int]]:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if env_value is not None:
        env[allocator.ENV] = env_value
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS_SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return bool(int(out[0])), int(out[1]), [int(v) for v in out[2:]]


@glibc_only
def test_freed_heap_top_is_kept_and_not_faulted_in_again() -> None:
    import resource

    page = resource.getpagesize()
    mib = 1 << 20
    applied, keep_default, default = _rounds("default")
    assert not applied
    # glibc's defaults: 32 MiB trimmed every round, the top pad (128 KiB) kept
    expected = (32 * mib - 128 * 1024) // page
    assert all(abs(f - expected) <= 32 for f in default[1:]), (expected, default)
    assert keep_default < 16 * mib
    applied, keep_retained, retained = _rounds(None)
    assert applied
    assert all(f <= 32 for f in retained[1:]), retained  # the heap top is reused as it was
    assert keep_retained >= 32 * mib


@glibc_only
def test_setting_is_reported_and_applied_once(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_CURRENT", None)
    monkeypatch.delenv(allocator.ENV, raising=False)
    first = allocator.retain_freed_memory()
    assert first == allocator.AllocatorSetting(True, 32 << 20, 256 << 20)
    assert allocator.current() is first
    assert allocator.retain_freed_memory() is first  # once per process
    monkeypatch.setenv(allocator.ENV, "default")  # too late: refused, not ignored
    with pytest.raises(ValueError, match=r"CESAA_MALLOC=default asked, but this process already"):
        allocator.retain_freed_memory()
    monkeypatch.delenv(allocator.ENV)
    with pytest.raises(
        ValueError, match=r"thresholds \(1048576, 268435456\) asked, but this process"
    ):
        allocator.retain_freed_memory(mmap_threshold=1 << 20)  # not silently ignored
    assert first.describe() == (
        "glibc malloc keeps freed memory (mmap threshold 32 MiB, trim threshold 256 MiB; "
        "cesaa.allocator)"
    )


def test_opt_out_and_bad_values_are_named(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_CURRENT", None)
    monkeypatch.setenv(allocator.ENV, "default")
    off = allocator.retain_freed_memory()
    assert not off.applied and off.reason == "CESAA_MALLOC=default"
    assert off.describe() == "C allocator defaults (CESAA_MALLOC=default)"
    assert allocator.retain_freed_memory() is off  # still asked for: the same answer
    monkeypatch.setenv(allocator.ENV, "retain")
    with pytest.raises(ValueError, match=r"CESAA_MALLOC=retain asked, but this process already"):
        allocator.retain_freed_memory()
    monkeypatch.setattr(allocator, "_CURRENT", None)
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(
        ValueError, match=r"CESAA_MALLOC='jemalloc': expected 'retain' or 'default'"
    ):
        allocator.retain_freed_memory()
    with pytest.raises(
        ValueError, match=r"mmap_threshold=67108864 must be in \[1048576, 33554432\]"
    ):
        allocator.retain_freed_memory(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match=r"trim_threshold=4096 must be >= 1048576"):
        allocator.retain_freed_memory(trim_threshold=4096)


def test_cli_names_a_bad_environment_value() -> None:
    env = dict(os.environ, **{allocator.ENV: "jemalloc"})
    r = subprocess.run(
        [sys.executable, "-m", "cesaa", "models"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert (
        "cesaa models: error: CESAA_MALLOC='jemalloc': expected 'retain' or 'default'" in r.stderr
    )


@glibc_only
def test_predict_applies_the_setting(monkeypatch, small_data) -> None:
    from cesaa.evaluation import predict
    from cesaa.models import build_model, default_config

    monkeypatch.setattr(allocator, "_CURRENT", None)
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert not allocator.current().applied
    model = build_model(default_config("mlp"), small_data.spec)
    p = predict(model, small_data.test, batch_size=4096)
    assert p.shape == (len(small_data.test),)
    assert allocator.current().applied
