"""Training and inference throughput (rows/s) on MovieLens-100k: every model in our code vs
torch-rechub's MMoE and PLE with the same dimensions, measured in one run, alternating.

Every model gets the same batches of the training split (batch 1024; a training step = slicing
the in-memory batch, forward, BCE, backward, an Adam step with the trainer's optimizer
``cesaa.train.make_optimizer``, for every model).  A round runs ``--steps`` steps of every model,
in an order that rotates every round, so load changes on a shared machine hit all models alike; rows/s is the median over rounds.  Inference: eval mode, no
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
    ("STAR", "star"),
    ("Shared-Bottom", "shared_bottom"),
    ("MLP", "mlp"),
    ("torch-rechub MMoE", "rechub_mmoe"),
    ("torch-rechub PLE", "rechub_ple"),
)
# (ours, theirs, training goal, inference goal)
GOALS = (
    ("MMoE (ours)", "torch-rechub MMoE", 2.0, 1.5),
    ("PLE (ours)", "torch-rechub PLE", 2.0, 1.5),
    ("CESAA", "torch-rechub MMoE", 1.5, 1.5),
)


def _build(name: str, spec) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from cesaa.models import build_model, default_config
    from cesaa.train import make_optimizer

    torch.manual_seed(0)
    model = build_model(default_config(name), spec)
    # every model, ours and theirs, gets the trainer's optimizer (fused Adam where torch has it)
    return model, make_optimizer(model, lr=1e-3, weight_decay=1e-5)


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


def end_to_end(data, quick: bool) -> str:
    """A full training run to early stop: ``cesaa.train.train`` vs torch-rechub's MTLTrainer."""
    import os
    import tempfile

    from cesaa.config import TrainConfig
    from cesaa.models import default_config
    from cesaa.train import train

    cfg = TrainConfig(epochs=1 if quick else 20, batch_size=1024, lr=1e-3, seed=0, device="cpu")
    if quick:  # a smoke run: a few thousand rows of each split
        import dataclasses

        data = dataclasses.replace(
            data,
            **{
                split: getattr(data, split).subset(torch.arange(4096))
                for split in ("train", "val", "test")
            },
        )
    model_cfg = default_config("mmoe")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(model_cfg, cfg, data, os.path.join(tmp, "ours"))
        ours_s = time.perf_counter() - t0
        ours_epochs = len(res.history)
        t0 = time.perf_counter()
        theirs_epochs = _rechub_fit(data, model_cfg, cfg, tmp)
        theirs_s = time.perf_counter() - t0
    rows = [
        [
            "MMoE (ours), `cesaa.train.train`",
            ours_epochs,
            f"{ours_s:.1f}",
            f"{ours_s / ours_epochs:.2f}",
        ],
        [
            "torch-rechub MMOE, `MTLTrainer` + `DataGenerator`",
            theirs_epochs,
            f"{theirs_s:.1f}",
            f"{theirs_s / theirs_epochs:.2f}",
        ],
    ]
    ratio = (theirs_s / theirs_epochs) / (ours_s / ours_epochs)
    return (
        "### End to end: a full training run to early stop\n\n"
        f"MovieLens-100k, batch {cfg.batch_size}, Adam lr {cfg.lr}, at most {cfg.epochs} epochs, "
        f"patience {cfg.patience} on validation AUC.  Ours: batching, training, validation, a "
        "checkpoint per epoch, test evaluation.  Theirs: `DataGenerator(...).generate_dataloader` "
        "(a DataLoader over a dict-of-columns dataset, one row per `__getitem__`), `MTLTrainer.fit` "
        "(training, validation, their early stopping, a final `torch.save`) and `evaluate` on the "
        "test split; their MMOE predicts one head per domain and their trainer averages the "
        "heads' BCE (each head gets the row's label): the same network and work per row.  The "
        "two runs stop after different numbers of epochs, so the ratio is per epoch.\n\n"
        + _report.table(["run", "epochs", "wall s", "s / epoch"], rows)
        + f"\n\n**End-to-end speed-up per epoch (theirs / ours): {ratio:.2f}x.**"
    )


def _rechub_fit(data, model_cfg, cfg, tmp: str) -> int:
    """torch-rechub's own pipeline on our split; returns the epochs it ran."""
    import contextlib
    import io
    import os

    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    spec = data.spec
    d = spec.num_domains
    features = [
        SparseFeature(n, vocab_size=c, embed_dim=model_cfg.embed_dim)
        for n, c in zip(spec.cat_names, spec.cat_cardinalities, strict=True)
    ] + [DenseFeature(n) for n in spec.num_names]

    def xy(table):
        x = {n: table.cat[:, i].numpy() for i, n in enumerate(spec.cat_names)}
        x.update({n: table.num[:, j].numpy() for j, n in enumerate(spec.num_names)})
        return x, table.label.numpy()[:, None].repeat(d, axis=1)

    (xt, yt), (xv, yv), (xs, ys) = xy(data.train), xy(data.val), xy(data.test)
    torch.manual_seed(cfg.seed)
    expert = {"dims": [*model_cfg.expert_hidden, model_cfg.expert_dim], "dropout": 0.0}
    towers = [{"dims": list(model_cfg.tower_hidden), "dropout": 0.0} for _ in range(d)]
    model = MMOE(features, ["classification"] * d, model_cfg.mmoe_experts or d, expert, towers)
    trainer = MTLTrainer(
        model,
        ["classification"] * d,
        optimizer_params={"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        n_epoch=cfg.epochs,
        earlystop_patience=cfg.patience,
        device="cpu",
        model_path=tmp,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train_dl, val_dl, test_dl = DataGenerator(xt, yt).generate_dataloader(
            xv, yv, xs, ys, batch_size=cfg.batch_size
        )
        log = trainer.fit(train_dl, val_dl)
        trainer.evaluate(trainer.model, test_dl)
    assert os.path.exists(os.path.join(tmp, "model_base_0.pth"))
    return len(log)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=20, help="training steps per model per round")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--eval-batch", type=int, default=8192)
    p.add_argument(
        "--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end training runs"
    )
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
    for ours in [lab for lab in labels if not lab.startswith("torch-rechub")]:
        for theirs in ("torch-rechub MMoE", "torch-rechub PLE"):
            if theirs in med_t:
                ratio_rows.append(
                    [
                        f"{ours} / {theirs}",
                        f"{med_t[ours] / med_t[theirs]:.2f}x",
                        f"{med_i[ours] / med_i[theirs]:.2f}x",
                    ]
                )
    if ratio_rows:
        verdicts = []
        for ours, theirs, g_train, g_infer in GOALS:
            if ours in med_t and theirs in med_t:
                rt, ri = med_t[ours] / med_t[theirs], med_i[ours] / med_i[theirs]
                verdicts.append(
                    f"- {ours} / {theirs}: training {rt:.2f}x (goal >= {g_train}x: "
                    f"**{'met' if rt >= g_train else 'missed'}**), inference {ri:.2f}x "
                    f"(goal >= {g_infer}x: **{'met' if ri >= g_infer else 'missed'}**)"
                )
        parts.append(
            "### Speed-up over torch-rechub (ours / theirs)\n\n"
            + _report.table(["pair", "training", "inference"], ratio_rows)
            + "\n\n**Goals**\n\n"
            + "\n".join(verdicts)
        )
    if args.e2e and not missing:
        parts.append(end_to_end(data, args.quick))
    notes = (
        f"MovieLens-100k training split ({n:,} rows), embedding dim 16, experts 115 -> 64 -> 32, "
        "towers 32 -> 1, MMoE with one expert per domain (3), PLE with 1 level, 2 specific + 1 "
        "shared experts per domain, CESAA, STAR, Shared-Bottom and MLP defaults; torch-rechub "
        "0.9.0 models through the "
        "adapter of `bench/_rechub.py` (their MLPs add BatchNorm after every linear layer, part "
        f"of their architecture).  Batch {args.batch}, {args.steps} steps per model per round, "
        f"{args.rounds} rounds after {warmup} warm-up steps; inference batch {args.eval_batch}."
    )
    if missing:
        notes += f"\n\ntorch-rechub rows skipped: {missing}."
    notes += "\n\n" + _report.gpu_note()
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
