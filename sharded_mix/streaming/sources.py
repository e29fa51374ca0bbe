"""One endless source: block reads in the epoch orders of ``orders.py``.

A source's g-th draw (counted over all ranks) is the block at ``position`` of epoch ``epoch``,
``epoch, position = divmod(g, blocks)``. Nothing depends on how many draws came before, so any
position is reached in O(1); a reader holds one epoch order at a time, O(chunks) plus the shuffle
window in use.

Reads: a local, uncompressed, unencrypted token shard is read straight from memory maps of its
chunk files, exactly as litdata's ``TokensLoader`` lays them out (a uint32 item count N, N + 1
uint32 offsets, then the tokens; block b of a chunk is tokens ``[b·size, (b+1)·size)``). That
skips litdata's per-item Python layers, which cost more than the rest of the stream together.
Set-up checks every chunk file once (``chunk_checks``); each is checked again when a process first
maps it, so a file damaged since then is an error naming it. A shard whose ``index.json``
describes another layout (compressed, encrypted, another item loader) is read through litdata's
``StreamingDataset`` instead.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import OrderedDict

import numpy as np

from sharded_mix.mixing.orders import EpochOrder, Ordering, SlicedOrder, WindowedOrder, chunk_block_starts, epoch_order
from sharded_mix.mixing.slices import NodeShares, Split, Topology, slice_bounds
from sharded_mix.mixing.transition import Pin
from sharded_mix.shards import Shard, chunk_header_bytes
from sharded_mix.streaming.cache import ChunkCache
from sharded_mix.streaming.chunk_checks import chunk_file_problem
from sharded_mix.streaming.storage import is_url

logger = logging.getLogger(__name__)

EVICTED_RETRIES = 2


def map_chunk(shard: Shard, chunk: int, dtype: np.dtype, cache: ChunkCache | None = None) -> np.memmap:
    """A read-only map of the tokens of a plain token shard's chunk ``chunk``; a remote shard's chunk is
    downloaded into ``cache`` first (once per node), and the cache verifies a chunk with a content hash first.

    The file is checked against its ``index.json`` entry first (``chunk_checks``), so a chunk missing,
    unreadable, truncated or rewritten since set-up is an error naming it, never garbage tokens or a hang.
    """
    header, shape = chunk_header_bytes(shard.chunk_items[chunk]), (shard.chunk_tokens[chunk],)
    if is_url(shard.path):
        if cache is None:
            raise TypeError(f"shard {shard.id!r} is remote ({shard.path}); its reader needs a ChunkCache")
        for attempt in range(EVICTED_RETRIES + 1):
            try:
                return np.memmap(cache.chunk_file(shard, chunk), dtype=dtype, mode="r", offset=header, shape=shape)
            except FileNotFoundError:  # another process of the node evicted it between download and map
                if attempt == EVICTED_RETRIES:
                    raise
    problem = chunk_file_problem(shard, chunk)
    if problem:
        raise ValueError(f"shard {shard.id!r}: {problem}")
    path = cache.chunk_file(shard, chunk) if cache is not None else os.path.join(shard.path, shard.chunk_files[chunk])
    return np.memmap(path, dtype=dtype, mode="r", offset=header, shape=shape)


class ChunkMaps:
    """Open chunk maps of every source of a process, at most ``max_open`` at once (least recently used closes)."""

    def __init__(self, dtype: np.dtype, max_open: int = 64, cache: ChunkCache | None = None) -> None:
        self.dtype = dtype
        self.max_open = max_open
        self.cache = cache  # for remote shards
        self._maps: OrderedDict[tuple[str, int], np.memmap] = OrderedDict()

    def get(self, shard: Shard, chunk: int) -> np.memmap:
        key = (shard.path, chunk)
        tokens_map = self._maps.get(key)
        if tokens_map is None:
            tokens_map = map_chunk(shard, chunk, self.dtype, self.cache)
            self._maps[key] = tokens_map
            if len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return tokens_map


class SourceReader:
    """Reads the blocks of one shard in its epoch orders; files are opened on the first read.

    On several nodes, the process reads only its node's slice of each epoch (``slices.py``): ``topology`` is the
    run's, ``node`` this process's, and ``split`` the epoch a resume on another topology re-sliced, if any."""

    def __init__(
        self,
        shard: Shard,
        block_size: int,
        ordering: Ordering | None,
        maps: ChunkMaps,
        pin: Pin | None = None,
        read_ahead: int = 0,
        topology: Topology = Topology(1),
        node: int = 0,
        split: Split | None = None,
    ) -> None:
        self.shard = shard
        self.block_size = block_size
        self.ordering = ordering  # None: unshuffled
        self.maps = maps
        self.pin = pin  # (epoch, ordering): that epoch keeps the ordering it started with
        self.topology, self.node, self.split = topology, node, split
        self.chunk_blocks = [tokens // block_size for tokens in shard.chunk_tokens]
        self.chunk_starts = chunk_block_starts(self.chunk_blocks).tolist()
        self.blocks = self.chunk_starts[-1]
        self._dataset = None  # litdata's, for shards that are not plain token shards
        self._epoch: int | None = None
        self._order: EpochOrder | None = None
        self._shares: NodeShares | None = None  # None: the epoch is not sliced (one node)
        fetched = is_url(shard.path) or (maps.cache is not None and maps.cache.verifies(shard))
        self.read_ahead = read_ahead if fetched and shard.plain_tokens else 0
        """Chunks to download (remote shard) or verify (local shard, once per node) ahead of the reads, in background
        threads, in the order the epoch reads them."""
        self._ahead = (-1, -1)  # (epoch, position): read-ahead was asked up to the window starting there

    def _ordering(self, epoch: int) -> Ordering | None:
        return (
            self.pin[1]
            if self.ordering is not None and self.pin is not None and self.pin[0] == epoch
            else self.ordering
        )

    def _epoch_order(self, epoch: int) -> tuple[EpochOrder, NodeShares | None]:
        """Epoch ``epoch``'s order and, on several nodes or after a re-slice, which of its positions each node reads."""
        split = self.split if self.split is not None and self.split.epoch == epoch else None
        if split is None and self.topology.nodes == 1:
            return epoch_order(self.chunk_blocks, self._ordering(epoch), self.shard.id, epoch), None
        split = split or Split.whole(self.topology, epoch, self.blocks)
        bounds = slice_bounds(split.base, epoch, self.blocks)
        return epoch_order(self.chunk_blocks, self._ordering(epoch), self.shard.id, epoch, bounds), NodeShares(
            split, self.topology, self.blocks
        )

    def locate(self, draw: int) -> tuple[int, int]:
        """``(epoch, block index)`` of the source's ``draw``-th block (counted over all ranks)."""
        epoch, position = divmod(draw, self.blocks)
        if epoch != self._epoch:
            self._order, self._shares = self._epoch_order(epoch)
            self._epoch = epoch
        if self._shares is not None:
            position = self._shares.position(self.node, draw)
        if self.read_ahead and (epoch, position) >= self._ahead:
            self._read_ahead(epoch, position)
        return epoch, self._order.block(position)

    def _read_ahead(self, epoch: int, position: int) -> None:
        """Ask the cache for the chunks of the current window and the next ones of this node's slice, up to
        ``read_ahead`` chunks past it, spilling into the node's first windows of the next epoch; asked again when
        the next window starts."""
        if not isinstance(self._order, (WindowedOrder, SlicedOrder)):  # unshuffled or version 2: fetched as read
            self._ahead = (epoch + 1, -1)
            return
        order, first = self._order.slice_at(position)
        window = order.window_of(position - first)
        wanted = order.window + self.read_ahead
        chunks = order.chunks_from(window, wanted)
        if len(chunks) < wanted:
            following, shares = self._epoch_order(epoch + 1)
            if isinstance(following, (WindowedOrder, SlicedOrder)):
                if shares is None or shares.first[self.node] < shares.first[self.node + 1]:
                    start = shares.at(shares.first[self.node]) if shares is not None else 0
                    chunks += following.slice_at(start)[0].chunks_from(0, wanted - len(chunks))
        self.maps.cache.prefetch(self.shard, chunks)
        self._ahead = (epoch, first + order.window_ends[window])

    @property
    def direct(self) -> bool:
        """Whether blocks are read from memory maps of the chunk files (else through litdata)."""
        return self.shard.plain_tokens

    def read_into(self, draw: int, out: np.ndarray) -> None:
        """Copy the source's ``draw``-th block into ``out`` (one row of a batch)."""
        block = self.locate(draw)[1]
        if not self.shard.plain_tokens:
            out[:] = np.asarray(self._litdata()[block])
            return
        chunk = bisect.bisect_right(self.chunk_starts, block) - 1
        start = (block - self.chunk_starts[chunk]) * self.block_size
        out[:] = self.maps.get(self.shard, chunk)[start : start + self.block_size]

    def _litdata(self):
        if self._dataset is None:
            from litdata.streaming import StreamingDataset, TokensLoader

            logger.debug("shard %s is read through litdata (not a plain token shard)", self.shard.id)
            local = self.maps.cache.mirror(self.shard) if is_url(self.shard.path) else self.shard.path
            self._dataset = StreamingDataset(local, item_loader=TokensLoader(block_size=self.block_size))
        return self._dataset
