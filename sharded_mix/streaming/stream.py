"""Stream blocks of tokens from the chosen shards.

Training: we own the index (design 2 of ARCHITECTURE.md) and read blocks in litdata's layout.
The k-th sample of a rank comes from the source its stage's ``Blender`` picks for k; that
source's draw number, counted over all ranks, names the block through its epoch order
(``orders.py``: O(chunks) per epoch, only the shuffle window in use is materialised), read from
the chunk files (``sources.py``). Every rank runs the same blend, so in each round of draws of a source,
rank r takes the one congruent to r modulo the world size: ranks are disjoint and together follow the
blend. On several nodes each node reads its own contiguous slice of every epoch (``slices.py``), so it
touches about 1/nodes of the chunks; with one node the order is the whole epoch's. DataLoader
workers take whole batches in turn (batch j → worker j mod workers), which is the order torch's
DataLoader returns them in; each batch travels with the blend indices of its sources, so the
loader in the main process advances its ``Cursor`` (``cursor.py``) without running the blend
again. Stages switch between batches; a changed blend carries each source's position over
(``transition.py``). The position is plain data keyed by shard id: saving and restoring it
costs the same at any step.

Validation is ``validation.py``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sharded_mix.mixing.cursor import Cursor, StreamStage
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW
from sharded_mix.mixing.resume import ResumeTarget, resume_state, set_aside_fingerprints
from sharded_mix.mixing.run_plan import RunPlan, stream_stage
from sharded_mix.mixing.slices import Topology
from sharded_mix.mixing.state import STATE_VERSION, fingerprint
from sharded_mix.mixing.stop import StopRule
from sharded_mix.mixing.transition import resume_notes, stage_transition_text
from sharded_mix.shards import Shard
from sharded_mix.streaming.cache import ChunkCache
from sharded_mix.streaming.distributed import distributed_rank_world
from sharded_mix.streaming.sources import ChunkMaps, SourceReader
from sharded_mix.streaming.storage import is_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How the training stream reads, as opposed to what it reads (``RunPlan``)."""

    shuffle: bool = True
    num_workers: int = 0
    max_epochs_per_source: int | None = None
    on_data_change: str = "error"
    restart_on_resume: bool = False
    cache: ChunkCache | None = None
    """The node's cache of remote chunk files (remote shards only)."""
    prefetch_chunks: int = 0
    """Chunks each process downloads ahead of its window (remote shards only)."""
    nodes: int = 1


class MixtureStream(IterableDataset):
    """A stream of batches following each stage's blend, each source cycling its own epochs; it ends after ``stop``
    samples per rank (None: never)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        stages: Sequence[StreamStage],
        batch_size: int,
        *,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        cache: ChunkCache | None = None,
        prefetch_chunks: int = 0,
        nodes: int = 1,
    ) -> None:
        used = {source for stage in stages for source in stage.weights}
        self.shards = {shard.id: shard for shard in shards if shard.id in used}
        self.stages = list(stages)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.topology = Topology(world_size, nodes)
        self.node = self.topology.node_of(rank)
        self.cache = cache
        self.prefetch_chunks = prefetch_chunks
        late = [stage.name for stage in self.stages if stage.start % batch_size]
        if late:
            raise ValueError(
                f"stage(s) {late} start inside a batch of {batch_size} samples; stages start on batch boundaries."
            )
        dtypes = {shard.dtype for shard in self.shards.values()}
        if len(dtypes) != 1:
            raise ValueError(
                f"the blend mixes token dtypes {sorted(dtypes)}; write every shard with the same tokenizer dtype."
            )
        self.dtype = np.dtype(dtypes.pop())
        self.cursor = Cursor(self.stages, world_size)  # where iteration starts; the loader sets it each time
        self.stop: int | None = None  # the loader sets it too

    def __iter__(self) -> Iterator[tuple[np.ndarray, tuple[int, ...]]]:
        """Yields ``(batch of blocks, index in the stage's ids of each block's source)``.

        Batches are numpy arrays: from a worker they travel pickled through the queue's pipe, which
        costs a half to a fifth of what a torch tensor's per-batch shared-memory segment does
        (``benchmarks/README.md``); the loader turns them into tensors without a copy.
        """
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cursor, maps = self.cursor, ChunkMaps(self.dtype, self._max_open_maps(), self.cache)
        readers = self._readers(cursor, maps)
        rank, world = self.rank, self.world_size
        batch = 0
        while self.stop is None or cursor.samples < self.stop:
            if cursor.due():
                cursor.switch()
                readers = self._readers(cursor, maps)
            if batch % workers != worker:
                for _ in range(self.batch_size):
                    cursor.next_source()
            else:
                rows = np.empty((self.batch_size, cursor.stage.block_size), dtype=self.dtype)
                sources = []
                for row in range(self.batch_size):
                    index = cursor.next_source()
                    before = cursor.draws(index) - world  # this round's draws are before … before + world - 1
                    readers[index].read_into(before + (rank - before) % world, rows[row])
                    sources.append(index)
                yield rows, tuple(sources)
            batch += 1

    def _readers(self, cursor: Cursor, maps: ChunkMaps) -> list[SourceReader]:
        stage = cursor.stage
        return [
            SourceReader(
                self.shards[source],
                stage.block_size,
                stage.ordering if self.shuffle else None,
                maps,
                cursor.pins.get(source),
                self.prefetch_chunks,
                self.topology,
                self.node,
                cursor.splits.get(source),
            )
            for source in cursor.ids
        ]

    def _max_open_maps(self) -> int:
        """Enough chunk maps for every source's window and the next one, so reads never reopen files."""
        windows = max(stage.shuffle_window for stage in self.stages)
        return max(64, 2 * windows * len(self.shards))


def _as_is(batch):
    """The DataLoader's collate: batches are already whole (a module function, so workers can pickle it)."""
    return batch


class MixtureLoader(DataLoader):
    """A DataLoader over a ``MixtureStream`` whose ``state_dict`` is the stream position (LitGPT saves it)."""

    def __init__(
        self, dataset: MixtureStream, options: ReadOptions = ReadOptions(), plan: RunPlan | None = None
    ) -> None:
        remote = any(is_url(shard.path) for shard in dataset.shards.values())
        # obstore's runtime does not survive fork() once the main process has used it (discovery did)
        context = "forkserver" if remote and options.num_workers > 0 else None
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=options.num_workers,
            collate_fn=_as_is,
            multiprocessing_context=context,
        )
        self._pin = torch.cuda.is_available()
        self.max_epochs_per_source = options.max_epochs_per_source
        self.on_data_change = options.on_data_change
        self.restart_on_resume = options.restart_on_resume
        self.cursor = Cursor(dataset.stages, dataset.world_size)
        self.last_rows: tuple[list[str], tuple[int, ...]] | None = None
        """The source ids of the stage and each row's index into them, of the batch handed out last."""
        self._saved_fingerprints: dict[str, dict] = {}  # of set-aside sources this run does not read
        self.stop = plan.stop if plan is not None else StopRule()
        self.global_batch_size = plan.global_batch_size if plan is not None else None
        self.run = plan.run if plan is not None else None  # the run's out_dir (stop_after_steps anchors are per run)
        self.stop_anchor = plan.stop_anchor if plan is not None else 0  # the step stop_after_steps counts from
        self.run_steps = plan.run_steps if plan is not None else None  # where train.max_tokens ends the run
        self._stop_announced = False
        if self.stop.active and self.global_batch_size is None:
            name = "stop_at_step" if self.stop.at_step is not None else "stop_after_steps"
            raise ValueError(
                f"{name} is set but the data args have no global_batch_size, so the step cannot be turned into "
                "samples; set global_batch_size (= train.global_batch_size) in the data init_args."
            )

    def __len__(self) -> int:
        """Batches in one pass over the first stage's blocks on this rank (LitGPT's ``lr_warmup_fraction`` uses it)."""
        stream: MixtureStream = self.dataset
        return max(1, sum(stream.stages[0].blocks.values()) // (stream.batch_size * stream.world_size))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The batches; the position advances by each batch's sources as it is handed out."""
        stream: MixtureStream = self.dataset
        stream.cursor = copy.deepcopy(self.cursor)
        stream.stop = self.stop_samples()
        cursor = self.cursor
        next_wrap = self._epoch_ends(cursor)
        if stream.stop is not None and cursor.samples >= stream.stop:
            if not self._stop_announced:  # LitGPT iterates again after the stop: say it once
                self._log_stop("resumed at the stop step; no batch is left")
            return
        for batch, sources in super().__iter__():
            if cursor.due():
                old, rows = cursor.switch()
                self._log_stage_transition(old, rows)
                next_wrap = self._epoch_ends(cursor)
            for index in sources:
                cursor.take(index)
                draws = cursor.draws(index)
                if draws > next_wrap[index]:
                    blocks = cursor.stage.blocks[cursor.ids[index]]
                    next_wrap[index] = (draws - 1) // blocks * blocks + blocks
                    self._source_wrapped(cursor.ids[index], draws, blocks)
            self.last_rows = (cursor.ids, sources)
            batch = torch.from_numpy(batch)
            yield batch.pin_memory() if self._pin else batch
        if stream.stop is not None and cursor.samples >= stream.stop:
            self._log_stop(f"{cursor.samples:,} samples per rank")

    def stop_step(self) -> int | None:
        return self.stop.stop_step(self.stop_anchor)

    def stop_samples(self) -> int | None:
        """Samples per rank after which the stream ends (the stop step's last micro-batch), or None."""
        step = self.stop_step()
        return None if step is None else step * self.global_batch_size // self.dataset.world_size

    def _log_stop(self, detail: str) -> None:
        self._stop_announced = True
        if rank_zero_only.rank == 0:
            logger.info(
                "DATA STOP: %s reached (%s); the training stream ends here",
                self.stop.describe(self.stop_anchor),
                detail,
            )

    @staticmethod
    def _epoch_ends(cursor: Cursor) -> list[int]:
        """The draw count at which each source of the current stage finishes its current epoch."""
        ends = []
        for index, source in enumerate(cursor.ids):
            blocks = cursor.stage.blocks[source]
            ends.append(cursor.draws(index) // blocks * blocks + blocks)
        return ends

    def _source_wrapped(self, source: str, draws: int, blocks: int) -> None:
        """``source`` has been asked for ``draws`` blocks (over all ranks), reaching into a new epoch."""
        stream: MixtureStream = self.dataset
        shard = stream.shards[source]
        epoch = (draws - 1) // blocks  # the epoch just started, counted from 0
        if self.max_epochs_per_source is not None and epoch >= self.max_epochs_per_source:
            raise ValueError(
                f"max_epochs_per_source={self.max_epochs_per_source}: source {source!r} ({shard.path}) holds "
                f"{blocks:,} blocks ({shard.tokens:,} tokens) and the run has asked "
                f"{draws * self.cursor.stage.block_size:,} tokens of it; lower its weight, add data, or raise "
                "max_epochs_per_source."
            )
        if rank_zero_only.rank == 0:
            logger.info("source %s finished epoch %d; starting epoch %d, reshuffled", source, epoch - 1, epoch)

    def _log_stage_transition(self, old: StreamStage, rows: list) -> None:
        if rank_zero_only.rank == 0:
            logger.info("%s", stage_transition_text(old, self.cursor.stage, rows, self.cursor.samples))

    def state_dict(self) -> dict:
        stream: MixtureStream = self.dataset
        state = {
            "version": STATE_VERSION,
            **self.cursor.state(),
            "batch_size": stream.batch_size,
            "world_size": stream.world_size,
            "nodes": stream.topology.nodes,
        }
        if self.stop.active:
            state["stop"] = self.stop.record(self.stop_anchor, self.run)
        for source, entry in [*state["sources"].items(), *state["dropped"].items()]:
            shard = stream.shards.get(source)
            if shard is not None:
                entry.update(path=shard.path, fingerprint=fingerprint(shard))
            elif source in self._saved_fingerprints:
                entry["fingerprint"] = self._saved_fingerprints[source]
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from a checkpoint's position; with a changed blend, seed or block size, carry each source over."""
        stream: MixtureStream = self.dataset
        target = ResumeTarget(stream.shards, stream.topology, self.on_data_change, self.restart_on_resume)
        state, notes = resume_state(state, target)
        if rank_zero_only.rank == 0:
            for note in notes:
                logger.log(note.level, "%s", note.message)
        self._saved_fingerprints = set_aside_fingerprints(state)
        rows = self.cursor.restore(state)
        self._anchor_stop(state)
        if rank_zero_only.rank == 0:
            for level, message in resume_notes(state, self.cursor.stage, rows, stream.batch_size):
                logger.log(level, "%s", message)

    def _anchor_stop(self, state: Mapping) -> None:
        """Where ``stop_after_steps`` counts from: kept from this run's own checkpoints, else the step resumed at."""
        if not self.stop.active:
            return
        resume_step = self.cursor.samples * self.dataset.world_size // self.global_batch_size
        self.stop_anchor = self.stop.anchor(state.get("stop"), self.run, resume_step)
        stop = self.stop_step()
        if rank_zero_only.rank == 0:
            logger.info(
                "resuming at step %d; the data stream ends after step %d (%s)",
                resume_step,
                stop,
                self.stop.describe(self.stop_anchor),
            )
        if stop < resume_step:
            raise ValueError(
                f"{self.stop.describe(self.stop_anchor)}, but the checkpoint resumed is at step {resume_step:,}, past "
                "it; raise the stop step, or resume from an earlier checkpoint."
            )
        self.stop.check_within(self.stop_anchor, self.run_steps)


def mixture_loader(
    shards: Sequence[Shard],
    weights: Mapping[str, float],
    block_size: int,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int,
    max_epochs_per_source: int | None = None,
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
) -> MixtureLoader:
    """The training loader for one blend from the first sample on, without a data module (benchmarks, notebooks)."""
    rank, world_size = distributed_rank_world()
    stage = stream_stage(shards, weights, block_size, seed, shuffle_window=shuffle_window)
    stream = MixtureStream(shards, [stage], batch_size, shuffle=shuffle, rank=rank, world_size=world_size)
    options = ReadOptions(shuffle=shuffle, num_workers=num_workers, max_epochs_per_source=max_epochs_per_source)
    return MixtureLoader(stream, options)


def training_loader(plan: RunPlan, options: ReadOptions) -> MixtureLoader:
    """The training loader of a run's plan: its stages on this rank, read as ``options`` say."""
    rank, world_size = distributed_rank_world()
    stream = MixtureStream(
        plan.shards,
        plan.stream_stages(world_size),
        plan.micro_batch_size,
        shuffle=options.shuffle,
        rank=rank,
        world_size=world_size,
        cache=options.cache,
        prefetch_chunks=options.prefetch_chunks,
        nodes=options.nodes,
    )
    return MixtureLoader(stream, options, plan)
