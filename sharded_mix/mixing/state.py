"""The data state a checkpoint holds: its schema, one migration chain from every version written, the check (pure).

``MixtureLoader.state_dict`` writes it (``cursor.Cursor.state`` plus the run's batch size, world
size, nodes, and each source's path and fingerprint); LitGPT saves it as ``train_dataloader`` in every
checkpoint. A saved state of any readable version is checked as far as its migration needs, carried
through the chain ``migrate`` (one small step per version) to the current version, and checked against
the current schema; nothing downstream knows older versions. Nothing here does I/O: the shards'
fingerprints come from discovery. What a resume does with the state is ``resume.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from sharded_mix.mixing.orders import LEGACY_WINDOW
from sharded_mix.shards import Shard

STATE_VERSION = 6
"""The current schema. Its ``shuffle_window`` (and a pin's) is 0 for the order of versions 1 and 2, which only the
migration writes; an entry without a ``fingerprint`` is compared by its number of blocks; ``consumed`` counts each
source's samples and trained tokens over all ranks since the run's first step."""
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


def _groups(state: Mapping) -> list[tuple[str, Mapping]]:
    """``(field name, entry)`` of every source, in the blend and set aside."""
    return [
        *((f"sources[{source!r}]", entry) for source, entry in _mapping(state, "sources").items()),
        *((f"dropped[{source!r}]", entry) for source, entry in _mapping(state, "dropped", required=False).items()),
    ]


def _check_pin(entry: Mapping, key: str, fields: tuple[str, ...], where: str) -> None:
    if key in entry:
        pin = entry[key]
        if not isinstance(pin, Mapping):
            raise _fault(f"{where}.{key}", pin, f"a mapping with {', '.join(fields)}")
        for name in fields:
            _whole(pin, name, f"{where}.{key}.")


# The saved state, as any version wrote it: what the migration reads, so that it can carry it over safely.


def _check_migratable(state: object) -> None:
    if not isinstance(state, Mapping) or not state:
        raise ValueError(
            f"train_dataloader state in the checkpoint is {'empty' if isinstance(state, Mapping) else repr(state)}: "
            "the checkpoint was written without a sharded_mix data position, so resuming would read every source from "
            f"its first block again. {WAY_OUT}"
        )
    if state.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"train_dataloader state version {state.get('version')!r} is not one of {READABLE_VERSIONS}; it was not "
            "written by this sharded_mix (a newer one wrote it: upgrade sharded_mix, or resume from an earlier "
            "checkpoint)."
        )
    _whole(state, "seed", "")
    _whole(state, "block_size", "", minimum=2)
    _whole(state, "shuffle_window", "", minimum=1, required=False)  # every version that saved one used >= 1
    for where, entry in _groups(state):
        if not isinstance(entry, Mapping):
            raise _fault(where, entry, "a mapping with draws and blocks")
        _check_pin(entry, "pinned_order", ("epoch", "seed", "shuffle_window"), where)
        _check_pin(entry, "pinned_seed", ("epoch", "seed"), where)


# The migration chain: step n carries a version-n state to version n + 1, without changing the input.


def _entries(state: Mapping, change: Callable[[dict], dict]) -> dict:
    """``sources`` and ``dropped`` of ``state`` with ``change`` applied to a copy of every entry."""
    return {
        group: {source: change(dict(entry)) for source, entry in state.get(group, {}).items()}
        for group in ("sources", "dropped")
    }


def _v1_to_v2(state: Mapping) -> dict:
    """Version 2 (data stages) records each source's block size: in version 1 a source of the blend drew blocks of
    the state's size, and a set-aside one's size was not recorded."""
    sources = {source: {"block_size": state["block_size"], **entry} for source, entry in state["sources"].items()}
    return {**state, "version": 2, "sources": sources}


def _v2_to_v3(state: Mapping) -> dict:
    """Version 3 orders epochs in shuffle windows: a version 2 state ran the materialised chunk-local order
    (window 0, ``orders.LegacyOrder``), and its pins name that order by seed (``pinned_seed``)."""

    def pin_order(entry: dict) -> dict:
        pin = entry.pop("pinned_seed", None)
        if pin is not None:
            entry.setdefault(
                "pinned_order", {"epoch": pin["epoch"], "seed": pin["seed"], "shuffle_window": LEGACY_WINDOW}
            )
        return entry

    window = state.get("shuffle_window", LEGACY_WINDOW)
    return {**state, "version": 3, "shuffle_window": window, **_entries(state, pin_order)}


def _v3_to_v4(state: Mapping) -> dict:
    """Version 4 orders epochs with all 64 bits of the seed (and adds fingerprints, which a version 3 state cannot
    have): the seeds of a version 3 state become the low 32 bits its orders used."""

    def low_bits(entry: dict) -> dict:
        pin = entry.get("pinned_order")
        if pin is not None:
            entry["pinned_order"] = dict(pin, seed=pin["seed"] & SEED_BITS_BEFORE_V4)
        return entry

    return {**state, "version": 4, "seed": state["seed"] & SEED_BITS_BEFORE_V4, **_entries(state, low_bits)}


def _v4_to_v5(state: Mapping) -> dict:
    """Version 5 records the nodes (each reads its slice of every epoch, ``slices.py``): earlier runs ran on one."""
    return {**state, "version": 5, "nodes": state.get("nodes", 1)}


def _v5_to_v6(state: Mapping) -> dict:
    """Version 6 counts what each source gave the run (``consumed``). Earlier states count draws only: a source's
    draws are its samples since the run's first step unless a block size change or a restart moved its position."""
    consumed = {}
    for group in ("sources", "dropped"):
        for source, entry in state.get(group, {}).items():
            draws, block_size = entry.get("draws"), entry.get("block_size") or state["block_size"]
            if isinstance(draws, int) and isinstance(block_size, int):  # else the current schema's check names it
                consumed[source] = {"samples": draws, "tokens": draws * (block_size - 1)}
    return {**state, "version": 6, "consumed": consumed}


MIGRATIONS: dict[int, Callable[[Mapping], dict]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}
"""Version n -> the step to version n + 1."""
READABLE_VERSIONS = (*MIGRATIONS, STATE_VERSION)


def migrate(saved: object) -> dict:
    """``saved``, of any readable version, in the current schema (a new dict; ``saved`` is not changed). Raises the
    ``ValueError`` of ``validate_state`` when ``saved`` cannot be migrated."""
    _check_migratable(saved)
    state = dict(saved)
    while state["version"] != STATE_VERSION:
        state = MIGRATIONS[state["version"]](state)
    return state


# The current schema.


def _check_entry(entry: Mapping, where: str) -> None:
    _whole(entry, "draws", f"{where}.")
    _whole(entry, "blocks", f"{where}.", minimum=1)
    _whole(entry, "block_size", f"{where}.", minimum=2, required=False)
    _check_pin(entry, "pinned_order", ("epoch", "seed", "shuffle_window"), where)
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


def _check_current(state: Mapping) -> None:
    _whole(state, "samples", "")
    _whole(state, "seed", "")
    _whole(state, "block_size", "", minimum=2)
    _whole(state, "world_size", "", minimum=1)
    _whole(state, "nodes", "", minimum=1)
    if state["world_size"] % state["nodes"]:
        raise _fault("nodes", state["nodes"], f"a divisor of world_size {state['world_size']}")
    _whole(state, "batch_size", "", minimum=1, required=False)
    _whole(state, "shuffle_window", "")
    sources, taken, weights = _mapping(state, "sources"), _mapping(state, "taken"), _mapping(state, "weights")
    if not sources:
        raise _fault("sources", dict(sources), "one entry per source of the blend")
    for where, entry in _groups(state):
        _check_entry(entry, where)
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
    for source, counts in _mapping(state, "consumed").items():
        if not isinstance(counts, Mapping):
            raise _fault(f"consumed[{source!r}]", counts, "{samples, tokens}")
        _whole(counts, "samples", f"consumed[{source!r}].")
        _whole(counts, "tokens", f"consumed[{source!r}].")
    if "stage" in state and not isinstance(state["stage"], str):
        raise _fault("stage", state["stage"], "a stage name")
    stop = state.get("stop")
    if stop is not None and (not isinstance(stop, Mapping) or not isinstance(stop.get("from_step", 0), int)):
        raise _fault("stop", stop, "the stop rule's record: {at_step, after_steps, from_step, run}")


def validate_state(saved: object) -> dict:
    """A checkpoint's data state in the current schema: checked as far as its migration needs, migrated, and checked
    against the current schema; one ``ValueError`` naming the first faulty field, if any."""
    state = migrate(saved)
    _check_current(state)
    return state


def fingerprint(shard: Shard) -> dict:
    """What identifies a shard's content in the state: its content hash (``Shard.fingerprint``), chunks and tokens."""
    return {"hash": shard.fingerprint, "chunks": shard.chunks, "tokens": shard.tokens}
