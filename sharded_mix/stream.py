"""Stream blocks of tokens from the chosen shards.

Training: we own the index (design 2 of ARCHITECTURE.md) and read blocks in litdata's layout.
The k-th sample of a rank comes from the source ``Blender`` picks for k; that source's draw
number, counted over all ranks, names the block through its epoch order (``sources.py``).
A changed blend carries each source's position over (``transition.py``). Every rank runs the same blend,
so rank r takes draws r, r + world, r + 2·world, ... of each source: ranks are disjoint and
together follow the blend. DataLoader workers take whole batches in turn (batch j → worker
j mod workers), which is the order torch's DataLoader returns them in; each batch travels with
the blend indices of its sources, so the loader in the main process advances the position
without running the blend again. The position is plain data (blend position, taken and global
draws per shard id): saving and restoring it costs the same at any step.

Validation: litdata's ``CombinedStreamingDataset`` over unshuffled shards (finite, deterministic).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from litdata.streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sharded_mix.blend import Blender
from sharded_mix.discovery import Shard
from sharded_mix.sources import ChunkMaps, SourceReader
from sharded_mix.transition import SourcePosition, carry_over, format_transition

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def distributed_rank_world() -> tuple[int, int]:
    """This process's rank and the world size (torch.distributed if initialised, else the environment)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def fresh_position(shards: Sequence[Shard], weights: Mapping[str, float]) -> dict:
    """The position of a stream that has read nothing.

    ``samples`` counts this rank's samples over the whole run, ``taken`` per source since the current
    blend began; ``base_draws``/``base_taken`` are the global draws and ``taken`` the iteration started
    from; ``pins`` hold epochs ordered by an earlier seed, ``dropped`` the sources an earlier blend had.
    """
    ids = [shard.id for shard in shards if weights.get(shard.id, 0) > 0]
    zeros = dict.fromkeys(ids, 0)
    return {"samples": 0, "taken": zeros, "base_draws": dict(zeros), "base_taken": dict(zeros), "pins": {}, "dropped": {}}


def global_draws(position: Mapping, world_size: int) -> dict[str, int]:
    """Draws of each source over all ranks so far."""
    return {
        source: position["base_draws"][source] + (taken - position["base_taken"][source]) * world_size
        for source, taken in position["taken"].items()
    }


class MixtureStream(IterableDataset):
    """An endless stream of blocks following the blend; each source cycles its own epochs."""

    def __init__(
        self,
        shards: Sequence[Shard],
        weights: Mapping[str, float],
        block_size: int,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.shards = {shard.id: shard for shard in shards if weights.get(shard.id, 0) > 0}
        self.weights = {source: weights[source] for source in self.shards}
        self.blocks = {source: shard.blocks(block_size) for source, shard in self.shards.items()}
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.position = fresh_position(shards, weights)
        dtypes = {shard.dtype for shard in self.shards.values()}
        if len(dtypes) != 1:
            raise ValueError(f"the blend mixes token dtypes {sorted(dtypes)}; write every shard with the same tokenizer dtype.")
        self.dtype = np.dtype(dtypes.pop())

    def blender(self) -> Blender:
        return Blender(self.weights, sum(self.position["taken"].values()), self.position["taken"])

    def __iter__(self) -> Iterator[tuple[np.ndarray, tuple[int, ...]]]:
        """Yields ``(batch of blocks, index in the blend's ids of each block's source)``.

        Batches are numpy arrays: from a worker they travel pickled through the queue's pipe, which
        costs a half to a fifth of what a torch tensor's per-batch shared-memory segment does
        (``benchmarks/README.md``); the loader turns them into tensors without a copy.
        """
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        blender = self.blender()
        maps = ChunkMaps(self.dtype)
        pins = self.position["pins"]
        readers = [
            SourceReader(self.shards[source], self.block_size, self.seed, self.shuffle, maps, pins.get(source))
            for source in blender.ids
        ]
        first_draw = [self.position["base_draws"][source] - self.position["base_taken"][source] * self.world_size + self.rank for source in blender.ids]
        taken, world_size, batch_size, block_size = blender.taken, self.world_size, self.batch_size, self.block_size
        batch = 0
        while True:
            if batch % workers != worker:
                for _ in range(batch_size):
                    blender.next_index()
            else:
                rows = np.empty((batch_size, block_size), dtype=self.dtype)
                sources = []
                for row in range(batch_size):
                    index = blender.next_index()
                    readers[index].read_into(first_draw[index] + (taken[index] - 1) * world_size, rows[row])
                    sources.append(index)
                yield rows, tuple(sources)
            batch += 1


def _as_is(batch):
    """The DataLoader's collate: batches are already whole (a module function, so workers can pickle it)."""
    return batch


class MixtureLoader(DataLoader):
    """A DataLoader over a ``MixtureStream`` whose ``state_dict`` is the stream position (LitGPT saves it)."""

    def __init__(self, dataset: MixtureStream, num_workers: int, max_epochs_per_source: int | None = None) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers, collate_fn=_as_is)
        self._pin = torch.cuda.is_available()
        self.max_epochs_per_source = max_epochs_per_source
        self._ids = sorted(dataset.shards)  # the blend's order (``Blender.ids``)
        self.position = dataset.position

    @property
    def position(self) -> dict:
        """Samples handed out, taken per source, and the draws/taken the current iteration started from."""
        return {**self._start, "samples": self._samples, "taken": dict(zip(self._ids, self._taken))}

    @position.setter
    def position(self, position: Mapping) -> None:
        self._start = {key: dict(position[key]) for key in ("base_draws", "base_taken", "pins", "dropped")}
        self._samples = position["samples"]
        self._taken = [position["taken"][source] for source in self._ids]

    def __len__(self) -> int:
        """Batches in one pass over the blend's blocks on this rank (LitGPT's ``lr_warmup_fraction`` uses it)."""
        return max(1, sum(self.dataset.blocks.values()) // (self.dataset.batch_size * self.dataset.world_size))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The batches; the position advances by each batch's sources as it is handed out."""
        stream: MixtureStream = self.dataset
        stream.position = self.position
        world_size, ids, taken = stream.world_size, self._ids, self._taken
        blocks = [stream.blocks[source] for source in ids]
        base = [self._start["base_draws"][source] - self._start["base_taken"][source] * world_size for source in ids]
        next_wrap = [(base[i] + taken[i] * world_size) // blocks[i] * blocks[i] + blocks[i] for i in range(len(ids))]
        for batch, sources in super().__iter__():
            for index in sources:
                taken[index] += 1
                draws = base[index] + taken[index] * world_size
                if draws > next_wrap[index]:
                    next_wrap[index] = (draws - 1) // blocks[index] * blocks[index] + blocks[index]
                    self._source_wrapped(ids[index], draws)
            self._samples += len(sources)
            batch = torch.from_numpy(batch)
            yield batch.pin_memory() if self._pin else batch

    def _source_wrapped(self, source: str, draws: int) -> None:
        """``source`` has been asked for ``draws`` blocks (over all ranks), reaching into a new epoch."""
        stream: MixtureStream = self.dataset
        shard, blocks = stream.shards[source], stream.blocks[source]
        epoch = (draws - 1) // blocks  # the epoch just started, counted from 0
        if self.max_epochs_per_source is not None and epoch >= self.max_epochs_per_source:
            raise ValueError(
                f"max_epochs_per_source={self.max_epochs_per_source}: source {source!r} ({shard.path}) holds "
                f"{blocks:,} blocks ({shard.tokens:,} tokens) and the run has asked {draws * stream.block_size:,} "
                "tokens of it; lower its weight, add data, or raise max_epochs_per_source."
            )
        if rank_zero_only.rank == 0:
            logger.info("source %s finished epoch %d; starting epoch %d, reshuffled", source, epoch - 1, epoch)

    def source_positions(self) -> dict[str, SourcePosition]:
        """Each source's global draws and epoch size now (pins that still matter included)."""
        stream: MixtureStream = self.dataset
        draws = global_draws(self.position, stream.world_size)
        pins = self._start["pins"]
        return {
            source: SourcePosition(draws[source], stream.blocks[source], pins.get(source)).settled(stream.seed)
            for source in stream.shards
        }

    def state_dict(self) -> dict:
        stream: MixtureStream = self.dataset
        paths = {source: shard.path for source, shard in stream.shards.items()}
        return {
            "version": STATE_VERSION,
            "samples": self._samples,
            "taken": dict(zip(self._ids, self._taken)),
            "weights": dict(stream.weights),
            "seed": stream.seed,
            "block_size": stream.block_size,
            "batch_size": stream.batch_size,
            "world_size": stream.world_size,
            "sources": {source: _position_entry(p, stream.block_size, paths[source]) for source, p in self.source_positions().items()},
            "dropped": {source: _position_entry(p, stream.block_size, None) for source, p in self._start["dropped"].items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from a checkpoint's position; with a changed blend or seed, carry each source over."""
        stream: MixtureStream = self.dataset
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"train_dataloader state version {state.get('version')!r} is not {STATE_VERSION}; it was not written by this sharded_mix.")
        if state["block_size"] != stream.block_size:
            raise ValueError(
                f"the checkpoint's data was cut in blocks of {state['block_size']} tokens, this run asks for "
                f"{stream.block_size} (train.max_seq_length + 1); resume with the same train.max_seq_length."
            )
        if state["world_size"] != stream.world_size and rank_zero_only.rank == 0:
            logger.info("resuming data on %d ranks (the checkpoint ran on %d)", stream.world_size, state["world_size"])
        active = {source: _entry_position(entry) for source, entry in state["sources"].items()}
        dropped = {source: _entry_position(entry) for source, entry in state.get("dropped", {}).items()}
        if _same_blend(state, active, stream):
            self.position = {
                "samples": state["samples"],
                "taken": dict(state["taken"]),
                "base_draws": {source: p.draws for source, p in active.items()},
                "base_taken": dict(state["taken"]),
                "pins": {source: p.pin for source, p in active.items() if p.pin is not None},
                "dropped": dropped,
            }
            return
        carried, set_aside, rows = carry_over(active, dropped, state["weights"], state["seed"], stream.weights, stream.blocks, stream.seed)
        zeros = dict.fromkeys(carried, 0)
        self.position = {
            "samples": state["samples"],
            "taken": zeros,
            "base_draws": {source: p.draws for source, p in carried.items()},
            "base_taken": dict(zeros),
            "pins": {source: p.pin for source, p in carried.items() if p.pin is not None},
            "dropped": set_aside,
        }
        if rank_zero_only.rank == 0:
            heading = f"resuming after {state['samples']:,} samples per rank ({state['samples'] // stream.batch_size:,} batches of {stream.batch_size})"
            logger.info("%s", format_transition(rows, heading, state["seed"], stream.seed))


def _position_entry(position: SourcePosition, block_size: int, path: str | None) -> dict:
    """A source's position as plain data for the checkpoint (and people reading it)."""
    entry = {
        "draws": position.draws,
        "epoch": position.epoch,
        "position": position.offset,
        "blocks": position.blocks,
        "tokens": position.draws * block_size,
    }
    if path is not None:
        entry["path"] = path
    if position.pin is not None:
        entry["pinned_seed"] = {"epoch": position.pin[0], "seed": position.pin[1]}
    return entry


def _entry_position(entry: Mapping) -> SourcePosition:
    pin = entry.get("pinned_seed")
    return SourcePosition(entry["draws"], entry["blocks"], (pin["epoch"], pin["seed"]) if pin else None)


def _same_blend(state: Mapping, active: Mapping[str, SourcePosition], stream: MixtureStream) -> bool:
    """Whether the checkpoint ran this very blend: same sources, weights, seed and shard sizes."""
    return (
        set(active) == set(stream.weights)
        and state["seed"] == stream.seed
        and all(math.isclose(state["weights"][source], stream.weights[source], rel_tol=1e-9) for source in active)
        and all(active[source].blocks == stream.blocks[source] for source in active)
    )


def mixture_loader(
    shards: Sequence[Shard],
    weights: Mapping[str, float],
    block_size: int,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int,
    max_epochs_per_source: int | None = None,
) -> MixtureLoader:
    rank, world_size = distributed_rank_world()
    stream = MixtureStream(shards, weights, block_size, batch_size, seed, shuffle, rank, world_size)
    return MixtureLoader(stream, num_workers, max_epochs_per_source)


def validation_loader(shards: Sequence[Shard], weights: Mapping[str, float], block_size: int, batch_size: int, seed: int, num_workers: int) -> StreamingDataLoader:
    """The validation mixture: unshuffled shards sampled with their weights, the same blocks every time."""
    chosen = [shard for shard in shards if weights.get(shard.id, 0) > 0]
    datasets = [
        StreamingDataset(input_dir=shard.path, item_loader=TokensLoader(block_size=block_size), shuffle=False, drop_last=True, seed=seed)
        for shard in chosen
    ]
    combined = CombinedStreamingDataset(datasets=datasets, seed=seed, weights=[weights[shard.id] for shard in chosen], iterate_over_all=False)
    return StreamingDataLoader(combined, batch_size=batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=True)
