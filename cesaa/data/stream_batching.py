"""Encoded pieces of a stream as fixed-size batches: concatenation and cutting across pieces."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cesaa.data.table import EncodedTable

FIELDS = ("cat", "num", "domain", "label", "user", "item", "time")  # EncodedTable's tensors


def rebatch(pieces: Iterator[EncodedTable], size: int) -> Iterator[EncodedTable]:
    """Batches of exactly ``size`` rows cut across ``pieces`` (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size {size} must be >= 1")
    held: list[EncodedTable] = []
    n = 0
    for piece in pieces:
        held.append(piece)
        n += len(piece)
        while n >= size:
            whole = concat(held)
            yield _rows(whole, 0, size)
            held, n = [_rows(whole, size, len(whole))], len(whole) - size
    if n:
        yield concat(held)


def concat(tables: list[EncodedTable]) -> EncodedTable:
    if len(tables) == 1:
        return tables[0]
    return EncodedTable(
        **{
            f: None if getattr(tables[0], f) is None else torch.cat([getattr(t, f) for t in tables])
            for f in FIELDS
        }
    )


def _rows(t: EncodedTable, lo: int, hi: int) -> EncodedTable:
    return EncodedTable(**{f: None if (x := getattr(t, f)) is None else x[lo:hi] for f in FIELDS})
