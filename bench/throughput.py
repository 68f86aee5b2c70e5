"""Training and inference throughput (rows/s) on MovieLens-100k: CESAA, MMoE and PLE in our code vs
torch-rechub's MMoE and PLE with the same dimensions, measured in one run, alternating.

Every model gets the same batches of the training split (batch 1024; a training step = slicing
the in-memory batch, forward, BCE, backward, Adam step, as in ``cesaa.train``).  A round runs
``--steps`` steps of every model, in an order that rotates every round, so load changes on a
shared machine hit all models alike; rows/s is the median over rounds.  Inference: eval mode, no
gradient, batches of 8192 over the training split.  Ratios are ours / theirs, from the medians.
Goal: our training rows/s >= 3x torch-rechub's.

    python -m bench.throughput            # full (about 2 min on 2 cores)
    python -m bench.throughput --quick    # CI smoke run
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench import _common, _report

SECTION = "throughput"
MODELS = (
    ("CESAA", "cesaa"),
    ("MMoE (ours)", "mmoe"),
    ("PLE (ours)", "ple"),
    ("torch-rechub MMoE", "rechub_mmoe"),
    ("torch-rechub PLE", "rechub_ple"),
)
PAIRS = (("MMoE (ours)", "torch-rechub MMoE"), ("PLE (ours)", "torch-rechub PLE"))


def _build(name: str, spec) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from cesaa.models import build_model, default_config

    torch.manual_seed(0)
    model = build_model(default_config(name), spec)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)


def train_steps(model, opt, table, batches: list[torch.Tensor]) -> float:
    """Seconds for one training step per batch index tensor."""
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        b = table.subset(idx)
        out = model(b.cat, b.num, b.domain)
        loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # as the trainer, which logs it
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, table, batch: int) -> float:
    """Seconds to predict every row of ``table`` in batches of ``batch``."""
    model.eval()
    t0 = time.perf_counter()
    for b in table.batches(batch):
        torch.sigmoid(model(b.cat, b.num, b.domain).logit)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=20, help="training steps per model per round")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--eval-batch", type=int, default=8192)
    args, argv = _common.parse(p, argv)
    warmup = 3
    if args.quick:
        args.rounds, args.steps, warmup = 2, 2, 1
    machine = _report.machine()  # before the run: its load average at the start
    t0 = time.perf_counter()
    from cesaa.data import load_data

    data = load_data(_common.ml100k_source(), seed=0)
    table = data.train
    if args.quick:
        table = table.subset(torch.arange(min(len(table), 4 * args.eval_batch)))
    missing = _common.rechub_status()
    models = [m for m in MODELS if not (missing and m[1].startswith("rechub_"))]
    built = {label: _build(name, data.spec) for label, name in models}
    params = {label: sum(p.numel() for p in m.parameters()) for label, (m, _) in built.items()}
    gen = torch.Generator().manual_seed(0)
    n = len(table)

    def batches(k: int) -> list[torch.Tensor]:
        return [torch.randint(n, (args.batch,), generator=gen) for _ in range(k)]

    for m, opt in built.values():  # warm-up: allocator, first-call overheads
        train_steps(m, opt, table, batches(warmup))
        infer(m, table, args.eval_batch)
    train_rps: dict[str, list[float]] = {label: [] for label in built}
    infer_rps: dict[str, list[float]] = {label: [] for label in built}
    labels = list(built)
    for r in range(args.rounds):
        shift = r % len(labels)
        order = labels[shift:] + labels[:shift]
        round_batches = batches(args.steps)  # the same rows for every model in this round
        for label in order:
            m, opt = built[label]
            train_rps[label].append(
                args.steps * args.batch / train_steps(m, opt, table, round_batches)
            )
        for label in order:
            infer_rps[label].append(n / infer(built[label][0], table, args.eval_batch))
        _report.log(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{lab} {train_rps[lab][-1]:,.0f}" for lab in labels)
        )
    med_t = {lab: statistics.median(v) for lab, v in train_rps.items()}
    med_i = {lab: statistics.median(v) for lab, v in infer_rps.items()}
    rows = [
        [
            lab,
            f"{params[lab]:,}",
            f"{med_t[lab]:,.0f}",
            f"{min(train_rps[lab]):,.0f} – {max(train_rps[lab]):,.0f}",
            f"{med_i[lab]:,.0f}",
        ]
        for lab in labels
    ]
    parts = [
        _report.table(
            [
                "model",
                "parameters",
                "train rows/s (median)",
                "train rows/s (range)",
                "inference rows/s",
            ],
            rows,
        )
    ]
    ratio_rows = []
    for ours in ("CESAA", "MMoE (ours)", "PLE (ours)"):
        for theirs in ("torch-rechub MMoE", "torch-rechub PLE"):
            if ours in med_t and theirs in med_t:
                ratio_rows.append(
                    [
                        f"{ours} / {theirs}",
                        f"{med_t[ours] / med_t[theirs]:.2f}x",
                        f"{med_i[ours] / med_i[theirs]:.2f}x",
                    ]
                )
    if ratio_rows:
        goal = [f"{a}: {med_t[a] / med_t[b]:.2f}x" for a, b in PAIRS if a in med_t and b in med_t]
        met = all(med_t[a] / med_t[b] >= 3 for a, b in PAIRS if a in med_t and b in med_t)
        parts.append(
            "### Speed-up over torch-rechub (ours / theirs)\n\n"
            + _report.table(["pair", "training", "inference"], ratio_rows)
            + f"\n\n**Goal (training >= 3x torch-rechub, same architecture): "
            f"{'met' if met else 'missed'} ({'; '.join(goal)}).**"
        )
    notes = (
        f"MovieLens-100k training split ({n:,} rows), embedding dim 16, experts 115 -> 64 -> 32, "
        "towers 32 -> 1, MMoE with one expert per domain (3), PLE with 1 level, 2 specific + 1 "
        "shared experts per domain, CESAA defaults; torch-rechub 0.9.0 models through the "
        "adapter of `bench/_rechub.py` (their MLPs add BatchNorm after every linear layer, part "
        f"of their architecture).  Batch {args.batch}, {args.steps} steps per model per round, "
        f"{args.rounds} rounds after {warmup} warm-up steps; inference batch {args.eval_batch}."
    )
    if missing:
        notes += f"\n\ntorch-rechub rows skipped: {missing}."
    if args.quick:
        notes += "\n\n**Quick mode: a smoke run, these numbers mean nothing.**"
    body = "\n\n".join(
        [
            _report.header(
                "Throughput: training and inference rows/s vs torch-rechub",
                _report.command("bench.throughput", argv),
                machine,
                time.perf_counter() - t0,
                notes,
            ),
            *parts,
        ]
    )
    _common.write(SECTION, args, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
