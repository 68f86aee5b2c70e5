"""``cesaa record``: write the routing record of a cesaa checkpoint on a data source.

Shapes: B = rows of a batch, E = selectable experts, k = experts per row, S = shared experts,
H = expert output width, C / M = categorical / numeric feature columns.

The record keeps, besides the routing, the user and item ids and every feature's raw value
(categorical values decoded through the checkpoint's vocabularies, numeric values un-standardized)
as ``keep.<column>`` columns, for the row-level inspection views.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.records.format import META_FILE, ExpertInfo, GateInfo, RecordMeta
from analysis.records.reader import Record, open_record
from analysis.records.writer import RecordWriter
from cesaa.checkpoint import Checkpoint, load_checkpoint
from cesaa.data.table import EncodedTable
from cesaa.routing.capabilities import expert_names, routing_capabilities

PARTS = ("train", "val", "test")
GATE = "gate"


def _decoders(encoders: dict) -> dict[str, Any]:
    """{kept column: fn(EncodedTable) -> [B] raw values} from the checkpoint's encoders."""
    out: dict[str, Any] = {}

    def vocab_decoder(vocab: list[str], get: Any) -> Any:
        table = np.asarray(["<unseen>", *vocab], dtype=object)

        def decode(b: EncodedTable) -> np.ndarray:
            codes = get(b).cpu().numpy()
            return np.where(codes < len(table), table[np.minimum(codes, len(table) - 1)], "<new>")

        return decode

    cats = encoders.get("categorical", [])
    for key in ("user", "item"):
        entry = encoders.get(key)
        if entry:
            vocab = entry.get("vocab")
            if vocab is None:  # the id shares a categorical column's vocabulary
                vocab = next(c["vocab"] for c in cats if c["column"] == entry["column"])
            out[f"{key}_id"] = vocab_decoder(vocab, lambda b, k=key: getattr(b, k))
    for j, c in enumerate(cats):
        out[c["column"]] = vocab_decoder(c["vocab"], lambda b, j=j: b.cat[:, j])
    for j, c in enumerate(encoders.get("numeric", [])):
        mean, std = float(c["mean"]), float(c["std"])
        out[c["column"]] = lambda b, j=j, m=mean, s=std: b.num[:, j].double().cpu().numpy() * s + m
    return {_safe(k): v for k, v in out.items()}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name))


def checkpoint_meta(ckpt: Checkpoint, kept: tuple[str, ...], source: str, part: str) -> RecordMeta:
    caps = routing_capabilities(ckpt.model)
    domains = tuple(ckpt.domain_names)
    names = expert_names(caps, domains)
    experts = tuple(
        _expert_info(names[i], kind, domains) for i, kind in enumerate(caps["expert_kinds"])
    )
    # cesaa's shared experts run on every row outside the gate
    always_on = tuple(
        ExpertInfo(name=f"shared_{j}", kind="shared") for j in range(caps["always_on"])
    )
    desc = ckpt.meta["data"].get("description", {})
    return RecordMeta(
        model_name=caps["name"],
        model_description=str(ckpt.meta["model"].get("description", "")),
        domains=domains,
        gates=(checkpoint_gate(caps, experts, ckpt.model_config, len(domains)),)
        if caps["has_gate"]
        else (),
        always_on=always_on,
        kept=kept,
        data={
            "source": source,
            "part": part,
            "split": desc.get("split", "random"),
            "seed": desc.get("seed", 0),
            "fingerprint": ckpt.meta["data"].get("fingerprint"),
        },
        source={"kind": "cesaa-checkpoint", "weights_sha256": ckpt.meta.get("weights_sha256")},
    )


def checkpoint_gate(
    caps: dict[str, Any], experts: tuple[ExpertInfo, ...], cfg: Any, num_domains: int
) -> GateInfo:
    """The gate of a cesaa-trained model as the record declares it: sparse (the CESAA family, with
    the alpha and beta it trained with), structured (PLE: a domain's gate reaches its own
    specific experts and the shared ones) or dense (MMoE; no alpha or beta acts on it)."""
    kinds = caps["expert_kinds"]
    if caps["has_topk"]:
        kind, reach = "sparse", None
    elif any(k.startswith("domain:") for k in kinds):
        kind = "structured"
        reach = tuple(
            tuple(i for i, k in enumerate(kinds) if k in ("shared", "routed", f"domain:{d}"))
            for d in range(num_domains)
        )
    else:
        kind, reach = "dense", None
    hyper = {"alpha": float(cfg.alpha), "beta": float(cfg.beta)} if caps["has_topk"] else {}
    return GateInfo(
        name=GATE,
        experts=experts,
        top_k=caps["top_k"] if kind == "sparse" else None,
        kind=kind,
        reach=reach,
        hyper=hyper,
        family="cesaa",
    )


def _expert_info(name: str, kind: str, domains: tuple[str, ...]) -> ExpertInfo:
    """``routing_capabilities`` kind ("routed", "shared", "domain:<d>") as a record expert."""
    if kind.startswith("domain:"):
        return ExpertInfo(name=name, kind="specific", owner=domains[int(kind.split(":", 1)[1])])
    return ExpertInfo(name=name, kind=kind if kind in ("routed", "shared") else "routed")


@torch.no_grad()
def write_checkpoint_record(
    ckpt: Checkpoint,
    batches: Iterable[EncodedTable],
    out: str | Path,
    *,
    source: str,
    part: str,
    sample_size: int = 2000,
    seed: int = 0,
    keep: bool = True,
    command: str = "",
    overwrite: bool = False,
) -> Record:
    """Run the checkpoint's model over ``batches`` (eval mode) and write its record to ``out``."""
    decoders = _decoders(ckpt.encoders) if keep else {}
    meta = checkpoint_meta(ckpt, tuple(decoders), source, part)
    meta.command = command
    if not meta.gates:  # a model without a gate: its predictions, no routing, no sample
        sample_size = 0
    model = ckpt.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    writer = RecordWriter(out, meta, sample_size=sample_size, seed=seed, overwrite=overwrite)
    try:
        for batch in batches:
            b = batch.to(device)
            o = model(b.cat, b.num, b.domain)
            probs = {} if o.probs is None else {GATE: o.probs.float().cpu().numpy()}  # [B, E]
            sparse = bool(meta.gates) and meta.gates[0].kind == "sparse"
            topk = {GATE: o.topk_idx.cpu().numpy()} if sparse else {}  # [B, k]

            def outputs(local: np.ndarray, b: EncodedTable = b) -> tuple[Any, Any]:
                sub = b.subset(torch.as_tensor(local, dtype=torch.long, device=device))
                so = model(sub.cat, sub.num, sub.domain, return_expert_outputs=True)
                return so.expert_outputs, so.shared_outputs

            writer.write(
                domain=batch.domain,
                label=batch.label,
                prediction=torch.sigmoid(o.logit).float(),
                probs=probs,
                topk=topk,
                keep={k: fn(batch) for k, fn in decoders.items()},
                expert_outputs=outputs,
            )
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        model.train(was_training)
    return open_record(out)


def _rows(ckpt: Checkpoint, data: str | None, part: str, batch_size: int) -> tuple[Any, str, str]:
    """(batches of split ``part``, its source, the data fingerprint) of the checkpoint's own data
    (found where it was trained or relative to the run folder) or of ``data``.  Stream sources
    (``stream:SCHEMA``) are read one row-group piece at a time."""
    from cesaa.data import MultiDomainData
    from cesaa.data.locate import open_checkpoint_data

    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
    opened = open_checkpoint_data(ckpt.meta, ckpt.path, override=data)
    source = data or ckpt.meta["data"].get("description", {}).get("source")
    rows = getattr(opened, part)
    if isinstance(opened, MultiDomainData):
        batches: Iterable[EncodedTable] = rows.batches(batch_size)
    else:  # a stream: one row-group piece at a time
        batches = (piece for chunk in rows.chunks() for piece in chunk.batches(batch_size))
    return batches, source, str(opened.fingerprint)


def record_checkpoint(
    checkpoint: str | Path | Checkpoint,
    out: str | Path,
    *,
    data: str | None = None,
    part: str = "test",
    batch_size: int = 8192,
    sample_size: int = 2000,
    seed: int = 0,
    keep: bool = True,
    command: str = "",
    overwrite: bool = False,
) -> Record:
    """The record of a checkpoint on ``data`` (default: its own data source), split ``part``."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    batches, source, _ = _rows(ckpt, data, part, batch_size)
    return write_checkpoint_record(
        ckpt,
        batches,
        out,
        source=source,
        part=part,
        sample_size=sample_size,
        seed=seed,
        keep=keep,
        command=command,
        overwrite=overwrite,
    )


CACHE_ENV = "CESAA_RECORD_CACHE"
CACHE_VERSION = 1  # bump when a cached record would be written differently


def record_cache_root() -> Path:
    """Where checkpoints' records are cached: ``$CESAA_RECORD_CACHE``, else
    ``~/.cache/cesaa/records``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cesaa" / "records")


def cached_record(
    checkpoint: str | Path | Checkpoint,
    *,
    data: str | None = None,
    part: str = "test",
    sample_size: int = 2000,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Record:
    """The record of a checkpoint, made once per (weights, data fingerprint, split, sample) and
    reused: every descriptive view of a checkpoint reads this record.

    Kept under ``cache_dir`` (default ``record_cache_root()``) in a folder named by the hash of
    the key; written to a temporary folder and renamed, so concurrent makers never read half a
    record.  ``data``: another data source than the checkpoint's own (its fingerprint is part of
    the key, so the record follows the data).
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    batches = source = None
    fingerprint = ckpt.meta["data"].get("fingerprint")
    if data is not None or not fingerprint:  # the data decides the key: open it first
        batches, source, fingerprint = _rows(ckpt, data, part, 8192)
    key = {
        "version": CACHE_VERSION,
        "weights_sha256": ckpt.meta.get("weights_sha256"),
        "data_fingerprint": fingerprint,
        "part": part,
        "sample_size": int(sample_size),
        "seed": int(seed),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir is not None else record_cache_root()
    folder = root / f"{_safe(ckpt.meta['model'].get('name', 'model'))}-{digest}"
    if (folder / META_FILE).is_file():
        return open_record(folder, check="footer")
    if batches is None:
        batches, source, _ = _rows(ckpt, data, part, 8192)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        write_checkpoint_record(
            ckpt,
            batches,
            tmp / "record",
            source=source,
            part=part,
            sample_size=sample_size,
            seed=seed,
            command=f"cesaa record {ckpt.path} --split {part} --sample {sample_size}",
        )
        try:
            os.replace(tmp / "record", folder)
        except OSError:  # another process made it first: theirs is the same record
            if not (folder / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_record(folder, check="footer")
