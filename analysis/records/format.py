"""The routing record: a folder any gated model can be written to and the analysis reads.

Shapes: N = rows, D = domains, E = experts of a gate, k = experts a sparse gate selects per row,
n = rows in the expert-output sample, H = expert output width.

A record is a folder::

    record.json      metadata (this module's ``RecordMeta``), written last: its presence means the
                     record is complete
    rows.parquet     one row per evaluated example, written in row groups as they are computed
    sample.parquet   a seeded uniform sample of n rows with every expert's output (optional)

``rows.parquet`` columns (readable with pandas / pyarrow / duckdb, no cesaa needed):

- ``row`` int64: position of the row in the record (0..N-1).
- ``domain`` int32: index into ``record.json["domains"]``.
- ``label`` float32 (0/1) and ``prediction`` float32 (predicted probability); both NaN in a record
  without labels (``record.json["labels"]`` false).
- ``p.<gate>.<e>`` float32: dense gate probability of expert e (0..E-1) of gate ``<gate>``; each
  row sums to 1 over e.
- ``top.<gate>.<j>`` int16: the j-th selected expert (j = 0..k-1) of a sparse (top-k) gate.
- ``keep.<name>``: columns the writer chose to keep (user/item ids, raw feature values).

``sample.parquet`` columns: ``row``, ``domain``, ``label``, ``prediction``, the ``p.``/``top.``
columns of every gate, ``out.<e>`` list<float32> [H] (output of expert e of the primary gate, the
first in ``gates``) and ``shared.<s>`` list<float32> [H] (always-on shared experts outside the gate).

``record.json`` also holds the mergeable routing statistics of every gate over *all* rows
(``stats``: ``RoutingStats.to_dict()``), so the overview of a 100M-row record is read from JSON.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FORMAT = "cesaa-routing-record"
SCHEMA_VERSION = 1
META_FILE = "record.json"
ROWS_FILE = "rows.parquet"
SAMPLE_FILE = "sample.parquet"
EXPERT_KINDS = ("routed", "shared", "specific")
GATE_KINDS = ("dense", "sparse", "structured")
NOT_DECLARED = "not declared"
BASE_COLUMNS = ("row", "domain", "label", "prediction")

_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class RecordError(ValueError):
    """A routing record that cannot be read; the message starts with the error's name, then names
    the file, the column and the bad value."""

    def __str__(self) -> str:
        return f"{type(self).__name__}: {super().__str__()}"


class RecordSchemaError(RecordError):
    """record.json is missing, incomplete, of another format or of an unknown schema version."""


class RecordMissingColumn(RecordError):
    """rows.parquet (or sample.parquet) lacks a column that record.json promises."""


class RecordProbabilityError(RecordError):
    """Gate probabilities that are negative, above 1 or whose rows do not sum to 1."""


class RecordExpertOutOfRange(RecordError):
    """A selected-expert index outside [0, E) of its gate."""


class RecordUnknownDomain(RecordError):
    """A domain index outside the domains named in record.json."""


def prob_column(gate: str, e: int) -> str:
    return f"p.{gate}.{e}"


def top_column(gate: str, j: int) -> str:
    return f"top.{gate}.{j}"


def keep_column(name: str) -> str:
    return f"keep.{name}"


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what} must be a non-empty name of letters, digits and _, got {value!r}")
    return value


@dataclass(frozen=True)
class ExpertInfo:
    """One expert: ``kind`` is "routed" (any domain may select it), "shared" (meant for every
    domain) or "specific" (owned by one domain or task, named in ``owner``)."""

    name: str
    kind: str = "routed"
    owner: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXPERT_KINDS:
            raise ValueError(f"expert kind must be one of {list(EXPERT_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class GateInfo:
    """One gate: its name (a column prefix), its experts in column order, and what kind it is.

    - ``kind``: "dense" (a softmax over every expert; each expert's work is its gate weight),
      "sparse" (selects ``top_k`` experts per row; an expert works on the rows that select it) or
      "structured" (a dense gate per domain that can weigh only the experts ``reach[d]`` of
      domain d, as PLE's per-task gates).  ``None`` in records written before kinds were declared;
      ``RecordMeta`` then infers it and lists "kind" in ``inferred``.
    - ``top_k``: the k of a sparse gate (``None`` for dense and structured gates).
    - ``reach``: for structured gates, one tuple of expert indices per domain (domain order).
    - Shared experts: an expert of kind "shared" in ``experts`` is a *gated* shared expert (every
      domain's gate weighs it); ungated shared experts that run on every row are the record's
      ``always_on``.
    - ``hyper``: the model hyperparameters that alarms read, e.g. ``{"alpha": 0.01, "beta": 0.0}``
      (alpha: weight of an MI loss that asks for domain-specific routing; beta: weight of a
      load-balancing loss).  ``{}``: the model has none; ``None``: not declared (old records),
      so the alarms that need them say "not checked".
    - ``family``: "cesaa" for cesaa models (alarm advice names cesaa settings), else "".
    - ``layer``: the gate's position in a sequence of gates (PLE levels, transformer layers, from
      0); gates at consecutive layers get the cross-gate views.  ``None``: not in a sequence.
    - ``inferred``: the fields above that were inferred on reading rather than declared.
    """

    name: str
    experts: tuple[ExpertInfo, ...]
    top_k: int | None = None
    description: str = ""
    kind: str | None = None
    reach: tuple[tuple[int, ...], ...] | None = None
    hyper: dict[str, float] | None = None
    family: str = ""
    layer: int | None = None
    inferred: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, "gate name")
        if not self.experts:
            raise ValueError(f"gate {self.name!r} needs at least one expert")
        e = len(self.experts)
        if self.top_k is not None and not (1 <= self.top_k <= e):
            raise ValueError(f"gate {self.name!r}: top_k={self.top_k} must be in [1, {e}]")
        if self.kind is not None and self.kind not in GATE_KINDS:
            raise ValueError(
                f"gate {self.name!r}: kind must be one of {list(GATE_KINDS)}, got {self.kind!r}"
            )
        if self.kind == "sparse" and self.top_k is None:
            raise ValueError(f"gate {self.name!r}: a sparse gate needs top_k")
        if self.kind in ("dense", "structured") and self.top_k is not None:
            raise ValueError(
                f"gate {self.name!r}: a {self.kind} gate weighs its experts densely; top_k="
                f"{self.top_k} declares a sparse gate (kind='sparse')"
            )
        if self.kind == "structured" and self.reach is None:
            raise ValueError(f"gate {self.name!r}: a structured gate needs reach (per domain)")
        if self.reach is not None:
            object.__setattr__(self, "reach", tuple(tuple(int(i) for i in r) for r in self.reach))
            bad = sorted({i for r in self.reach for i in r if not 0 <= i < e})
            if bad:
                raise ValueError(f"gate {self.name!r}: reach names experts {bad} outside [0, {e})")
            if any(not r for r in self.reach):
                raise ValueError(f"gate {self.name!r}: every domain must reach an expert")
        if self.hyper is not None:
            if not isinstance(self.hyper, dict):
                raise ValueError(f"gate {self.name!r}: hyper must be a dict, got {self.hyper!r}")
            for k, v in self.hyper.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(
                        f"gate {self.name!r}: hyper[{k!r}] must be a number, got {v!r}"
                    )

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def expert_names(self) -> list[str]:
        return [x.name for x in self.experts]

    @property
    def shared(self) -> list[int]:
        """Indices of the gated shared experts (kind "shared")."""
        return [i for i, x in enumerate(self.experts) if x.kind == "shared"]

    def reachable(self, num_domains: int) -> list[tuple[int, ...]]:
        """Per domain, the experts its gate can weigh (all of them unless structured)."""
        if self.reach is not None:
            return list(self.reach)
        return [tuple(range(self.num_experts))] * num_domains

    @property
    def declared(self) -> str:
        """One line on what was inferred rather than declared ("" when everything was declared)."""
        parts = [f"{x} inferred" for x in self.inferred]
        if self.hyper is None:
            parts.append("hyperparameters (alpha, beta) not declared")
        return "; ".join(parts)

    def hyperparameter(self, name: str) -> float | None:
        """``hyper[name]``, or ``None`` when the model has no such setting or none is declared."""
        return None if not self.hyper else self.hyper.get(name)

    def columns(self) -> list[str]:
        cols = [prob_column(self.name, e) for e in range(self.num_experts)]
        return cols + [top_column(self.name, j) for j in range(self.top_k or 0)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reach"] = None if self.reach is None else [list(r) for r in self.reach]
        return d

    @classmethod
    def from_dict(cls, g: dict[str, Any]) -> GateInfo:
        return cls(
            name=g["name"],
            experts=tuple(ExpertInfo(**e) for e in g["experts"]),
            top_k=g.get("top_k"),
            description=g.get("description", ""),
            kind=g.get("kind"),
            reach=None if g.get("reach") is None else tuple(tuple(r) for r in g["reach"]),
            hyper=None if g.get("hyper") is None else dict(g["hyper"]),
            family=g.get("family", ""),
            layer=g.get("layer"),
            inferred=tuple(g.get("inferred", ())),
        )


def infer_kind(gate: GateInfo, domains: tuple[str, ...]) -> GateInfo:
    """``gate`` with its kind (and reach) filled in from what an old record holds, listed in
    ``inferred``: sparse when it has top_k; structured when some expert is specific to a named
    domain (domain d reaches its own specific experts and every non-specific one); else dense."""
    if gate.kind is not None:
        return gate
    if gate.top_k is not None:
        return replace(gate, kind="sparse", inferred=(*gate.inferred, "kind"))
    owned = [x.kind == "specific" and x.owner in domains for x in gate.experts]
    if not any(owned):
        return replace(gate, kind="dense", inferred=(*gate.inferred, "kind"))
    reach = tuple(
        tuple(
            i
            for i, x in enumerate(gate.experts)
            if not (x.kind == "specific" and x.owner in domains) or x.owner == d
        )
        for d in domains
    )
    return replace(gate, kind="structured", reach=reach, inferred=(*gate.inferred, "kind", "reach"))


@dataclass
class RecordMeta:
    """Everything needed to interpret a record (``record.json``)."""

    model_name: str
    domains: tuple[str, ...]
    gates: tuple[GateInfo, ...]
    model_description: str = ""
    always_on: tuple[ExpertInfo, ...] = ()
    kept: tuple[str, ...] = ()
    rows: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    created: str = ""
    sample: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    labels: bool = True

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("a record needs at least one domain name")
        names = [g.name for g in self.gates]
        if len(set(names)) != len(names):
            raise ValueError(f"gate names must be unique, got {names}")
        for k in self.kept:
            check_name(k, "kept column name")
        self.gates = tuple(infer_kind(g, tuple(self.domains)) for g in self.gates)
        for g in self.gates:
            if g.reach is not None and len(g.reach) != len(self.domains):
                raise ValueError(
                    f"gate {g.name!r}: reach has {len(g.reach)} entries for "
                    f"{len(self.domains)} domains"
                )

    @property
    def primary(self) -> GateInfo | None:
        """The first gate (overview, embedding); ``None`` for a model without a gate, whose
        record holds its predictions only."""
        return self.gates[0] if self.gates else None

    def gate(self, name: str) -> GateInfo:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(f"no gate {name!r}; gates: {[g.name for g in self.gates]}")

    def columns(self) -> list[str]:
        """Every column rows.parquet must hold."""
        cols = list(BASE_COLUMNS)
        for g in self.gates:
            cols += g.columns()
        return cols + [keep_column(k) for k in self.kept]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gates"] = [g.to_dict() for g in self.gates]
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = META_FILE) -> RecordMeta:
        """Inverse of ``to_dict``; ``RecordSchemaError`` names what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise RecordSchemaError(f"{where}: format must be {FORMAT!r}, got {got!r}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordSchemaError(
                f"{where}: schema_version {version!r} is not supported (this cesaa reads "
                f"version {SCHEMA_VERSION})"
            )
        required = ("model_name", "domains", "gates", "rows", "stats")
        missing = [k for k in required if k not in data]
        if missing:
            raise RecordSchemaError(f"{where}: missing keys {missing}")
        try:
            gates = tuple(GateInfo.from_dict(g) for g in data["gates"])
            known = {f for f in cls.__dataclass_fields__}
            rest = {k: v for k, v in data.items() if k in known and k != "gates"}
            rest["domains"] = tuple(rest["domains"])
            rest["always_on"] = tuple(ExpertInfo(**e) for e in rest.get("always_on", ()))
            rest["kept"] = tuple(rest.get("kept", ()))
            return cls(gates=gates, **rest)
        except (KeyError, TypeError, ValueError) as err:
            raise RecordSchemaError(f"{where}: {err}") from None
