"""Open a routing record uploaded as a zip of its folder: size limits, unpacking, validation."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

from catalog import list_runs
from loaders import LoadError

META = "record.json"
ROWS = "rows.parquet"
MAX_FILES = 16  # a record folder holds three files (plus a projection cache)


def save_record_zip(name: str, content: bytes, max_mb: float, root: Path) -> str:
    """Unpack an uploaded record folder (zip) under ``root/records/<hash>/``, open it (full
    validation) and return its path; ``LoadError`` naming the problem (size, zip, record)."""
    from analysis.records import RecordError, open_record

    if len(content) > max_mb * 2**20:
        raise LoadError(
            f"{name} is {len(content) / 2**20:.1f} MB, over the dashboard's upload limit of "
            f"{max_mb:g} MB (CESAA_MAX_UPLOAD_MB); open larger records from a folder (sidebar: "
            "Also look in folder) or with `cesaa report RECORD`"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise LoadError(f"{name} is not a zip file (zip the record folder)") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    metas = [i for i in infos if Path(i.filename).name == META]
    if len(metas) != 1:
        raise LoadError(
            f"{name} holds {len(metas)} {META} files; zip exactly one record folder "
            f"({META}, {ROWS}, sample.parquet)"
        )
    prefix = str(Path(metas[0].filename).parent)
    prefix = "" if prefix == "." else prefix + "/"
    mine = [
        i for i in infos if i.filename.startswith(prefix) and "/" not in i.filename[len(prefix) :]
    ]
    total = sum(i.file_size for i in mine)
    if len(mine) > MAX_FILES or total > 4 * max_mb * 2**20:
        raise LoadError(
            f"{name} unpacks to {len(mine)} files, {total / 2**20:.1f} MB: more than a record "
            f"folder within the upload limit"
        )
    digest = hashlib.sha256(content).hexdigest()[:16]
    folder = root / "records" / digest
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in mine:
        (folder / Path(i.filename).name).write_bytes(zf.read(i))
    try:
        open_record(folder, check="full")
    except (RecordError, OSError) as e:
        shutil.rmtree(folder)
        raise LoadError(f"{name}: {e}") from None
    list_runs.clear()
    return str(folder.resolve())
