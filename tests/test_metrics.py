from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from cesaa.metrics import auc, evaluate_predictions, gauc, logloss, metrics_table
from cesaa.retrieval.recall import recall_at_k


def naive_gauc(y, p, user):
    num = den = 0.0
    for _, g in pd.DataFrame({"y": y, "p": p, "u": user}).groupby("u"):
        if g.y.nunique() < 2:
            continue
        num += len(g) * roc_auc_score(g.y, g.p)
        den += len(g)
    return num / den


# ---- AUC ----------------------------------------------------------------------------------------


def test_auc_known_values():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts 1/2


def test_auc_accepts_torch_and_bool():
    y = torch.tensor([False, True, False, True])
    p = torch.tensor([0.1, 0.9, 0.3, 0.2], requires_grad=True)
    assert auc(y, p) == pytest.approx(0.75)


def test_auc_single_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match=r"only one class \(all 1\)"):
        assert math.isnan(auc([1, 1, 1], [0.2, 0.5, 0.9]))


@pytest.mark.parametrize(
    "y, p, match",
    [
        ([0, 2], [0.1, 0.2], "y must hold 0/1 labels"),
        ([0, 1, 1], [0.1, 0.2], "p has 2 rows but y has 3"),
        ([[0, 1]], [[0.1, 0.2]], r"y must be 1-D \[rows\], got shape \(1, 2\)"),
        ([0, 1], [0.1, np.nan], "p has NaN"),
    ],
)
def test_auc_rejects_bad_input(y, p, match):
    with pytest.raises(ValueError, match=match):
        auc(y, p)


# ---- GAUC ---------------------------------------------------------------------------------------


def test_gauc_hand_example_weights_by_impressions_and_skips_single_class_users():
    # user a: 3 rows, perfectly ranked -> AUC 1, weight 3
    # user b: 4 rows, positives {.2, .8} vs negatives {.5, .9}: 1 of 4 pairs right -> 0.25, weight 4
    # user c: only positives -> skipped
    y = [1, 0, 0, 1, 1, 0, 0, 1, 1]
    p = [0.9, 0.5, 0.1, 0.2, 0.8, 0.5, 0.9, 0.3, 0.6]
    user = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    assert gauc(y, p, user) == pytest.approx((3 * 1.0 + 4 * 0.25) / 7)


def test_gauc_ties_within_a_user_count_half():
    assert gauc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.1], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_gauc_all_users_single_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="no user having both classes"):
        assert math.isnan(gauc([1, 1, 0], [0.1, 0.2, 0.3], [0, 0, 1]))


@pytest.mark.parametrize("seed", range(5))
def test_gauc_fast_path_matches_naive_sklearn_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    user = rng.integers(0, 150, n)
    y = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    p = np.round(rng.random(n), 1)  # many ties
    assert gauc(y, p, user) == pytest.approx(naive_gauc(y, p, user), rel=1e-12)


def _python_calls(fn) -> int:
    """Python function calls made while running ``fn`` (C code is not counted)."""
    calls = 0

    def profiler(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_gauc_has_no_python_loop_over_users():
    """Complexity check (its timing is in ``bench.speed``): the Python work is the same for 20 and
    for 2000 users, so nothing iterates over users in Python."""
    rng = np.random.default_rng(0)
    n = 20_000

    def run(users: int) -> None:
        user, y, p = rng.integers(0, users, n), rng.integers(0, 2, n), rng.random(n)
        assert 0.4 < gauc(y, p, user) < 0.6

    few, many = _python_calls(lambda: run(20)), _python_calls(lambda: run(2000))
    assert many == few
    # the naive per-user loop, measured the same way, does scale with the users
    user, y, p = rng.integers(0, 50, 2000), rng.integers(0, 2, 2000), rng.random(2000)
    assert _python_calls(lambda: naive_gauc(y, p, user)) > 50 * 10


def test_gauc_rejects_user_length_mismatch():
    with pytest.raises(ValueError, match="user has 2 rows but y has 3"):
        gauc([0, 1, 0], [0.1, 0.2, 0.3], [0, 1])


# ---- logloss ------------------------------------------------------------------------------------


def test_logloss_known_values_and_clipping():
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert logloss([0, 1], [0.0, 1.0]) == pytest.approx(-math.log(1 - 1e-7))


def test_logloss_rejects_non_probabilities():
    with pytest.raises(ValueError, match=r"p must be probabilities in \[0, 1\]"):
        logloss([0, 1], [0.2, 1.5])


# ---- evaluate_predictions / metrics_table -------------------------------------------------------


def test_evaluate_predictions_keys_and_values():
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.6, 0.4, 0.7, 0.2])
    domain = np.array([0, 0, 1, 1, 0, 1])
    out = evaluate_predictions(y, p, domain, domain_names=["x", "y"])
    assert out["auc"] == pytest.approx(roc_auc_score(y, p))
    assert out["auc/x"] == pytest.approx(1.0)
    assert out["auc/y"] == pytest.approx(0.5)
    assert out["mean_domain_auc"] == pytest.approx(0.75)
    assert out["worst_domain_auc"] == pytest.approx(0.5)
    assert out["rows/x"] == 3 and out["rows/y"] == 3
    assert out["pos_rate/x"] == pytest.approx(2 / 3)
    assert out["logloss/y"] == pytest.approx(logloss(y[domain == 1], p[domain == 1]))
    assert "gauc" not in out and "gauc/x" not in out


def test_evaluate_predictions_single_class_domain_is_nan_and_skipped():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.2, 0.8, 0.3, 0.6])
    domain = np.array([0, 0, 1, 1])
    with pytest.warns(UndefinedMetricWarning, match="auc/b"):
        out = evaluate_predictions(y, p, domain, user=[0, 0, 1, 1], domain_names=["a", "b"])
    assert math.isnan(out["auc/b"])
    assert math.isnan(out["gauc/b"])
    assert out["mean_domain_auc"] == pytest.approx(1.0)
    assert out["worst_domain_auc"] == pytest.approx(1.0)
    assert out["gauc/a"] == pytest.approx(1.0)
    assert out["logloss/b"] == pytest.approx(logloss([1, 1], [0.3, 0.6]))


def test_evaluate_predictions_domain_without_rows_and_default_names():
    out = evaluate_predictions([0, 1], [0.3, 0.7], [0, 0], domain_names=["a", "b"])
    assert out["rows/b"] == 0 and math.isnan(out["auc/b"])
    out = evaluate_predictions([0, 1, 0, 1], [0.3, 0.7, 0.1, 0.2], [0, 0, 1, 1])
    assert set(out) >= {"auc/domain_0", "auc/domain_1", "logloss/domain_1"}


def test_evaluate_predictions_rejects_domain_out_of_range():
    with pytest.raises(ValueError, match=r"domain has values outside \[0, 2\): \[5\]"):
        evaluate_predictions([0, 1], [0.3, 0.7], [0, 5], domain_names=["a", "b"])


def test_metrics_table():
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.6, 0.4, 0.7, 0.2])
    metrics = evaluate_predictions(y, p, [0, 0, 1, 1, 0, 1], user=[0, 0, 0, 1, 1, 1])
    table = metrics_table(metrics, ["domain_0", "domain_1"])
    assert list(table.columns) == ["AUC", "GAUC", "logloss", "rows", "pos_rate"]
    assert list(table.index) == ["overall", "domain_0", "domain_1"]
    assert table.loc["overall", "rows"] == 6
    assert table.loc["domain_1", "AUC"] == pytest.approx(metrics["auc/domain_1"])
    assert table.loc["overall", "GAUC"] == pytest.approx(metrics["gauc"])
    logged = {f"val/{k}": v for k, v in metrics.items()}
    assert metrics_table(logged, prefix="val/").equals(table)  # names inferred from the keys


# ---- recall@k -----------------------------------------------------------------------------------


SCORES = np.array([[0.9, 0.1, 0.5, 0.3], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])


def test_recall_at_k_hand_example():
    # user 0: top2 {0, 2}, GT {0, 3} -> 1/2; user 1: top2 {3, 2}, GT {1} -> 0; user 2: no GT, skipped
    assert recall_at_k(SCORES, [{0, 3}, {1}, set()], k=2) == pytest.approx(0.25)
    assert recall_at_k(SCORES, [{0, 3}, {1}, set()], k=4) == pytest.approx(1.0)


def test_recall_at_k_excludes_seen_items():
    seen = [{0}, {3, 2}, set()]
    # user 0: top2 of {1, 2, 3} = {2, 3} -> 1/2; user 1: top2 of {0, 1} -> {1, 0} -> 1
    assert recall_at_k(SCORES, [{0, 3}, {1}, set()], k=2, exclude=seen) == pytest.approx(0.75)
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0] = mask[1, 3] = mask[1, 2] = True
    assert recall_at_k(SCORES, [{0, 3}, {1}, set()], k=2, exclude=mask) == pytest.approx(0.75)


def test_recall_at_k_excluded_items_are_never_hits():
    # user 0 has only one unseen item; its second "top" slot is a seen GT item and must not count
    assert recall_at_k(np.array([[0.9, 0.1]]), [{0}], k=2, exclude=[{0}]) == pytest.approx(0.0)


def test_recall_at_k_accepts_ranked_indices_sparse_gt_and_torch():
    ranked = np.array([[0, 2, 3, 1], [3, 2, 1, 0]])
    gt = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]]))
    assert recall_at_k(ranked, gt, k=2) == pytest.approx(0.25)
    assert recall_at_k(torch.tensor(SCORES[:2]), gt, k=2) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 5}, r"k=5 exceeds the number of items \(4 columns"),
        ({"k": 0}, "k must be a positive int, got 0"),
        (
            {"k": 2, "ground_truth": [{0}, {9}, set()]},
            r"ground_truth has item ids outside \[0, 4\)",
        ),
        ({"k": 2, "ground_truth": [{0}]}, "ground_truth has 1 users but scores has 3"),
    ],
)
def test_recall_at_k_rejects_bad_input(kwargs, match):
    kwargs = {"ground_truth": [{0}, {1}, set()], **kwargs}
    with pytest.raises(ValueError, match=match):
        recall_at_k(SCORES, **kwargs)


def test_recall_at_k_all_gt_empty_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="every ground-truth set is empty"):
        assert math.isnan(recall_at_k(SCORES, [set(), set(), set()], k=1))
