"""Out-of-core Parquet streams: small row groups give what one whole read gives; training on a stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from analysis.collect import collect
from analysis.records.checkpoint import record_checkpoint
from analysis.records.collection import record_collection
from analysis.stream import stream_routing_stats
from cesaa.checkpoint import load_checkpoint
from cesaa.config import TrainConfig
from cesaa.data import encode, fit_encoders
from cesaa.data.stream import concat, open_stream, split_codes
from cesaa.data.synthetic import make_planted_frame
from cesaa.distributed import DistContext
from cesaa.models.registry import build_model, default_config
from cesaa.train import _epoch_batches, evaluate, predict, read_history, train

ROWS = 3000
TINY = dict(expert_hidden=(16,), expert_dim=8, tower_hidden=(8,), num_experts=4, top_k=2)
FIELDS = ("cat", "num", "domain", "label", "user", "item", "time")


def write_schema(folder: Path, data: str, schema, name: str = "schema.yaml") -> Path:
    d = {
        "data": data,
        "label": schema.label,
        "domain": schema.domain,
        "domains": list(schema.domains),
        "categorical": list(schema.categorical),
        "numeric": list(schema.numeric),
        "user": schema.user,
        "item": schema.item,
        "time": schema.time,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same rows as one row group, as row groups of 128 rows, and as three files."""
    folder = tmp_path_factory.mktemp("stream")
    planted = make_planted_frame(ROWS, 3, seed=0)
    df = planted.frame.copy()
    df["ts"] = 1_700_000_000 + np.arange(ROWS)  # unique: identifies a row after encoding
    df.to_parquet(folder / "whole.parquet", index=False)
    df.to_parquet(folder / "small.parquet", index=False, row_group_size=128)
    (folder / "parts").mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        df.iloc[part].to_parquet(folder / "parts" / f"{i}.parquet", index=False, row_group_size=200)
    return {
        "df": df,
        "schema": planted.schema,
        "whole": write_schema(folder, "whole.parquet", planted.schema, "whole.yaml"),
        "small": write_schema(folder, "small.parquet", planted.schema, "small.yaml"),
        "parts": write_schema(folder, "parts", planted.schema, "parts.yaml"),
    }


@pytest.fixture(scope="module")
def whole(files):
    return open_stream(f"stream:{files['whole']}")


@pytest.fixture(scope="module")
def small(files, whole):
    return open_stream(f"stream:{files['small']}", read_rows=50)


def assert_tables_equal(a, b) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name


def test_split_is_a_seeded_hash_of_the_row_position():
    codes = split_codes(np.arange(100_000), seed=0)
    np.testing.assert_array_equal(codes[5000:6000], split_codes(np.arange(5000, 6000), seed=0))
    frac = np.bincount(codes, minlength=3) / len(codes)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.01)
    assert not np.array_equal(codes, split_codes(np.arange(100_000), seed=1))


def test_small_row_groups_give_the_whole_read(files, whole, small):
    multi = open_stream(f"stream:{files['parts']}")
    assert len(small.train) == len(whole.train) == len(multi.train)
    assert len(whole.train) + len(whole.val) + len(whole.test) == ROWS
    # encoders: fit_encoders on the same training rows (numeric stats up to float rounding)
    df = files["df"]
    train_rows = df[split_codes(np.arange(ROWS), 0) == 0]
    ref = fit_encoders(train_rows, files["schema"])
    for enc in (whole.encoders, small.encoders, multi.encoders):
        for key, value in ref.items():
            if key != "numeric":
                assert enc[key] == value, key
        for a, b in zip(enc["numeric"], ref["numeric"], strict=True):
            assert a["mean"] == pytest.approx(b["mean"], abs=1e-12)
            assert a["std"] == pytest.approx(b["std"], rel=1e-12)
    # encoded rows: identical, piece by piece or whole, and equal to the in-memory encoder
    for part in ("train", "val", "test"):
        tables = [concat(list(getattr(s, part).chunks())) for s in (whole, small, multi)]
        rows = df[split_codes(np.arange(ROWS), 0) == ("train", "val", "test").index(part)]
        ref_table = encode(rows.reset_index(drop=True), whole.encoders)
        for t in tables:
            for name in ("cat", "num", "domain", "label", "time"):
                assert torch.equal(getattr(t, name), getattr(ref_table, name)), (part, name)
        assert_tables_equal(tables[0], tables[1])
        assert_tables_equal(tables[0], tables[2])
    assert max(len(c) for c in small.train.chunks()) <= 50  # one piece at a time


def test_metrics_and_routing_statistics_equal_the_in_memory_ones(whole, small):
    torch.manual_seed(0)
    model = build_model(default_config("cesaa", **TINY), whole.spec).eval()
    table = concat(list(whole.test.chunks()))
    ref = evaluate(model, table, whole.domain_names)
    assert evaluate(model, small.test, small.domain_names) == pytest.approx(ref, nan_ok=True)
    # routing stats: one pass over small pieces, or two "ranks" merged, equal the whole table's
    one = collect(model, table, num_domains=3, sample_size=40, seed=3)
    streamed = stream_routing_stats(model, small.test.eval_batches(64), num_domains=3)
    ranks = [stream_routing_stats(model, small.test.chunks(r, 2), num_domains=3) for r in (0, 1)]
    assert streamed.isclose(one.stats, rtol=1e-6)  # float32 predictions from other batch sizes
    assert ranks[0].merge(ranks[1]).isclose(one.stats, rtol=1e-6)


def test_rank_shares_cover_every_row_once_with_equal_steps(small):
    part = small.train
    ids = []
    steps = []
    for rank in range(3):
        gen = torch.Generator().manual_seed(7)
        out = list(part.train_batches(90, gen, rank=rank, world=3))
        steps.append(len(out))
        ids.append(torch.cat([b.time for b, _ in out]))
        assert all(n <= 90 for _, n in out)
    assert len(set(steps)) == 1
    seen = torch.cat(ids)
    assert len(seen) == len(torch.unique(seen))  # no row twice (time is unique per row here)
    assert len(part) - len(seen) <= 3 * 30  # at most one local batch per rank skipped
    one = list(part.train_batches(90, torch.Generator().manual_seed(7)))
    assert sum(len(b) for b, _ in one) == len(part)  # one process reads every row
    # the trainer's view under DDP: per step, the ranks' rows add up to the global batch and
    # their BCE scales W * n_r / n sum to W (so DDP's average is the global-batch mean)
    ctxs = [DistContext(rank=r, world_size=2) for r in (0, 1)]
    per_rank = [list(_epoch_batches(part, 90, torch.Generator().manual_seed(7), c)) for c in ctxs]
    for (a, sa), (b, sb) in zip(*per_rank, strict=True):
        assert sa + sb == pytest.approx(2.0)
        assert len(a) * 2 / sa == pytest.approx(len(a) + len(b))


def test_training_on_a_stream_learns_is_deterministic_and_resumes(files, tmp_path):
    small = open_stream(f"stream:{files['small']}")  # row groups of 128 rows, shuffled per epoch
    cfg = default_config("cesaa", **TINY)
    tcfg = TrainConfig(epochs=2, batch_size=256, lr=0.01, patience=5)
    full = train(cfg, tcfg, small, tmp_path / "full")
    assert full.test_metrics["auc"] > 0.6
    meta = json.loads((tmp_path / "full" / "meta.json").read_text())
    assert meta["data"]["description"]["kind"] == "stream"

    class Stop(Exception):
        pass

    def interrupt(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tcfg, small, tmp_path / "part", callback=interrupt)
    resumed = train(cfg, tcfg, small, tmp_path / "part", resume=True)
    assert [r["epoch"] for r in read_history(tmp_path / "part")] == [1, 2]
    np.testing.assert_array_equal(
        predict(full.model, small.test), predict(resumed.model, small.test)
    )
    assert resumed.test_metrics == full.test_metrics


def test_cli_trains_and_evaluates_a_stream(files, tmp_path, capsys):
    from cesaa.cli import main

    out = tmp_path / "run"
    src = f"stream:{files['small']}"
    args = ["train", "--data", src, "--set", "train.epochs=1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert f"data: {src}" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["auc"] == pytest.approx(
        json.loads((out / "meta.json").read_text())["metrics"]["test"]["auc"]
    )
    # the analysis reads a stream through the checkpoint's record (written one row-group piece
    # at a time) exactly as an in-memory table
    ckpt = load_checkpoint(out)
    rec = record_checkpoint(ckpt, tmp_path / "rec", data=src, sample_size=20, batch_size=64)
    col = record_collection(rec)
    table = concat(list(open_stream(src, encoders=ckpt.encoders).test.chunks()))
    ref = collect(ckpt.model, table, num_domains=3)
    assert col.stats.isclose(ref.stats, rtol=1e-6) and rec.domains == ckpt.domain_names
    np.testing.assert_allclose(col.predictions, ref.predictions, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(col.top1, ref.top1)
    assert len(col.sample) == 20 and col.sample.expert_outputs.shape[:2] == (20, 8)


def test_sample_table_is_bounded_and_seeded(small):
    a = small.test.sample_table(50, seed=1)
    b = small.test.sample_table(50, seed=1)
    assert len(a) == 50
    assert_tables_equal(a, b)
    assert len(small.test.sample_table(10**6)) == len(small.test)
    assert small.test.column("user").shape == (len(small.test),)
