"""DeepCTR-Torch's MMOE and PLE, trained a few steps by DeepCTR-Torch itself on MovieLens-100k, recorded
through ``record_deepctr`` and checked against their gates computed directly from the model's own
layers (not through hooks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.records.deepctr import load_deepctr, record_deepctr
from cesaa.routing.stats import RoutingStats

pytest.importorskip("deepctr_torch.models.multitask", reason="pip install 'cesaa[deepctr]'")
load_deepctr()

from deepctr_torch.inputs import SparseFeat, combined_dnn_input  # noqa: E402
from deepctr_torch.models.multitask import MMOE, PLE  # noqa: E402

DOMAINS = ["age<25", "age25-34", "age35+"]
COLS = ["user_id", "item_id", "gender", "occupation", "age_group"]


def _movielens(path, rows: int = 3000) -> tuple[dict, np.ndarray, list]:
    """A seeded subset of MovieLens-100k in DeepCTR-Torch's input format (plain pandas)."""
    r = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    u = pd.read_csv(path / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "z"])
    df = r.sample(rows, random_state=0).merge(u, on="user_id")
    df["age_group"] = pd.cut(df.age, [0, 24, 34, 200], labels=False)  # <25, 25-34, 35+
    for c in COLS:
        df[c] = df[c].astype("category").cat.codes.astype("int64")
    x = {c: df[c].to_numpy() for c in COLS}
    y = np.stack([(df.rating > 3), (df.rating > 4), (df.rating > 2)], 1).astype("float32")
    feats = [SparseFeat(c, vocabulary_size=int(df[c].max()) + 1, embedding_dim=4) for c in COLS]
    return x, y, feats


def _train(model, x, y):
    torch.manual_seed(0)
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, batch_size=512, epochs=1, verbose=0)
    return model


def _dnn_input(model, x) -> torch.Tensor:
    xt = torch.from_numpy(np.stack([x[f] for f in model.feature_index], 1).astype("float32"))
    sparse, dense = model.input_from_feature_columns(
        xt, model.dnn_feature_columns, model.embedding_dict
    )
    return combined_dnn_input(sparse, dense)


def _rows(rec) -> pd.DataFrame:
    return pd.read_parquet(rec.path / "rows.parquet").sort_values("row")


def test_mmoe_one_task_for_all_matches_its_gate(ml100k_path, tmp_path):
    x, y, feats = _movielens(ml100k_path)
    model = _train(
        MMOE(
            feats,
            num_experts=4,
            expert_dnn_hidden_units=(8,),
            gate_dnn_hidden_units=(4,),
            tower_dnn_hidden_units=(4,),
            task_types=("binary",) * 2,
            task_names=("like", "love"),
        ),
        x,
        y[:, :2],
    )
    rec = record_deepctr(
        model,
        x,
        y[:, :2],
        domain="age_group",
        domains=DOMAINS,
        task=1,
        out=tmp_path / "rec",
        keep=["user_id"],
        batch_size=700,
        sample_size=50,
    )
    model.eval()
    with torch.no_grad():
        inp = _dnn_input(model, x)
        probs = model.gate_dnn_final_layer[1](model.gate_dnn[1](inp)).softmax(1).numpy()
        pred = model(
            torch.from_numpy(np.stack([x[f] for f in model.feature_index], 1).astype("float32"))
        )[:, 1].numpy()
    df = _rows(rec)
    got = df[[f"p.gate.{e}" for e in range(4)]].to_numpy()
    np.testing.assert_allclose(got, probs, atol=1e-6)
    np.testing.assert_allclose(df["label"], y[:, 1])
    np.testing.assert_allclose(df["prediction"], pred, atol=1e-6)
    np.testing.assert_array_equal(df["keep.user_id"], x["user_id"])
    expected = RoutingStats.from_arrays(probs, x["age_group"], 3, labels=y[:, 1], preds=pred)
    assert rec.stats["gate"].isclose(expected, rtol=1e-5, atol=1e-5)
    assert [e.name for e in rec.meta.primary.experts] == [f"expert_dnn_{i}" for i in range(4)]
    assert rec.meta.model_name == "DeepCTR-Torch MMOE"
    assert rec.meta.primary.kind == "dense" and rec.meta.primary.hyper == {}
    assert rec.meta.sample["size"] == 50 and rec.meta.sample["hidden"] == 8


def test_mmoe_one_task_per_domain_reads_each_domains_gate(ml100k_path, tmp_path):
    x, y, feats = _movielens(ml100k_path, rows=1500)
    model = _train(
        MMOE(
            feats,
            num_experts=3,
            expert_dnn_hidden_units=(8,),
            gate_dnn_hidden_units=(),
            tower_dnn_hidden_units=(4,),
            task_types=("binary",) * 3,
            task_names=DOMAINS,
        ),
        x,
        y,
    )
    rec = record_deepctr(
        model, x, y, domain="age_group", domains=DOMAINS, task=None, out=tmp_path / "rec"
    )
    model.eval()
    with torch.no_grad():
        inp = _dnn_input(model, x)
        every = torch.stack([g(inp).softmax(1) for g in model.gate_dnn_final_layer], 1).numpy()
    d = x["age_group"]
    df = _rows(rec)
    np.testing.assert_allclose(
        df[[f"p.gate.{e}" for e in range(3)]], every[np.arange(len(d)), d], atol=1e-6
    )
    np.testing.assert_allclose(df["label"], y[np.arange(len(d)), d])


def test_ple_specific_shared_layout_and_levels(ml100k_path, tmp_path):
    x, y, feats = _movielens(ml100k_path, rows=1500)
    model = _train(
        PLE(
            feats,
            shared_expert_num=1,
            specific_expert_num=2,
            num_levels=2,
            expert_dnn_hidden_units=(8,),
            gate_dnn_hidden_units=(4,),
            tower_dnn_hidden_units=(4,),
            task_types=("binary",) * 2,
            task_names=("like", "love"),
        ),
        x,
        y[:, :2],
    )
    rec = record_deepctr(
        model,
        x,
        y[:, :2],
        domain="age_group",
        domains=DOMAINS,
        out=tmp_path / "rec",
        sample_size=20,
    )
    assert [g.name for g in rec.meta.gates] == ["gate", "level1", "level1_shared"]
    assert [g.kind for g in rec.meta.gates] == ["structured", "structured", "dense"]
    assert rec.meta.primary.reach == ((0, 1, 4),) * 3  # task 0's gate, read by every domain
    ex = rec.meta.primary.experts
    assert [(e.name, e.kind, e.owner) for e in ex] == [
        ("specific_0_0", "specific", "like"),
        ("specific_0_1", "specific", "like"),
        ("specific_1_0", "specific", "love"),
        ("specific_1_1", "specific", "love"),
        ("shared_0", "shared", None),
    ]
    model.eval()
    with torch.no_grad():  # PLE's forward written out: level 0, then level 1's task-0 gate
        inp = _dnn_input(model, x)
        lvl0 = model.cgc_net([inp] * 3, 0)
        g1 = model.specific_gate_dnn_final_layer[1][0](model.specific_gate_dnn[1][0][0](lvl0[0]))
        g0s = model.shared_gate_dnn_final_layer[0](model.shared_gate_dnn[0](inp))
    df = _rows(rec)
    p = df[[f"p.gate.{e}" for e in range(5)]].to_numpy()
    np.testing.assert_allclose(p[:, [0, 1, 4]], g1.softmax(1).numpy(), atol=1e-6)
    assert (p[:, [2, 3]] == 0).all()  # task 1's specific experts: unreachable for task 0's gate
    shared = df[[f"p.level1_shared.{e}" for e in range(5)]].to_numpy()
    np.testing.assert_allclose(shared, g0s.softmax(1).numpy(), atol=1e-6)
    assert rec.meta.sample["size"] == 20


def test_refusals_name_the_problem(ml100k_path, tmp_path):
    x, y, feats = _movielens(ml100k_path, rows=300)
    model = MMOE(feats, num_experts=2, expert_dnn_hidden_units=(4,), task_types=("binary",) * 2)
    with pytest.raises(ValueError, match="task=None reads one task per domain.*2 tasks"):
        record_deepctr(
            model, x, y[:, :2], domain="age_group", domains=DOMAINS, task=None, out=tmp_path / "a"
        )
    with pytest.raises(ValueError, match="x has no column 'age'"):
        record_deepctr(model, x, y[:, :2], domain="age", domains=DOMAINS, out=tmp_path / "b")
    with pytest.raises(ValueError, match="expected a deepctr_torch MMOE or PLE"):
        record_deepctr(
            torch.nn.Linear(2, 2), x, y, domain="age_group", domains=DOMAINS, out=tmp_path / "c"
        )


def test_ple_one_task_per_domain_reaches_each_domains_own_experts(ml100k_path, tmp_path):
    x, y, feats = _movielens(ml100k_path, rows=400)
    torch.manual_seed(0)
    model = PLE(feats, shared_expert_num=1, specific_expert_num=1, num_levels=1,
                expert_dnn_hidden_units=(8,), gate_dnn_hidden_units=(),
                tower_dnn_hidden_units=(4,), task_types=("binary",) * 3, task_names=DOMAINS,
                init_std=0.5)  # fmt: skip
    rec = record_deepctr(model, x, y, domain="age_group", domains=DOMAINS, task=None,
                         out=tmp_path / "rec")  # fmt: skip
    g = rec.meta.primary
    assert g.kind == "structured" and g.reach == ((0, 3), (1, 3), (2, 3))
    assert [e.owner for e in g.experts] == [*DOMAINS, None]
    model.eval()
    with torch.no_grad():
        inp = _dnn_input(model, x)
        gates = [model.specific_gate_dnn_final_layer[0][t](inp).softmax(1) for t in range(3)]
    d = x["age_group"]
    want = np.zeros((len(d), 4))
    for t in range(3):
        want[np.ix_(d == t, [t, 3])] = gates[t].numpy()[d == t]
    got = _rows(rec)[[f"p.gate.{e}" for e in range(4)]].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
