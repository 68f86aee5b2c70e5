"""End-to-end row of ``bench.throughput``: a full MovieLens-100k training run to early stop with
``cesaa.train.train`` vs torch-rechub's own trainer and DataLoader on the same split."""

from __future__ import annotations

import time

import torch

from bench import _report


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
