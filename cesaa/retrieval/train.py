"""Training a two-tower model with the in-batch softmax, early stopping on validation Recall@K.

Positives are the training rows with label 1; in a batch of B (user, item) positives every other
row's item is a negative for a user (in-batch negatives, sampled in proportion to popularity).
Determinism follows ``cesaa.train``: the model is initialized under ``seed`` and epoch ``t``
shuffles with a generator seeded from ``(seed, t)``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cesaa.config import ModelConfig
from cesaa.data.table import MultiDomainData
from cesaa.epoch import epoch_seed, seed_everything
from cesaa.retrieval.evaluate import EvalSet, build_catalog, evaluate_retrieval
from cesaa.retrieval.model import MOVIELENS_USER_FEATURES, TwoTower
from cesaa.train import resolve_device

log = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    """Optimization of a two-tower model.  Defaults: the ranking protocol's Adam (lr 1e-3, weight
    decay 1e-5, patience 4) with a smaller batch (every row of a batch is a negative for the
    others: 512 keeps duplicates of popular items rare among 1.6k MovieLens items)."""

    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-5
    temperature: float = 0.1  # softmax temperature on cosine scores (normalize=True)
    normalize: bool = True  # L2-normalize both embeddings: the score is a cosine
    out_dim: int = 32  # embedding width d of both towers
    mask_duplicates: bool = True  # a batch row with the same item as the positive is no negative
    logq_correction: bool = True  # subtract log(item frequency) from in-batch logits (Yi et al.)
    patience: int = 4  # epochs without a better validation Recall@monitor_k
    monitor_k: int = 10
    ks: tuple[int, ...] = (10, 50)  # reported Recall@K
    seed: int = 0
    device: str = "auto"
    user_features: tuple[str, ...] = MOVIELENS_USER_FEATURES

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        self.user_features = tuple(self.user_features)
        for name in ("epochs", "batch_size", "out_dim", "monitor_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be >= 2 (in-batch negatives)")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.weight_decay < 0 or self.patience < 0:
            raise ValueError("weight_decay and patience must be >= 0")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks={self.ks} must be positive ints")


def in_batch_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    temperature: float = 1.0,
    item_ids: torch.Tensor | None = None,
    item_logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with in-batch negatives, in nats, >= 0:

        L = -(1/B) sum_i log( exp(l_ii) / sum_j exp(l_ij) ),   l_ij = <user_i, item_j> / t - log q_j

    user, item: [B, d], row i of each is a positive pair.  ``item_ids`` [B]: when given, a column
    j != i holding the same item as row i is left out of row i's denominator (it is the same
    positive, not a negative).  ``item_logq`` [B]: log of the probability q_j that item j is
    sampled into a batch (its share of the positives); subtracting it is the logQ correction of
    the popularity bias of in-batch negatives (Yi et al., RecSys 2019).  None: no correction.
    Softmax in float32.
    """
    if user.shape != item.shape or user.dim() != 2:
        raise ValueError(f"user and item must both be [B, d], got {user.shape} and {item.shape}")
    logits = (user @ item.T).float() / temperature  # [B, B]
    if item_logq is not None:
        logits = logits - item_logq.float().unsqueeze(0)  # [B, B]
    if item_ids is not None:
        same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)  # [B, B]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, -math.inf)
    target = torch.arange(user.shape[0], device=user.device)
    return F.cross_entropy(logits, target)


@dataclass
class RetrievalResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    stopped_early: bool = False


def build_two_tower(
    model_cfg: ModelConfig, cfg: RetrievalConfig, data: MultiDomainData
) -> TwoTower:
    """The ``TwoTower`` for ``data`` with user tower ``model_cfg.name``."""
    return TwoTower(
        model_cfg,
        data.spec,
        user_features=cfg.user_features,
        out_dim=cfg.out_dim,
        normalize=cfg.normalize,
    )


def train_retrieval(
    model_cfg: ModelConfig,
    cfg: RetrievalConfig,
    data: MultiDomainData,
    *,
    callback: Callable[[dict], None] | None = None,
    eval_sets: Sequence[EvalSet] | None = None,
) -> RetrievalResult:
    """Train a ``TwoTower`` (user tower ``model_cfg.name``) on ``data``'s positive training rows.

    Early stopping on validation Recall@``monitor_k``; the best weights are restored and evaluated
    on validation and test (Recall@``ks``, overall and per domain).  ``eval_sets``: prebuilt
    (val, test) ``EvalSet``s to reuse across runs on the same data.
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model = build_two_tower(model_cfg, cfg, data).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if eval_sets is None:
        catalog = build_catalog(data.train, data.val, data.test)
        eval_sets = (EvalSet.build(data, "val", catalog), EvalSet.build(data, "test", catalog))
    val_set, test_set = eval_sets
    positives = data.train.subset(torch.nonzero(data.train.label > 0.5).squeeze(1))
    if data.train.item is None:
        raise ValueError("retrieval needs item ids (EncodedTable.item)")
    monitor = f"recall@{cfg.monitor_k}"
    logq = None
    if cfg.logq_correction:  # log share of each item id among the training positives
        counts = torch.bincount(positives.item)
        logq = torch.log(counts.double() / counts.sum()).float().to(device)  # [max item id + 1]

    history: list[dict] = []
    best, best_epoch, bad = -math.inf, -1, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stopped = False
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch) + 17)
        sums = {"loss": 0.0, "softmax": 0.0, "mi": 0.0}
        rows = 0
        for batch in positives.batches(cfg.batch_size, shuffle=True, generator=gen):
            if len(batch) < 2:
                continue  # a lone row has no negative
            b = batch.to(device)
            u = model.user_embedding(b.cat, b.num, b.domain)
            v = model.item_embedding(b.cat, b.num)
            ids = b.item if cfg.mask_duplicates else None
            lq = logq[b.item] if logq is not None else None
            softmax = in_batch_softmax_loss(u.embedding, v, cfg.temperature, ids, lq)
            loss = softmax + u.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = len(batch)
            rows += n
            sums["loss"] += loss.item() * n
            sums["softmax"] += softmax.item() * n
            sums["mi"] += float((u.losses or {}).get("mi", 0.0)) * n
        val = evaluate_retrieval(model, val_set, (cfg.monitor_k,))
        record = {
            "epoch": epoch + 1,
            **{f"train/{k}": v / max(rows, 1) for k, v in sums.items()},
            **{f"val/{k}": v for k, v in val.items()},
            "time_s": time.perf_counter() - t0,
        }
        history.append(record)
        if val[monitor] > best:
            best, best_epoch, bad = val[monitor], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        if callback is not None:
            callback({"event": "epoch", **record})
        if cfg.patience > 0 and bad >= cfg.patience:
            stopped = True
            break

    model.load_state_dict(best_state)
    model.eval()
    val = evaluate_retrieval(model, val_set, cfg.ks)
    test = evaluate_retrieval(model, test_set, cfg.ks)
    return RetrievalResult(model, history, best_epoch + 1, val, test, stopped)
