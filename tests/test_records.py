"""Routing records: hook capture, streaming writes, validation with named errors, readers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from analysis.records import (
    ExpertInfo,
    GateInfo,
    GateSpec,
    RecordError,
    RecordExpertOutOfRange,
    RecordMeta,
    RecordMissingColumn,
    RecordProbabilityError,
    RecordSchemaError,
    RecordUnknownDomain,
    RecordWriter,
    open_record,
    record,
)
from analysis.records.cli import add_record_parser
from cesaa.routing.stats import RoutingStats

D, E, H = 3, 4, 5
# known gate of each domain (rows sum to 1); the hand-written MMoE's gate reproduces it exactly
P = np.array([[0.6, 0.25, 0.1, 0.05], [0.1, 0.1, 0.45, 0.35], [0.25, 0.25, 0.25, 0.25]])


class HandMMoE(nn.Module):
    """A small MMoE written by hand: softmax gate on the domain one-hot, 4 linear experts."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(D + 2, H) for _ in range(E))
        self.gate_logits = nn.Linear(D, E, bias=False)
        self.gate = nn.Softmax(dim=1)
        self.tower = nn.Linear(H, 1)
        with torch.no_grad():  # softmax(log P[d]) = P[d]
            self.gate_logits.weight.copy_(torch.tensor(np.log(P).T, dtype=torch.float32))

    def forward(self, x: dict) -> torch.Tensor:
        inp = torch.cat([x["onehot"], x["feats"]], dim=1)  # [B, D + 2]
        g = self.gate(self.gate_logits(x["onehot"]))  # [B, E]
        out = torch.stack([ex(inp) for ex in self.experts], dim=1)  # [B, E, H]
        return torch.sigmoid(self.tower((g.unsqueeze(-1) * out).sum(1))).squeeze(1)  # [B]


def _batches(n: int = 300, bs: int = 64, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, D, n)
    y = rng.integers(0, 2, n)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 2, generator=gen)
    out = []
    for i in range(0, n, bs):
        d = torch.tensor(dom[i : i + bs])
        x = {"onehot": nn.functional.one_hot(d, D).float(), "feats": feats[i : i + bs]}
        out.append((x, torch.tensor(y[i : i + bs]), d))
    return out


def _record(tmp_path, gates, **kw):
    kw.setdefault("experts", {next(iter(gates)): [f"experts.{i}" for i in range(E)]})
    torch.manual_seed(0)
    return record(
        HandMMoE(),
        _batches(),
        gates=gates,
        out=tmp_path / "rec",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
        **kw,
    )


def _known_counts() -> np.ndarray:
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    return np.bincount(dom, minlength=D)


def test_hooks_give_the_known_gate_statistics(tmp_path):
    rec = _record(tmp_path, {"gate": GateSpec(modules=("gate",), top_k=2)}, sample_size=40)
    st = rec.stats["gate"]
    count = _known_counts()
    assert st.count.tolist() == count.tolist()
    np.testing.assert_allclose(st.prob_sum / count[:, None], P, atol=1e-6)
    # top-2 of each domain's known gate, every row of that domain
    top2 = np.argsort(-P, axis=1, kind="stable")[:, :2]
    expected = np.zeros((D, E), np.int64)
    for d in range(D):
        expected[d, top2[d]] = count[d]
    assert st.select_count.tolist() == expected.tolist()
    ent = -(P * np.log(P)).sum(axis=1)
    np.testing.assert_allclose(st.entropy_sum / count, ent, rtol=1e-5)
    # soft MI from the closed form: I(D;E) = H(E) - H(E|D) with p(d) = count / N
    pd_ = count / count.sum()
    pe = pd_ @ P
    mi = -(pe * np.log(pe)).sum() - (pd_ * ent).sum()
    from analysis.measures import mutual_information

    assert mutual_information(st) == pytest.approx(mi, rel=1e-5)
    assert rec.meta.primary.experts[0].name == "experts.0"
    s = rec.sample()
    assert s.num_rows == 40 and len(s["out.0"][0]) == H


def test_logits_with_declared_top_k_match_softmax_outputs(tmp_path):
    a = _record(tmp_path / "a", {"g": GateSpec(modules=("gate",), top_k=2)})
    b = _record(tmp_path / "b", {"g": GateSpec(modules=("gate_logits",), kind="logits", top_k=2)})
    assert a.stats["g"].isclose(b.stats["g"], rtol=1e-5, atol=1e-6)


def test_models_that_return_gates_directly(tmp_path):
    class Returns(HandMMoE):
        def forward(self, x):
            g = self.gate(self.gate_logits(x["onehot"]))
            return super().forward(x), g

    rec = record(
        Returns(),
        _batches(),
        gates={"gate": GateSpec(output=lambda out: out[1])},
        out=tmp_path / "rec",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
        prediction=lambda out, b, d: out[0],
    )
    np.testing.assert_allclose(rec.stats["gate"].prob_sum / _known_counts()[:, None], P, atol=1e-6)


def test_hooks_are_removed_and_mode_restored(tmp_path):
    model = HandMMoE().train()
    record(
        model,
        _batches(),
        gates={"gate": "gate"},
        out=tmp_path / "r",
        domains="abc",
        domain=lambda b: b[2],
        label=lambda b: b[1],
    )
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_module_is_named(tmp_path):
    with pytest.raises(ValueError, match="no module 'gatez'"):
        _record(tmp_path, {"gate": "gatez"})


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


def _write(path, a, cuts, **kw):
    with RecordWriter(path, _meta(), **kw) as w:
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            w.write(
                domain=a["domain"][lo:hi],
                label=a["label"][lo:hi],
                prediction=a["prediction"][lo:hi],
                probs={"gate": a["p"][lo:hi], "dense": a["p"][lo:hi]},
                topk={"gate": a["top"][lo:hi]},
                keep={"user": a["user"][lo:hi]},
                expert_outputs=a["out"][lo:hi],
            )
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
        w.write(
            domain=a["domain"][lo:hi],
            label=a["label"][lo:hi],
            prediction=a["prediction"][lo:hi],
            probs={"gate": a["p"][lo:hi], "dense": a["p"][lo:hi]},
            topk={"gate": a["top"][lo:hi]},
            keep={"user": a["user"][lo:hi]},
            expert_outputs=a["out"][lo:hi],
        )
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
    from analysis.records.writer import row_keys

    want = np.sort(np.argsort(row_keys(np.arange(1000), 0))[:10])
    np.testing.assert_array_equal(open_record(tmp_path / "rec").sample()["row"].to_numpy(), want)
