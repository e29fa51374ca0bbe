"""Packed SFT rows: whole examples laid end to end in rows of ``capacity`` tokens (pure, no I/O).

``pack`` fills rows by best fit decreasing, one window of consecutive samples at a time: each window's examples,
longest first, go to the row with the least room that still holds them (a new row when none does). A row never
takes samples of two windows, so every window's rows hold exactly that window's samples and the task blend of the
epoch (exact after every prefix of samples) stays exact window by window. An example longer than a row is refused:
the length policy already cut or dropped it. Within a row the examples keep their sample order, and the rows of a
window follow their first sample, so the rows are a pure function of (lengths, capacity, window).

``PackedEpochs`` applies it to the epochs of an SFT mixture: epoch ``e``'s rows, which samples each row holds, and
what a prefix of its rows holds per source (the ``data/`` counts). Epochs hold the same examples in other orders,
so their row counts differ slightly.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sharded_mix.mixing.sft_epochs import SFTEpochs

ROW_BITS = 32
"""A free row is kept as ``room << ROW_BITS | row`` in one sorted list: least room first, then the oldest row."""


@dataclass(frozen=True)
class Rows:
    """Items grouped into rows: row ``r`` holds ``order[bounds[r]:bounds[r + 1]]``."""

    order: np.ndarray
    """Every item once, row after row (int64): a prefix of the rows is a prefix of it."""
    bounds: np.ndarray
    """Where each row starts in ``order``, and its end (int64, one more than the rows)."""

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def row(self, number: int) -> np.ndarray:
        return self.order[self.bounds[number] : self.bounds[number + 1]]

    def tokens(self, lengths: np.ndarray) -> np.ndarray:
        """Each row's tokens, for the items' ``lengths``."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(np.asarray(lengths, dtype=np.int64)[self.order], self.bounds[:-1])


def best_fit(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Best fit decreasing of items of ``lengths`` (each in 1 .. ``capacity``) into rows: each item's row, rows
    numbered by creation. Ties go to the earlier item and the oldest row, so the result is deterministic."""
    rows = np.empty(len(lengths), dtype=np.int64)
    free: list[int] = []  # room << ROW_BITS | row, sorted: rows with room left
    opened = 0
    for item in np.argsort(-np.asarray(lengths), kind="stable").tolist():
        length = int(lengths[item])
        at = bisect_left(free, length << ROW_BITS)
        if at == len(free):
            row, room = opened, capacity - length
            opened += 1
        else:
            key = free.pop(at)
            row, room = key & ((1 << ROW_BITS) - 1), (key >> ROW_BITS) - length
        rows[item] = row
        if room:
            insort(free, room << ROW_BITS | row)
    return rows


def pack(lengths: np.ndarray, capacity: int, window: int) -> Rows:
    """Rows of at most ``capacity`` tokens from items of ``lengths`` (in sample order), best fit decreasing within
    each window of ``window`` consecutive items; a row's items in their order, a window's rows by their first item."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity is {capacity!r}; give the row length in tokens, 1 or more.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window is {window!r}; give a number of samples, 1 or more.")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > capacity):
        bad = int(np.flatnonzero((lengths < 1) | (lengths > capacity))[0])
        raise ValueError(
            f"item {bad} is {int(lengths[bad])} tokens, outside 1 .. {capacity}; cut examples to the row length first."
        )
    row_of = np.empty(len(lengths), dtype=np.int64)
    opened = 0
    for begin in range(0, len(lengths), window):
        part = best_fit(lengths[begin : begin + window], capacity)
        count = int(part.max()) + 1
        first = np.full(count, len(part), dtype=np.int64)
        np.minimum.at(first, part, np.arange(len(part)))
        rank = np.empty(count, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(count)
        row_of[begin : begin + window] = opened + rank[part]
        opened += count
    order = np.lexsort((np.arange(len(lengths)), row_of))
    bounds = np.zeros(opened + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=opened), out=bounds[1:])
    return Rows(order.astype(np.int64), bounds)


def padding_share(lengths: np.ndarray, rows: Rows, capacity: int) -> float:
    """The share of the rows' ``capacity`` tokens that no example fills (what padding every row to ``capacity``
    costs; LitGPT's collate pads to the longest row of each batch, at most this)."""
    return 1.0 - float(np.asarray(lengths, dtype=np.int64).sum()) / (len(rows) * capacity) if len(rows) else 0.0


class PackedEpochs:
    """The packed rows of each epoch of ``epochs``: ``lengths`` per source (per example, or one number for all its
    examples), rows of ``capacity`` tokens, best fit within windows of ``window`` samples."""

    KEPT = 2
    """Epochs whose rows stay computed (the loader's current and next pass)."""

    def __init__(self, epochs: SFTEpochs, lengths: Mapping[str, np.ndarray | int], capacity: int, window: int) -> None:
        self.epochs, self.capacity, self.window = epochs, capacity, window
        self.lengths = {
            source: value if isinstance(value, (int, np.integer)) else np.asarray(value, dtype=np.int64)
            for source, value in lengths.items()
        }
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, Rows]] = {}

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Rows]:
        """Epoch ``epoch``'s positions: each one's source index and example, its length, and the rows."""
        cached = self._cache.get(epoch)
        if cached is None:
            sources, examples = self.epochs.epoch_examples(epoch)
            lengths = np.empty(len(examples), dtype=np.int64)
            for index, source in enumerate(self.epochs.sources):
                at = sources == index
                value = self.lengths[source]
                lengths[at] = value if isinstance(value, (int, np.integer)) else value[examples[at]]
            cached = (sources, examples, lengths, pack(lengths, self.capacity, self.window))
            while len(self._cache) >= self.KEPT:
                self._cache.pop(next(iter(self._cache)))
            self._cache[epoch] = cached
        return cached

    def rows(self, epoch: int) -> int:
        return len(self.epoch(epoch)[3])

    def row(self, epoch: int, number: int) -> list[tuple[str, int]]:
        """The (source, example) of each sample of row ``number`` of epoch ``epoch``, in row order."""
        sources, examples, _, rows = self.epoch(epoch)
        if not 0 <= number < len(rows):
            raise IndexError(f"epoch {epoch} has {len(rows)} packed rows; there is no row {number}")
        positions = rows.row(number)
        return [(self.epochs.sources[int(s)], int(e)) for s, e in zip(sources[positions], examples[positions])]

    def counts(self, epoch: int, rows: int, targets: Mapping[str, np.ndarray | int]) -> dict[str, tuple[int, int]]:
        """Per source, its samples in the first ``rows`` rows of epoch ``epoch`` and the sum of their ``targets``
        (per source: a number per example, or one number for all)."""
        if rows <= 0:
            return dict.fromkeys(self.epochs.sources, (0, 0))
        sources, examples, _, packed = self.epoch(epoch)
        if rows >= len(packed):
            return self.epochs.counts(epoch, 0, self.epochs.epoch_size, targets)
        positions = packed.order[: packed.bounds[rows]]
        taken_sources, taken_examples = sources[positions], examples[positions]
        counted = {}
        for index, source in enumerate(self.epochs.sources):
            chosen = taken_examples[taken_sources == index]
            per_example = targets[source]
            if isinstance(per_example, (int, np.integer)):
                tokens = int(per_example) * len(chosen)
            else:
                tokens = int(np.asarray(per_example, dtype=np.int64)[chosen].sum())
            counted[source] = (len(chosen), tokens)
        return counted
