from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.embeddings import (
    cache_key,
    cached_projection,
    embedding_cache_path,
    expert_output_points,
    lookup_projection,
    project,
    projection_key,
)


def blobs(n_per: int = 100, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, size=(3, d))
    labels = np.repeat(np.arange(3), n_per)
    return centers[labels] + rng.normal(size=(3 * n_per, d)), labels


def sample(n: int = 6, e: int = 4, h: int = 3, k: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(e), size=n)
    return {
        "expert_outputs": rng.normal(size=(n, e, h)),
        "domain": rng.integers(0, 3, size=n),
        "probs": probs,
        "topk_idx": np.argsort(-probs, axis=1)[:, :k],
    }


# ---- project -------------------------------------------------------------------------------------


def test_pca_shape_and_determinism():
    x, _ = blobs()
    a = project(x, "pca")
    assert a.shape == (300, 2) and a.dtype == np.float64
    np.testing.assert_array_equal(a, project(x, "pca"))
    np.testing.assert_allclose(project(torch.from_numpy(x).float(), "pca"), a, atol=1e-4)
    # the first component carries at least as much variance as the second
    assert a[:, 0].var() >= a[:, 1].var()


def test_pca_degenerate_inputs_give_zeros_not_errors():
    assert project(np.ones((1, 5)), "pca").tolist() == [[0.0, 0.0]]
    one_dim = project(np.arange(5.0)[:, None], "pca")
    assert one_dim.shape == (5, 2) and np.all(one_dim[:, 1] == 0)


@pytest.mark.parametrize(
    ("points", "method", "match"),
    [
        (np.zeros(5), "pca", r"points must be 2-D .* got shape \(5,\)"),
        (np.full((3, 2), np.nan), "pca", "NaN or infinite"),
        (np.zeros((5, 2)), "tsne", "method must be one of"),
        (np.zeros((3, 2)), "umap", "at least 4 points"),
    ],
)
def test_project_rejects_bad_input(points, method, match):
    with pytest.raises(ValueError, match=match):
        project(points, method)


# ---- points --------------------------------------------------------------------------------------


def test_routed_points_are_gate_weighted_mix_of_selected_experts():
    s = sample()
    points, labels = expert_output_points(s, "routed")
    assert points.shape == (6, 3)
    for i in range(6):
        sel = s["topk_idx"][i]
        w = s["probs"][i, sel] / s["probs"][i, sel].sum()
        np.testing.assert_allclose(points[i], w @ s["expert_outputs"][i, sel])
    np.testing.assert_array_equal(labels["expert"], s["topk_idx"][:, 0])
    np.testing.assert_array_equal(labels["domain"], s["domain"])


def test_per_expert_points_one_per_selection():
    s = sample(n=5, k=2)
    points, labels = expert_output_points(s, "per_expert")
    assert points.shape == (10, 3)
    for p, r, e, d in zip(points, labels["row"], labels["expert"], labels["domain"], strict=True):
        assert e in s["topk_idx"][r] and d == s["domain"][r]
        np.testing.assert_array_equal(p, s["expert_outputs"][r, e])


def test_dense_gate_mixes_every_expert():
    s = sample()
    del s["topk_idx"]
    points, _ = expert_output_points(s, "routed")
    np.testing.assert_allclose(points, np.einsum("ne,neh->nh", s["probs"], s["expert_outputs"]))


def test_points_need_expert_outputs_and_domain():
    with pytest.raises(ValueError, match="expert_outputs must be 3-D"):
        expert_output_points({"domain": np.zeros(2)})
    s = sample()
    s["domain"] = s["domain"][:3]
    with pytest.raises(ValueError, match=r"domain must be 1-D \[6\]"):
        expert_output_points(s)
    with pytest.raises(ValueError, match="mode must be one of"):
        expert_output_points(sample(), "mixed")


# ---- cache ---------------------------------------------------------------------------------------


def counting(xy: np.ndarray):
    calls = []

    def compute():
        calls.append(1)
        return xy

    return compute, calls


META = {"weights_sha256": "abc", "data": {"fingerprint": "f00"}}


def test_cache_hit_does_not_recompute(tmp_path):
    xy = np.random.default_rng(0).normal(size=(20, 2))
    key = projection_key(META, method="pca", sample_size=20, seed=0)
    compute, calls = counting(xy)
    first = cached_projection(tmp_path, key, compute)
    second = cached_projection(tmp_path, dict(reversed(key.items())), compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, xy)
    np.testing.assert_array_equal(second, xy)
    (path,) = tmp_path.glob("pca-*.npz")
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["xy"], xy)
    assert not list(tmp_path.glob("*.tmp"))


def test_different_key_parts_recompute(tmp_path):
    base = projection_key(META, method="umap", params={"n_neighbors": 15}, sample_size=20)
    variants = [
        projection_key(META, method="umap", params={"n_neighbors": 5}, sample_size=20),
        projection_key(META, method="umap", params={"n_neighbors": 15}, sample_size=20, seed=1),
        projection_key(META, method="umap", params={"n_neighbors": 15}, sample_size=30),
        projection_key(META, method="pca", params={"n_neighbors": 15}, sample_size=20),
        projection_key(
            {**META, "weights_sha256": "abd"},
            method="umap",
            params={"n_neighbors": 15},
            sample_size=20,
        ),
        projection_key(
            META,
            method="umap",
            params={"n_neighbors": 15},
            sample_size=20,
            data_fingerprint="other",
        ),
    ]
    keys = {cache_key(k) for k in [base, *variants]}
    assert len(keys) == 7
    compute, calls = counting(np.zeros((20, 2)))
    for k in [base, *variants]:
        cached_projection(tmp_path, k, compute)
    assert len(calls) == 7


def test_corrupt_or_unwritable_cache_recomputes(tmp_path):
    key = projection_key(META, method="pca")
    compute, calls = counting(np.ones((4, 2)))
    cached_projection(tmp_path, key, compute)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not an npz")
    assert lookup_projection(tmp_path, key) is None
    np.testing.assert_array_equal(cached_projection(tmp_path, key, compute), np.ones((4, 2)))
    assert len(calls) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache folder should be: nothing can be written
    np.testing.assert_array_equal(cached_projection(blocker, key, compute), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"must return \[n, 2\]"):
        cached_projection(None, key, lambda: np.zeros((4, 3)))


def test_default_cache_path(tmp_path):
    assert embedding_cache_path(tmp_path / "run") == tmp_path / "run" / "embeddings"


# ---- UMAP: one call in the whole suite (numba JIT) -----------------------------------------------


@pytest.fixture(scope="session")
def umap_run(tmp_path_factory):
    pytest.importorskip("umap")
    x, labels = blobs()
    cache = tmp_path_factory.mktemp("umap-cache")
    key = projection_key(META, method="umap", params={"n_epochs": 20}, sample_size=len(x))
    calls = []

    def run():
        calls.append(1)
        return project(x, "umap", n_neighbors=15, n_epochs=20, seed=0)

    xy = cached_projection(cache, key, run)
    return {"xy": xy, "labels": labels, "cache": cache, "key": key, "calls": calls}


def test_umap_projection_keeps_clusters_and_is_cached(umap_run):
    xy, labels = umap_run["xy"], umap_run["labels"]
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
    # nearest neighbour in the map has the same blob label
    dist = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(axis=1)] == labels).mean() > 0.95
    again = cached_projection(umap_run["cache"], umap_run["key"], lambda: 1 / 0)
    np.testing.assert_array_equal(again, xy)
    assert len(umap_run["calls"]) == 1
