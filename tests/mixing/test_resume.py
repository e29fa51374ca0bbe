"""The checkpoint's data state without a loader: one migration chain to the current schema, and the resume rules
(``resume_state``) on states built by hand."""

import copy
import logging

import pytest

from sharded_mix.mixing.resume import ResumeTarget, resume_state, set_aside_fingerprints
from sharded_mix.mixing.slices import Split, Topology, reslice
from sharded_mix.mixing.state import (
    MIGRATIONS,
    READABLE_VERSIONS,
    STATE_VERSION,
    fingerprint,
    migrate,
    validate_state,
)
from sharded_mix.shards import Shard

BLOCK = 16
BIG_SEED = 2**40 + 42  # its low 32 bits are 42


def shard(shard_id: str, blocks: int, content: str | None = None) -> Shard:
    tokens = blocks * BLOCK
    return Shard(shard_id, "main", f"/x/{shard_id}", tokens, 1, (tokens,), "int32", fingerprint=content or shard_id)


SHARDS = {"a": shard("a", 500), "b": shard("b", 50), "c": shard("c", 40)}


def entry(source: str, draws: int, **extra) -> dict:
    blocks = SHARDS[source].blocks(BLOCK)
    return {
        "draws": draws,
        "epoch": draws // blocks,
        "position": draws % blocks,
        "blocks": blocks,
        "block_size": BLOCK,
        "tokens": draws * BLOCK,
        "path": SHARDS[source].path,
        "fingerprint": fingerprint(SHARDS[source]),
        **extra,
    }


DRAWS = {"a": 120, "b": 80, "c": 10}


def current(**changes) -> dict:
    """A state as the loader writes it: a and b in the blend (a in epoch 0, b in epoch 1), c set aside."""
    state = {
        "version": STATE_VERSION,
        "stage": "default",
        "samples": 100,
        "taken": {"a": 60, "b": 40},
        "weights": {"a": 0.6, "b": 0.4},
        "seed": 42,
        "shuffle_window": 4,
        "block_size": BLOCK,
        "sources": {"a": entry("a", 120), "b": entry("b", 80)},
        "dropped": {"c": entry("c", 10, pinned_order={"epoch": 0, "seed": 7, "shuffle_window": 4})},
        "batch_size": 10,
        "world_size": 2,
        "nodes": 1,
        "consumed": {source: {"samples": draws, "tokens": draws * (BLOCK - 1)} for source, draws in DRAWS.items()},
    }
    state.update(changes)
    return state


def version_1() -> dict:
    """A state as version 1 wrote it: no stage, nodes, shuffle window or fingerprints, no block size per source, its
    pins by seed (the v2 order), and a seed past 32 bits of which it used the low 32."""
    state = current(version=1, seed=BIG_SEED)
    for key in ("stage", "nodes", "shuffle_window", "consumed"):
        del state[key]
    for group in ("sources", "dropped"):
        for item in state[group].values():
            del item["fingerprint"], item["block_size"]
            item.pop("pinned_order", None)
    state["sources"]["a"]["pinned_seed"] = {"epoch": 0, "seed": 2**33 + 5}
    state["dropped"]["c"]["pinned_seed"] = {"epoch": 0, "seed": 9}
    return state


def target(world_size: int = 2, nodes: int = 1, shards=SHARDS, **options) -> ResumeTarget:
    return ResumeTarget(shards, Topology(world_size, nodes), **options)


# --- the migration chain


def test_the_chain_has_one_step_per_older_version():
    assert READABLE_VERSIONS == (1, 2, 3, 4, 5, 6)
    assert sorted(MIGRATIONS) == list(range(1, STATE_VERSION))
    state = version_1()
    for version in range(1, STATE_VERSION):
        before = copy.deepcopy(state)
        after = MIGRATIONS[version](state)
        assert after["version"] == version + 1
        assert state == before  # the step left its input alone
        state = after


def test_a_version_1_state_migrates_to_the_current_schema():
    saved = version_1()
    untouched = copy.deepcopy(saved)
    state = migrate(saved)
    assert saved == untouched
    assert state["version"] == STATE_VERSION
    assert state["seed"] == 42  # the low 32 bits its orders used
    assert state["shuffle_window"] == 0  # the v2 order (orders.LEGACY_WINDOW)
    assert state["nodes"] == 1 and "stage" not in state  # no stage name: it resumes the stage that has its blend
    assert state["sources"]["a"]["block_size"] == BLOCK and "block_size" not in state["dropped"]["c"]
    assert state["sources"]["a"]["pinned_order"] == {"epoch": 0, "seed": 5, "shuffle_window": 0}
    assert state["dropped"]["c"]["pinned_order"] == {"epoch": 0, "seed": 9, "shuffle_window": 0}
    assert "pinned_order" not in state["sources"]["b"]
    assert not [item for group in ("sources", "dropped") for item in state[group].values() if "pinned_seed" in item]
    assert validate_state(saved) == state


def test_version_3_seeds_lose_their_high_bits_and_version_4_seeds_keep_them():
    v4 = current(version=4, seed=BIG_SEED)
    del v4["nodes"]
    v4["sources"]["a"]["pinned_order"] = {"epoch": 0, "seed": BIG_SEED + 1, "shuffle_window": 2}
    v3 = copy.deepcopy(v4) | {"version": 3}
    assert migrate(v4)["seed"] == BIG_SEED and migrate(v4)["nodes"] == 1
    assert migrate(v4)["sources"]["a"]["pinned_order"]["seed"] == BIG_SEED + 1
    assert migrate(v3)["seed"] == 42 and migrate(v3)["shuffle_window"] == 4
    assert migrate(v3)["sources"]["a"]["pinned_order"] == {"epoch": 0, "seed": 43, "shuffle_window": 2}


def test_version_5_counts_each_sources_draws_as_what_it_gave_the_run():
    v5 = current(version=5)
    del v5["consumed"]
    state = migrate(v5)
    assert state["consumed"] == current()["consumed"]  # trained tokens: block_size - 1 a sample
    assert validate_state(v5) == current()


def test_a_current_state_is_only_checked():
    saved = current()
    assert migrate(saved) == saved and migrate(saved) is not saved
    assert validate_state(saved) == saved


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.update(version=STATE_VERSION + 1), r"state version 7 is not one of \(1, 2, 3, 4, 5, 6\)"),
        (lambda s: s.update(version=0), r"state version 0 is not one of"),
        (lambda s: s.update(seed="x"), r"seed is 'x', expected a whole number >= 0"),
        (lambda s: s["sources"].update(a=[]), r"sources\['a'\] is \[\], expected a mapping with draws and blocks"),
        (
            lambda s: s["sources"]["a"].update(pinned_seed={"epoch": 0, "seed": "x"}),
            r"sources\['a'\]\.pinned_seed\.seed is 'x'",
        ),
        (lambda s: s["dropped"]["c"].update(pinned_seed=3), r"dropped\['c'\]\.pinned_seed is 3, expected a mapping"),
    ],
)
def test_a_state_that_cannot_be_migrated_is_refused_naming_the_field(damage, message):
    saved = version_1()
    damage(saved)
    with pytest.raises(ValueError, match=message):
        migrate(saved)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.update(shuffle_window=0), r"shuffle_window is 0, expected a whole number >= 1"),
        (lambda s: s.pop("nodes"), r"nodes is 'missing', expected a whole number >= 1"),
        (lambda s: s.pop("shuffle_window"), r"shuffle_window is 'missing'"),
        (lambda s: s["sources"]["a"].update(draws=-1), r"sources\['a'\]\.draws is -1"),
        (
            lambda s: s["dropped"]["c"].update(pinned_order={"epoch": 0}),
            r"dropped\['c'\]\.pinned_order\.seed is 'missing'",
        ),
        (lambda s: s["sources"]["b"].update(fingerprint="abc"), r"sources\['b'\]\.fingerprint is 'abc'"),
    ],
)
def test_a_current_state_is_checked_against_the_current_schema(damage, message):
    """A saved window is one a run used (>= 1); 0, the v2 order, is only what the migration writes."""
    saved = current()
    damage(saved)
    with pytest.raises(ValueError, match=message):
        validate_state(saved)


# --- the resume rules


def test_the_same_run_resumes_the_state_as_saved_with_no_notes():
    saved = current()
    state, notes = resume_state(saved, target())
    assert state == saved and notes == []
    assert set_aside_fingerprints(state) == {"c": fingerprint(SHARDS["c"])}


def test_an_old_state_resumes_migrated():
    state, notes = resume_state(version_1(), target())
    assert state == migrate(version_1()) and notes == []
    assert set_aside_fingerprints(state) == {}  # version 1 recorded none


def changed_b(blocks: int = 50) -> dict:
    return {**SHARDS, "b": shard("b", blocks, content="new")}


def test_changed_data_under_on_data_change_error_is_refused():
    with pytest.raises(ValueError, match=r"(?s)on_data_change=error: 1 source\(s\) changed.*b \(/x/b\): content b in "):
        resume_state(current(), target(shards=changed_b()))


@pytest.mark.parametrize("policy", ["restart", "continue"])
def test_changed_data_restarts_or_continues_the_changed_source_with_a_warning(policy):
    state, notes = resume_state(current(), target(shards=changed_b(100), on_data_change=policy))
    b = state["sources"]["b"]
    assert b["blocks"] == 100 and b["fingerprint"] == fingerprint(changed_b(100)["b"])
    assert b["draws"] == (0 if policy == "restart" else 80)
    assert state["sources"]["a"] == current()["sources"]["a"]
    (note,) = notes
    assert note.level == logging.WARNING
    assert note.message.startswith(
        f"on_data_change={policy}: 1 source(s) changed since the checkpoint:\n  b (/x/b): content b in the checkpoint, "
        "content new (tokens 800 -> 1,600) now; the checkpoint had drawn 80 blocks of it\n"
    )


def test_an_entry_without_a_fingerprint_is_compared_by_its_blocks():
    saved = current()
    del saved["sources"]["b"]["fingerprint"]
    assert resume_state(saved, target(shards=changed_b(50)))[1] == []  # new content, same size: not seen
    state, (note,) = resume_state(saved, target(shards=changed_b(60), on_data_change="continue"))
    assert "b (/x/b): 50 blocks in the checkpoint, 60 blocks now" in note.message
    assert state["sources"]["b"]["fingerprint"] == fingerprint(changed_b(60)["b"])


def test_a_set_aside_source_that_changed_counts_and_keeps_its_new_fingerprint():
    shards = {**SHARDS, "c": shard("c", 40, content="new")}
    state, (note,) = resume_state(current(), target(shards=shards, on_data_change="restart"))
    assert "c (/x/c): content c in the checkpoint" in note.message
    assert state["dropped"]["c"]["draws"] == 0 and "pinned_order" not in state["dropped"]["c"]
    assert set_aside_fingerprints(state) == {"c": fingerprint(shards["c"])}


def test_a_source_the_run_does_not_read_is_not_compared():
    state, notes = resume_state(current(), target(shards={"a": SHARDS["a"]}))
    assert notes == [] and set_aside_fingerprints(state) == {"c": fingerprint(SHARDS["c"])}


def test_another_node_layout_reslices_each_epoch_in_progress():
    saved = current(world_size=4, nodes=2, samples=50)
    state, notes = resume_state(saved, target(world_size=2, nodes=1))
    assert [note.message for note in notes] == [
        "resuming data on 2 rank(s) on 1 node(s) (the checkpoint ran on 4 rank(s) on 2 node(s)): the rest of each "
        "epoch in progress is shared out among the nodes anew, without repeats or skips",
        "resuming data on 2 ranks (the checkpoint ran on 4): 50 samples per rank there are 100 here, so every stage "
        "still starts at its step",
    ]
    assert [note.level for note in notes] == [logging.INFO, logging.INFO]
    assert (state["nodes"], state["world_size"], state["samples"]) == (1, 2, 100)
    old = Topology(4, 2)
    in_progress = [("sources", "a", 120, 500), ("sources", "b", 80, 50), ("dropped", "c", 10, 40)]
    for group, source, draws, blocks in in_progress:
        split = reslice(Split.whole(old, draws // blocks, blocks), old, draws, Topology(2, 1), blocks)
        assert state[group][source]["split"] == {
            "epoch": split.epoch,
            "world_size": 4,
            "nodes": 2,
            "start": split.start,
            "intervals": [list(interval) for interval in split.intervals],
        }
    assert "split" not in saved["sources"]["a"]  # the saved state is left alone


def test_more_ranks_on_one_node_rescale_the_samples_without_reslicing():
    state, notes = resume_state(current(), target(world_size=4))
    assert [note.message for note in notes] == [
        "resuming data on 4 ranks (the checkpoint ran on 2): 100 samples per rank there are 50 here, so every stage "
        "still starts at its step"
    ]
    assert (state["samples"], state["world_size"], state["nodes"]) == (50, 4, 1)
    assert state["sources"] == current()["sources"] and state["taken"] == current()["taken"]


def test_a_world_size_that_cannot_split_the_samples_is_refused():
    with pytest.raises(ValueError, match=r"\(200 in all\), which 3 ranks cannot split evenly"):
        resume_state(current(), target(world_size=3))


def test_restart_data_on_resume_starts_every_source_over_and_keeps_the_steps():
    state, (note,) = resume_state(current(), target(restart=True))
    assert note.level == logging.WARNING
    assert note.message == (
        "restart_data_on_resume: every source starts over from its first block (the checkpoint had drawn 200 blocks "
        "of them); blocks already trained on come again. The blend and the stages keep their steps."
    )
    assert [item["draws"] for group in ("sources", "dropped") for item in state[group].values()] == [0, 0, 0]
    assert "pinned_order" not in state["dropped"]["c"]
    assert (state["samples"], state["taken"], state["weights"]) == (100, {"a": 60, "b": 40}, {"a": 0.6, "b": 0.4})


def test_the_rules_apply_in_turn_and_their_notes_come_in_that_order():
    state, notes = resume_state(
        current(world_size=4, nodes=2, samples=50),
        target(world_size=8, nodes=4, shards=changed_b(60), on_data_change="continue", restart=True),
    )
    assert [(note.level, note.message.split(":")[0]) for note in notes] == [
        (logging.WARNING, "on_data_change=continue"),
        (logging.INFO, "resuming data on 8 rank(s) on 4 node(s) (the checkpoint ran on 4 rank(s) on 2 node(s))"),
        (logging.INFO, "resuming data on 8 ranks (the checkpoint ran on 4)"),
        (logging.WARNING, "restart_data_on_resume"),
    ]
    assert "drawn 200 blocks" in notes[-1].message  # counted after the changed source kept its 80 draws
    assert state["samples"] == 25 and not [item for item in state["sources"].values() if "split" in item]


def test_a_loader_state_resumes_as_saved(scenario):
    from conftest import make, take

    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 3)
    saved = loader.state_dict()
    shards = loader.dataset.shards
    assert resume_state(saved, ResumeTarget(shards, Topology(1))) == (saved, [])
    state, notes = resume_state(saved, ResumeTarget(shards, Topology(2)))
    assert state["samples"] == 15 and len(notes) == 1
