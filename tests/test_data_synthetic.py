"""Planted synthetic data: determinism, ground truth, learnability, and that domains matter."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from cesaa.data import EncodedTable, load_data, make_planted, make_planted_frame
from cesaa.data.synthetic import auc

FIELDS = ("cat", "num", "domain", "label", "user", "item", "time")


@pytest.fixture(scope="module")
def small():
    return make_planted(num_rows=20_000, seed=0)


def tables_equal(a: EncodedTable, b: EncodedTable) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_same_seed_gives_identical_tensors(small) -> None:
    again = make_planted(num_rows=20_000, seed=0)
    assert again.fingerprint == small.fingerprint
    for part in ("train", "val", "test"):
        assert tables_equal(getattr(again, part), getattr(small, part))
    assert again.truth == small.truth


def test_different_seed_gives_different_data(small) -> None:
    other = make_planted(num_rows=20_000, seed=1)
    assert other.fingerprint != small.fingerprint
    assert not torch.equal(other.train.label, small.train.label)


def test_default_size_and_split(small) -> None:
    data = make_planted()
    assert (len(data.train), len(data.val), len(data.test)) == (160_000, 20_000, 20_000)
    assert data.spec.num_domains == 4 and data.spec.num_numeric == 4
    assert len(data.spec.cat_names) == 6
    assert all(11 <= c <= 1001 for c in data.spec.cat_cardinalities)
    assert data.train.user is not None and data.train.item is not None


def test_truth_matrix_shape_and_shared_mechanism(small) -> None:
    truth = small.truth
    m = np.asarray(truth["domain_mechanism"])
    assert m.shape == (4, 9)  # D x K, K = 2 * D + 1 by default
    assert set(np.unique(m)) <= {0, 1}
    shared = truth["shared_mechanism"]
    assert m[:, shared].tolist() == [1, 1, 1, 1]  # every domain uses the shared mechanism
    assert m.sum(1).tolist() == [3, 3, 3, 3]  # shared + 2 specific
    specific = np.delete(m, shared, axis=1)
    assert specific.sum(0).max() == 1  # disjoint when K allows
    assert len(truth["mechanism_names"]) == 9 and len(truth["mechanism_features"]) == 9
    json.dumps(truth)  # stored in meta.json


def test_overlapping_assignment_when_few_mechanisms() -> None:
    planted = make_planted_frame(2_000, num_domains=4, num_mechanisms=4, mechanisms_per_domain=2)
    m = np.asarray(planted.truth["domain_mechanism"])
    assert m.shape == (4, 4) and (m[:, 0] == 1).all() and (m.sum(1) == 3).all()
    assert len({tuple(row) for row in m}) == 3  # only C(3, 2) = 3 distinct specific pairs exist


def test_base_rate_and_domain_sizes(small) -> None:
    labels = torch.cat([small.train.label, small.val.label, small.test.label])
    assert 0.3 <= labels.mean().item() <= 0.5
    sizes = torch.bincount(small.train.domain, minlength=4).float()
    assert sizes.min() > 0 and 1.2 < sizes.max() / sizes.min() < 3  # unequal but comparable


def test_mechanisms_and_domains_matter() -> None:
    planted = make_planted_frame(20_000, seed=0)
    label = planted.frame["label"].to_numpy()
    assert auc(label, planted.logit) == pytest.approx(planted.truth["oracle_auc"])
    assert planted.truth["oracle_auc"] > 0.85
    # the best domain-blind predictor is much worse than the oracle that knows the domain
    assert planted.truth["oracle_auc"] - planted.truth["oracle_auc_domain_blind"] > 0.05
    # routing every row through the wrong domain's mechanisms hurts
    m = np.asarray(planted.truth["domain_mechanism"], dtype=float)
    m /= np.sqrt(m.sum(1, keepdims=True))
    domain = planted.frame["domain"].str.removeprefix("domain_").astype(int).to_numpy()
    wrong = (planted.mechanisms * m[(domain + 1) % 4]).sum(1)
    assert auc(label, wrong) < planted.truth["oracle_auc"] - 0.1


def test_linear_model_learns_and_benefits_from_the_domain(small) -> None:
    """Logistic regression: better than chance, and better with domain-crossed features."""
    d_count = small.spec.num_domains

    def design(tab: EncodedTable, cross: bool) -> tuple[np.ndarray, np.ndarray]:
        cat, num, dom = tab.cat.numpy(), tab.num.numpy(), tab.domain.numpy()
        if not cross:
            return cat, num
        crossed_num = (np.eye(d_count)[dom][:, :, None] * num[:, None, :]).reshape(len(dom), -1)
        return cat * d_count + dom[:, None], np.c_[num, crossed_num]

    scores = {}
    for cross in (False, True):
        cat, num = design(small.train, cross)
        enc = OneHotEncoder(handle_unknown="ignore").fit(cat)
        model = LogisticRegression(max_iter=500, C=0.3)
        model.fit(sparse.hstack([enc.transform(cat), num]).tocsr(), small.train.label.numpy())
        cat, num = design(small.test, cross)
        x_test = sparse.hstack([enc.transform(cat), num]).tocsr()
        scores[cross] = roc_auc_score(small.test.label.numpy(), model.decision_function(x_test))
    assert scores[False] > 0.6
    assert scores[True] > scores[False] + 0.02


def test_source_string_options() -> None:
    data = load_data("synthetic:rows=3000,domains=3,seed=5", seed=2)
    assert data.spec.domain_names == ("domain_0", "domain_1", "domain_2")
    assert data.description["kind"] == "synthetic"
    assert data.description["options"]["seed"] == 5 and data.description["seed"] == 2
    assert np.asarray(data.truth["domain_mechanism"]).shape == (3, 7)
    same = make_planted(3000, 3, seed=5, split_seed=2)
    assert same.fingerprint == data.fingerprint


def test_source_string_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colums'\].*'rows'"):
        load_data("synthetic:colums=3")
    with pytest.raises(ValueError, match=r"rows='many' must be int"):
        load_data("synthetic:rows=many")


def test_invalid_arguments() -> None:
    with pytest.raises(
        ValueError, match="num_mechanisms=2 must be >= 1 \\+ mechanisms_per_domain=2"
    ):
        make_planted_frame(100, num_mechanisms=2)
    with pytest.raises(ValueError, match="base_rate=1.5"):
        make_planted_frame(100, base_rate=1.5)


def test_temporal_split_on_synthetic() -> None:
    data = make_planted(5_000, seed=0, split="temporal")
    n = len(data.train) + len(data.val) + len(data.test)
    assert n == 5_000 and len(data.val) > 0 and len(data.test) > 0


def _domain_fits(planted) -> list[np.ndarray]:
    """Per domain, least-squares coefficients of the true logit on the mechanisms (plus an
    intercept): by the generator's definition the logit is linear in them, so the fit is exact."""
    domain = planted.frame["domain"].to_numpy()
    fits = []
    for name in planted.truth["domain_names"]:
        rows = domain == name
        x = np.column_stack([np.ones(rows.sum()), planted.mechanisms[rows].astype(np.float64)])
        coef, *_ = np.linalg.lstsq(x, planted.logit[rows], rcond=None)
        assert np.abs(x @ coef - planted.logit[rows]).max() < 1e-3  # exactly linear
        fits.append(coef[1:])
    return fits


def test_heterogeneity_zero_is_one_distribution_for_every_domain() -> None:
    p = make_planted_frame(6000, 5, mechanisms_per_domain=2, seed=3, heterogeneity=0.0)
    fits = _domain_fits(p)
    for coef in fits[1:]:  # every domain's logit is the same function of the features
        np.testing.assert_allclose(coef, fits[0], atol=1e-3)
    # and one function of the features alone: the logit of all rows, fit without the domain
    x = np.column_stack([np.ones(len(p.logit)), p.mechanisms.astype(np.float64)])
    coef, *_ = np.linalg.lstsq(x, p.logit, rcond=None)
    assert np.abs(x @ coef - p.logit).max() < 1e-3
    # the features do not depend on the domain either: one chi-square test per categorical column
    from scipy.stats import chi2_contingency

    for col in ("cat_c", "cat_d"):
        table = pd.crosstab(p.frame["domain"], p.frame[col]).to_numpy()
        assert chi2_contingency(table).pvalue > 1e-3
    assert len(p.truth["mechanism_names"]) == 2 * (5 + 1)


def test_heterogeneity_one_shares_no_mechanism_between_domains() -> None:
    p = make_planted_frame(6000, 5, mechanisms_per_domain=2, seed=3, heterogeneity=1.0)
    used = [set(np.flatnonzero(np.abs(c) > 1e-3)) for c in _domain_fits(p)]
    assert all(len(u) == 2 for u in used)  # each domain reads its 2 own mechanisms
    for a in range(5):
        for b in range(a + 1, 5):
            assert not used[a] & used[b], (a, b)
    # in between, h is the share of each domain's signal variance that is its own
    h = 0.3
    p = make_planted_frame(6000, 5, mechanisms_per_domain=2, seed=3, heterogeneity=h)
    for coef in _domain_fits(p):
        own = np.abs(coef) > 1e-3
        own[:2] = False  # the 2 common mechanisms come first
        assert (coef[own] ** 2).sum() / (coef**2).sum() == pytest.approx(h, abs=1e-3)
    with pytest.raises(ValueError, match="heterogeneity=1.5 must be in"):
        make_planted_frame(100, 2, heterogeneity=1.5)
    data = load_data("synthetic:rows=2000,domains=3,heterogeneity=0.5,seed=1")
    assert data.description["options"]["heterogeneity"] == 0.5


def test_planted_groups_share_their_mechanisms_within_and_none_across() -> None:
    """groups=G: domain d is in group d % G; domains of a group read the same mechanisms with the
    same weights (exact least-squares fits of the true logit), domains of different groups share
    only the common ones (none at heterogeneity 1)."""
    for h in (None, 1.0):
        p = make_planted_frame(8000, 6, mechanisms_per_domain=2, seed=4, groups=3, heterogeneity=h)
        assert p.truth["domain_group"] == [0, 1, 2, 0, 1, 2]
        k = 2 * 3 + 1 if h is None else 2 * (3 + 1)
        assert len(p.truth["mechanism_names"]) == k
        fits = _domain_fits(p)
        common = {0} if h is None else set()
        for a in range(6):
            for b in range(a + 1, 6):
                used_a = set(np.flatnonzero(np.abs(fits[a]) > 1e-3))
                used_b = set(np.flatnonzero(np.abs(fits[b]) > 1e-3))
                if a % 3 == b % 3:
                    np.testing.assert_allclose(fits[a], fits[b], atol=1e-3)
                else:
                    assert used_a & used_b == common, (h, a, b)
    # without groups every domain is its own group: the data do not change
    plain = make_planted_frame(3000, 4, seed=2)
    own = make_planted_frame(3000, 4, seed=2, groups=4)
    pd.testing.assert_frame_equal(plain.frame, own.frame)
    assert "domain_group" not in plain.truth and own.truth["domain_group"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"groups=5 must be in \[1, domains=4\]"):
        make_planted_frame(100, 4, groups=5)
    data = load_data("synthetic:rows=2000,domains=4,groups=2,seed=1")
    assert data.description["options"]["groups"] == 2
    assert data.truth["domain_group"] == [0, 1, 0, 1]
