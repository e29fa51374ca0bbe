"""Epoch orders of one source, defined lazily: O(chunks) memory per epoch, never O(blocks) (pure, no I/O).

Epoch ``e`` of a source shuffled by ``Ordering(seed, window)``:

1. its chunks are visited in a permutation seeded by (seed, shard id, e): O(chunks);
2. that chunk order is cut into windows of ``window`` consecutive chunks, and prefix sums of the
   blocks along it say which window a position falls in: O(chunks), a lookup is O(log chunks);
3. the blocks of one window are permuted together, seeded by (seed, shard id, e, window index).
   Only the window in use is materialised: O(window · blocks per chunk), whatever the shard's size.

So a block is drawn once per epoch, the order depends on (seed, shard id, epoch, window) only,
any position is found without walking the positions before it, and starting an epoch costs a
permutation of the chunks. ``window=1`` reads one chunk at a time; a window larger than the
number of chunks shuffles the whole shard. Window 0 names the order of state versions 1 and 2,
a chunk-local permutation materialised for the whole epoch: it is only used to finish an epoch
that a checkpoint of those versions started (``LegacyOrder``).
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEGACY_WINDOW = 0
"""The shuffle window of state versions 1 and 2: their materialised chunk-local order (``state.migrate`` names it)."""
DEFAULT_SHUFFLE_WINDOW = 4
SEED_LIMIT = 2**64
"""Seeds are whole numbers in [0, 2**64); all 64 bits order the epochs."""


@dataclass(frozen=True)
class Ordering:
    """What orders a source's epochs: the seed and the shuffle window (chunks whose blocks mix)."""

    seed: int
    window: int = DEFAULT_SHUFFLE_WINDOW

    def describe(self) -> str:
        if self.window == LEGACY_WINDOW:
            return f"seed {self.seed}, the order of state version 2"
        return f"seed {self.seed}, shuffle window {self.window}"


def stable_id(shard_id: str) -> int:
    return int.from_bytes(hashlib.sha256(shard_id.encode("utf-8")).digest()[:8], "little")


def chunk_block_starts(chunk_blocks: Sequence[int]) -> np.ndarray:
    """Index of each chunk's first block, plus the total at the end (``len(chunk_blocks) + 1`` entries)."""
    return np.concatenate([[0], np.cumsum(np.asarray(chunk_blocks, dtype=np.int64))]).astype(np.int64)


class SequentialOrder:
    """Unshuffled: position p is block p."""

    def block(self, position: int) -> int:
        return position

    def position_of(self, block: int) -> int:
        return block


class WindowedOrder:
    """One epoch of a shuffled source, or the slice ``[lo, hi)`` of its chunk order that one node reads
    (``slices.py``); ``block(position)`` materialises only the window in use.

    A slice's windows are cut within it: its first and last chunks may be partial, and no window reaches
    into another node's slice. The whole epoch (``lo=0, hi=None``) is the order described above."""

    def __init__(
        self,
        chunk_blocks: Sequence[int],
        ordering: Ordering,
        shard_id: str,
        epoch: int,
        lo: int = 0,
        hi: int | None = None,
    ) -> None:
        if ordering.window < 1:
            raise ValueError(f"shuffle window {ordering.window}: use 1 or more chunks")
        self.key = [int(ordering.seed), stable_id(shard_id), int(epoch)]  # seeds below 2**32 keep their v3 orders
        self.window = ordering.window
        self.chunk_blocks = np.asarray(chunk_blocks, dtype=np.int64)
        self.chunk_starts = chunk_block_starts(self.chunk_blocks)
        self.chunks = np.random.default_rng([*self.key, 0]).permutation(len(self.chunk_blocks))
        self.order_starts = np.concatenate([[0], np.cumsum(self.chunk_blocks[self.chunks])]).astype(np.int64)
        total = int(self.order_starts[-1])
        self.lo, self.hi = lo, total if hi is None else hi
        # the chunks along the order that the slice touches: [first, stop)
        self.first = int(np.searchsorted(self.order_starts, lo, side="right")) - 1 if lo else 0
        self.stop = (
            len(self.chunks) if self.hi == total else int(np.searchsorted(self.order_starts, self.hi, side="left"))
        )
        edges = (
            np.minimum(np.r_[self.first + self.window : self.stop : self.window, self.stop], self.stop)
            if self.stop > self.first
            else []
        )
        self.window_ends = (np.minimum(self.order_starts[edges], self.hi) - lo).tolist() if len(edges) else []
        self._lo = self._hi = 0
        self._blocks = array("q")

    @property
    def blocks(self) -> int:
        """Positions in the epoch (or the slice)."""
        return self.hi - self.lo

    def block(self, position: int) -> int:
        """The block index drawn at ``position`` (0 <= position < blocks) of this epoch or slice."""
        if not self._lo <= position < self._hi:
            self._load(bisect.bisect_right(self.window_ends, position))
        return self._blocks[position - self._lo]

    def slice_at(self, position: int) -> tuple[WindowedOrder, int]:
        return self, 0

    def position_of(self, block: int) -> int | None:
        """The position at which this epoch (or slice) draws ``block``; None when the slice does not hold it."""
        chunk = int(np.searchsorted(self.chunk_starts, block, side="right")) - 1
        along = int(np.flatnonzero(self.chunks == chunk)[0])
        at = int(self.order_starts[along]) + block - int(self.chunk_starts[chunk])  # its place along the chunk order
        if not self.lo <= at < self.hi:
            return None
        self._load((along - self.first) // self.window)
        return self._lo + int(np.flatnonzero(np.frombuffer(self._blocks, dtype=np.int64) == block)[0])

    def window_of(self, position: int) -> int:
        """Index of the window holding ``position``."""
        return bisect.bisect_right(self.window_ends, position)

    def window_start(self, index: int) -> int:
        """First position of window ``index`` (the epoch's size past the last window)."""
        return self.window_ends[index - 1] if index else 0

    def chunks_from(self, index: int, limit: int) -> list[int]:
        """Up to ``limit`` chunks in the order they are read, from window ``index`` on (for read-ahead)."""
        start = self.first + index * self.window
        return self.chunks[start : min(start + limit, self.stop)].tolist()

    def _load(self, index: int) -> None:
        """Materialise window ``index``: its chunks' blocks (those inside the slice), permuted together."""
        if index >= len(self.window_ends):
            raise IndexError(f"position beyond the {self.blocks} blocks of the epoch or slice")
        along = np.arange(self.first + index * self.window, min(self.first + (index + 1) * self.window, self.stop))
        chunks = self.chunks[along]
        starts = np.maximum(self.order_starts[along], self.lo)  # the part of each chunk inside the slice
        sizes = np.minimum(self.order_starts[along + 1], self.hi) - starts
        local_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        first_blocks = self.chunk_starts[chunks] + starts - self.order_starts[along]
        shift = np.repeat(first_blocks - local_starts, sizes)  # local index -> block index
        seed = [*self.key, 1, index] if self.lo == 0 else [*self.key, 1, index, self.lo]
        self._blocks = array("q")  # the previous window's, freed before the next is built
        permutation = np.random.default_rng(seed).permutation(int(sizes.sum()))
        permutation += shift[permutation]
        del shift
        self._blocks.frombytes(permutation.data.cast("B"))
        self._lo = self.window_start(index)
        self._hi = self.window_ends[index]


class LegacyOrder:
    """The materialised chunk-local order of state versions 1 and 2, for an epoch one of their checkpoints started."""

    def __init__(self, chunk_blocks: Sequence[int], seed: int, shard_id: str, epoch: int) -> None:
        starts = chunk_block_starts(chunk_blocks)[:-1]
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, stable_id(shard_id), int(epoch)])
        parts = [
            starts[chunk] + rng.permutation(int(chunk_blocks[chunk])) for chunk in rng.permutation(len(chunk_blocks))
        ]
        self._blocks = array("q", (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)).tobytes())

    def block(self, position: int) -> int:
        return self._blocks[position]

    def position_of(self, block: int) -> int:
        return int(np.flatnonzero(np.frombuffer(self._blocks, dtype=np.int64) == block)[0])


class SlicedOrder:
    """One epoch cut into node slices along its chunk order (``slices.py``), each shuffled in windows of its own;
    only the slices a process reads are built."""

    def __init__(
        self, chunk_blocks: Sequence[int], ordering: Ordering, shard_id: str, epoch: int, bounds: Sequence[int]
    ) -> None:
        self._make = lambda lo, hi: WindowedOrder(chunk_blocks, ordering, shard_id, epoch, lo, hi)
        self.bounds = list(bounds)
        self._slices: dict[int, WindowedOrder] = {}

    def slice_at(self, position: int) -> tuple[WindowedOrder, int]:
        """The slice holding ``position`` and its first position."""
        node = bisect.bisect_right(self.bounds, position) - 1
        if node not in self._slices:
            self._slices[node] = self._make(self.bounds[node], self.bounds[node + 1])
        return self._slices[node], self.bounds[node]

    def block(self, position: int) -> int:
        order, first = self.slice_at(position)
        return order.block(position - first)

    def position_of(self, block: int) -> int:
        """The position at which the epoch draws ``block``, in whichever node's slice holds it."""
        for lo, hi in zip(self.bounds, self.bounds[1:]):
            if lo < hi:
                order, first = self.slice_at(lo)
                position = order.position_of(block)
                if position is not None:
                    return first + position
        raise ValueError(f"block {block} is in no slice of the epoch (bounds {self.bounds})")


EpochOrder = SequentialOrder | WindowedOrder | SlicedOrder | LegacyOrder


def epoch_order(
    chunk_blocks: Sequence[int],
    ordering: Ordering | None,
    shard_id: str,
    epoch: int,
    bounds: Sequence[int] | None = None,
) -> EpochOrder:
    """Epoch ``epoch`` of a source whose chunks hold ``chunk_blocks`` blocks; ``ordering`` None: unshuffled.
    ``bounds``: the node slices of the epoch (``slices.slice_bounds``), for a run on several nodes. Unshuffled and
    version-2 epochs are read as they are (a node's slice of them is a range of their positions)."""
    if ordering is None:
        return SequentialOrder()
    if ordering.window == LEGACY_WINDOW:
        return LegacyOrder(chunk_blocks, ordering.seed, shard_id, epoch)
    if bounds is not None and len(bounds) > 2:
        return SlicedOrder(chunk_blocks, ordering, shard_id, epoch, bounds)
    return WindowedOrder(chunk_blocks, ordering, shard_id, epoch)
