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
    tokens: tuple[int, ...] | None = None

    def as_dict(self) -> dict:
        row = asdict(self)
        if self.tokens is None:
            del row["tokens"]
        else:
            row["tokens"] = list(self.tokens)
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
    """One read of a block: the step, the rank and the row that trained on it."""

    step: int
    rank: int
    micro_batch: int
    row: int
    sample: int
    epoch: int
    stage: str

    def as_dict(self) -> dict:
        return asdict(self)


def block_of(chunk_tokens: Sequence[int], starts: Sequence[int], block_size: int, position: int) -> int | None:
    """The block (of ``block_size`` tokens, none across chunks) holding token ``position`` of a shard's stream
    (``starts``: its ``token_starts``); None for a token in a chunk's tail that no block covers."""
    if not 0 <= position < starts[-1]:
        raise ValueError(
            f"--position {position:,} is past the shard's {starts[-1]:,} tokens; give 0..{starts[-1] - 1:,}."
        )
    chunk = bisect.bisect_right(starts, position) - 1
    offset = (position - starts[chunk]) // block_size
    if offset >= chunk_tokens[chunk] // block_size:
        return None
    return sum(tokens // block_size for tokens in chunk_tokens[:chunk]) + offset


def block_reads(
    stream: MixtureStream, cursor: Cursor, source: str, position: int, rounds_per_step: int, until_step: int
) -> list[BlockRead]:
    """Every step up to ``until_step`` at which the block holding token ``position`` of ``source`` is read, with the
    rank and row: across epochs (each epoch's order inverted once), stages (block sizes and orders as each stage
    reads them) and the cursor's own start (a checkpoint's position). One blend draw per round, as ``step_rows``."""
    if stream.topology.nodes > 1:
        raise ValueError(
            f"find answers runs on one node; this one spans {stream.topology.nodes} nodes, whose epochs are sliced "
            "among them. Use `sharded-mix batch` for a step of it."
        )
    if source not in stream.shards:
        raise ValueError(
            f"--source {source!r} is not read by the run; its sources are {', '.join(sorted(stream.shards))}."
        )
    shard = stream.shards[source]
    starts = token_starts(shard.chunk_tokens)
    block_of(shard.chunk_tokens, starts, 1, position)  # a position past the shard is an error in any stage
    world, batch = stream.world_size, stream.batch_size
    end = until_step * rounds_per_step
    maps = ChunkMaps(stream.dtype, stream._max_open_maps(), stream.cache)
    stage_index, reader, block, draws_at, index_of_source = None, None, None, {}, -1
    reads: list[BlockRead] = []
    while cursor.samples < end:
        if cursor.due():
            cursor.switch()
        if cursor.index != stage_index:
            stage_index, reader, block, draws_at = cursor.index, None, None, {}
            if source in cursor.ids:
                index_of_source = cursor.ids.index(source)
                reader = stream._readers(cursor, maps)[index_of_source]
                block = block_of(shard.chunk_tokens, starts, reader.block_size, position)
        for _ in range(batch):
            round_ = cursor.samples
            index = cursor.next_source()
            if block is None or index != index_of_source:
                continue
            after = cursor.draws(index)
            for epoch in range((after - world) // reader.blocks, (after - 1) // reader.blocks + 1):
                if epoch not in draws_at:
                    draws_at = {epoch: epoch * reader.blocks + reader._epoch_order(epoch)[0].position_of(block)}
                draw = draws_at[epoch]
                if after - world <= draw < after:
                    rank = draw % world
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
                        )
                    )
    return reads
