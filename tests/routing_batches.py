"""Random routing batches and their RoutingStats: shared by the measure and RoutingStats tests."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.stats import RoutingStats

D, E, K = 3, 4, 2


def random_batch(n: int, seed: int = 0, d: int = D, e: int = E, k: int = K):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, e)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    domain = rng.integers(0, d, n)
    topk = np.argsort(-probs, axis=1)[:, :k]
    return probs, domain, topk


@pytest.fixture
def batch():
    return random_batch(32)


@pytest.fixture
def stats(batch):
    probs, domain, topk = batch
    return RoutingStats.from_arrays(probs, domain, D, topk_idx=topk)


def one_expert_per_domain(rows_per_domain: int = 10, d: int = 3):
    domain = np.repeat(np.arange(d), rows_per_domain)
    probs = np.eye(d)[domain]
    return probs, domain, domain[:, None]
