"""The dashboard's cached loaders: the one place that calls ``cesaa`` and ``analysis``.

Caching: models and data are ``st.cache_resource`` (one shared object, never copied); everything
derived (routing collections, metrics, tables) is ``st.cache_data``.  Every cached function is keyed
by the checkpoint path, a ``token`` that changes when the checkpoint is rewritten (the mtime of its
``meta.json``) and the parameters it depends on, so an unrelated widget change recomputes nothing.

Errors: a user-facing problem (no data, a corrupt checkpoint, a bad upload, a model without a gate)
is raised as :class:`LoadError` whose message says what is wrong; pages turn it into an error card.
Routing overrides are passed as plain tuples ``(top_k, use_shared, knocked_out)``; ``AS_TRAINED`` is
the unmodified model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st
import torch

# small models on a shared CPU: one thread is ~30x faster than two that contend with other work
torch.set_num_threads(int(os.environ.get("CESAA_DASHBOARD_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS_ENV = "CESAA_CHECKPOINTS"  # folder of the shipped checkpoints (default checkpoints/)
RUNS_ENV = "CESAA_DASHBOARD_RUNS"  # where the dashboard writes (default runs/dashboard/)
DEFAULT_CHECKPOINT = "cesaa"
SPLIT = "test"
AS_TRAINED: tuple = (None, True, ())
LOAD_ERRORS = (ValueError, OSError, KeyError, TypeError, RuntimeError, IndexError)
MAKE_COMMAND = ".venv/bin/python scripts/make_checkpoints.py"


class LoadError(ValueError):
    """Something the dashboard cannot show; the message says what and what to do."""


def shipped_root() -> Path:
    return Path(os.environ.get(CHECKPOINTS_ENV, REPO / "checkpoints"))


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, REPO / "runs" / "dashboard"))


def roots(extra: str | None = None) -> tuple[str, ...]:
    """The folders searched for checkpoints: shipped, the dashboard's runs, and ``extra``."""
    out = [str(shipped_root()), str(runs_root())]
    if extra and extra.strip():
        out.append(str(Path(extra.strip()).expanduser()))
    return tuple(dict.fromkeys(out))


def token(path: str | Path) -> str:
    """Changes whenever the checkpoint in ``path`` is rewritten (cache key part)."""
    parts = []
    for name in ("meta.json", "model.safetensors"):
        try:
            s = (Path(path) / name).stat()
            parts.append(f"{s.st_mtime_ns}-{s.st_size}")
        except OSError:
            parts.append("missing")
    return "/".join(parts)


def label(path: str | Path) -> str:
    p = Path(path).resolve()
    for root in (shipped_root(), runs_root()):
        try:
            return str(p.relative_to(root.resolve()))
        except ValueError:
            continue
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


# ---- listing and loading -------------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def list_runs(search: tuple[str, ...]) -> list[dict]:
    """Every run folder under the ``search`` folders: ``{path, label, meta}`` or ``{path, label,
    error}`` (reads only ``meta.json``).  Shipped ones first, ``DEFAULT_CHECKPOINT`` at the top."""
    from cesaa.checkpoint import list_checkpoints

    seen, out = set(), []
    for root in search:
        for item in list_checkpoints(root):
            path = str(Path(item["path"]).resolve())
            if path not in seen:
                seen.add(path)
                out.append({**item, "path": path, "label": label(path)})
    first = str((shipped_root() / DEFAULT_CHECKPOINT).resolve())
    return sorted(out, key=lambda e: e["path"] != first)


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=24)
def _checkpoint(path: str, tok: str) -> tuple[Any, str | None]:
    from cesaa.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path), None
    except LOAD_ERRORS as e:
        return None, str(e)


def checkpoint(path: str):
    """The loaded ``cesaa.checkpoint.Checkpoint`` (cached); ``LoadError`` when it cannot load."""
    ckpt, err = _checkpoint(path, token(path))
    if err is not None:
        raise LoadError(f"Cannot load {label(path)}: {err}")
    return ckpt


@st.cache_resource(show_spinner="Loading data…", max_entries=8)
def _data(source: str, split: str, seed: int, fingerprint: str, _encoders: dict):
    from cesaa.data import load_data

    try:
        return load_data(source, split=split, seed=seed, encoders=_encoders)
    except LOAD_ERRORS as e:  # not cached: the data may be fixed (a folder mounted) and retried
        raise LoadError(f"Cannot load the data {source}: {e}") from None


def data(path: str):
    """The checkpoint's own data (``meta.data.description.source``), encoded with its encoders and
    split as at training; shared by every checkpoint trained on the same data."""
    ckpt = checkpoint(path)
    desc = ckpt.meta["data"].get("description", {})
    source = desc.get("source")
    if not source:
        raise LoadError(f"{label(path)}: meta.json names no data source to evaluate on")
    fp = str(ckpt.meta["data"].get("fingerprint"))
    return _data(source, desc.get("split", "random"), int(desc.get("seed", 0)), fp, ckpt.encoders)


def capabilities(path: str) -> dict:
    from analysis.capabilities import routing_capabilities

    return routing_capabilities(checkpoint(path).model)


def domain_names(path: str) -> list[str]:
    return list(checkpoint(path).domain_names)


def expert_names(path: str) -> list[str]:
    return [f"expert {i}" for i in range(capabilities(path)["num_experts"])]


def override(routing: tuple):
    from cesaa.models.output import RoutingOverride

    top_k, use_shared, knocked = routing
    return RoutingOverride(top_k=top_k, use_shared=use_shared, knocked_out=tuple(knocked))


def history(path: str) -> list[dict]:
    from cesaa.train import read_history

    try:
        return read_history(path)
    except (ValueError, OSError) as e:
        raise LoadError(f"{label(path)}: unreadable metrics.jsonl ({e})") from None


# ---- derived tables (cache_data: keyed by path, token and parameters) ----------------------------


@st.cache_data(show_spinner="Running the model…", max_entries=128)
def _collect(path: str, tok: str, routing: tuple, sample_size: int):
    from analysis.collect import collect

    ckpt, table = checkpoint(path), getattr(data(path), SPLIT)
    try:
        col = collect(
            ckpt.model,
            table,
            num_domains=ckpt.spec.num_domains,
            routing=None if routing == AS_TRAINED else override(routing),
            sample_size=sample_size,
        )
    except ValueError as e:
        raise LoadError(f"Cannot route {label(path)} with {describe(routing)}: {e}") from None
    col.domain_names = tuple(ckpt.domain_names)
    return col


def collection(path: str, routing: tuple = AS_TRAINED, sample_size: int = 0):
    """``analysis.collect`` of the test split under ``routing`` (optionally with a row sample)."""
    return _collect(path, token(path), tuple(routing), int(sample_size))


@st.cache_data(show_spinner=False, max_entries=128)
def _metrics(path: str, tok: str, routing: tuple) -> dict:
    from cesaa.metrics import evaluate_predictions

    col = collection(path, routing)
    table = getattr(data(path), SPLIT)
    user = table.user.numpy() if table.user is not None else None
    return evaluate_predictions(
        col.labels, col.predictions, col.domain, user=user, domain_names=domain_names(path)
    )


def metrics(path: str, routing: tuple = AS_TRAINED) -> dict:
    """Overall and per-domain AUC / GAUC / logloss on the test split (flat keys)."""
    return _metrics(path, token(path), tuple(routing))


def metrics_frame(path: str, routing: tuple = AS_TRAINED):
    from cesaa.metrics import metrics_table

    return metrics_table(metrics(path, routing), domain_names(path))


@st.cache_data(show_spinner=False, max_entries=128)
def _summary(path: str, tok: str, routing: tuple) -> dict | None:
    from analysis.measures import summarize

    col = collection(path, routing)
    if col.stats is None:
        return None
    return summarize(col.stats, domain_names(path), expert_names(path))


def summary(path: str, routing: tuple = AS_TRAINED) -> dict:
    """``analysis.measures.summarize`` of the routing; ``LoadError`` for a gate-less model."""
    out = _summary(path, token(path), tuple(routing))
    if out is None:
        raise LoadError(collection(path, routing).no_routing_reason or "the model has no gate")
    return out


def stats(path: str, routing: tuple = AS_TRAINED):
    col = collection(path, routing)
    if col.stats is None:
        raise LoadError(col.no_routing_reason or "the model has no gate")
    return col.stats


@st.cache_data(show_spinner=False, max_entries=64)
def _gating_entropy(path: str, tok: str, routing: tuple):
    from analysis.measures import gating_entropy

    return gating_entropy(stats(path, routing), domain_names(path))


def gating_entropy(path: str, routing: tuple = AS_TRAINED):
    return _gating_entropy(path, token(path), tuple(routing))


def row_entropies(path: str, sample_size: int) -> dict:
    """Per-row gate entropy of a row sample: ``{values, domain, max}`` for the violin plot."""
    import math

    from analysis.measures import row_entropy

    s = collection(path, AS_TRAINED, sample_size).sample
    if s is None or s.probs is None or len(s) == 0:
        raise LoadError("no gate probabilities to compute row entropies from")
    return {
        "values": row_entropy(s.probs),
        "domain": s.domain,
        "max": math.log(s.probs.shape[1]),
    }


@st.cache_data(show_spinner="Knocking out each expert…", max_entries=32)
def _knockout(path: str, tok: str):
    from analysis.causal import knockout_importance

    table = getattr(data(path), SPLIT)
    try:
        return knockout_importance(checkpoint(path).model, table, domain_names(path))
    except ValueError as e:
        raise LoadError(str(e)) from None


def knockout(path: str):
    """Knock-out importance table (``analysis.causal.knockout_importance``)."""
    return _knockout(path, token(path))


@st.cache_data(show_spinner="Re-routing with every k…", max_entries=32)
def _k_curve(path: str, tok: str):
    from analysis.causal import k_curve

    table = getattr(data(path), SPLIT)
    try:
        return k_curve(checkpoint(path).model, table, domain_names(path))
    except ValueError as e:
        raise LoadError(str(e)) from None


def k_curve(path: str):
    """Per-domain AUC against k (``analysis.causal.k_curve``)."""
    return _k_curve(path, token(path))


@st.cache_data(show_spinner=False, max_entries=64)
def _alarms(path: str, tok: str) -> list[dict]:
    from analysis.alarms import health_alarms

    col = collection(path)
    caps = capabilities(path)
    alpha = float(checkpoint(path).model_config.alpha) if caps["has_topk"] else 0.0
    found = health_alarms(
        col.stats,
        metrics(path),
        domain_names(path),
        alpha=alpha,
        predictions_std_per_domain=col.prediction_std_per_domain(),
    )
    return [a.to_dict() for a in found]


def alarms(path: str) -> list[dict]:
    """Health alarms of the checkpoint as trained (``analysis.alarms.health_alarms``)."""
    return _alarms(path, token(path))


def truth(path: str) -> dict | None:
    """The planted truth of the synthetic data (None for other data)."""
    return checkpoint(path).meta["data"].get("truth") or data(path).truth


@st.cache_data(show_spinner=False, max_entries=64)
def _truth_recovery(path: str, tok: str, kind: str) -> dict:
    from analysis.truth import truth_recovery

    try:
        rec = truth_recovery(
            stats(path),
            truth(path),
            kind=kind,
            include_shared=capabilities(path)["num_shared"] == 0,
            domain_names=domain_names(path),
        )
    except ValueError as e:
        raise LoadError(f"truth recovery undefined: {e}") from None
    return rec.to_dict()


def truth_recovery(path: str, kind: str = "hard") -> dict:
    return _truth_recovery(path, token(path), kind)


@st.cache_data(show_spinner="Aligning experts…", max_entries=64)
def _comparison(path_a: str, tok_a: str, path_b: str, tok_b: str, kind: str) -> dict:
    from analysis.compare import compare

    a, b = collection(path_a), collection(path_b)
    if a.rows != b.rows or a.num_domains != b.num_domains:
        raise LoadError(
            f"{label(path_a)} and {label(path_b)} were not evaluated on the same rows and domains "
            f"({a.rows} vs {b.rows} rows, {a.num_domains} vs {b.num_domains} domains): "
            "compare checkpoints trained on the same data"
        )
    try:
        res = compare(a, b, kind=kind)
    except ValueError as e:
        raise LoadError(str(e)) from None
    return {**res.to_dict(), "permutation": [int(i) for i in res.permutation]}


def comparison(path_a: str, path_b: str, kind: str = "soft") -> dict:
    """``analysis.compare.compare`` of two checkpoints' routing on the same rows (b aligned to a)."""
    return _comparison(path_a, token(path_a), path_b, token(path_b), kind)


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
    from analysis import embeddings as emb

    params = dict(emb.UMAP_DEFAULTS) if method == "umap" else {}
    return emb.projection_key(
        checkpoint(path).meta,
        method=method,
        mode=mode,
        split=SPLIT,
        sample_size=n,
        seed=0,
        params=params,
        data_fingerprint=data(path).fingerprint,
    )


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


# ---- alpha siblings --------------------------------------------------------------------


def _config_without_alpha(meta: dict) -> dict:
    cfg = dict(meta["model"]["config"])
    cfg.pop("alpha", None)
    return cfg


def alpha_siblings(path: str, entries: list[dict]) -> list[dict]:
    """Checkpoints that differ from ``path`` only in alpha (same model, data and other settings),
    sorted by alpha: ``[{path, label, alpha}]`` (``path`` itself included)."""
    meta = checkpoint(path).meta
    want = (_config_without_alpha(meta), meta["data"].get("fingerprint"))
    out = []
    for e in entries:
        m = e.get("meta")
        if m is None or m.get("status") != "complete":
            continue
        if (_config_without_alpha(m), m["data"].get("fingerprint")) == want:
            out.append(
                {"path": e["path"], "label": e["label"], "alpha": m["model"]["config"]["alpha"]}
            )
    return sorted(out, key=lambda r: (r["alpha"], r["path"] != path))


# ---- report payloads (plain functions; the page only adds download buttons) ----------------------


@st.cache_data(show_spinner="Building the report…", max_entries=16)
def _report(path: str, tok: str, sample_size: int, embedding: str):
    from analysis.report import build_report

    cache_dir = None
    if embedding == "umap":
        read, write = _cache_dirs(path)
        points, _ = embedding_points(path, sample_size)
        from analysis import embeddings as emb

        hit = emb.lookup_projection(read, _projection_key(path, "umap", len(points), "routed"))
        cache_dir = read if hit is not None else write
    try:
        return build_report(path, sample_size=sample_size, embedding=embedding, cache_dir=cache_dir)
    except LOAD_ERRORS as e:
        raise LoadError(f"Cannot build the report of {label(path)}: {e}") from None


def report(path: str, sample_size: int = 2000, embedding: str = "pca"):
    """``analysis.report.build_report`` of the checkpoint (cached)."""
    return _report(path, token(path), int(sample_size), embedding)


@st.cache_data(show_spinner="Writing the report files…", max_entries=8)
def _report_files(path: str, tok: str, sample_size: int, embedding: str) -> dict:
    import jobs

    return jobs.report_files(report(path, sample_size, embedding))


def report_files_cached(path: str, sample_size: int = 2000, embedding: str = "pca") -> dict:
    """``report_files`` of ``report(path, ...)``, cached."""
    return _report_files(path, token(path), int(sample_size), embedding)


# ---- helpers for pages ---------------------------------------------------------------------------


def describe(routing: tuple) -> str:
    top_k, use_shared, knocked = routing
    parts = [f"k={top_k}" if top_k is not None else "trained k"]
    parts.append("shared on" if use_shared else "shared off")
    if knocked:
        parts.append(f"knocked out {list(knocked)}")
    return ", ".join(parts)


def clear_all() -> None:
    """Drop every cache (tests; the Refresh button only clears the listing)."""
    st.cache_data.clear()
    st.cache_resource.clear()
