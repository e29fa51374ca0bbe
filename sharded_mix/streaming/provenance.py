"""What an optimizer step read: every row of any step, from the run's plan and cursor, without training.

The training stream is a pure function of the plan: the cursor moves one round (one sample on every rank) at a
time, exactly as the loaders move it, and each rank's block of a round is located as ``MixtureStream`` reads it.
Reaching step N costs one blend draw per round before it (from the run's start, or from a checkpoint's position);
no tokens are read unless asked for.
"""

from __future__ import annotations

import bisect
import copy
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sharded_mix.mixing.cursor import Cursor
from sharded_mix.streaming.sources import ChunkMaps, SourceReader
from sharded_mix.streaming.stream import MixtureStream


@dataclass(frozen=True)
class StepRow:
    """One row of a step, on one rank."""

    sample: int
    """Global sample index: round × world size + rank (step N holds samples (N - 1)·G … N·G - 1)."""
    rank: int
    micro_batch: int
    """The micro-batch of the step on that rank (0-based)."""
    row: int
    """The row within that micro-batch."""
    source: str
    shard: str
    """The shard's path or URL."""
    chunk: str
    """The chunk file the block lies in."""
    position: int
    """Token offset of the row's first token in the shard's concatenated token stream."""
    epoch: int
    """The source's epoch the block belongs to."""
    length: int
    """The row's tokens (the stage's block size): it holds tokens ``position .. position + length - 1``."""
    tokens: tuple[int, ...] | None = None
    documents: tuple[dict, ...] | None = None
    """The input documents the row holds (``tools.documents``: ordinal in the shard, input, line or row), for
    shards with prepare's document files."""

    def as_dict(self) -> dict:
        row = asdict(self)
        for name in ("tokens", "documents"):
            if getattr(self, name) is None:
                del row[name]
            else:
                row[name] = list(getattr(self, name))
        return row


def token_starts(chunk_tokens: Sequence[int]) -> list[int]:
    """The first token of each chunk in the shard's concatenated token stream, plus the shard's total."""
    return [0, *itertools.accumulate(chunk_tokens)]


def block_location(reader: SourceReader, draw: int, starts: Sequence[int]) -> tuple[int, int, int]:
    """``(epoch, chunk, token offset in the shard's stream)`` of a source's ``draw``-th block; ``starts``: the shard's
    ``token_starts``."""
    epoch, block = reader.locate(draw)
    chunk = bisect.bisect_right(reader.chunk_starts, block) - 1
    return epoch, chunk, starts[chunk] + (block - reader.chunk_starts[chunk]) * reader.block_size


def step_rows(
    stream: MixtureStream,
    cursor: Cursor,
    step: int,
    rounds_per_step: int,
    ranks: Sequence[int],
    read_tokens: bool = False,
) -> list[StepRow]:
    """The rows of optimizer step ``step`` (1-based) on ``ranks``, in rank then micro-batch order. ``cursor`` is
    the stream's position at a batch boundary at or before the step's first round; it is moved to the step's end.
    ``rounds_per_step``: samples per rank in a step (global batch size / world size)."""
    first = (step - 1) * rounds_per_step
    if cursor.samples > first:
        raise ValueError(f"the position is past step {step}'s first sample ({cursor.samples:,} > {first:,} per rank)")
    world, batch = stream.world_size, stream.batch_size
    streams = {rank: _on_rank(stream, rank) for rank in ranks}
    maps = ChunkMaps(stream.dtype, stream._max_open_maps(), stream.cache)
    readers: dict[tuple[int, int], list[SourceReader]] = {}
    starts: dict[str, list[int]] = {}  # token_starts of each shard read
    rows: list[StepRow] = []
    while cursor.samples < first + rounds_per_step:
        if cursor.due():
            cursor.switch()
        if cursor.samples + batch <= first:
            for _ in range(batch):
                cursor.next_source()
            continue
        for _ in range(batch):
            round_ = cursor.samples
            index = cursor.next_source()
            if round_ < first:
                continue
            before = cursor.draws(index) - world
            for rank in ranks:
                key = (cursor.index, streams[rank].node)  # a rank's readers are its node's
                if key not in readers:
                    readers[key] = streams[rank]._readers(cursor, maps)
                reader = readers[key][index]
                draw = before + (rank - before) % world
                if reader.shard.id not in starts:
                    starts[reader.shard.id] = token_starts(reader.shard.chunk_tokens)
                epoch, chunk, position = block_location(reader, draw, starts[reader.shard.id])
                tokens = None
                if read_tokens:
                    out = np.empty(reader.block_size, dtype=stream.dtype)
                    reader.read_into(draw, out)
                    tokens = tuple(int(token) for token in out)
                offset = round_ - first
                rows.append(
                    StepRow(
                        sample=round_ * world + rank,
                        rank=rank,
                        micro_batch=offset // batch,
                        row=offset % batch,
                        source=cursor.ids[index],
                        shard=reader.shard.path,
                        chunk=reader.shard.chunk_files[chunk],
                        position=position,
                        epoch=epoch,
                        length=reader.block_size,
                        tokens=tokens,
                    )
                )
    return sorted(rows, key=lambda row: (row.rank, row.micro_batch, row.row))


def _on_rank(stream: MixtureStream, rank: int) -> MixtureStream:
    """``stream`` as rank ``rank`` reads it (its node's slices)."""
    on_rank = copy.copy(stream)
    on_rank.rank, on_rank.node = rank, stream.topology.node_of(rank)
    return on_rank


@dataclass(frozen=True)
class BlockRead:
    """One read of a block: the step, the rank and the row that trained on it, and the block's first token."""

    step: int
    rank: int
    micro_batch: int
    row: int
    sample: int
    epoch: int
    stage: str
    position: int
    """The block's first token in the shard's token stream."""

    def as_dict(self) -> dict:
        return asdict(self)


def blocks_in(chunk_tokens: Sequence[int], starts: Sequence[int], block_size: int, first: int, stop: int) -> dict:
    """``{block: its first token}`` of the blocks (of ``block_size`` tokens, none across chunks) holding any token of
    ``[first, stop)`` of a shard's stream (``starts``: its ``token_starts``); tokens in a chunk's tail that no block
    covers have none."""
    if not 0 <= first < starts[-1]:
        raise ValueError(f"--position {first:,} is past the shard's {starts[-1]:,} tokens; give 0..{starts[-1] - 1:,}.")
    blocks: dict[int, int] = {}
    chunk = bisect.bisect_right(starts, first) - 1
    base = sum(tokens // block_size for tokens in chunk_tokens[:chunk])
    while chunk < len(chunk_tokens) and starts[chunk] < stop:
        begin, end = max(first, starts[chunk]) - starts[chunk], min(stop, starts[chunk + 1]) - starts[chunk]
        for offset in range(begin // block_size, min((end - 1) // block_size + 1, chunk_tokens[chunk] // block_size)):
            blocks[base + offset] = starts[chunk] + offset * block_size
        base += chunk_tokens[chunk] // block_size
        chunk += 1
    return blocks


def source_shard(stream: MixtureStream, source: str):
    """The shard of ``source``; a ``ValueError`` naming the run's sources when it reads no such source."""
    if source not in stream.shards:
        raise ValueError(
            f"--source {source!r} is not read by the run; its sources are {', '.join(sorted(stream.shards))}."
        )
    return stream.shards[source]


def _draws_of(reader: SourceReader, epoch: int, blocks) -> tuple[list[int], list[int]]:
    """The global draws at which ``blocks`` are read in ``epoch`` (sorted), and the block of each: each block's
    position in the epoch's order, and on several nodes the draw at which the node whose slice holds it reads it."""
    order, shares = reader._epoch_order(epoch)
    drawn = []
    for block in blocks:
        position = order.position_of(block)
        draw = epoch * reader.blocks + position if shares is None else shares.draw_of(position)
        if draw is not None:
            drawn.append((draw, block))
    drawn.sort()
    return [draw for draw, _ in drawn], [block for _, block in drawn]


def block_reads(
    stream: MixtureStream,
    cursor: Cursor,
    source: str,
    tokens: tuple[int, int],
    rounds_per_step: int,
    until_step: int,
) -> list[BlockRead]:
    """Every read, up to step ``until_step``, of the blocks of ``source`` holding any of its tokens
    ``[first, stop)`` (one token, or a document), with the step, rank and row: across epochs (each epoch's order
    inverted once per block; on several nodes, in the slice of the node that reads it), stages (block sizes and
    orders as each stage reads them) and the cursor's own start (a checkpoint's position). One blend draw per round,
    as ``step_rows``."""
    shard = source_shard(stream, source)
    starts = token_starts(shard.chunk_tokens)
    first, stop = tokens
    blocks_in(shard.chunk_tokens, starts, 1, first, first + 1)  # a position past the shard is an error in any stage
    world, batch = stream.world_size, stream.batch_size
    end = until_step * rounds_per_step
    maps = ChunkMaps(stream.dtype, stream._max_open_maps(), stream.cache)
    stage_index, reader, blocks, index_of_source = None, None, {}, -1
    epoch_draws: dict[int, tuple[list[int], list[int]]] = {}  # epoch -> its draws of the blocks, sorted; the blocks
    reads: list[BlockRead] = []
    while cursor.samples < end:
        if cursor.due():
            cursor.switch()
        if cursor.index != stage_index:
            stage_index, reader, blocks, epoch_draws = cursor.index, None, {}, {}
            if source in cursor.ids:
                index_of_source = cursor.ids.index(source)
                reader = stream._readers(cursor, maps)[index_of_source]
                blocks = blocks_in(shard.chunk_tokens, starts, reader.block_size, first, stop)
        for _ in range(batch):
            round_ = cursor.samples
            index = cursor.next_source()
            if not blocks or index != index_of_source:
                continue
            after = cursor.draws(index)
            for epoch in range((after - world) // reader.blocks, (after - 1) // reader.blocks + 1):
                if epoch not in epoch_draws:
                    epoch_draws = {epoch: _draws_of(reader, epoch, blocks)}
                draws, which = epoch_draws[epoch]
                for at in range(bisect.bisect_left(draws, after - world), bisect.bisect_left(draws, after)):
                    rank = draws[at] % world
                    offset = round_ % rounds_per_step
                    reads.append(
                        BlockRead(
                            step=round_ // rounds_per_step + 1,
                            rank=rank,
                            micro_batch=offset // batch,
                            row=offset % batch,
                            sample=round_ * world + rank,
                            epoch=epoch,
                            stage=cursor.stage.name,
                            position=blocks[which[at]],
                        )
                    )
    return sorted(reads, key=lambda read: (read.step, read.rank, read.micro_batch, read.row))
