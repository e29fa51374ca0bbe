"""What a resume does with a checkpoint's data state: the rules, in one pure function (no I/O, no logging).

``resume_state(saved, target)`` checks and migrates the saved state (``state.py``), then applies in turn:
the data-change policy to sources whose shard changed since the checkpoint (``on_data_change``), a
re-slicing of each epoch in progress when the node layout changed (``slices.reslice``), the per-rank
sample count for another world size (the same global position, so stages keep their steps), and
``restart_data_on_resume``. It returns the state ``cursor.Cursor.restore`` continues from and the
notes (log level and text) the loader logs on rank zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sharded_mix.mixing.cursor import entry_split, split_entry
from sharded_mix.mixing.slices import Split, Topology, reslice
from sharded_mix.mixing.state import fingerprint, validate_state
from sharded_mix.shards import Shard


@dataclass(frozen=True)
class ResumeTarget:
    """The run that resumes: its shards by id, where its ranks run, and the user's resume options."""

    shards: Mapping[str, Shard]
    topology: Topology
    on_data_change: str = "error"
    """``error``, ``restart`` or ``continue`` (``state.DATA_CHANGE_POLICIES``)."""
    restart: bool = False
    """``restart_data_on_resume``: every source starts over; the blend and stages keep their steps."""


@dataclass(frozen=True)
class Note:
    """A line for the log: its level (``logging.INFO``, ``logging.WARNING``) and text."""

    level: int
    message: str


def resume_state(saved: object, target: ResumeTarget) -> tuple[dict, list[Note]]:
    """The state to resume ``target`` from, in the current schema, and the notes that say what changed.

    Raises ``ValueError`` for a damaged or unreadable state, for changed data under ``on_data_change=error``,
    and for a world size that cannot split the checkpoint's samples evenly."""
    state, notes = validate_state(saved), []
    changes = data_changes(state, target.shards)
    if changes:
        state, message = apply_data_change(state, changes, target.shards, target.on_data_change)
        notes.append(Note(logging.WARNING, message))
    old, new = Topology(state["world_size"], state["nodes"]), target.topology
    if old != new:
        if old.nodes > 1 or new.nodes > 1:
            notes.append(
                Note(
                    logging.INFO,
                    f"resuming data on {new.describe()} (the checkpoint ran on {old.describe()}): the rest of each "
                    "epoch in progress is shared out among the nodes anew, without repeats or skips",
                )
            )
        state = resliced(state, new)
    if state["world_size"] != new.world_size:
        samples = samples_on(state, new.world_size)
        notes.append(
            Note(
                logging.INFO,
                f"resuming data on {new.world_size} ranks (the checkpoint ran on {state['world_size']}): "
                f"{state['samples']} samples per rank there are {samples} here, so every stage still starts at its "
                "step",
            )
        )
        state = dict(state, samples=samples, world_size=new.world_size)
    if target.restart:
        drawn = sum(entry["draws"] for entry in state["sources"].values())
        state = restarted(state)
        notes.append(
            Note(
                logging.WARNING,
                f"restart_data_on_resume: every source starts over from its first block (the checkpoint had drawn "
                f"{drawn:,} blocks of them); blocks already trained on come again. The blend and the stages keep "
                "their steps.",
            )
        )
    return state, notes


def set_aside_fingerprints(state: Mapping) -> dict[str, dict]:
    """The fingerprints of the state's set-aside sources, which a later checkpoint keeps for those the run does not
    read."""
    return {
        source: entry["fingerprint"] for source, entry in state.get("dropped", {}).items() if "fingerprint" in entry
    }


def samples_on(state: Mapping, world_size: int) -> int:
    """The checkpoint's per-rank sample count, on ``world_size`` ranks: the same global position, so stage
    boundaries stay at their steps when a run resumes on another number of ranks."""
    total = state["samples"] * state["world_size"]
    if total % world_size:
        raise ValueError(
            f"the checkpoint stopped after {state['samples']:,} samples on each of {state['world_size']} rank(s) "
            f"({total:,} in all), which {world_size} ranks cannot split evenly; resume on a number of ranks that "
            f"divides {total:,}, or from a checkpoint of another step."
        )
    return total // world_size


@dataclass(frozen=True)
class DataChange:
    """A source whose shard differs from the one the checkpoint read."""

    source: str
    path: str
    saved: str
    """What the checkpoint recorded (the fingerprint, or the blocks of an entry without one)."""
    now: str
    draws: int
    blocks: int


def data_changes(state: Mapping, shards: Mapping[str, Shard]) -> list[DataChange]:
    """Sources of the checkpoint (in the blend or set aside) whose shard in ``shards`` changed since it was saved.

    An entry with a fingerprint compares the content; an entry without one only the epoch size in blocks.
    """
    changes = []
    entries = [*state["sources"].items(), *state.get("dropped", {}).items()]
    for source, entry in entries:
        shard = shards.get(source)
        if shard is None:
            continue
        saved = entry.get("fingerprint")
        if saved is not None:
            now = fingerprint(shard)
            if saved["hash"] == now["hash"]:
                continue
            described = [
                f"{key} {saved.get(key, '?'):,} -> {now[key]:,}"
                if isinstance(saved.get(key), int)
                else f"{key} ? -> {now[key]:,}"
                for key in ("chunks", "tokens")
                if saved.get(key) != now[key]
            ]
            changes.append(
                DataChange(
                    source,
                    shard.path,
                    f"content {saved['hash']}",
                    f"content {now['hash']}" + (f" ({', '.join(described)})" if described else ""),
                    entry["draws"],
                    entry["blocks"],
                )
            )
            continue
        blocks_now = shard.blocks(entry.get("block_size") or state["block_size"])
        if blocks_now != entry["blocks"]:
            changes.append(
                DataChange(
                    source,
                    shard.path,
                    f"{entry['blocks']:,} blocks",
                    f"{blocks_now:,} blocks",
                    entry["draws"],
                    entry["blocks"],
                )
            )
    return changes


def apply_data_change(
    state: Mapping, changes: list[DataChange], shards: Mapping[str, Shard], policy: str
) -> tuple[dict, str]:
    """The state to resume from under ``on_data_change`` = ``policy``, and the WARNING that says what it costs.

    ``error`` raises; ``restart`` starts each changed source at its first block (blocks it gave may come
    again); ``continue`` keeps each one's draw count over the new content (its epoch in progress may skip or
    repeat blocks).
    """
    listing = "\n  ".join(
        f"{change.source} ({change.path}): {change.saved} in the checkpoint, {change.now} now; the checkpoint had "
        f"drawn {change.draws:,} blocks of it"
        for change in changes
    )
    if policy == "error":
        raise ValueError(
            f"on_data_change=error: {len(changes)} source(s) changed since the checkpoint was written:\n  {listing}\n"
            "Resuming would read the old positions over new data. Restore the shards the run trained on, resume from a "
            "checkpoint written with this data, or set on_data_change: restart (the changed sources start over: blocks "
            "they already gave are read again) or on_data_change: continue (they keep their positions over the new "
            "content: blocks of their epoch in progress may be skipped or repeated)."
        )
    resumed = _copied(state)
    for change in changes:
        group = "sources" if change.source in resumed["sources"] else "dropped"
        entry = resumed[group][change.source]
        entry["blocks"] = shards[change.source].blocks(entry.get("block_size") or state["block_size"])
        entry["fingerprint"] = fingerprint(shards[change.source])
        if policy == "restart":
            _start_over(entry)
    if policy == "restart":
        cost = "each starts over from its first block; the blocks it had given may be trained on again"
    else:
        cost = "each keeps its draw count over the new content; its epoch in progress may skip or repeat blocks"
    return (
        resumed,
        f"on_data_change={policy}: {len(changes)} source(s) changed since the checkpoint:\n  {listing}\n{cost}.",
    )


def _copied(state: Mapping) -> dict:
    """``state`` with its own copy of every source's entry."""
    copied = dict(state)
    for group in ("sources", "dropped"):
        copied[group] = {source: dict(entry) for source, entry in state.get(group, {}).items()}
    return copied


def _start_over(entry: dict) -> None:
    entry["draws"] = 0
    for key in ("pinned_order", "split"):
        entry.pop(key, None)


def restarted(state: Mapping) -> dict:
    """``state`` with every source back at its first block; the blend and stage positions (the step) are kept."""
    resumed = _copied(state)
    for group in ("sources", "dropped"):
        for entry in resumed[group].values():
            _start_over(entry)
    return resumed


def resliced(state: Mapping, topology: Topology) -> dict:
    """The state to resume on ``topology``: when the node layout changed, each source in the middle of an epoch
    (in the blend or set aside) has the rest of that epoch shared out among the new nodes (``slices.reslice``), so
    nothing is read twice or skipped. One node before and after needs nothing: the epoch is not sliced."""
    old = Topology(state["world_size"], state["nodes"])
    if old == topology or old.nodes == topology.nodes == 1:
        return dict(state)
    moved = dict(_copied(state), nodes=topology.nodes)
    for group in ("sources", "dropped"):
        for entry in moved[group].values():
            blocks = entry["blocks"]
            epoch, offset = divmod(entry["draws"], blocks)
            split = entry_split(entry["split"]) if "split" in entry else None
            if not offset:
                entry.pop("split", None)
                continue
            if split is None or split.epoch != epoch:
                split = Split.whole(old, epoch, blocks)
            entry["split"] = split_entry(reslice(split, old, entry["draws"], topology, blocks))
    return moved
