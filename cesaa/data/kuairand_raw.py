"""KuaiRand as its authors distribute it: a folder of log and feature CSVs, joined as Scenario-Wise Rec does.

A KuaiRand-1K (or -Pure) ``data/`` folder holds ``log_standard_*.csv`` (one row per impression:
user_id, video_id, is_click, tab, watch times, ...), ``user_features_*.csv`` and
``video_features_basic_*.csv``.  :func:`read_kuairand_folder` reads every standard log (in name
order), inner-joins the user features on ``user_id`` and the basic video features on ``video_id``
(Scenario-Wise Rec's ``load_data_1k.py`` does the same joins) and returns one frame with the columns
of Scenario-Wise Rec's preprocessed CSV.  Unlike that script it keeps the user features' range
strings ("(0,10]") as categories instead of mapping them to integers (the same information for a
categorical embedding) and leaves missing one-hot features missing (they encode as out of
vocabulary) instead of filling them with a chosen value.  ``log_random_*`` files (randomly exposed
videos) are not read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cesaa.data.schema import read_frame

LOG_GLOB = "log_standard_*.csv"
USER_GLOB = "user_features_*.csv"
VIDEO_GLOB = "video_features_basic_*.csv"
LOG_COLUMNS = ("user_id", "video_id", "is_click", "tab")


def is_kuairand_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob(LOG_GLOB))


def read_kuairand_folder(
    folder: Path, categorical: tuple[str, ...]
) -> tuple[pd.DataFrame, list[Path], int]:
    """(joined frame, files read, log rows lost in the inner joins).

    ``categorical``: columns read as strings (ids keep their spelling, "007" stays "007").
    """
    logs = sorted(folder.glob(LOG_GLOB))
    if not logs:
        raise FileNotFoundError(f"KuaiRand folder {folder}: no {LOG_GLOB} files")
    users, videos = _one(folder, USER_GLOB), _one(folder, VIDEO_GLOB)
    strs = (*categorical, "tab")
    parts = []
    for path in logs:
        df = read_frame(path, str_columns=strs)
        _need(df, LOG_COLUMNS, path)
        parts.append(df)
    log = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    user_df = read_frame(users, str_columns=strs)
    video_df = read_frame(videos, str_columns=strs)
    _need(user_df, ("user_id",), users)
    _need(video_df, ("video_id",), videos)
    for df, key, path in ((user_df, "user_id", users), (video_df, "video_id", videos)):
        dup = df[key][df[key].duplicated()]
        if len(dup):
            raise ValueError(f"{path}: {key} values {sorted(set(dup))[:10]} appear more than once")
    user_cols = [c for c in user_df.columns if c not in log.columns or c == "user_id"]
    video_cols = [c for c in video_df.columns if c in categorical or c == "video_id"]
    joined = log.merge(user_df[user_cols], on="user_id", how="inner", sort=False)
    joined = joined.merge(video_df[video_cols], on="video_id", how="inner", sort=False)
    return joined, [*logs, users, videos], len(log) - len(joined)


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(
            f"KuaiRand folder {folder}: expected one {pattern} file, found {[f.name for f in found]}"
        )
    return found[0]


def _need(df: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: KuaiRand columns {missing} are missing; available columns: "
            f"{[str(c) for c in df.columns]}"
        )
