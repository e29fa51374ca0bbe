"""One endless source: epoch orders over a shard's blocks (pure) and block reads through litdata.

A source's g-th draw (counted over all ranks) is block ``order(epoch)[position]`` with
``epoch, position = divmod(g, blocks)``. Each epoch is a fresh permutation seeded by
(seed, shard id, epoch), chunk-local so reads stay within one chunk file at a time: the chunk
order is shuffled, then the blocks inside each chunk. Nothing depends on how many draws came
before, so any position is reached in O(1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from sharded_mix.discovery import Shard


def _stable_id(shard_id: str) -> int:
    return int.from_bytes(hashlib.sha256(shard_id.encode("utf-8")).digest()[:8], "little")


def epoch_order(chunk_blocks: Sequence[int], seed: int, shard_id: str, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The block indices of one epoch of a shard whose chunks hold ``chunk_blocks`` blocks each."""
    total = int(sum(chunk_blocks))
    if not shuffle:
        return np.arange(total, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(chunk_blocks)[:-1]]).astype(np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _stable_id(shard_id), int(epoch)])
    parts = [starts[chunk] + rng.permutation(int(chunk_blocks[chunk])) for chunk in rng.permutation(len(chunk_blocks))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class SourceReader:
    """Reads the blocks of one shard in its epoch orders; the litdata dataset opens on first read."""

    def __init__(self, shard: Shard, block_size: int, seed: int, shuffle: bool) -> None:
        self.shard = shard
        self.block_size = block_size
        self.seed = seed
        self.shuffle = shuffle
        self.chunk_blocks = [tokens // block_size for tokens in shard.chunk_tokens]
        self.blocks = sum(self.chunk_blocks)
        self._dataset = None
        self._epoch: int | None = None
        self._order: np.ndarray | None = None

    def locate(self, draw: int) -> tuple[int, int]:
        """``(epoch, block index)`` of the source's ``draw``-th block."""
        epoch, position = divmod(draw, self.blocks)
        if epoch != self._epoch:
            self._order = epoch_order(self.chunk_blocks, self.seed, self.shard.id, epoch, self.shuffle)
            self._epoch = epoch
        return epoch, int(self._order[position])

    def read(self, draw: int) -> torch.Tensor:
        if self._dataset is None:
            from litdata.streaming import StreamingDataset, TokensLoader

            self._dataset = StreamingDataset(self.shard.path, item_loader=TokensLoader(block_size=self.block_size))
        return self._dataset[self.locate(draw)[1]]
