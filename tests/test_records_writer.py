"""Routing records: streaming writes in pieces, atomicity, validation on read with one named error per defect."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.records import (
    ExpertInfo,
    GateInfo,
    RecordError,
    RecordExpertOutOfRange,
    RecordMeta,
    RecordMissingColumn,
    RecordProbabilityError,
    RecordSchemaError,
    RecordUnknownDomain,
    RecordWriter,
    open_record,
)
from analysis.records.cli import add_record_parser
from cesaa.routing.stats import RoutingStats

D, E, H = 3, 4, 5


# ---- writer: streaming, pieces, atomicity ---------------------------------------------------------


def _meta(kept=("user",)) -> RecordMeta:
    experts = tuple(ExpertInfo(f"e{i}") for i in range(E))
    return RecordMeta(
        model_name="toy",
        domains=("a", "b", "c"),
        gates=(GateInfo("gate", experts, top_k=2), GateInfo("dense", experts)),
        kept=kept,
    )


def _arrays(n: int = 1000, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, E))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {
        "domain": rng.integers(0, D, n),
        "label": rng.integers(0, 2, n).astype(float),
        "prediction": rng.uniform(size=n),
        "p": p,
        "top": np.argsort(-p, axis=1)[:, :2],
        "user": rng.integers(0, 50, n),
        "out": rng.normal(size=(n, E, H)),
    }


def _piece(a: dict, lo: int, hi: int) -> dict:
    """``RecordWriter.write``'s arguments for rows lo..hi of ``_arrays``'s output."""
    return {
        "domain": a["domain"][lo:hi],
        "label": a["label"][lo:hi],
        "prediction": a["prediction"][lo:hi],
        "probs": {"gate": a["p"][lo:hi], "dense": a["p"][lo:hi]},
        "topk": {"gate": a["top"][lo:hi]},
        "keep": {"user": a["user"][lo:hi]},
        "expert_outputs": a["out"][lo:hi],
    }


def _write(path, a, cuts, **kw):
    with RecordWriter(path, _meta(), **kw) as w:
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            w.write(**_piece(a, lo, hi))
    return open_record(path)


def test_three_pieces_equal_one(tmp_path):
    a = _arrays()
    one = _write(tmp_path / "one", a, [0, 1000], sample_size=50, row_group_rows=128)
    three = _write(tmp_path / "three", a, [0, 137, 600, 1000], sample_size=50, row_group_rows=128)
    pd.testing.assert_frame_equal(one.read().to_pandas(), three.read().to_pandas())
    pd.testing.assert_frame_equal(one.sample().to_pandas(), three.sample().to_pandas())
    for g in ("gate", "dense"):
        assert one.stats[g].isclose(three.stats[g])
        assert one.stats[g].isclose(
            RoutingStats.from_arrays(
                a["p"],
                a["domain"],
                3,
                topk_idx=a["top"] if g == "gate" else None,
                labels=a["label"],
                preds=a["prediction"],
            )
        )
    m1, m3 = one.meta.to_dict(), three.meta.to_dict()
    for k in ("created", "stats"):
        m1.pop(k), m3.pop(k)
    assert m1 == m3
    assert pq.ParquetFile(tmp_path / "one" / "rows.parquet").num_row_groups == 8  # 1000 / 128


def _write_part(path, a, lo, hi, **kw):
    with RecordWriter(path, _meta(), row_offset=lo, **kw) as w:
        w.write(**_piece(a, lo, hi))
    return path


def test_three_part_records_merge_into_the_one_written_at_once(tmp_path):
    from analysis.records.merge import merge_records

    a = _arrays()
    one = _write(tmp_path / "one", a, [0, 1000], sample_size=50)
    cuts = [0, 137, 600, 1000]
    parts = [
        _write_part(tmp_path / f"part{i}", a, lo, hi, sample_size=50)
        for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
    ]
    merged = merge_records(parts[::-1], tmp_path / "merged")  # any order
    pd.testing.assert_frame_equal(one.read().to_pandas(), merged.read().to_pandas())
    pd.testing.assert_frame_equal(one.sample().to_pandas(), merged.sample().to_pandas())
    for g in ("gate", "dense"):
        assert one.stats[g].isclose(merged.stats[g])
    m1, mm = one.meta.to_dict(), merged.meta.to_dict()
    assert mm["data"].pop("merged_parts") == 3
    for k in ("created", "stats"):
        m1.pop(k), mm.pop(k)
    assert m1 == mm


def test_merge_refuses_parts_that_do_not_tile_the_rows(tmp_path):
    from analysis.records.merge import merge_records

    a = _arrays()
    p0 = _write_part(tmp_path / "p0", a, 0, 300)
    p2 = _write_part(tmp_path / "p2", a, 600, 1000)
    with pytest.raises(
        RecordError, match="starts at row 600 but the parts before it end at row 300"
    ):
        merge_records([p0, p2], tmp_path / "m")


def test_sample_is_a_uniform_draw_of_the_requested_size(tmp_path):
    rec = _write(tmp_path / "r", _arrays(), [0, 500, 1000], sample_size=200)
    rows = rec.sample()["row"].to_numpy()
    assert len(rows) == 200 == len(set(rows.tolist()))
    assert 0.3 < (rows < 500).mean() < 0.7  # both halves represented


def test_a_failed_write_leaves_no_record(tmp_path):
    a = _arrays()
    bad = a["p"].copy()
    bad[5] *= 0.5
    with pytest.raises(ValueError, match="rows must sum to 1"):
        with RecordWriter(tmp_path / "r", _meta()) as w:
            w.write(
                domain=a["domain"][:10],
                label=a["label"][:10],
                prediction=a["prediction"][:10],
                probs={"gate": bad[:10], "dense": a["p"][:10]},
                topk={"gate": a["top"][:10]},
                keep={"user": a["user"][:10]},
            )
    assert not (tmp_path / "r" / "record.json").exists()
    with pytest.raises(RecordSchemaError, match="record.json"):
        open_record(tmp_path / "r")


def test_readable_without_cesaa(tmp_path):
    _write(tmp_path / "r", _arrays(), [0, 1000])
    df = pd.read_parquet(tmp_path / "r" / "rows.parquet")
    meta = json.loads((tmp_path / "r" / "record.json").read_text())
    assert meta["schema_version"] == 1 and meta["rows"] == 1000 == len(df)
    probs = df[[f"p.gate.{e}" for e in range(E)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    assert df["keep.user"].dtype.kind == "i"


# ---- validation on read: one named error per defect ----------------------------------------------


def _corrupt(path, column, fn):
    f = path / "rows.parquet"
    df = pd.read_parquet(f)
    if fn is None:
        df = df.drop(columns=[column])
    else:
        df[column] = fn(df[column])
    df.to_parquet(f, index=False)


def _bad_version(p):
    m = json.loads((p / "record.json").read_text())
    m["schema_version"] = 99
    (p / "record.json").write_text(json.dumps(m))


def _bad_prob_sums(p):
    m = json.loads((p / "record.json").read_text())
    m["stats"]["gate"]["prob_sum"][1][0] += 50.0
    (p / "record.json").write_text(json.dumps(m))


MALFORMED = {
    "missing column": (lambda p: _corrupt(p, "p.gate.2", None), RecordMissingColumn, "p.gate.2"),
    "probabilities": (
        lambda p: _corrupt(p, "p.dense.0", lambda c: c * 0.5 + 0.0),
        RecordProbabilityError,
        "sum to",
    ),
    "prob stats": (_bad_prob_sums, RecordProbabilityError, "domain 'b'"),
    "expert index": (
        lambda p: _corrupt(p, "top.gate.1", lambda c: c.where(c.index != 7, 9)),
        RecordExpertOutOfRange,
        "top.gate.1 has expert index 9",
    ),
    "unknown domain": (
        lambda p: _corrupt(p, "domain", lambda c: c.where(c.index != 3, 5)),
        RecordUnknownDomain,
        "domain has index 5",
    ),
    "schema version": (_bad_version, RecordSchemaError, "schema_version 99"),
}


def _open_and_read(path):
    return open_record(path)  # a small record: every row is checked on opening


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_named_error(tmp_path, case, capsys):
    path = tmp_path / "r"
    _write(path, _arrays(), [0, 1000])
    corrupt, error, text = MALFORMED[case]
    corrupt(path)
    with pytest.raises(error, match=text):
        _open_and_read(path)
    p = argparse.ArgumentParser()
    add_record_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["record", str(path), "--check"])
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert f"cesaa record: error: {error.__name__}:" in err and text in err


def test_footer_check_finds_range_errors_without_reading_rows(tmp_path):
    path = tmp_path / "r"
    _write(path, _arrays(), [0, 1000])
    _corrupt(path, "domain", lambda c: c.where(c.index != 3, 5))
    with pytest.raises(RecordUnknownDomain, match="row group 0"):
        open_record(path, check="footer")


def test_every_named_error_is_a_record_error():
    for _, error, _ in MALFORMED.values():
        assert issubclass(error, RecordError) and issubclass(error, ValueError)


def test_record_json_has_the_file_mode_of_the_parquet_files(tmp_path):
    """record.json was written through a mkstemp file (mode 0600) while the Parquet files follow
    the umask (0644 under 022): a record copied for others could not be opened by them."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        _write(tmp_path / "rec", _arrays(100), [0, 100])
    finally:
        os.umask(old)
    mode = {
        f: stat.S_IMODE((tmp_path / "rec" / f).stat().st_mode)
        for f in ("record.json", "rows.parquet")
    }
    assert mode["record.json"] == mode["rows.parquet"] == 0o644, mode


def test_expert_outputs_asked_only_for_rows_that_can_enter_the_sample(tmp_path):
    """A batch larger than the sample asks for the outputs of its sample_size smallest keys only
    (the fused experts of a language model are re-run for every row asked for)."""
    a = _arrays(1000)
    asked = []

    def outputs(local):
        asked.append(len(local))
        return a["out"][local], None

    with RecordWriter(tmp_path / "rec", _meta(), sample_size=10) as w:
        w.write(
            domain=a["domain"], label=a["label"], prediction=a["prediction"],
            probs={"gate": a["p"], "dense": a["p"]}, topk={"gate": a["top"]},
            keep={"user": a["user"]}, expert_outputs=outputs,
        )  # fmt: skip
    assert asked == [10]
    from analysis.records.sample import row_keys

    want = np.sort(np.argsort(row_keys(np.arange(1000), 0))[:10])
    np.testing.assert_array_equal(open_record(tmp_path / "rec").sample()["row"].to_numpy(), want)
