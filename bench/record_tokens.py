"""Recording a language model token by token: time per 1k tokens and peak memory against size.

A tiny Mixtral (random weights, built from a config; 2 layers, 8 experts, top-2, hidden 32) reads
seeded random sequences of 128 tokens in batches of 64 (8,192 tokens a batch) from three sources.
For each size, each in a fresh process (so its peak resident memory is its own):

- ``forward``: the model's body over the batches, nothing recorded (what a forward pass costs);
- ``record``: ``analysis.records.transformers_moe.record_transformers`` over the same batches (every
  router, one row per token, token ids kept, a 2,000-token expert-output sample), then opening the
  record (as ``analysis.open_record``, which checks every row up to 1M rows);
- ``open``: the opened record's Overview numbers for every layer from ``record.json`` alone
  (``open_record(check="footer")`` + ``summarize`` per gate) - what the dashboard reads first.

    python -m bench.record_tokens                      # 50k, 500k, 5M tokens (about 15 min)
    python -m bench.record_tokens --quick              # CI smoke run
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench import _common, _report

SECTION = "record_tokens"
BATCH, LENGTH = 64, 128


def _model():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=LENGTH,
    )  # fmt: skip
    return transformers.MixtralForCausalLM(cfg).eval()


def _batches(tokens: int):
    import torch

    g = torch.Generator().manual_seed(0)
    for _ in range(tokens // (BATCH * LENGTH)):
        ids = torch.randint(0, 256, (BATCH, LENGTH), generator=g)
        yield {"input_ids": ids, "attention_mask": torch.ones_like(ids),
               "source": torch.arange(BATCH) % 3}  # fmt: skip


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(mode: str, tokens: int, folder: str) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    from analysis.measures import summarize
    from analysis.records import open_record
    from analysis.records.transformers_moe import record_transformers

    model = _model()
    base = _peak_mib()
    out = Path(folder) / f"rec-{tokens}"
    t0 = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            for b in _batches(tokens):
                model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            use_cache=False)  # fmt: skip
        return {"s": time.perf_counter() - t0, "peak": _peak_mib(), "base": base}
    if mode == "record":
        rec = record_transformers(model, _batches(tokens), domain="source",
                                  domains=["a", "b", "c"], out=out, sample_size=2000)  # fmt: skip
        mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
        return {"s": time.perf_counter() - t0, "peak": _peak_mib(), "base": base,
                "rows": rec.rows, "mb": mb}  # fmt: skip
    rec = open_record(out, check="footer")
    for g in rec.meta.gates:
        summarize(rec.stats[g.name], list(rec.domains), g.expert_names)
    return {"s": time.perf_counter() - t0, "peak": _peak_mib(), "base": base}


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", default="50000,500000,5000000", help="sizes (default %(default)s)")
    args, argv = _common.parse(p, argv)
    sizes = [int(s) for s in args.tokens.split(",")]
    if args.quick:
        sizes = [8_192, 32_768]
    import torch

    threads = torch.get_num_threads()
    machine = _report.machine(threads)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="cesaa-bench-tokens-")
    results = []
    try:
        for n in sizes:
            r = {"tokens": n}
            for mode in ("forward", "record", "open"):
                _report.log(f"{mode}: {n:,} tokens")
                r[mode] = _common.in_fresh_process(
                    run, mode, n, tmp, threads=threads, allocator_choice=args.allocator
                )
            shutil.rmtree(Path(tmp) / f"rec-{n}")
            results.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for r in results:
        f, rec, op = r["forward"], r["record"], r["open"]
        k = rec["rows"] / 1000
        rows.append([
            f"{rec['rows']:,}", f"{f['s']:.1f}", f"{rec['s']:.1f}", f"{f['s'] / k * 1e3:.1f}",
            f"{rec['s'] / k * 1e3:.1f}", f"{rec['s'] / f['s']:.2f}",
            f"{rec['peak'] - rec['base']:.0f}", f"{f['peak'] - f['base']:.0f}", f"{rec['mb']:.0f}",
            f"{op['s'] * 1e3:.0f}",
        ])  # fmt: skip
    small, big = results[0]["record"], results[-1]["record"]
    per = [r["record"]["s"] / r["record"]["rows"] * 1e6 for r in results]
    verdict = (
        f"Recording costs {per[0]:.1f} ms per 1k tokens at {small['rows']:,} tokens and "
        f"{per[-1]:.1f} ms at {big['rows']:,} ({per[-1] / per[0]:.2f}x): "
        + ("no superlinear growth. " if per[-1] / per[0] < 1.5 else "it grows with the size. ")
        + f"Peak memory above the loaded model: {small['peak'] - small['base']:.0f} MiB and "
        f"{big['peak'] - big['base']:.0f} MiB (rows are written in row groups of 65,536, "
        "statistics are sums, the sample a bottom-2,000 sketch; records up to 1M rows are "
        "re-read once in full by the check on opening).  The Overview numbers of every layer come "
        "from record.json: the `open` column stays flat."
    )
    notes = (
        f"Tiny Mixtral (2 layers, 8 experts, top-2, hidden 32, vocabulary 256), batches of "
        f"{BATCH} x {LENGTH} tokens, three sources; `record` includes the 2,000-token "
        "expert-output sample (8 expert calls on the sampled tokens per batch) and the full check "
        "of records up to 1M rows; peak = max resident memory of the fresh process minus that "
        "after building the model.  ms per 1k tokens = seconds / (tokens / 1000) x 1000."
    )
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join([
        _report.header("Recording a language model: time per 1k tokens and memory",
                       _report.command("bench.record_tokens", argv), machine,
                       time.perf_counter() - t0, notes),
        _report.table(
            ["tokens", "forward s", "record s", "forward ms / 1k tok", "record ms / 1k tok",
             "record / forward", "record peak MiB", "forward peak MiB", "MiB on disk",
             "open ms"], rows),
        verdict,
    ])  # fmt: skip
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
