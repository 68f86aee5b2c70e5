from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cesaa.data.frame import from_frame
from cesaa.data.schema import TableSchema
from cesaa.models import default_config
from cesaa.retrieval import (
    EvalSet,
    RetrievalConfig,
    TwoTower,
    build_catalog,
    evaluate_retrieval,
    in_batch_softmax_loss,
    popularity_scores,
    ranking_report,
    recall_report,
    score_queries,
    split_features,
    top_k_items,
    train_retrieval,
)
from cesaa.retrieval.recall import recall_at_k

SYN_USER = ("user_id", "cat_a", "num_0")


def _planted(seed: int = 0, users: int = 60, items: int = 45, groups: int = 3) -> object:
    """Users and items in ``groups`` groups (the group is the user's domain and a feature of both);
    each user likes 8 items of its own group (label 1) and saw 4 of other groups (label 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        g = u % groups
        own = [i for i in range(items) if i % groups == g]
        other = [i for i in range(items) if i % groups != g]
        rows += [(u, i, 1) for i in rng.choice(own, 8, replace=False)]
        rows += [(u, i, 0) for i in rng.choice(other, 4, replace=False)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "label"])
    df["grp"] = (df["user_id"] % groups).astype(str)
    df["igrp"] = (df["item_id"] % groups).astype(str)
    df["domain"] = "d" + df["grp"]
    schema = TableSchema(
        label="label",
        domain="domain",
        categorical=("user_id", "grp", "item_id", "igrp"),
        user="user_id",
        item="item_id",
    )
    return from_frame(df, schema, seed=seed)


# ---- the loss ------------------------------------------------------------------------------------


def test_in_batch_softmax_known_value_2x2() -> None:
    u = torch.eye(2)
    v = torch.eye(2)
    # logits [[1, 0], [0, 1]]: each row -log(e / (e + 1)) = log(1 + e^-1)
    assert in_batch_softmax_loss(u, v).item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    # temperature 0.5 doubles the logits
    assert in_batch_softmax_loss(u, v, 0.5).item() == pytest.approx(
        math.log1p(math.exp(-2)), rel=1e-6
    )
    # the same item in both rows: the other row is not a negative, nothing left to push away
    assert in_batch_softmax_loss(u, v, item_ids=torch.tensor([7, 7])).item() == pytest.approx(
        0.0, abs=1e-7
    )


def test_logq_correction_known_value() -> None:
    u, v = torch.eye(2), torch.eye(2)
    uniform = torch.log(torch.tensor([0.5, 0.5]))
    assert in_batch_softmax_loss(u, v, item_logq=uniform).item() == pytest.approx(
        in_batch_softmax_loss(u, v).item(), rel=1e-6
    )
    lq = torch.tensor([0.0, math.log(0.25)])
    # l = [[1 - 0, 0 - log .25], [0 - 0, 1 - log .25]]
    r0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(-math.log(0.25))))
    r1 = -math.log(math.exp(1 - math.log(0.25)) / (1 + math.exp(1 - math.log(0.25))))
    assert in_batch_softmax_loss(u, v, item_logq=lq).item() == pytest.approx((r0 + r1) / 2)


def test_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        in_batch_softmax_loss(torch.zeros(3, 2), torch.zeros(2, 2))


# ---- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["cesaa", "mmoe", "mlp"])
def test_two_tower_shapes(small_data, tower: str) -> None:
    cfg = default_config(tower, num_experts=4, top_k=2)
    model = TwoTower(cfg, small_data.spec, user_features=SYN_USER, out_dim=8)
    b = small_data.train.batches(32).__next__()
    out = model(b.cat, b.num, b.domain)
    assert out.logit.shape == (32,)
    assert out.embedding.shape == (32, 8)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(32), atol=1e-5)
    assert model.item_embedding(b.cat, b.num).shape == (32, 8)
    if tower == "mlp":
        assert out.probs is None
    else:
        e = 4 if tower == "cesaa" else small_data.spec.num_domains
        assert out.probs.shape == (32, e)
        assert torch.allclose(out.probs.sum(1), torch.ones(32), atol=1e-5)
    if tower == "cesaa":
        assert out.topk_idx.shape == (32, 2)
        assert ((out.gates > 0).sum(1) == 2).all()
        out.aux_loss.backward()  # the MI loss reaches the gate
        assert model.user_tower.gate.w_gate.grad is not None


def test_user_tower_ignores_item_columns(small_data) -> None:
    torch.manual_seed(0)
    model = TwoTower(default_config("cesaa"), small_data.spec, user_features=SYN_USER).eval()
    b = small_data.train.batches(16).__next__()
    split = split_features(small_data.spec, SYN_USER)
    cat2 = b.cat.clone()
    cat2[:, list(split.item_cat)] = 0
    u1 = model.user_embedding(b.cat, b.num, b.domain).embedding
    u2 = model.user_embedding(cat2, b.num, b.domain).embedding
    assert torch.equal(u1, u2)


def test_split_features_errors(small_data) -> None:
    with pytest.raises(ValueError, match="not columns"):
        split_features(small_data.spec, ("nope",))
    with pytest.raises(ValueError, match="categorical column"):
        split_features(small_data.spec, small_data.spec.cat_names)
    with pytest.raises(ValueError, match="user tower"):
        TwoTower(default_config("ple"), small_data.spec, user_features=SYN_USER)


# ---- evaluation ----------------------------------------------------------------------------------


def test_eval_set_ground_truth_and_exclusion() -> None:
    data = _planted()
    ev = EvalSet.build(data, "test")
    cat = ev.catalog
    assert len(cat) == 45
    t = data.test
    pos = t.label.numpy() > 0.5
    assert ev.num_queries == len(np.unique(t.user.numpy()[pos]))
    assert ev.ground_truth.nnz == pos.sum()
    # every training and validation interaction of a query's user is excluded, nothing else
    q_user = t.user.numpy()[pos]
    users = np.unique(q_user)
    seen = pd.concat(
        [pd.DataFrame({"u": d.user.numpy(), "i": d.item.numpy()}) for d in (data.train, data.val)]
    )
    seen = seen[seen.u.isin(users)].drop_duplicates()
    assert ev.exclude.nnz == len(seen)
    assert (ev.ground_truth.multiply(ev.exclude)).nnz == 0  # one rating per (user, item)


def test_exclusion_removes_seen_items_from_the_ranking() -> None:
    data = _planted()
    ev = EvalSet.build(data, "test")
    gt = ev.ground_truth.toarray().astype(bool)
    ex = ev.exclude.toarray().astype(bool)
    # seen items score highest, then the ground truth, then the rest
    scores = torch.from_numpy(np.where(ex, 100.0, np.where(gt, 50.0, 0.0)).astype(np.float32))
    k = int(gt.sum(1).max())
    with_exclusion = recall_report(scores, ev, ks=(k,))[f"recall@{k}"]
    assert with_exclusion == pytest.approx(1.0)
    # without excluding them, seen items fill the top of the list
    without = recall_at_k(scores, ev.ground_truth, k)
    assert without < 0.5


def test_recall_per_domain_keys() -> None:
    data = _planted()
    ev = EvalSet.build(data, "val")
    out = recall_report(popularity_scores(data.train, ev.catalog), ev, ks=(5, 10))
    for name in data.domain_names:
        assert f"recall@5/{name}" in out and f"recall@10/{name}" in out
        assert 0.0 <= out[f"recall@5/{name}"] <= out[f"recall@10/{name}"] <= 1.0
    assert sum(out[f"queries/{n}"] for n in data.domain_names) == out["queries"]


def test_trained_model_beats_random_on_a_planted_problem() -> None:
    data = _planted()
    cfg = RetrievalConfig(
        epochs=15,
        batch_size=64,
        lr=1e-2,
        patience=15,
        ks=(5,),
        monitor_k=5,
        out_dim=8,
        device="cpu",
        user_features=("user_id", "grp"),
    )
    res = train_retrieval(default_config("mlp", expert_hidden=(16,)), cfg, data)
    learned = res.test_metrics["recall@5"]
    catalog = build_catalog(data.train, data.val, data.test)
    ev = EvalSet.build(data, "test", catalog)
    gen = torch.Generator().manual_seed(0)
    rand = np.mean(
        [
            recall_report(torch.rand(ev.num_queries, len(catalog), generator=gen), ev, (5,))[
                "recall@5"
            ]
            for _ in range(20)
        ]
    )
    assert learned > 2 * rand, (learned, rand)
    assert evaluate_retrieval(res.model, ev, (5,))["recall@5"] == pytest.approx(learned)
    assert res.best_epoch >= 1 and res.history


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="temperature"):
        RetrievalConfig(temperature=0)
    with pytest.raises(ValueError, match="batch_size"):
        RetrievalConfig(batch_size=1)


@pytest.mark.parametrize(("query_chunk", "item_chunk"), [(1024, 65536), (7, 5), (1, 45), (64, 1)])
def test_blockwise_top_k_equals_the_full_score_matrix(query_chunk: int, item_chunk: int) -> None:
    """Chunked ranking (no [Q, I] matrix) == recall_at_k on the full scores, exclusion included."""
    data = _planted()
    ev = EvalSet.build(data, "test")
    torch.manual_seed(0)
    cfg = default_config("mlp", expert_hidden=(8,))
    model = TwoTower(cfg, data.spec, user_features=("user_id", "grp"), out_dim=8)
    full = recall_report(score_queries(model, ev), ev, ks=(1, 5, 10))
    chunked = evaluate_retrieval(model, ev, (1, 5, 10), query_chunk, item_chunk)
    assert chunked == pytest.approx(full, nan_ok=True)
    assert full["recall@10"] > 0  # a case with hits


def test_top_k_items_known_ranking_and_exclusion() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [Q=2, d=2]
    items = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0], [2.0, 5.0]])  # [I=4, d]
    from scipy import sparse

    exclude = sparse.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.int8))
    pos, val = top_k_items(users, items, 3, exclude, query_chunk=1, item_chunk=3)
    # query 0 scores 3, 1, 0, 2 with item 0 excluded -> 3, 1, 2; query 1 scores 0, 1, 2, 5
    assert pos.tolist() == [[3, 1, 2], [3, 2, 1]]
    assert val.tolist() == [[2.0, 1.0, 0.0], [5.0, 2.0, 1.0]]
    pos, val = top_k_items(users, items, 4, exclude, item_chunk=2)
    assert pos[0, 3].item() == 0 and val[0, 3].item() == -math.inf  # excluded item last


def test_ranking_report_counts_an_excluded_item_never_as_a_hit() -> None:
    data = _planted()
    ev = EvalSet.build(data, "test")
    q, i = ev.num_queries, len(ev.catalog)
    gt = ev.ground_truth.toarray() > 0
    first_gt = gt.argmax(axis=1)
    top_pos = torch.from_numpy(first_gt).long().unsqueeze(1)  # every query's first GT item
    hits = ranking_report(top_pos, torch.zeros(q, 1), ev, (1,))["recall@1"]
    expected = float(np.mean(1.0 / gt.sum(axis=1)))
    assert hits == pytest.approx(expected)
    masked = ranking_report(top_pos, torch.full((q, 1), -math.inf), ev, (1,))["recall@1"]
    assert masked == 0.0 and i > 1
    with pytest.raises(ValueError, match="need at least 5 ranked items"):
        ranking_report(top_pos, torch.zeros(q, 1), ev, (5,))


@pytest.mark.parametrize(
    ("tower", "attr", "kw"), [("mmoe", "towers", {}), ("cesaa", "heads", {"head": "per_domain"})]
)
def test_per_domain_user_towers_start_tied(small_data, tower, attr, kw) -> None:
    """The retrieval user towers' per-domain heads start tied as the ranking models' (default
    tower_init="tied"); every other parameter is the independent init's (same random stream)."""

    def make(init: str) -> TwoTower:
        torch.manual_seed(0)
        cfg = default_config(tower, tower_init=init, **kw)
        return TwoTower(cfg, small_data.spec, user_features=SYN_USER, out_dim=8)

    tied, indep = make("tied"), make("independent")
    stacked_t, stacked_i = getattr(tied.user_tower, attr), getattr(indep.user_tower, attr)
    for w_t, w_i in zip(stacked_t.parameters(), stacked_i.parameters(), strict=True):
        assert torch.equal(w_t, w_i[:1].expand_as(w_i))
        assert not torch.equal(w_i[1], w_i[0])
    others = dict(indep.named_parameters())
    for n, p in tied.named_parameters():
        if not n.startswith(f"user_tower.{attr}."):
            assert torch.equal(p, others[n]), n
