"""Stream blocks of tokens from the chosen shards.

Training: we own the index, litdata reads (design 2 of ARCHITECTURE.md). The k-th sample of a
rank comes from the source ``Blender`` picks for k; that source's draw number, counted over all
ranks, names the block through its epoch order (``sources.py``). Every rank runs the same blend,
so rank r takes draws r, r + world, r + 2·world, ... of each source: ranks are disjoint and
together follow the blend. DataLoader workers take whole batches in turn (batch j → worker
j mod workers), which is the order torch's DataLoader returns them in. The position is plain
data (blend position, taken and global draws per shard id) kept by the loader in the main
process: saving and restoring it costs the same at any step.

Validation: litdata's ``CombinedStreamingDataset`` over unshuffled shards (finite, deterministic).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from litdata.streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sharded_mix.blend import Blender
from sharded_mix.discovery import Shard
from sharded_mix.sources import SourceReader

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def distributed_rank_world() -> tuple[int, int]:
    """This process's rank and the world size (torch.distributed if initialised, else the environment)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def fresh_position(shards: Sequence[Shard], weights: Mapping[str, float]) -> dict:
    """The position of a stream that has read nothing."""
    ids = [shard.id for shard in shards if weights.get(shard.id, 0) > 0]
    return {"samples": 0, "taken": dict.fromkeys(ids, 0), "base_draws": dict.fromkeys(ids, 0), "base_taken": dict.fromkeys(ids, 0)}


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

    def blender(self) -> Blender:
        return Blender(self.weights, self.position["samples"], self.position["taken"])

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        blender = self.blender()
        readers = {source: SourceReader(shard, self.block_size, self.seed, self.shuffle) for source, shard in self.shards.items()}
        base_draws, base_taken = self.position["base_draws"], self.position["base_taken"]
        batch = 0
        while True:
            mine = batch % workers == worker
            for _ in range(self.batch_size):
                index = blender.next_index()
                if mine:
                    source = blender.ids[index]
                    local = blender.taken[index] - 1 - base_taken[source]
                    yield readers[source].read(base_draws[source] + local * self.world_size + self.rank)
            batch += 1


class MixtureLoader(DataLoader):
    """A DataLoader over a ``MixtureStream`` whose ``state_dict`` is the stream position (LitGPT saves it)."""

    def __init__(self, dataset: MixtureStream, num_workers: int, max_epochs_per_source: int | None = None) -> None:
        super().__init__(
            dataset, batch_size=dataset.batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available()
        )
        self.max_epochs_per_source = max_epochs_per_source
        self.position = dict(dataset.position)

    def __len__(self) -> int:
        """Batches in one pass over the blend's blocks on this rank (LitGPT's ``lr_warmup_fraction`` uses it)."""
        return max(1, sum(self.dataset.blocks.values()) // (self.dataset.batch_size * self.dataset.world_size))

    def __iter__(self) -> Iterator[torch.Tensor]:
        stream: MixtureStream = self.dataset
        stream.position = self.position
        tracker = stream.blender()
        blocks = [stream.blocks[source] for source in tracker.ids]
        base = [self.position["base_draws"][source] - self.position["base_taken"][source] * stream.world_size for source in tracker.ids]
        next_wrap = [(base[i] + taken * stream.world_size) // blocks[i] * blocks[i] + blocks[i] for i, taken in enumerate(tracker.taken)]
        for batch in super().__iter__():
            for _ in range(stream.batch_size):
                index = tracker.next_index()
                draws = base[index] + tracker.taken[index] * stream.world_size
                if draws > next_wrap[index]:
                    next_wrap[index] = (draws - 1) // blocks[index] * blocks[index] + blocks[index]
                    self._source_wrapped(tracker.ids[index], draws)
            self.position = {**self.position, "samples": tracker.position, "taken": dict(zip(tracker.ids, tracker.taken))}
            yield batch

    def _source_wrapped(self, source: str, draws: int) -> None:
        """``source`` has been asked for ``draws`` blocks (over all ranks), reaching into a new epoch."""
        stream: MixtureStream = self.dataset
        shard, blocks = stream.shards[source], stream.blocks[source]
        epoch = (draws - 1) // blocks
        if self.max_epochs_per_source is not None and epoch >= self.max_epochs_per_source:
            raise ValueError(
                f"max_epochs_per_source={self.max_epochs_per_source}: source {source!r} ({shard.path}) holds "
                f"{blocks:,} blocks ({shard.tokens:,} tokens) and the run has asked {draws * stream.block_size:,} "
                "tokens of it; lower its weight, add data, or raise max_epochs_per_source."
            )
        if rank_zero_only.rank == 0:
            logger.info("source %s finished epoch %d; starting epoch %d, reshuffled", source, epoch, epoch + 1)

    def state_dict(self) -> dict:
        stream: MixtureStream = self.dataset
        draws = global_draws(self.position, stream.world_size)
        return {
            "version": STATE_VERSION,
            "samples": self.position["samples"],
            "taken": dict(self.position["taken"]),
            "weights": dict(stream.weights),
            "seed": stream.seed,
            "block_size": stream.block_size,
            "world_size": stream.world_size,
            "sources": {
                source: {
                    "draws": draws[source],
                    "epoch": draws[source] // stream.blocks[source],
                    "position": draws[source] % stream.blocks[source],
                    "blocks": stream.blocks[source],
                    "tokens": draws[source] * stream.block_size,
                    "path": stream.shards[source].path,
                }
                for source in stream.shards
            },
        }

    def load_state_dict(self, state: Mapping) -> None:
        stream: MixtureStream = self.dataset
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"train_dataloader state version {state.get('version')!r} is not {STATE_VERSION}; it was not written by this sharded_mix.")
        if state["block_size"] != stream.block_size:
            raise ValueError(
                f"the checkpoint's data was cut in blocks of {state['block_size']} tokens, this run asks for "
                f"{stream.block_size} (train.max_seq_length + 1); resume with the same train.max_seq_length."
            )
        if sorted(state["sources"]) != sorted(stream.shards) or state["weights"] != stream.weights:
            raise ValueError(
                f"the checkpoint's blend {state['weights']} differs from this run's {stream.weights}; "
                "resume with the same blend."
            )
        if state["seed"] != stream.seed:
            raise ValueError(
                f"the checkpoint's data seed is {state['seed']}, this run's is {stream.seed}; a new seed would reorder "
                "the sources' current epochs. Resume with seed: " + str(state["seed"]) + "."
            )
        if state["world_size"] != stream.world_size and rank_zero_only.rank == 0:
            logger.info("resuming data on %d ranks (the checkpoint ran on %d)", stream.world_size, state["world_size"])
        self.position = {
            "samples": state["samples"],
            "taken": dict(state["taken"]),
            "base_draws": {source: entry["draws"] for source, entry in state["sources"].items()},
            "base_taken": dict(state["taken"]),
        }


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
