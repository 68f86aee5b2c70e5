"""Where a checkpoint's data is: recorded when training, found again when the checkpoint is opened.

At training, ``location`` resolves every file of the data source (``meta.json`` ->
``data.location``)::

    {"source": "table:clicks.toml", "kind": "table", "fingerprint": "1f0c...",
     "schema": {"absolute": "/home/me/data/clicks.toml", "relative_to_run": "../../data/clicks.toml"},
     "data": {"absolute": "/home/me/data/clicks.csv", "relative_to_run": "../../data/clicks.csv"}}

(a MovieLens source records its ``folder``; synthetic data has no files).  ``open_checkpoint_data``
looks for each file at its absolute path, then relative to the run folder (a project moved as a
whole), opens the data with the checkpoint's encoders and split, and verifies the fingerprint.
When the data is not found, one :class:`DataLocationError` names every place it looked and how to
point elsewhere (``--data`` in the CLI, the *Data source* field in the dashboard).  A source given
explicitly (``override``) is opened as given, without the fingerprint check: evaluating a checkpoint
on other data is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from cesaa.data.sources import load_data

FILE_ROLES = {"table": ("schema", "data"), "stream": ("schema", "data")}
FOLDER_KINDS = ("movielens-100k", "movielens-1m")
HOW_TO_POINT = (
    "pass --data SOURCE (cesaa evaluate / report / train --resume) or enter it in the dashboard's "
    "'Data source' field"
)


class DataLocationError(ValueError):
    """A checkpoint's data cannot be found (or is not the data it was trained on)."""


def open_source(
    source: str,
    *,
    split: str = "random",
    seed: int = 0,
    encoders: dict | None = None,
    data: str | Path | None = None,
):
    """``load_data`` for in-memory sources, ``open_stream`` for ``stream:`` (Parquet read piece by
    piece).  ``data``: another data file for a ``table:`` / ``stream:`` schema."""
    from cesaa.data.stream import is_stream_source, open_stream

    if is_stream_source(source):
        return open_stream(source, split=split, seed=seed, encoders=encoders, data=data)
    opts = {"data": str(data)} if data is not None else {}
    return load_data(source, split=split, seed=seed, encoders=encoders, **opts)


def _where(path: str | Path, run: Path | None) -> dict:
    p = Path(path).resolve()
    rel = os.path.relpath(p, run.resolve()) if run is not None else None
    return {"absolute": str(p), "relative_to_run": rel}


def location(description: dict, fingerprint: str, run: str | Path | None) -> dict:
    """The resolved location of the data ``description`` names (what ``meta.json`` records)."""
    run = Path(run) if run is not None else None
    kind = description.get("kind")
    out = {"source": description.get("source"), "kind": kind, "fingerprint": fingerprint}
    if kind in FILE_ROLES and description.get("path") and description.get("data"):
        out["schema"] = _where(description["path"], run)
        out["data"] = _where(description["data"], run)
    elif kind in FOLDER_KINDS and description.get("path"):
        out["folder"] = _where(description["path"], run)
    return out


def _candidates(entry: dict, run: Path) -> list[Path]:
    out = [Path(entry["absolute"])]
    if entry.get("relative_to_run") is not None:
        out.append((run / entry["relative_to_run"]).resolve())
    return list(dict.fromkeys(out))


def locate(meta: dict, run: str | Path) -> tuple[str, Path | None]:
    """``(source, data file or None)`` of a checkpoint's own data, found from ``meta.json``.

    Raises :class:`DataLocationError` naming every place looked at when a file is missing.
    """
    run = Path(run)
    desc = meta["data"].get("description", {})
    loc = meta["data"].get("location")
    source = (loc or {}).get("source") or desc.get("source")
    if not source:
        raise DataLocationError(f"{run / 'meta.json'} names no data source; {HOW_TO_POINT}")
    kind = desc.get("kind") or source.partition(":")[0]
    if loc is None:  # a checkpoint from before locations were recorded: the source as given
        rest = source.partition(":")[2].strip()
        if kind in (*FILE_ROLES, *FOLDER_KINDS) and rest and not Path(rest).exists():
            raise DataLocationError(
                f"cannot find the data of {run}: its source {source!r} was recorded relative to "
                f"the folder it was trained in, and {Path(rest).resolve()} does not exist; "
                f"{HOW_TO_POINT}"
            )
        return source, None
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role in (*FILE_ROLES.get(kind, ()), *(("folder",) if kind in FOLDER_KINDS else ())):
        if role not in loc:
            continue
        places = _candidates(loc[role], run)
        hit = next((p for p in places if p.exists()), None)
        if hit is None:
            looked = " or ".join(str(p) for p in places)
            missing.append(f"the {role} {Path(loc[role]['absolute']).name} (looked at {looked})")
        else:
            found[role] = hit
    if missing:
        raise DataLocationError(
            f"cannot find the data {source!r} of checkpoint {run}: {'; '.join(missing)}; "
            f"{HOW_TO_POINT}"
        )
    if kind in FILE_ROLES and "schema" in found:
        return f"{kind}:{found['schema']}", found["data"]
    if "folder" in found:
        return f"{kind}:{found['folder']}", None
    return source, None


def checkpoint_split(meta: dict) -> dict:
    """``split``, ``seed`` and ``encoders`` to open a checkpoint's data exactly as at training."""
    desc = meta["data"].get("description", {})
    return {
        "split": desc.get("split", "random"),
        "seed": int(desc.get("seed", 0)),
        "encoders": meta["data"].get("encoders") or None,
    }


def verify_fingerprint(data, meta: dict, run: str | Path, where: str | Path) -> None:
    """:class:`DataLocationError` when ``data`` (found at ``where``) is not the training data."""
    want = meta["data"].get("fingerprint")
    if want and data.fingerprint != want:
        raise DataLocationError(
            f"the data found for checkpoint {run} at {where} is not the data it was trained on "
            f"(fingerprint {data.fingerprint}, trained on {want}): it changed or another file "
            f"has its name; {HOW_TO_POINT} to evaluate on it anyway"
        )


def open_checkpoint_data(meta: dict, run: str | Path, override: str | None = None):
    """The data a checkpoint was trained on (or ``override``), encoded with its encoders and split
    as at training: a ``MultiDomainData``, or a ``StreamingData`` for a ``stream:`` source."""
    kw = checkpoint_split(meta)
    if override:
        return open_source(override, **kw)
    source, data_file = locate(meta, run)
    data = open_source(source, data=data_file, **kw)
    verify_fingerprint(data, meta, run, data_file or source)
    return data
