"""One object per opened path: a routing record always, a live model when there is one.

A checkpoint, a record folder (or an unpacked zip of one) becomes an ``Opened``: its ``record``
is what every descriptive view reads (for a checkpoint, the record of its split made once and
cached, ``analysis.records.checkpoint.cached_record``), and ``model`` is the live model that the
causal views (knock-out, k curve, domain swap, retraining) re-run, ``None`` for a record.  Callers
ask it (``has_model``, ``needs_model(what)``) and never branch on what kind of path it was: this
module is the only place that does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.collection import Collection
from analysis.records.collection import NEEDS_CHECKPOINT, record_capabilities, record_collection
from analysis.records.format import GateInfo
from analysis.records.reader import Record, is_record, open_record

STREAM_ROWS = 100_000  # rows of a stream split that the causal views re-run (seeded sample)
RECORD_SAMPLE = 5_000  # expert-output rows a checkpoint's record keeps (views take its head)


@dataclass
class Opened:
    """An opened path: ``record`` (always), ``checkpoint`` (``cesaa.checkpoint.Checkpoint`` when
    the path is a checkpoint, else ``None``), the data source override and split it was opened
    on."""

    path: Path
    record: Record
    checkpoint: Any = None
    data_source: str | None = None
    split: str = "test"
    _data: Any = field(default=None, repr=False)
    _collections: dict = field(default_factory=dict, repr=False)

    # ---- what it has -----------------------------------------------------------------------------

    @property
    def has_model(self) -> bool:
        return self.checkpoint is not None

    @property
    def model(self) -> Any:
        return None if self.checkpoint is None else self.checkpoint.model

    def needs_model(self, what: str) -> str | None:
        """``None`` when ``what`` can run (a live model is attached), else one line saying why
        not."""
        return None if self.has_model else f"{what} {NEEDS_CHECKPOINT}."

    @property
    def kind(self) -> str:
        """ "checkpoint" or "record", for labels only."""
        return "checkpoint" if self.has_model else "record"

    # ---- the record ------------------------------------------------------------------------------

    @property
    def domains(self) -> list[str]:
        return list(self.record.domains)

    @property
    def gates(self) -> tuple[GateInfo, ...]:
        return self.record.meta.gates

    def gate(self, name: str | None = None) -> GateInfo | None:
        """Gate ``name`` (default: the primary gate; ``None`` for a model without a gate)."""
        return self.record.meta.gate(name) if name else self.record.meta.primary

    def collection(self, gate: str | None = None) -> Collection:
        """The ``Collection`` of ``gate`` (default: primary) read from the record (cached)."""
        g = self.gate(gate)
        key = None if g is None else g.name
        if key not in self._collections:
            self._collections[key] = record_collection(self.record, key)
        return self._collections[key]

    def capabilities(self, gate: str | None = None) -> dict[str, Any]:
        """What the model's routing supports: from the live model when attached (what re-routing
        may ask), else from the record."""
        if self.has_model and (gate is None or gate == getattr(self.gate(), "name", None)):
            from cesaa.routing.capabilities import routing_capabilities

            return routing_capabilities(self.model)
        return record_capabilities(self.record, gate)

    # ---- the live model's data (causal views) ---------------------------------------------------

    def data(self) -> Any:
        """The checkpoint's data (its own, or the override), opened once; ``ValueError`` for a
        record."""
        if not self.has_model:
            raise ValueError(self.needs_model("Reading the data"))
        if self._data is None:
            from cesaa.data.locate import open_checkpoint_data

            self._data = open_checkpoint_data(
                self.checkpoint.meta, self.checkpoint.path, override=self.data_source
            )
        return self._data

    def table(self) -> Any:
        """The split as an ``EncodedTable`` for re-running the model (a seeded sample of at most
        ``STREAM_ROWS`` rows of a Parquet stream)."""
        from cesaa.data import MultiDomainData

        data = self.data()
        part = getattr(data, self.split)
        return part if isinstance(data, MultiDomainData) else part.sample_table(STREAM_ROWS, seed=0)


def open_path(
    path: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    sample_size: int = RECORD_SAMPLE,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Opened:
    """Open a record folder or a checkpoint as an ``Opened``.

    A checkpoint's record of split ``split`` on ``data`` (default: its own data) with an
    expert-output sample of ``sample_size`` rows is made once and cached (``cache_dir``, default
    ``analysis.records.checkpoint.record_cache_root()``).  Raises ``RecordError`` for a bad
    record, ``CheckpointError`` / ``ValueError`` for a bad checkpoint or data.
    """
    p = Path(path)
    if is_record(p):
        return Opened(path=p, record=open_record(p))
    from analysis.records.checkpoint import cached_record
    from cesaa.checkpoint import load_checkpoint

    ckpt = load_checkpoint(p)
    rec = cached_record(
        ckpt, data=data, part=split, sample_size=sample_size, seed=seed, cache_dir=cache_dir
    )
    return Opened(path=p, record=rec, checkpoint=ckpt, data_source=data, split=split)
