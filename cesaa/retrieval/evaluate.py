"""Recall@K of a two-tower model against the full item set, overall and per domain.

Shapes: Q = queries, I = items of the catalog, d = embedding width.

- A *query* is a (user, domain) pair with at least one positive (label 1) row in the evaluated
  split; its ground truth is the set of those positive items.  (In MovieLens a user's domain, the
  age group, never changes, so queries are users.)
- The *catalog* is every item of the data (train, validation and test rows): the full item set,
  including items never seen in training (their ``item_id`` embedding is the out-of-vocabulary
  one, their other features are known).
- Items the user already interacted with in earlier splits are excluded from the ranking before
  taking the top K: the training rows (any label) when evaluating validation, the training and
  validation rows when evaluating test.  An excluded item is never a hit.
- Recall@K = mean over queries of |TopK ∩ GT| / |GT| (``cesaa.metrics.recall_at_k``); per domain
  over that domain's queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from cesaa.data.table import EncodedTable, MultiDomainData
from cesaa.metrics import recall_at_k

SPLITS = ("val", "test")
EARLIER = {"val": ("train",), "test": ("train", "val")}


@dataclass
class Catalog:
    """Every item once: ``item_ids`` [I] (the tables' ``item`` ids, ascending) and the features of
    one row of each item, ``cat`` [I, C] and ``num`` [I, M] (only the item columns are read)."""

    item_ids: np.ndarray
    cat: torch.Tensor
    num: torch.Tensor

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def positions(self, items: np.ndarray) -> np.ndarray:
        """Catalog positions of item ids (all must be in the catalog)."""
        pos = np.searchsorted(self.item_ids, items)
        pos = np.clip(pos, 0, len(self) - 1)
        if items.size and not np.array_equal(self.item_ids[pos], items):
            raise ValueError("items outside the catalog")
        return pos


def _ids(table: EncodedTable, name: str) -> np.ndarray:
    t = getattr(table, name)
    if t is None:
        raise ValueError(f"retrieval needs the table's {name} ids (EncodedTable.{name} is None)")
    return t.numpy().astype(np.int64)


def build_catalog(*tables: EncodedTable) -> Catalog:
    """The items of ``tables`` with the features of each item's first row."""
    cat = torch.cat([t.cat for t in tables])
    num = torch.cat([t.num for t in tables])
    items = np.concatenate([_ids(t, "item") for t in tables])
    ids, first = np.unique(items, return_index=True)
    idx = torch.from_numpy(first)
    return Catalog(ids, cat[idx], num[idx])


@dataclass
class EvalSet:
    """What evaluating one split needs, built once (see the module docstring).

    - ``cat`` [Q, C], ``num`` [Q, M], ``domain`` [Q]: one row per query (user columns are read);
    - ``ground_truth`` and ``exclude``: [Q, I] sparse 0/1 matrices over catalog positions.
    """

    split: str
    catalog: Catalog
    cat: torch.Tensor
    num: torch.Tensor
    domain: torch.Tensor
    ground_truth: sparse.csr_matrix
    exclude: sparse.csr_matrix
    domain_names: tuple[str, ...]

    @property
    def num_queries(self) -> int:
        return int(self.domain.shape[0])

    @classmethod
    def build(
        cls,
        data: MultiDomainData,
        split: str = "test",
        catalog: Catalog | None = None,
        exclude_splits: Sequence[str] | None = None,
    ) -> EvalSet:
        """Queries of ``data``'s ``split`` ("val" or "test"); ``exclude_splits`` defaults to the
        earlier splits (train for val, train and val for test)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        catalog = catalog or build_catalog(data.train, data.val, data.test)
        table = getattr(data, split)
        num_domains = len(data.domain_names)
        pos = table.label.numpy() > 0.5
        users = _ids(table, "user")[pos]
        dom = table.domain.numpy().astype(np.int64)[pos]
        key = users * num_domains + dom
        keys, first, q_of_row = np.unique(key, return_index=True, return_inverse=True)
        rows = torch.from_numpy(np.flatnonzero(pos)[first])
        items = catalog.positions(_ids(table, "item")[pos])
        shape = (len(keys), len(catalog))
        gt = _matrix(q_of_row, items, shape)

        # exclusion: every earlier interaction of the query's user, whatever the domain
        q_user = keys // num_domains
        parts = [getattr(data, s) for s in (exclude_splits or EARLIER[split])]
        seen = pd.DataFrame(
            {
                "user": np.concatenate([_ids(t, "user") for t in parts]) if parts else [],
                "item": np.concatenate([_ids(t, "item") for t in parts]) if parts else [],
            }
        )
        queries = pd.DataFrame({"user": q_user, "q": np.arange(len(keys))})
        pairs = queries.merge(seen, on="user", how="inner")
        ex = _matrix(
            pairs["q"].to_numpy(np.int64),
            catalog.positions(pairs["item"].to_numpy(np.int64)),
            shape,
        )
        return cls(
            split=split,
            catalog=catalog,
            cat=table.cat[rows],
            num=table.num[rows],
            domain=table.domain[rows],
            ground_truth=gt,
            exclude=ex,
            domain_names=tuple(data.domain_names),
        )


def _matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    m = sparse.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=shape)
    m.data[:] = 1  # duplicates summed above: back to 0/1
    return m


@torch.no_grad()
def score_queries(model: torch.nn.Module, ev: EvalSet, batch_size: int = 4096) -> torch.Tensor:
    """Scores [Q, I] = <user embedding of each query, item embedding of each catalog item>, in
    eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        items = torch.cat(
            [
                model.item_embedding(
                    ev.catalog.cat[s : s + batch_size].to(device),
                    ev.catalog.num[s : s + batch_size].to(device),
                )
                for s in range(0, len(ev.catalog), batch_size)
            ]
        )  # [I, d]
        users = torch.cat(
            [
                model.user_embedding(
                    ev.cat[s : s + batch_size].to(device),
                    ev.num[s : s + batch_size].to(device),
                    ev.domain[s : s + batch_size].to(device),
                ).embedding
                for s in range(0, ev.num_queries, batch_size)
            ]
        )  # [Q, d]
    finally:
        model.train(was_training)
    return (users @ items.T).float().cpu()  # [Q, I]


def recall_report(
    scores: torch.Tensor | np.ndarray, ev: EvalSet, ks: Sequence[int] = (10, 50)
) -> dict[str, float]:
    """Recall@K overall and per domain from query scores [Q, I] (or [I]: the same ranking for
    every query, e.g. popularity).  Keys ``recall@K``, ``recall@K/<domain>``, ``queries``,
    ``queries/<domain>``; NaN for a domain without queries."""
    s = torch.as_tensor(scores, dtype=torch.float32)
    if s.dim() == 1:
        s = s.unsqueeze(0).expand(ev.num_queries, -1)
    if tuple(s.shape) != (ev.num_queries, len(ev.catalog)):
        raise ValueError(
            f"scores must be [{ev.num_queries}, {len(ev.catalog)}] (queries, items), got "
            f"{tuple(s.shape)}"
        )
    dom = ev.domain.numpy()
    out: dict[str, float] = {"queries": ev.num_queries}
    groups = [("", np.arange(ev.num_queries))] + [
        (f"/{name}", np.flatnonzero(dom == d)) for d, name in enumerate(ev.domain_names)
    ]
    for suffix, idx in groups:
        if suffix:
            out[f"queries{suffix}"] = int(idx.size)
        for k in ks:
            if idx.size == 0:
                out[f"recall@{k}{suffix}"] = math.nan
                continue
            sub = torch.from_numpy(idx)
            out[f"recall@{k}{suffix}"] = recall_at_k(
                s.index_select(0, sub), ev.ground_truth[idx], k, exclude=ev.exclude[idx]
            )
    return out


def evaluate_retrieval(
    model: torch.nn.Module, ev: EvalSet, ks: Sequence[int] = (10, 50)
) -> dict[str, float]:
    """Recall@K of ``model`` (a ``TwoTower``) on the queries of ``ev``, overall and per domain."""
    return recall_report(score_queries(model, ev), ev, ks)


def popularity_scores(table: EncodedTable, catalog: Catalog) -> torch.Tensor:
    """The most-popular baseline: each item's number of positive rows in ``table`` [I]."""
    pos = table.label.numpy() > 0.5
    counts = np.bincount(
        catalog.positions(_ids(table, "item")[pos]), minlength=len(catalog)
    ).astype(np.float32)
    return torch.from_numpy(counts)
