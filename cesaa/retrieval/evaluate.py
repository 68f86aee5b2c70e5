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
- Recall@K = mean over queries of |TopK ∩ GT| / |GT| (``cesaa.retrieval.recall.recall_at_k``); per domain
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
from cesaa.retrieval.recall import recall_at_k

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
def embed(model: torch.nn.Module, ev: EvalSet, batch_size: int = 4096) -> tuple[torch.Tensor, ...]:
    """(user embeddings [Q, d] of the queries, item embeddings [I, d] of the catalog), in eval
    mode (the model's mode is restored), on the model's device."""
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
    return users, items


def score_queries(model: torch.nn.Module, ev: EvalSet, batch_size: int = 4096) -> torch.Tensor:
    """Scores [Q, I] = <user embedding of each query, item embedding of each catalog item>: the
    full dense matrix (small catalogs, tests); ``evaluate_retrieval`` never builds it."""
    users, items = embed(model, ev, batch_size)
    return (users @ items.T).float().cpu()  # [Q, I]


def top_k_items(
    users: torch.Tensor,
    items: torch.Tensor,
    k: int,
    exclude: sparse.csr_matrix | None = None,
    query_chunk: int = 1024,
    item_chunk: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best catalog positions of each query by <user, item>, excluded items removed.

    users: [Q, d]; items: [I, d]; exclude: [Q, I] sparse 0/1 or None.  Returns (positions [Q, k']
    long, scores [Q, k'] float32, best first; k' = min(k, I)); an excluded item scores -inf and
    can only appear (last) when fewer than k' items are left.  Scores are computed for one block
    of ``query_chunk`` x ``item_chunk`` at a time and each block's top k merged into the running
    top k, so memory is O(query_chunk * item_chunk + Q * k), whatever I (no [Q, I] matrix).
    Among exactly tied scores the order is torch.topk's.
    """
    n_q, n_i = users.shape[0], items.shape[0]
    k = min(k, n_i)
    top_pos = torch.empty(n_q, k, dtype=torch.long)
    top_val = torch.empty(n_q, k, dtype=torch.float32)
    for q0 in range(0, n_q, query_chunk):
        q1 = min(q0 + query_chunk, n_q)
        ex = exclude[q0:q1].tocoo() if exclude is not None else None
        best_val = torch.empty(q1 - q0, 0, device=users.device)
        best_pos = torch.empty(q1 - q0, 0, dtype=torch.long, device=users.device)
        for i0 in range(0, n_i, item_chunk):
            i1 = min(i0 + item_chunk, n_i)
            s = (users[q0:q1] @ items[i0:i1].T).float()  # [q, i] this block only
            if ex is not None and ex.nnz:
                inside = (ex.col >= i0) & (ex.col < i1)
                r = torch.from_numpy(ex.row[inside].astype(np.int64)).to(s.device)
                c = torch.from_numpy((ex.col[inside] - i0).astype(np.int64)).to(s.device)
                s[r, c] = -math.inf
            val, pos = s.topk(min(k, i1 - i0), dim=1)  # [q, <= k]
            cand_val = torch.cat([best_val, val], dim=1)  # [q, <= 2k]
            cand_pos = torch.cat([best_pos, pos + i0], dim=1)
            best_val, keep = cand_val.topk(min(k, cand_val.shape[1]), dim=1)  # merge
            best_pos = cand_pos.gather(1, keep)
        top_pos[q0:q1], top_val[q0:q1] = best_pos.cpu(), best_val.cpu()
    return top_pos, top_val


def ranking_report(
    top_pos: torch.Tensor, top_val: torch.Tensor, ev: EvalSet, ks: Sequence[int] = (10, 50)
) -> dict[str, float]:
    """``recall_report``'s keys from each query's ranked catalog positions (``top_k_items``):
    Recall@K = mean over queries of |TopK ∩ GT| / |GT|, an excluded (-inf) item never a hit."""
    if any(k > top_pos.shape[1] for k in ks):
        raise ValueError(f"ks={list(ks)} need at least {max(ks)} ranked items per query")
    pos = top_pos.numpy()
    n_q, width = pos.shape
    rows = np.repeat(np.arange(n_q), width)
    hit = np.asarray(ev.ground_truth[rows, pos.ravel()]).reshape(n_q, width) > 0
    hit &= top_val.numpy() > -math.inf  # [Q, k'] hits in rank order
    gt_size = np.asarray(ev.ground_truth.sum(axis=1)).ravel()  # [Q]
    dom = ev.domain.numpy()
    out: dict[str, float] = {"queries": ev.num_queries}
    groups = [("", np.arange(n_q))] + [
        (f"/{name}", np.flatnonzero(dom == d)) for d, name in enumerate(ev.domain_names)
    ]
    for suffix, idx in groups:
        if suffix:
            out[f"queries{suffix}"] = int(idx.size)
        has_gt = idx[gt_size[idx] > 0]
        for k in ks:
            if has_gt.size == 0:
                out[f"recall@{k}{suffix}"] = math.nan
                continue
            hits = hit[has_gt, :k].sum(axis=1)
            out[f"recall@{k}{suffix}"] = float(np.mean(hits / gt_size[has_gt]))
    return out


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
    model: torch.nn.Module,
    ev: EvalSet,
    ks: Sequence[int] = (10, 50),
    query_chunk: int = 1024,
    item_chunk: int = 65536,
) -> dict[str, float]:
    """Recall@K of ``model`` (a ``TwoTower``) on the queries of ``ev``, overall and per domain.

    Scores are ranked in blocks (``top_k_items``): memory stays bounded for any catalog size.
    """
    users, items = embed(model, ev)
    top_pos, top_val = top_k_items(users, items, max(ks), ev.exclude, query_chunk, item_chunk)
    return ranking_report(top_pos, top_val, ev, ks)


def popularity_scores(table: EncodedTable, catalog: Catalog) -> torch.Tensor:
    """The most-popular baseline: each item's number of positive rows in ``table`` [I]."""
    pos = table.label.numpy() > 0.5
    counts = np.bincount(
        catalog.positions(_ids(table, "item")[pos]), minlength=len(catalog)
    ).astype(np.float32)
    return torch.from_numpy(counts)
