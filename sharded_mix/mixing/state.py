"""The data state a checkpoint holds: its schema, checked on load, and what to do when the data changed (pure).

``MixtureLoader.state_dict`` writes it (``cursor.Cursor.state`` plus the run's batch size, world
size, and each source's path and fingerprint); LitGPT saves it as ``train_dataloader`` in every
checkpoint. Nothing here does I/O: the shards' fingerprints come from discovery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sharded_mix.mixing.cursor import entry_split, split_entry
from sharded_mix.mixing.slices import Split, Topology, reslice
from sharded_mix.shards import Shard

STATE_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
"""Version 5 records the number of nodes (each reads its slice of every epoch, ``slices.py``) and the split
of an epoch that a resume on another topology re-sliced; earlier versions ran on one node. Version 4
adds a fingerprint per source and orders epochs with all 64 bits of the seed; version 3 ordered them by
shuffle windows (``orders.py``); an epoch a version 1 or 2 checkpoint started finishes in the order of
those versions."""
SEED_BITS_BEFORE_V4 = 0xFFFFFFFF
"""Versions 1 to 3 ordered epochs with the low 32 bits of the seed."""

DATA_CHANGE_POLICIES: tuple[str, ...] = ("error", "restart", "continue")

WAY_OUT = (
    "The checkpoint's data state is damaged: resume from an earlier checkpoint (litgpt pretrain --resume "
    "<out_dir>/step-<N>/lit_model.pth), or start the data over by training from that checkpoint's weights "
    "(initial_checkpoint_dir) without resuming."
)


def _fault(field: str, value: object, expected: str) -> ValueError:
    return ValueError(f"train_dataloader state in the checkpoint: {field} is {value!r}, expected {expected}. {WAY_OUT}")


def _whole(state: Mapping, key: str, where: str, minimum: int = 0, required: bool = True) -> None:
    if key not in state:
        if required:
            raise _fault(f"{where}{key}", "missing", f"a whole number >= {minimum}")
        return
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fault(f"{where}{key}", value, f"a whole number >= {minimum}")


def _mapping(state: Mapping, key: str, required: bool = True) -> Mapping:
    value = state.get(key, None if required else {})
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise _fault(key, "missing" if key not in state else value, "a mapping from shard id to values")
    return value


def _check_entry(entry: object, where: str) -> None:
    if not isinstance(entry, Mapping):
        raise _fault(where, entry, "a mapping with draws and blocks")
    _whole(entry, "draws", f"{where}.")
    _whole(entry, "blocks", f"{where}.", minimum=1)
    _whole(entry, "block_size", f"{where}.", minimum=2, required=False)
    for key, fields in (("pinned_order", ("epoch", "seed", "shuffle_window")), ("pinned_seed", ("epoch", "seed"))):
        if key in entry:
            pin = entry[key]
            if not isinstance(pin, Mapping):
                raise _fault(f"{where}.{key}", pin, f"a mapping with {', '.join(fields)}")
            for name in fields:
                _whole(pin, name, f"{where}.{key}.")
    if "split" in entry:
        _check_split(entry["split"], entry["blocks"], f"{where}.split")
    fingerprint = entry.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, Mapping) and isinstance(fingerprint.get("hash"), str)):
        raise _fault(f"{where}.fingerprint", fingerprint, "a mapping with the shard's content hash, chunks and tokens")


def _check_split(split: object, blocks: int, where: str) -> None:
    if not isinstance(split, Mapping):
        raise _fault(where, split, "a mapping with epoch, world_size, nodes, start and intervals")
    for name in ("epoch", "start"):
        _whole(split, name, f"{where}.")
    for name in ("world_size", "nodes"):
        _whole(split, name, f"{where}.", minimum=1)
    if split["world_size"] % split["nodes"]:
        raise _fault(f"{where}.nodes", split["nodes"], f"a divisor of its world_size {split['world_size']}")
    intervals = split.get("intervals")
    ordered = isinstance(intervals, list) and all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        and 0 <= pair[0] < pair[1] <= blocks
        for pair in intervals
    )
    if not ordered or sum(hi - lo for lo, hi in intervals) != (split["epoch"] + 1) * blocks - split["start"]:
        raise _fault(
            f"{where}.intervals",
            intervals,
            f"[lo, hi] pairs inside the epoch's {blocks} blocks covering the draws left in it",
        )


def validate_state(state: object) -> None:
    """One ``ValueError`` naming the first faulty field of a checkpoint's data state, if any."""
    if not isinstance(state, Mapping) or not state:
        raise ValueError(
            f"train_dataloader state in the checkpoint is {'empty' if isinstance(state, Mapping) else repr(state)}: the "
            f"checkpoint was written without a sharded_mix data position, so resuming would read every source from its "
            f"first block again. {WAY_OUT}"
        )
    if state.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"train_dataloader state version {state.get('version')!r} is not one of {READABLE_VERSIONS}; "
            "it was not written by this sharded_mix (a newer one wrote it: upgrade sharded_mix, or resume from an earlier checkpoint)."
        )
    _whole(state, "samples", "")
    _whole(state, "seed", "")
    _whole(state, "block_size", "", minimum=2)
    _whole(state, "world_size", "", minimum=1)
    _whole(state, "nodes", "", minimum=1, required=False)
    if state["world_size"] % state.get("nodes", 1):
        raise _fault("nodes", state["nodes"], f"a divisor of world_size {state['world_size']}")
    _whole(state, "batch_size", "", minimum=1, required=False)
    _whole(state, "shuffle_window", "", minimum=1, required=False)
    sources, taken, weights = _mapping(state, "sources"), _mapping(state, "taken"), _mapping(state, "weights")
    if not sources:
        raise _fault("sources", dict(sources), "one entry per source of the blend")
    for source, entry in sources.items():
        _check_entry(entry, f"sources[{source!r}]")
    for source, entry in _mapping(state, "dropped", required=False).items():
        _check_entry(entry, f"dropped[{source!r}]")
    if set(taken) != set(sources) or set(weights) != set(sources):
        raise _fault(
            "taken / weights", f"{sorted(taken)} / {sorted(weights)}", f"the ids of sources, {sorted(sources)}"
        )
    for source in sources:
        _whole(taken, source, "taken.")
        weight = weights[source]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise _fault(f"weights[{source!r}]", weight, "a finite number > 0")
    if sum(taken.values()) > state["samples"] * state["world_size"]:
        raise _fault(
            "taken",
            dict(taken),
            f"counts summing to at most samples × world_size ({state['samples'] * state['world_size']})",
        )
    if "stage" in state and not isinstance(state["stage"], str):
        raise _fault("stage", state["stage"], "a stage name")
    stop = state.get("stop")
    if stop is not None and (not isinstance(stop, Mapping) or not isinstance(stop.get("from_step", 0), int)):
        raise _fault("stop", stop, "the stop rule's record: {at_step, after_steps, from_step, run}")


def samples_on(state: Mapping, world_size: int) -> int:
    """The checkpoint's per-rank sample count, on ``world_size`` ranks: the same global position, so stage
    boundaries stay at their steps when a run resumes on another number of ranks."""
    total = state["samples"] * state["world_size"]
    if total % world_size:
        raise ValueError(
            f"the checkpoint stopped after {state['samples']:,} samples on each of {state['world_size']} rank(s) "
            f"({total:,} in all), which {world_size} ranks cannot split evenly; resume on a number of ranks that divides "
            f"{total:,}, or from a checkpoint of another step."
        )
    return total // world_size


def fingerprint(shard: Shard) -> dict:
    """What identifies a shard's content in the state: its content hash (``Shard.fingerprint``), chunks and tokens."""
    return {"hash": shard.fingerprint, "chunks": shard.chunks, "tokens": shard.tokens}


@dataclass(frozen=True)
class DataChange:
    """A source whose shard differs from the one the checkpoint read."""

    source: str
    path: str
    saved: str
    """What the checkpoint recorded (fingerprint, or blocks before version 4)."""
    now: str
    draws: int
    blocks: int


def data_changes(state: Mapping, shards: Mapping[str, Shard]) -> list[DataChange]:
    """Sources of the checkpoint (in the blend or set aside) whose shard in ``shards`` changed since it was saved.

    Version 4 compares content fingerprints; older states only the epoch size in blocks.
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
        f"{change.source} ({change.path}): {change.saved} in the checkpoint, {change.now} now; the checkpoint had drawn "
        f"{change.draws:,} blocks of it"
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
    resumed = dict(state)
    for group in ("sources", "dropped"):
        resumed[group] = {source: dict(entry) for source, entry in state.get(group, {}).items()}
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


def _start_over(entry: dict) -> None:
    entry["draws"] = 0
    for key in ("pinned_order", "pinned_seed", "split"):
        entry.pop(key, None)


def restarted(state: Mapping) -> dict:
    """``state`` with every source back at its first block; the blend and stage positions (the step) are kept."""
    resumed = dict(state)
    for group in ("sources", "dropped"):
        resumed[group] = {source: dict(entry) for source, entry in state.get(group, {}).items()}
        for entry in resumed[group].values():
            _start_over(entry)
    return resumed


def with_full_seeds(state: Mapping) -> Mapping:
    """A state of versions 1 to 3 with its seeds as those versions used them (low 32 bits), so an epoch they
    started keeps its order; from version 4 seeds are used whole."""
    if state["version"] >= 4:
        return state
    upgraded = dict(state, seed=state["seed"] & SEED_BITS_BEFORE_V4)
    for group in ("sources", "dropped"):
        upgraded[group] = {
            source: {
                key: (
                    dict(value, seed=value["seed"] & SEED_BITS_BEFORE_V4)
                    if key in ("pinned_order", "pinned_seed")
                    else value
                )
                for key, value in entry.items()
            }
            for source, entry in state.get(group, {}).items()
        }
    return upgraded


def state_topology(state: Mapping) -> Topology:
    """The topology a checkpoint ran on (before version 5: one node)."""
    return Topology(state["world_size"], state.get("nodes", 1))


def resliced(state: Mapping, topology: Topology) -> Mapping:
    """The state to resume on ``topology``: when the node layout changed, each source in the middle of an epoch
    (in the blend or set aside) has the rest of that epoch shared out among the new nodes (``slices.reslice``), so
    nothing is read twice or skipped. One node before and after needs nothing: the epoch is not sliced."""
    old = state_topology(state)
    if old == topology or old.nodes == topology.nodes == 1:
        return state
    moved = dict(state, nodes=topology.nodes)
    for group in ("sources", "dropped"):
        moved[group] = {source: dict(entry) for source, entry in state.get(group, {}).items()}
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
