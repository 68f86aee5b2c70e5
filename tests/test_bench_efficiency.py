"""bench._efficiency's --widths parsing and bench.thread_scaling's rejection of a bad item."""

from __future__ import annotations

import pytest

from bench._efficiency import parse_widths


def test_widths_parse_in_order() -> None:
    assert parse_widths("64:32, 256:64,512:128") == [(64, 32), (256, 64), (512, 128)]


@pytest.mark.parametrize("bad", ["64", "64:0", "a:32", "64:32:1", "-4:8", ""])
def test_a_bad_width_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"--widths item {bad.strip()!r}: expected HIDDEN:OUTPUT"):
        parse_widths(f"16:8,{bad}")


def test_thread_scaling_rejects_bad_widths_before_running(capsys) -> None:
    from bench import thread_scaling

    with pytest.raises(SystemExit) as exc:
        thread_scaling.main(["--quick", "--docs", "-", "--widths", "64:x"])
    assert exc.value.code == 2
    assert "--widths item '64:x': expected HIDDEN:OUTPUT" in capsys.readouterr().err


def test_speed_up_beyond_the_fixed_cost() -> None:
    from bench.thread_scaling import beyond_fixed

    # 20 ms at 1 thread, 12 at 2, of which 4 and 5 fixed: (20 - 4) / (12 - 5) = 16 / 7
    assert beyond_fixed({1: 0.020, 2: 0.012}, {1: 0.004, 2: 0.005}) == "2.29x"
    assert beyond_fixed({1: 0.004, 2: 0.003}, {1: 0.004, 2: 0.002}) == "n/a"
