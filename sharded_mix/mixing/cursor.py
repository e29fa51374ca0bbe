"""Where the training stream is: its stage, and each source's draws over all ranks (no I/O).

Every DataLoader worker and the loader in the main process keep a ``Cursor`` and move it the
same way, one sample at a time, so they agree on the position without talking to each other.
A stage switch happens between batches, when the rank's sample count reaches the next stage's
start: the sources are carried over to the new stage's blend (``transition.carry_over``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sharded_mix.mixing.blend import Blender
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW, Ordering
from sharded_mix.mixing.slices import Split, Topology
from sharded_mix.mixing.transition import SourcePosition, TransitionRow, carry_over


@dataclass(frozen=True)
class StreamStage:
    """One stage as the stream needs it: where it starts (samples per rank) and what it draws."""

    name: str
    start: int
    weights: dict[str, float]
    """Shard id -> weight; positive weights only."""
    seed: int
    block_size: int
    blocks: dict[str, int]
    """Blocks in one epoch of each source, in this stage's block size."""
    label: str = "sample 0"
    """The start as the user wrote it, e.g. ``step 5``."""
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW
    """Chunks whose blocks are shuffled together (``orders.py``)."""

    @property
    def ordering(self) -> Ordering:
        return Ordering(self.seed, self.shuffle_window)


class Cursor:
    """The stream position: stage, samples this rank has taken, and per source its global draws."""

    def __init__(self, stages: Sequence[StreamStage], world_size: int) -> None:
        self.stages = list(stages)
        self.world_size = world_size
        self.samples = 0
        self.counted: dict[str, tuple[int, int]] = {}
        """Samples and trained tokens of each source over all ranks, up to the current stage's entry."""
        first = self.stages[0]
        self._enter(
            0,
            {source: SourcePosition(0, first.blocks[source], block_size=first.block_size) for source in first.weights},
            {},
        )

    def _enter(
        self,
        index: int,
        positions: Mapping[str, SourcePosition],
        dropped: Mapping[str, SourcePosition],
        taken: Mapping[str, int] | None = None,
    ) -> None:
        self.index = index
        stage = self.stages[index]
        self.ids = sorted(stage.weights)
        self.blender = Blender(stage.weights, sum((taken or {}).values()), taken)
        self.taken = self.blender.taken  # one list, shared with the blender
        self.base = [positions[source].draws - self.taken[i] * self.world_size for i, source in enumerate(self.ids)]
        self.pins = {source: p.pin for source, p in positions.items() if p.pin is not None}
        self.splits = {source: p.split for source, p in positions.items() if p.split is not None}
        self.dropped = dict(dropped)

    @property
    def stage(self) -> StreamStage:
        return self.stages[self.index]

    def draws(self, index: int) -> int:
        """Draws of source ``index`` (into ``ids``) over all ranks so far."""
        return self.base[index] + self.taken[index] * self.world_size

    def next_source(self) -> int:
        """Pick the next sample's source with the blend and count it (workers)."""
        self.samples += 1
        return self.blender.next_index()

    def consumed(self) -> dict[str, tuple[int, int]]:
        """Samples and trained tokens (``block_size - 1`` a sample) each source gave the run so far, over all ranks:
        every rank draws the same source each round, so a source's rounds times the world size."""
        totals = dict(self.counted)
        trained = self.stage.block_size - 1
        for source, taken in zip(self.ids, self.taken):
            samples, tokens = totals.get(source, (0, 0))
            totals[source] = (samples + taken * self.world_size, tokens + taken * self.world_size * trained)
        return totals

    def take(self, index: int) -> None:
        """Count a sample a worker drew from source ``index`` (the main process)."""
        self.samples += 1
        self.taken[index] += 1

    def positions(self) -> dict[str, SourcePosition]:
        """Each source of the current stage: draws, epoch size, block size and any pin that still matters."""
        stage = self.stage
        return {
            source: SourcePosition(
                self.draws(i), stage.blocks[source], self.pins.get(source), stage.block_size, self.splits.get(source)
            ).settled(stage.ordering)
            for i, source in enumerate(self.ids)
        }

    def due(self) -> bool:
        """Whether the next stage starts at the current sample."""
        return self.index + 1 < len(self.stages) and self.samples >= self.stages[self.index + 1].start

    def switch(self) -> tuple[StreamStage, list[TransitionRow]]:
        """Move to the latest stage that has started; returns the old stage and the carry-over."""
        old = self.stage
        return old, self._carry_to_latest(self.positions(), self.dropped, old.weights, old.ordering)

    def _carry_to_latest(
        self,
        positions: Mapping[str, SourcePosition],
        dropped: Mapping[str, SourcePosition],
        weights: Mapping[str, float],
        ordering: Ordering,
    ) -> list[TransitionRow]:
        target = max(i for i, stage in enumerate(self.stages) if stage.start <= self.samples)
        self.counted = {source: counts for source, counts in self.consumed().items() if counts != (0, 0)}
        new = self.stages[target]
        carried, set_aside, rows = carry_over(
            positions, dropped, weights, ordering, new.weights, new.blocks, new.ordering, new.block_size
        )
        self._enter(target, carried, set_aside)
        return rows

    def state(self) -> dict:
        """Plain data for the checkpoint."""
        stage = self.stage
        return {
            "stage": stage.name,
            "samples": self.samples,
            "taken": dict(zip(self.ids, self.taken)),
            "weights": dict(stage.weights),
            "seed": stage.seed,
            "shuffle_window": stage.shuffle_window,
            "block_size": stage.block_size,
            "sources": {source: position_entry(p) for source, p in self.positions().items()},
            "dropped": {source: position_entry(p) for source, p in self.dropped.items()},
            "consumed": {source: {"samples": n, "tokens": t} for source, (n, t) in sorted(self.consumed().items())},
        }

    def restore(self, state: Mapping) -> list[TransitionRow] | None:
        """Continue from a checkpoint's ``state`` (in the current schema: ``resume.resume_state``). The same stage,
        unchanged, resumes exactly (None); otherwise the sources are carried over to the stage that is due, and the
        rows say how. A state without a stage name resumes the stage that has its blend.

        An epoch in progress always finishes in the ordering it started with, also when only the
        shuffle window changed (or the checkpoint ran the order of state versions 1 and 2): that needs no transition."""
        self.samples = state["samples"]
        self.counted = {source: (c["samples"], c["tokens"]) for source, c in state["consumed"].items()}
        saved = saved_ordering(state)
        active = {
            source: entry_position(entry, state["block_size"]).pinned(saved)
            for source, entry in state["sources"].items()
        }
        dropped = {source: entry_position(entry, 0) for source, entry in state.get("dropped", {}).items()}
        for index, stage in enumerate(self.stages):
            if (
                stage.name == state.get("stage", stage.name)
                and stage.start <= self.samples
                and _same_stage(stage, state, active)
            ):
                self._enter(index, active, dropped, state["taken"])
                trained = stage.block_size - 1
                for source, taken in zip(self.ids, self.taken):  # consumed() adds this stage's rounds back
                    samples, tokens = self.counted.get(source, (0, 0))
                    rounds = taken * self.world_size
                    self.counted[source] = (samples - rounds, tokens - rounds * trained)
                return None
        return self._carry_to_latest(active, dropped, state["weights"], saved)


def _same_stage(stage: StreamStage, state: Mapping, active: Mapping[str, SourcePosition]) -> bool:
    """Whether the checkpoint ran this very stage: same sources, weights, seed, block size and shard sizes."""
    return (
        set(active) == set(stage.weights)
        and state["seed"] == stage.seed
        and state["block_size"] == stage.block_size
        and all(math.isclose(state["weights"][source], stage.weights[source], rel_tol=1e-9) for source in active)
        and all(active[source].blocks == stage.blocks[source] for source in active)
    )


def position_entry(position: SourcePosition) -> dict:
    """A source's position as plain data (for the checkpoint and people reading it)."""
    entry = {
        "draws": position.draws,
        "epoch": position.epoch,
        "position": position.offset,
        "blocks": position.blocks,
        "block_size": position.block_size,
        "tokens": position.draws * position.block_size,
    }
    if position.pin is not None:
        epoch, ordering = position.pin
        entry["pinned_order"] = {"epoch": epoch, "seed": ordering.seed, "shuffle_window": ordering.window}
    if position.split is not None:
        entry["split"] = split_entry(position.split)
    return entry


def split_entry(split: Split) -> dict:
    return {
        "epoch": split.epoch,
        "world_size": split.base.world_size,
        "nodes": split.base.nodes,
        "start": split.start,
        "intervals": [[lo, hi] for lo, hi in split.intervals],
    }


def entry_split(entry: Mapping) -> Split:
    return Split(
        entry["epoch"],
        Topology(entry["world_size"], entry["nodes"]),
        entry["start"],
        tuple((lo, hi) for lo, hi in entry["intervals"]),
    )


def saved_ordering(state: Mapping) -> Ordering:
    """The ordering a checkpoint's stage ran with (a state in the current schema, ``state.migrate``; window 0 is the
    order of state versions 1 and 2)."""
    return Ordering(state["seed"], state["shuffle_window"])


def entry_position(entry: Mapping, block_size: int) -> SourcePosition:
    """A source's entry of a state in the current schema as a position; an entry without a block size counts blocks
    of ``block_size`` (0: not recorded)."""
    pin = entry.get("pinned_order")
    pinned = None if pin is None else (pin["epoch"], Ordering(pin["seed"], pin["shuffle_window"]))
    split = entry_split(entry["split"]) if "split" in entry else None
    return SourcePosition(entry["draws"], entry["blocks"], pinned, entry.get("block_size", block_size), split)
