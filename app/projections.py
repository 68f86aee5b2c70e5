"""Expert-output embeddings of a row sample, their 2-D projections and the report that embeds one.

PCA is computed at once; UMAP is slow, so it is read from a disk cache (``analysis.embeddings``)
that the shipped checkpoints carry and the dashboard adds to (never inside a shipped checkpoint:
new projections go under the dashboard's runs folder).  The report reuses that cache.  Cached
functions are keyed by the checkpoint path, its ``loaders.token`` and their parameters.
"""

from __future__ import annotations

from pathlib import Path

import jobs
import streamlit as st
from catalog import label, runs_root, shipped_root
from derived import collection
from loaders import (
    AS_TRAINED,
    LOAD_ERRORS,
    LoadError,
    data_override,
    opened,
    token,
)

# ---- embeddings ----------------------------------------------------------------------------------


@st.cache_data(show_spinner="Collecting expert outputs…", max_entries=32)
def _points(path: str, tok: str, sample_size: int, mode: str):
    from analysis.embeddings import expert_output_points

    s = collection(path, AS_TRAINED, sample_size).sample
    if s is None or s.expert_outputs is None or len(s) == 0:
        raise LoadError(f"{label(path)}: the model returns no expert outputs to project")
    points, labels = expert_output_points(s, mode)
    return points, labels


def embedding_points(path: str, sample_size: int, mode: str = "routed"):
    """(points [n, H], labels {domain, expert, row}) of a seeded row sample of the test split."""
    return _points(path, token(path), int(sample_size), mode)


def _projection_key(path: str, method: str, n: int, mode: str) -> dict:
    """The projection's cache key, as the report keys it (the record's rows and sample)."""
    from analysis import embeddings as emb
    from analysis.report_build import record_projection_key

    params = dict(emb.UMAP_DEFAULTS) if method == "umap" else {}
    return record_projection_key(opened(path).record, method, n, 0, params, mode)


def _cache_dirs(path: str) -> tuple[Path, Path]:
    """(where to look first, where to write): the checkpoint's own ``embeddings/`` folder; shipped
    checkpoints are never written to (new projections go under the dashboard's runs folder)."""
    from analysis import embeddings as emb

    own = emb.embedding_cache_path(path)
    try:
        Path(path).resolve().relative_to(shipped_root().resolve())
    except ValueError:
        return own, own
    return own, runs_root() / "embeddings-cache" / Path(path).name


def projection(path: str, sample_size: int, method: str, mode: str = "routed", compute=True):
    """The [n, 2] projection of the sample's expert outputs: PCA is computed at once; UMAP is read
    from the disk cache, computed only when ``compute`` (else None when not cached)."""
    from analysis import embeddings as emb

    points, _ = embedding_points(path, sample_size, mode)
    if method == "pca":
        return emb.project(points, "pca")
    key = _projection_key(path, method, len(points), mode)
    read, write = _cache_dirs(path)
    for folder in dict.fromkeys((read, write)):
        hit = emb.lookup_projection(folder, key)
        if hit is not None:
            return hit
    if not compute:
        return None
    try:
        return emb.cached_projection(
            write, key, lambda: emb.project(points, method, seed=0, **key["params"])
        )
    except ValueError as e:
        raise LoadError(str(e)) from None


def umap_available() -> bool:
    from analysis.embeddings import umap_available as available

    return available()


# ---- the report (the page only adds download buttons) ---------------------------------------------


@st.cache_data(show_spinner="Building the report…", max_entries=16)
def _report(path: str, tok: str, sample_size: int, embedding: str):
    from analysis.embeddings import lookup_projection
    from analysis.report import build_report

    cache_dir = None
    if embedding == "umap":
        read, write = _cache_dirs(path)
        points, _ = embedding_points(path, sample_size)
        hit = lookup_projection(read, _projection_key(path, "umap", len(points), "routed"))
        cache_dir = read if hit is not None else write
    try:
        return build_report(
            path,
            data_override(path),  # the sidebar's data source, if the data moved
            sample_size=sample_size,
            embedding=embedding,
            cache_dir=cache_dir,
        )
    except LOAD_ERRORS as e:
        raise LoadError(f"Cannot build the report of {label(path)}: {e}") from None


def report(path: str, sample_size: int = 2000, embedding: str = "pca"):
    """``analysis.report.build_report`` of the checkpoint (cached)."""
    return _report(path, token(path), int(sample_size), embedding)


@st.cache_data(show_spinner="Writing the report files…", max_entries=8)
def _report_files(path: str, tok: str, sample_size: int, embedding: str) -> dict:
    return jobs.report_files(report(path, sample_size, embedding))


def report_files_cached(path: str, sample_size: int = 2000, embedding: str = "pca") -> dict:
    """``report_files`` of ``report(path, ...)``, cached."""
    return _report_files(path, token(path), int(sample_size), embedding)
