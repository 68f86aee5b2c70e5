"""torch-rechub's MMOE and PLE, trained by torch-rechub itself on MovieLens-100k, then recorded and
read through the analysis path (P(e|d), MI, entropy, load, embedding) from their real gates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("torch_rechub")

from torch_rechub.basic.features import SparseFeature  # noqa: E402
from torch_rechub.models.multi_task import MMOE, PLE  # noqa: E402
from torch_rechub.trainers import MTLTrainer  # noqa: E402
from torch_rechub.utils.data import DataGenerator  # noqa: E402

from analysis.embeddings import expert_output_points, project  # noqa: E402
from analysis.measures import summarize  # noqa: E402
from analysis.records.collection import record_collection  # noqa: E402
from analysis.records.rechub import record_rechub  # noqa: E402
from analysis.report import build_report  # noqa: E402
from cesaa.routing.stats import RoutingStats  # noqa: E402

DOMAINS = ["age<25", "age25-34", "age35+"]
COLS = ["user_id", "item_id", "gender", "occupation", "age_group"]


def _movielens(path, rows: int = 4000) -> tuple[dict, np.ndarray, list]:
    """A seeded subset of MovieLens-100k in torch-rechub's input format (plain pandas)."""
    r = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    u = pd.read_csv(
        path / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"]
    )
    df = r.sample(rows, random_state=0).merge(u, on="user_id")
    df["age_group"] = pd.cut(df.age, [0, 24, 34, 200], labels=False)  # <25, 25-34, 35+
    df["label"] = (df.rating > 3).astype("float32")
    for c in COLS:
        df[c] = df[c].astype("category").cat.codes.astype("int64")
    x = {c: df[c].to_numpy() for c in COLS}
    features = [SparseFeature(c, vocab_size=int(df[c].max()) + 1, embed_dim=4) for c in COLS]
    return x, df[["label"]].to_numpy(), features


def _train(model, x, y, tmp_path, epochs: int = 1, lr: float = 1e-3):
    torch.manual_seed(0)
    train, val, test = DataGenerator(x, y).generate_dataloader(
        split_ratio=[0.7, 0.1], batch_size=256
    )
    trainer = MTLTrainer(
        model,
        ["classification"],
        n_epoch=epochs,
        model_path=str(tmp_path),
        optimizer_params={"lr": lr, "weight_decay": 1e-5},
    )
    trainer.fit(train, val)
    return test


def _gate_of(model, loader, gate) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The gate probabilities computed directly (embedding -> gate module), not through hooks."""
    model.eval()
    probs, dom, y, p = [], [], [], []
    with torch.no_grad():
        for xb, yb in loader:
            emb = model.embedding(xb, model.features, squeeze_dim=True)
            probs.append(gate(emb).numpy())
            dom.append(xb["age_group"].numpy())
            y.append(yb[:, 0].numpy())
            p.append(model(xb)[:, 0].numpy())
    return tuple(np.concatenate(a) for a in (probs, dom, y, p))


def test_rechub_mmoe_trained_by_rechub_recorded_and_analysed(ml100k_path, tmp_path):
    x, y, features = _movielens(ml100k_path)
    torch.manual_seed(0)
    model = MMOE(features, ["classification"], 4, {"dims": [8]}, [{"dims": [4]}])
    test = _train(model, x, y, tmp_path)
    rec = record_rechub(
        model,
        test,
        domain="age_group",
        domains=DOMAINS,
        out=tmp_path / "rec",
        keep=["user_id", "item_id"],
        sample_size=100,
    )
    assert (rec.meta.primary.kind, rec.meta.primary.hyper) == ("dense", {})
    probs, dom, lab, pred = _gate_of(model, test, model.gates[0])
    expected = RoutingStats.from_arrays(probs, dom, 3, labels=lab, preds=pred)
    assert rec.stats["gate"].isclose(expected, rtol=1e-5, atol=1e-5)
    assert [e.name for e in rec.meta.primary.experts] == [f"experts.{i}" for i in range(4)]

    col = record_collection(rec)
    s = summarize(col.stats, DOMAINS, [e.name for e in rec.meta.primary.experts])
    joint = expected.prob_sum / expected.prob_sum.sum()
    pd_, pe = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    mi = float((joint * np.log(joint / (pd_ * pe))).sum())  # soft MI from the direct gate
    assert s["mi_soft"] == pytest.approx(mi, rel=1e-4)
    points, labels = expert_output_points(col.sample, "routed")
    xy = project(points, "pca")
    assert xy.shape == (len(points), 2) and len(points) == 100
    assert col.sample.expert_outputs.shape == (100, 4, 8)

    report = build_report(rec.path, sample_size=100, embedding="pca", cache_dir=tmp_path / "c")
    assert report.headline()["mi_soft"] == pytest.approx(mi, rel=1e-4)
    assert report.model_card["name"] == "torch-rechub MMOE"


def test_rechub_ple_levels_and_expert_kinds(ml100k_path, tmp_path):
    x, y, features = _movielens(ml100k_path, rows=2000)
    torch.manual_seed(0)
    model = PLE(features, ["classification"], 2, 1, 2, {"dims": [8]}, [{"dims": [4]}])
    test = _train(model, x, y, tmp_path)
    rec = record_rechub(model, test, domain="age_group", domains=DOMAINS, out=tmp_path / "rec")
    assert [g.name for g in rec.meta.gates] == ["gate", "level1", "level1_shared"]
    # one task: its gate weighs its 1 specific and both shared experts, every expert of the level
    assert [g.kind for g in rec.meta.gates] == ["dense"] * 3
    kinds = [e.kind for e in rec.meta.primary.experts]
    assert kinds == ["specific", "shared", "shared"]
    last = model.cgc_layers[1]
    probs, dom, lab, pred = _gate_of(model, test, lambda emb: _level2_gate_input(model, emb))
    expected = RoutingStats.from_arrays(probs, dom, 3, labels=lab, preds=pred)
    assert rec.stats["gate"].isclose(expected, rtol=1e-5, atol=1e-5)
    assert last.gates_specific[0] is not None


def _level2_gate_input(model, emb):
    """Level 2's task-0 gate on level 1's task-0 output (PLE's own forward, written out)."""
    outs = model.cgc_layers[0]([emb, emb])  # one task: [task 0 input, shared input]
    return model.cgc_layers[1].gates_specific[0](outs[0])


def test_one_task_per_domain_reads_each_domains_gate(tmp_path):
    torch.manual_seed(0)
    features = [
        SparseFeature("age_group", vocab_size=3, embed_dim=4),
        SparseFeature("item_id", vocab_size=20, embed_dim=4),
    ]
    model = MMOE(features, ["classification"] * 3, 4, {"dims": [8]}, [{"dims": [4]}] * 3).eval()
    rng = np.random.default_rng(0)
    xb = {
        "age_group": torch.tensor(rng.integers(0, 3, 60)),
        "item_id": torch.tensor(rng.integers(0, 20, 60)),
    }
    yb = torch.tensor(rng.integers(0, 2, (60, 3))).float()
    rec = record_rechub(
        model, [(xb, yb)], domain="age_group", domains=DOMAINS, out=tmp_path / "rec", task=None
    )
    with torch.no_grad():
        emb = model.embedding(xb, model.features, squeeze_dim=True)
        all_gates = torch.stack([g(emb) for g in model.gates], 1).numpy()  # [B, T, E]
        out = model(xb).numpy()
    d = xb["age_group"].numpy()
    rows = np.arange(60)
    expected = RoutingStats.from_arrays(
        all_gates[rows, d], d, 3, labels=yb.numpy()[rows, d], preds=out[rows, d]
    )
    assert rec.stats["gate"].isclose(expected, rtol=1e-5, atol=1e-5)


def test_ple_one_task_per_domain_keeps_expert_identities(tmp_path):
    torch.manual_seed(0)
    features = [
        SparseFeature("age_group", vocab_size=3, embed_dim=4),
        SparseFeature("item_id", vocab_size=20, embed_dim=4),
    ]
    model = PLE(features, ["classification"] * 3, 1, 2, 1, {"dims": [8]}, [{"dims": [4]}] * 3)
    rng = np.random.default_rng(0)
    xb = {
        "age_group": torch.tensor(rng.integers(0, 3, 60)),
        "item_id": torch.tensor(rng.integers(0, 20, 60)),
    }
    yb = torch.tensor(rng.integers(0, 2, (60, 3))).float()
    rec = record_rechub(
        model, [(xb, yb)], domain="age_group", domains=DOMAINS, out=tmp_path / "rec", task=None
    )
    kinds = [(e.kind, e.owner) for e in rec.meta.primary.experts]
    assert kinds == [("specific", d) for d in DOMAINS for _ in range(2)] + [("shared", None)]
    g = rec.meta.primary  # declared: domain d's gate reaches its 2 specific experts and the shared
    assert (g.kind, g.reach, g.hyper, g.shared) == (
        "structured",
        tuple((2 * d, 2 * d + 1, 6) for d in range(3)),
        {},
        [6],
    )
    model.eval()
    with torch.no_grad():
        emb = model.embedding(xb, model.features, squeeze_dim=True)
        gates = [g(emb).numpy() for g in model.cgc_layers[0].gates_specific]  # [B, 2 + 1] each
        out = model(xb).numpy()
    d = xb["age_group"].numpy()
    probs = np.zeros((60, 7))  # 3 domains x 2 specific experts, then the shared one
    for i, dom in enumerate(d):
        probs[i, [2 * dom, 2 * dom + 1, 6]] = gates[dom][i]
    rows = np.arange(60)
    expected = RoutingStats.from_arrays(probs, d, 3, labels=yb.numpy()[rows, d], preds=out[rows, d])
    assert rec.stats["gate"].isclose(expected, rtol=1e-5, atol=1e-5)
    # a domain never weighs another domain's specific experts
    st = rec.stats["gate"]
    for dom in range(3):
        others = [c for c in range(6) if c // 2 != dom]
        assert st.prob_sum[dom, others].sum() == 0
