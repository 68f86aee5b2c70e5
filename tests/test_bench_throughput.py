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
