"""bench.throughput's summary over processes: medians, ranges, ratios and goal verdicts, from
hand-built measurements (expected values worked out by hand)."""

from __future__ import annotations

import pytest

from bench import _speedup, throughput

OURS, THEIRS = "MMoE (ours)", "torch-rechub MMoE"


def _process(ours_train, theirs_train, ours_infer, theirs_infer) -> dict:
    return {
        "train": {OURS: ours_train, THEIRS: theirs_train},
        "infer": {OURS: ours_infer, THEIRS: theirs_infer},
        "params": {OURS: 1, THEIRS: 1},
        "rows": 10,
    }


RESULTS = [
    # per-process medians: ours 200 / theirs 100 (train), 300 / 250 (inference)
    _process([100, 200, 300], [100, 100, 100], [300], [250]),
    _process([150, 150, 180], [90, 100, 110], [300], [150]),  # 150 / 100, 300 / 150
    _process([210, 230, 220], [100, 110, 105], [300], [200]),  # 220 / 105, 300 / 200
]


def test_summary_takes_medians_per_process_then_over_processes() -> None:
    s = _speedup.summarize(RESULTS)
    assert s["train"] == {OURS: 200, THEIRS: 100}  # median(200, 150, 220), median(100, 100, 105)
    assert s["infer"] == {OURS: 300, THEIRS: 200}
    assert s["train_range"] == {OURS: (100, 300), THEIRS: (90, 110)}
    ratios = s["ratios"][(OURS, THEIRS)]
    assert ratios["train"] == pytest.approx([2.0, 1.5, 220 / 105])
    assert ratios["infer"] == pytest.approx([1.2, 2.0, 1.5])
    assert list(s["ratios"]) == [(OURS, THEIRS)]  # theirs is never compared with theirs


def test_ratio_cells_and_verdicts_state_the_median_its_range_and_the_processes() -> None:
    ratios = _speedup.summarize(RESULTS)["ratios"]
    assert _speedup.ratio_cell(ratios[(OURS, THEIRS)]["train"]) == "2.00x (1.50-2.10)"
    assert _speedup.verdicts(ratios, throughput.GOALS) == [
        f"- {OURS} / {THEIRS}: training 2.00x (1.50-2.10) (goal >= 2.0x: **met**, reached in 2 "
        "of 3 processes), inference 1.50x (1.20-2.00) (goal >= 1.5x: **met**, reached in 2 of 3 "
        "processes)"
    ]  # the CESAA and PLE goals were not measured here: no line for them


def test_one_process_reports_its_ratio_alone_and_a_miss_as_missed() -> None:
    one = _speedup.summarize([_process([164], [100], [149], [100])])["ratios"]
    assert _speedup.ratio_cell(one[(OURS, THEIRS)]["train"]) == "1.64x"
    assert _speedup.verdicts(one, throughput.GOALS) == [
        f"- {OURS} / {THEIRS}: training 1.64x (goal >= 2.0x: **missed**), "
        "inference 1.49x (goal >= 1.5x: **missed**)"
    ]


def test_processes_below_one_are_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit):
        throughput.main(["--processes", "0", "--docs", "-"])
    assert "--processes 0 must be >= 1" in capsys.readouterr().err


def test_cesaa_slices_speedup_is_per_process_sliced_over_one_pass() -> None:
    def proc(sliced, one_pass):
        return {
            "train": {"CESAA": [1.0], THEIRS: [1.0]},
            "infer": {"CESAA": sliced, THEIRS: [1.0]},
            "params": {},
            "rows": 10,
            "cesaa_one_pass": one_pass,
        }

    s = _speedup.summarize([proc([600, 610, 590], [500, 480, 520]), proc([450], [500])])
    assert s["slices_speedup"] == pytest.approx([1.2, 0.9])  # 600 / 500, 450 / 500
    assert s["cesaa_one_pass"] == 500
    assert "slices_speedup" not in _speedup.summarize(RESULTS)  # no CESAA measured: no line


def test_allocator_section_puts_both_settings_side_by_side() -> None:
    from bench import _allocator_cmp

    main = _speedup.summarize(RESULTS)  # ratios: train 2.0 / 1.5 / 2.10, inference 1.2 / 2.0 / 1.5
    other = _speedup.summarize([_process([120], [100], [400], [100])])  # 1.2x, 4.0x
    alone = {
        "retain": {OURS: {"rps": 900.0, "faults": 3.0}, THEIRS: {"rps": 600.0, "faults": 0.0}},
        "default": {OURS: {"rps": 450.0, "faults": 5061.0}, THEIRS: {"rps": 500.0, "faults": 7.0}},
    }
    text = _allocator_cmp.section(main, other, alone, ("retain", "default"), 3, throughput.GOALS)
    # the pair's row: medians (ranges) of the shared processes under each setting
    assert (
        "| MMoE (ours) / torch-rechub MMoE | 2.00x (1.50-2.10) | 1.20x | 1.50x (1.20-2.00) | 4.00x |"
        in text
    )
    # each model alone: rows/s, faults per batch, and retain / default (900 / 450, 600 / 500)
    assert "| MMoE (ours) | 900 | 3 | 450 | 5,061 | 2.00x |" in text
    assert "| torch-rechub MMoE | 600 | 0 | 500 | 7 | 1.20x |" in text
    # the pair alone: 900 / 600 under retain, 450 / 500 under the defaults
    assert "| MMoE (ours) / torch-rechub MMoE | 1.50x | 0.90x |" in text
    assert "in 3 more fresh processes with `--allocator default`" in text


def test_allocator_flag_cannot_be_undone_in_a_process(monkeypatch) -> None:
    from bench import _common
    from cesaa import allocator

    monkeypatch.setattr(
        allocator, "_CURRENT", allocator.AllocatorSetting(True, 32 << 20, 256 << 20)
    )
    monkeypatch.setenv(allocator.ENV, "retain")
    with pytest.raises(
        ValueError,
        match=r"^--allocator default: CESAA_MALLOC=default asked, but this process already runs "
        r"with glibc malloc keeps freed memory .*; run the benchmark in a fresh process$",
    ):
        _common.set_allocator("default")
    assert _common.set_allocator("retain").startswith("glibc malloc keeps freed memory")
