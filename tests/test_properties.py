"""Property-based tests: loaders and analysis functions on random shapes and values.

The contract: a correct result (checked against invariants) or a ``ValueError`` with a message,
never another exception (no IndexError, KeyError, ZeroDivisionError, TypeError, ...).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from analysis import measures
from analysis.stats import RoutingStats
from cesaa.data import encode, fit_encoders, load_table_frame
from cesaa.data.stream import concat, open_stream, rebatch, split_codes
from cesaa.data.table import EncodedTable
from cesaa.distributed import shard_range
from cesaa.losses import mi_loss, mutual_information

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ---- analysis ------------------------------------------------------------------------------------

ANY_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
any_array = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.int64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements=None,
    ),
    hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6), elements=ANY_FLOATS
    ),
    st.lists(st.one_of(st.integers(-3, 9), st.text(max_size=2)), max_size=6),
)


def _measures(source, **kw):
    """Every public measure on one source; returns their results."""
    out = [
        measures.activation(source, "soft", **kw),
        measures.activation(source, "hard", **kw),
        measures.expert_load(source, **kw),
        measures.mutual_information(source, "soft", **kw),
        measures.mutual_information(source, "hard", normalized=True, **kw),
        measures.gating_entropy(source, **kw),
        measures.load_balance(source, **kw),
        measures.domain_similarity(source, **kw),
        measures.summarize(source, **kw),
    ]
    return out


@SETTINGS
@given(probs=any_array, domain=any_array, num_domains=st.one_of(st.none(), st.integers(-1, 4)))
def test_analysis_on_arbitrary_arrays_is_a_result_or_a_value_error(probs, domain, num_domains):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _measures(probs, domain=domain, num_domains=num_domains)
        except ValueError as err:
            assert str(err)
        try:
            measures.mutual_information_from_assignments(domain, probs)
        except ValueError as err:
            assert str(err)
        try:
            measures.row_entropy(probs)
        except ValueError as err:
            assert str(err)


@st.composite
def routing(draw):
    """Valid routing of N rows, D domains, E experts, k selected per row."""
    n = draw(st.integers(0, 30))
    d = draw(st.integers(1, 4))
    e = draw(st.integers(1, 5))
    k = draw(st.integers(1, e))
    logits = draw(hnp.arrays(np.float64, (n, e), elements=st.floats(-30, 30)))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True)) if n else np.zeros((0, e))
    probs = probs / probs.sum(axis=1, keepdims=True) if n else probs
    domain = np.asarray(draw(st.lists(st.integers(0, d - 1), min_size=n, max_size=n)), np.int64)
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return probs, domain, topk, d, e


@SETTINGS
@given(r=routing())
def test_analysis_on_valid_routing_keeps_its_invariants(r):
    probs, domain, topk, d, e = r
    stats = RoutingStats.from_arrays(probs, domain, d, topk_idx=topk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = _measures(stats)
    act, _, load, mi_soft, mi_hard_norm, _, _, sim, summary = results
    assert act.shape == (d, e) and load.shape == (e,)
    present = stats.count > 0
    np.testing.assert_allclose(act[present].sum(axis=1), 1.0, atol=1e-9)
    bound = min(math.log(d), math.log(e))
    assert -1e-12 <= mi_soft <= bound + 1e-9
    assert math.isnan(mi_hard_norm) or -1e-12 <= mi_hard_norm <= 1 + 1e-9
    assert sim.shape == (d, d)
    assert summary["rows"] == len(domain)
    # sums-only statistics: the two halves merge into the whole
    h = len(domain) // 2
    a = RoutingStats.from_arrays(probs[:h], domain[:h], d, topk_idx=topk[:h]) if h else None
    b = RoutingStats.from_arrays(probs[h:], domain[h:], d, topk_idx=topk[h:])
    merged = b if a is None else a.merge(b)
    assert merged.isclose(stats, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(r=routing(), parts=st.integers(1, 4))
def test_mi_loss_of_a_split_batch_with_a_summing_reducer_is_the_whole_batch_loss(r, parts):
    # the math of mi_scope="global": each part's joint sums plus the others' equal the whole's
    probs, domain, _, d, e = r
    if len(domain) < parts:
        return
    p = torch.tensor(probs)
    dom = torch.tensor(domain)
    whole, _ = mi_loss(p, dom, d)
    chunks = list(zip(p.tensor_split(parts), dom.tensor_split(parts), strict=True))
    sums = [torch.zeros(d, e, dtype=p.dtype).index_add(0, y, x) for x, y in chunks]
    for i, (x, y) in enumerate(chunks):
        others = sum(s for j, s in enumerate(sums) if j != i)
        part, _ = mi_loss(x, y, d, reduce=lambda s, o=others: s + o)
        assert float(part) == pytest.approx(float(whole), abs=1e-9)
    assert 0.0 <= -float(whole) <= min(math.log(d), math.log(e)) + 1e-9


@SETTINGS
@given(
    joint=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), elements=st.floats(0, 1e6)
    )
)
def test_mutual_information_is_bounded_for_any_nonnegative_joint(joint):
    mi = float(mutual_information(torch.tensor(joint)))
    d, e = joint.shape
    assert 0.0 <= mi <= min(math.log(d), math.log(e)) + 1e-9


# ---- data helpers --------------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(0, 10**6), world=st.integers(1, 9), seed=st.integers(-(2**40), 2**40))
def test_shards_and_hashed_splits(n, world, seed):
    sizes = [hi - lo for lo, hi in (shard_range(n, r, world) for r in range(world))]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    pos = np.arange(min(n, 2000)) + n
    codes = split_codes(pos, seed)
    assert set(np.unique(codes)) <= {0, 1, 2}
    np.testing.assert_array_equal(codes[5:], split_codes(pos[5:], seed))


@SETTINGS
@given(pieces=st.lists(st.integers(0, 9), max_size=8), size=st.integers(1, 7))
def test_rebatch_keeps_every_row_in_order(pieces, size):
    start, tables = 0, []
    for m in pieces:
        idx = torch.arange(start, start + m)
        tables.append(
            EncodedTable(
                cat=idx[:, None], num=idx[:, None].float(), domain=idx * 0, label=idx.float()
            )
        )
        start += m
    out = list(rebatch(iter(tables), size))
    assert all(len(b) == size for b in out[:-1]) and (not out or 1 <= len(out[-1]) <= size)
    got = concat(out).cat[:, 0] if out else torch.zeros(0, dtype=torch.long)
    assert torch.equal(got, torch.arange(start))


# ---- loaders: in-memory and streaming ------------------------------------------------------------


@st.composite
def frames(draw):
    n = draw(st.sampled_from([0, 1]) | st.integers(5, 40))
    label_kind = draw(st.sampled_from(["int01"] * 5 + ["int", "bool", "float_nan", "str"]))
    label = {
        "int01": st.integers(0, 1),
        "int": st.integers(-1, 2),
        "bool": st.booleans(),
        "float_nan": st.sampled_from([0.0, 1.0, float("nan")]),
        "str": st.sampled_from(["0", "1", "yes"]),
    }[label_kind]
    num_kind = draw(st.sampled_from(["float"] * 5 + ["float_bad", "str"]))
    num = {
        "float": st.floats(-1e6, 1e6),
        "float_bad": st.sampled_from([0.5, float("nan"), float("inf")]),
        "str": st.sampled_from(["1.5", "x"]),
    }[num_kind]
    dom_kind = draw(st.sampled_from(["str"] * 4 + ["int", "none"]))
    dom = {
        "str": st.sampled_from(["a", "b", "c"]),
        "int": st.integers(0, 2),
        "none": st.sampled_from(["a", None]),
    }[dom_kind]
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    df = pd.DataFrame(
        {
            "y": col(label),
            "d": col(dom),
            "x": col(num),
            "c": col(st.one_of(st.integers(0, 5), st.none())),
        }
    )
    if df["c"].isna().all():
        df["c"] = df["c"].astype("Int64")
    declared = draw(
        st.sampled_from([None, None, None, ["a", "b", "c"], ["a", "b"], ["0", "1", "2"]])
    )
    drop = draw(st.sampled_from([None] * 8 + ["x", "y"]))
    if drop is not None:
        df = df.drop(columns=[drop])
    return df, declared


def _schema(folder: Path, data: str, declared) -> Path:
    s = {"data": data, "label": "y", "domain": "d", "categorical": ["c"], "numeric": ["x"]}
    if declared is not None:
        s["domains"] = declared
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(s))
    return path


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frame=frames(),
    group=st.integers(1, 16),
    read_rows=st.integers(1, 16),
    truncate=st.sampled_from([None] * 8 + [0.5]),
)
def test_loaders_on_random_tables_give_a_result_or_a_value_error(
    tmp_path_factory, frame, group, read_rows, truncate
):
    df, declared = frame
    folder = tmp_path_factory.mktemp("prop")
    path = folder / "t.parquet"
    try:
        df.to_parquet(path, index=False, row_group_size=group)
    except (TypeError, ValueError, OverflowError) as err:  # pyarrow rejects the frame itself
        assume(not str(err))  # not a table pyarrow can write: not an input we can get
    if truncate:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * truncate)])
    schema = _schema(folder, "t.parquet", declared)
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frame_df, sch = load_table_frame(schema)
            results["encoders"] = fit_encoders(frame_df, sch)
            results["memory"] = encode(frame_df, results["encoders"])
        except ValueError as err:
            assert str(err)
        try:  # fits its own encoders on the hashed training rows
            open_stream(schema, split="random", read_rows=read_rows)
        except ValueError as err:
            assert str(err)
        try:  # with the in-memory encoders (or none to fit on: also a ValueError)
            enc = results.get("encoders")
            s = open_stream(schema, split="none", read_rows=read_rows, encoders=enc)
            results["chunks"] = concat(list(s.test.chunks()))
        except ValueError as err:
            assert str(err)
    event(f"read: {sorted(k for k in results if k != 'encoders')}")
    if "memory" in results and "chunks" in results:  # both read it: the same rows
        mem, streamed = results["memory"], results["chunks"]
        assert len(mem) == len(streamed) == len(df)
        for name in ("cat", "num", "domain", "label"):
            assert torch.equal(getattr(mem, name), getattr(streamed, name)), name
