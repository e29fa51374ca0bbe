"""One endless source: epoch orders over a shard's blocks (pure) and block reads.

A source's g-th draw (counted over all ranks) is block ``order(epoch)[position]`` with
``epoch, position = divmod(g, blocks)``. Each epoch is a fresh permutation seeded by
(seed, shard id, epoch), chunk-local so reads stay within one chunk file at a time: the chunk
order is shuffled, then the blocks inside each chunk. Nothing depends on how many draws came
before, so any position is reached in O(1).

Reads: a local, uncompressed, unencrypted token shard is read straight from memory maps of its
chunk files, exactly as litdata's ``TokensLoader`` lays them out (a uint32 item count N, N + 1
uint32 offsets, then the tokens; block b of a chunk is tokens ``[b·size, (b+1)·size)``). That
skips litdata's per-item Python layers, which cost more than the rest of the stream together.
A shard whose files do not match that layout byte for byte (compressed, encrypted, another
format version) is read through litdata's ``StreamingDataset`` instead.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from sharded_mix.discovery import Shard, read_index

logger = logging.getLogger(__name__)

HEADER_ITEM_BYTES = 4  # TokensLoader chunk header: uint32 count, then count + 1 uint32 offsets


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


def direct_chunk_layout(path: str, index: dict, dtype: np.dtype) -> list[tuple[str, int, int]] | None:
    """``(chunk file, header bytes, tokens)`` per chunk if every chunk file is local and in the plain
    TokensLoader layout (checked against its size on disk); ``None`` if litdata must read the shard."""
    config = index["config"]
    formats = config.get("data_format") or []
    if (
        config.get("compression")
        or config.get("encryption")
        or config.get("item_loader") != "TokensLoader"
        or len(formats) != 1
        or not str(formats[0]).startswith(("no_header_tensor:", "no_header_numpy:"))
    ):
        return None
    layout = []
    for chunk in index["chunks"]:
        filename = os.path.join(path, chunk["filename"])
        header = (int(chunk["chunk_size"]) + 2) * HEADER_ITEM_BYTES
        tokens = int(chunk["dim"])
        try:
            size = os.path.getsize(filename)
        except OSError:
            return None
        if size != header + tokens * dtype.itemsize:
            return None
        layout.append((filename, header, tokens))
    return layout


class ChunkMaps:
    """Read-only memory maps of chunk files, at most ``max_open`` at once (least recently used closes)."""

    def __init__(self, dtype: np.dtype, max_open: int = 64) -> None:
        self.dtype = dtype
        self.max_open = max_open
        self._maps: OrderedDict[str, np.memmap] = OrderedDict()

    def get(self, filename: str, header: int, tokens: int) -> np.memmap:
        tokens_map = self._maps.get(filename)
        if tokens_map is None:
            tokens_map = np.memmap(filename, dtype=self.dtype, mode="r", offset=header, shape=(tokens,))
            self._maps[filename] = tokens_map
            if len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(filename)
        return tokens_map


class SourceReader:
    """Reads the blocks of one shard in its epoch orders; files are opened on the first read."""

    def __init__(
        self, shard: Shard, block_size: int, seed: int, shuffle: bool, maps: ChunkMaps, pin: tuple[int, int] | None = None
    ) -> None:
        self.shard = shard
        self.block_size = block_size
        self.seed = seed
        self.shuffle = shuffle
        self.maps = maps
        self.pin = pin  # (epoch, seed): that epoch keeps the order an earlier seed gave it
        self.chunk_blocks = [tokens // block_size for tokens in shard.chunk_tokens]
        self.chunk_starts = np.concatenate([[0], np.cumsum(self.chunk_blocks)]).astype(np.int64).tolist()
        self.blocks = self.chunk_starts[-1]
        self._opened = False
        self._layout: list[tuple[str, int, int]] | None = None
        self._dataset = None
        self._epoch: int | None = None
        self._order: list[int] = []

    def locate(self, draw: int) -> tuple[int, int]:
        """``(epoch, block index)`` of the source's ``draw``-th block."""
        epoch, position = divmod(draw, self.blocks)
        if epoch != self._epoch:
            seed = self.pin[1] if self.pin is not None and self.pin[0] == epoch else self.seed
            self._order = epoch_order(self.chunk_blocks, seed, self.shard.id, epoch, self.shuffle).tolist()
            self._epoch = epoch
        return epoch, self._order[position]

    @property
    def direct(self) -> bool:
        """Whether blocks are read from memory maps of the chunk files (else through litdata)."""
        self._open()
        return self._layout is not None

    def read_into(self, draw: int, out: np.ndarray) -> None:
        """Copy the source's ``draw``-th block into ``out`` (one row of a batch)."""
        if not self._opened:
            self._open()
        block = self.locate(draw)[1]
        if self._layout is None:
            out[:] = np.asarray(self._dataset[block])
            return
        chunk = bisect.bisect_right(self.chunk_starts, block) - 1
        start = (block - self.chunk_starts[chunk]) * self.block_size
        out[:] = self.maps.get(*self._layout[chunk])[start : start + self.block_size]

    def _open(self) -> None:
        if self._opened:
            return
        self._layout = direct_chunk_layout(self.shard.path, read_index(self.shard.path), self.maps.dtype)
        if self._layout is None:
            from litdata.streaming import StreamingDataset, TokensLoader

            logger.debug("shard %s is read through litdata (not a plain local token shard)", self.shard.id)
            self._dataset = StreamingDataset(self.shard.path, item_loader=TokensLoader(block_size=self.block_size))
        self._opened = True
