"""Carry the stream's position over to a new blend (pure, no I/O).

Used when a run resumes with a changed blend (midtraining). A source's position is its global
draw count: sources in both blends continue where they are, new ones start at draw 0, removed
ones are set aside (and continue from there if a later blend brings them back). A new seed or
shuffle window (an ``Ordering``) applies to each source from its next epoch: a source in the
middle of an epoch keeps that epoch's ordering (its *pin*), so nothing it already gave is read
again before the epoch ends.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sharded_mix.mixing.orders import LEGACY_WINDOW, Ordering
from sharded_mix.mixing.slices import Split

if TYPE_CHECKING:
    from sharded_mix.mixing.cursor import StreamStage

Pin = tuple[int, Ordering]
"""``(epoch, ordering)``: that epoch of the source keeps that ordering, whatever the run's is."""


@dataclass(frozen=True)
class SourcePosition:
    draws: int
    """Blocks drawn from the source so far, over all ranks."""
    blocks: int
    """Blocks in one epoch of the source."""
    pin: Pin | None = None
    block_size: int = 0
    """Tokens per block the draws count (0: not recorded)."""
    split: Split | None = None
    """How the nodes share the rest of the epoch in progress, when a resume on another topology re-sliced it."""

    @property
    def epoch(self) -> int:
        return self.draws // self.blocks

    @property
    def offset(self) -> int:
        """Position inside the current epoch."""
        return self.draws % self.blocks

    def settled(self, ordering: Ordering) -> SourcePosition:
        """Drop a pin or split that no longer matters: its epoch is over, or the pin names ``ordering``, the one in
        force."""
        settled = self
        if self.pin is not None and (self.pin[0] != self.epoch or self.offset == 0 or self.pin[1] == ordering):
            settled = replace(settled, pin=None)
        if self.split is not None and (self.split.epoch != self.epoch or self.offset == 0):
            settled = replace(settled, split=None)
        return settled

    def pinned(self, ordering: Ordering) -> SourcePosition:
        """Keep the order of the epoch in progress, which ``ordering`` (or an earlier pin) chose."""
        if self.offset == 0 or (self.pin is not None and self.pin[0] == self.epoch):
            return self
        return replace(self, pin=(self.epoch, ordering))


@dataclass(frozen=True)
class TransitionRow:
    id: str
    old_weight: float | None
    new_weight: float | None
    status: str
    """``continues``, ``new``, ``dropped``, ``back`` (dropped earlier, continues), ``resized`` (new block
    length: next epoch) or ``restarted`` (shard changed)."""
    position: SourcePosition


def carry_over(
    active: Mapping[str, SourcePosition],
    dropped: Mapping[str, SourcePosition],
    old_weights: Mapping[str, float],
    old_ordering: Ordering,
    new_weights: Mapping[str, float],
    new_blocks: Mapping[str, int],
    new_ordering: Ordering,
    new_block_size: int = 0,
) -> tuple[dict[str, SourcePosition], dict[str, SourcePosition], list[TransitionRow]]:
    """Positions of the new blend's sources, the set-aside ones, and one row per source for the log.

    Blocks of a new length cannot continue an order over blocks of the old one: such a source
    starts its next epoch (a fresh permutation) in the new length.
    """
    carried: dict[str, SourcePosition] = {}
    set_aside = dict(dropped)
    rows: list[TransitionRow] = []
    for source in sorted(set(new_weights) | set(active)):
        old_weight, new_weight = old_weights.get(source), new_weights.get(source)
        if source not in new_weights:
            set_aside[source] = active[source].pinned(old_ordering)
            rows.append(TransitionRow(source, old_weight, None, "dropped", set_aside[source]))
            continue
        previous, status = active.get(source), "continues"
        if previous is not None:
            previous = previous.pinned(old_ordering)
        elif source in set_aside:
            previous, status = set_aside.pop(source), "back"
        if previous is None:
            position, status = SourcePosition(0, new_blocks[source], block_size=new_block_size), "new"
        elif previous.block_size and new_block_size and previous.block_size != new_block_size:
            next_epoch = previous.epoch + (1 if previous.offset else 0)
            position, status = (
                SourcePosition(next_epoch * new_blocks[source], new_blocks[source], block_size=new_block_size),
                "resized",
            )
        elif previous.blocks != new_blocks[source]:
            position, status = SourcePosition(0, new_blocks[source], block_size=new_block_size), "restarted"
        else:
            position = replace(previous.settled(new_ordering), block_size=new_block_size or previous.block_size)
        carried[source] = position
        rows.append(TransitionRow(source, old_weight, new_weight, status, position))
    return carried, set_aside, rows


STATUS_NOTES = {
    "continues": "",
    "new": "starts at its first epoch",
    "dropped": "set aside; continues from here if a later blend brings it back",
    "back": "back from an earlier blend; continues where it stopped",
    "resized": "blocks of a new length: starts its next epoch",
    "restarted": "its shard no longer has the checkpoint's size: starts over",
}


def format_transition(
    rows: list[TransitionRow],
    heading: str,
    old: Ordering,
    new: Ordering,
    banner: str = "DATA MIX TRANSITION",
    details: Sequence[str] = (),
) -> str:
    """A fixed-format block: old and new weight per source and the position carried over."""
    header = (
        f"{'source':<14} {'old weight':>11} {'new weight':>11}  {'status':<10} {'epoch':>6} "
        f"{'position / blocks':>20}  note"
    )
    lines = [f"===== {banner}: {heading} =====", *details]
    changes = [f"seed {old.seed} -> {new.seed}"] if old.seed != new.seed else []
    if old.window != new.window:
        changes.append(f"shuffle window {window_name(old.window)} -> {window_name(new.window)}")
    if changes:
        lines.append(
            f"{', '.join(changes)}: a source in mid-epoch finishes it in the old order; the new one orders its next "
            "epochs"
        )
    lines += [header, "-" * len(header)]
    for row in rows:
        old = f"{row.old_weight:.4f}" if row.old_weight is not None else "-"
        new = f"{row.new_weight:.4f}" if row.new_weight is not None else "-"
        where = f"{row.position.offset:,} / {row.position.blocks:,}"
        note = STATUS_NOTES[row.status]
        if row.position.pin is not None:
            note = "; ".join(filter(None, [note, pin_note(row.position.pin)]))
        if row.position.split is not None:
            note = "; ".join(filter(None, [note, row.position.split.describe()]))
        lines.append(
            f"{row.id:<14} {old:>11} {new:>11}  {row.status:<10} {row.position.epoch:>6} {where:>20}  {note}".rstrip()
        )
    return "\n".join(lines)


def window_name(window: int) -> str:
    return "v2 (state version 2's chunk-local order)" if window == LEGACY_WINDOW else str(window)


def pin_note(pin: Pin) -> str:
    """How a pinned epoch is ordered, for the logs and ``data-position``."""
    epoch, ordering = pin
    return f"epoch {epoch} keeps {ordering.describe()}"


def stage_transition_text(old: StreamStage, new: StreamStage, rows: Sequence[TransitionRow], samples: int) -> str:
    """The ``DATA STAGE TRANSITION`` block logged where the stream enters stage ``new``."""
    changed = []
    if old.weights != new.weights:
        changed.append("weights")
    if old.seed != new.seed:
        changed.append(f"seed {old.seed} -> {new.seed}")
    if old.block_size != new.block_size:
        changed.append(f"seq_len {old.block_size - 1} -> {new.block_size - 1}")
    heading = f"{new.label} ({samples:,} samples per rank): {old.name} -> {new.name}"
    details = [f"changed: {', '.join(changed) or 'nothing'}"]
    return format_transition(rows, heading, old.ordering, new.ordering, banner="DATA STAGE TRANSITION", details=details)


def resume_notes(
    state: Mapping, stage: StreamStage, rows: Sequence[TransitionRow] | None, batch_size: int
) -> list[tuple[int, str]]:
    """The (level, message) lines of a resume into ``stage`` from ``state`` (``rows``: the carry-over, None when
    the checkpoint's blend continues as it was)."""
    notes = []
    saved, ordering = Ordering(state["seed"], state["shuffle_window"]), stage.ordering
    if rows is not None:
        batches = state["samples"] // batch_size
        heading = (
            f"resuming after {state['samples']:,} samples per rank ({batches:,} batches of {batch_size}) "
            f"in stage {stage.name}"
        )
        old_size, new_size = state["block_size"], stage.block_size
        details = (
            []
            if old_size == new_size
            else [f"block size {old_size} -> {new_size} (seq_len {old_size - 1} -> {new_size - 1})"]
        )
        notes.append((logging.INFO, format_transition(rows, heading, saved, ordering, details=details)))
        if state.get("stage") == stage.name and old_size != new_size:
            notes.append((logging.WARNING, block_size_change_warning(state, new_size)))
    if rows is None and saved != ordering:
        notes.append(
            (
                logging.INFO,
                f"resuming with {ordering.describe()}; the checkpoint ran with {saved.describe()}: each source "
                "finishes its epoch in progress in the checkpoint's order, and its next epochs follow the new one",
            )
        )
    return notes


def block_size_change_warning(state: Mapping, block_size: int) -> str:
    """The cost of resuming a stage with another ``max_seq_length``: the rest of each epoch in progress."""
    unread = [
        entry["blocks"] - entry["draws"] % entry["blocks"]
        for entry in state["sources"].values()
        if entry["draws"] % entry["blocks"]
    ]
    old = state["block_size"]
    return (
        f"train.max_seq_length changed since the checkpoint ({old - 1} -> {block_size - 1}): blocks of the new length "
        f"cannot continue the old epochs, so {len(unread)} source(s) in mid-epoch start their next epoch now and "
        f"{sum(unread):,} blocks of {old} tokens left in those epochs are not read in this pass. Resume with "
        f"max_seq_length {old - 1} to keep them, or make the change a data stage with seq_len."
    )
