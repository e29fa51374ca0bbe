"""Resuming across orderings: checkpoints of state version 2 (materialised orders) and a changed shuffle window."""

import copy
import logging

import pytest
from conftest import BLOCK, block_ids, make, take

from sharded_mix.mixing.orders import LEGACY_WINDOW, Ordering, epoch_order
from sharded_mix.mixing.state import STATE_VERSION

WEIGHTS = "main/1:0.6,m1:0.4"
BLOCKS = {"main/1": 1206, "m1": 181}
SOURCE_IDS = {1: "main/1", 2: "m1"}


def as_version_2(state: dict) -> dict:
    """A version-3 state as sharded_mix wrote it before shuffle windows (its epochs were ordered the v2 way)."""
    old = copy.deepcopy(state)
    old["version"] = 2
    del old["shuffle_window"]
    for entry in [*old["sources"].values(), *old["dropped"].values()]:
        pin = entry.pop("pinned_order", None)
        if pin is not None:
            entry["pinned_seed"] = {"epoch": pin["epoch"], "seed": pin["seed"]}
    return old


def offsets_by_source(ids) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for source, offset in ids:
        found.setdefault(SOURCE_IDS[source], []).append(offset)
    return found


def expected(data, shard_id: str, orders, start: int, count: int) -> list[int]:
    """Offsets of draws ``start .. start + count`` of a source whose epoch e is ordered by ``orders[e]``."""
    (shard,) = [shard for shard in data.train_mixture.shards if shard.id == shard_id]
    chunk_blocks = [tokens // BLOCK for tokens in shard.chunk_tokens]
    blocks = BLOCKS[shard_id]
    built = {}
    offsets = []
    for draw in range(start, start + count):
        epoch, position = divmod(draw, blocks)
        if epoch not in built:
            built[epoch] = epoch_order(chunk_blocks, orders[epoch], shard_id, epoch)
        offsets.append(built[epoch].block(position) * BLOCK)
    return offsets


def test_a_version_2_checkpoint_finishes_its_epochs_in_the_v2_order_then_uses_windows(scenario, caplog):
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 25)  # m1 at draw 100 of 181, main/1 at 150 of 1,206
    v2 = as_version_2(first.state_dict())
    data = make(scenario, batch_size=10, literal_weights_str=WEIGHTS)
    resumed = data.train_dataloader()
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        resumed.load_state_dict(v2)
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    ids = block_ids(take(resumed, 30))
    legacy, windowed = Ordering(42, LEGACY_WINDOW), Ordering(42, 4)
    after = offsets_by_source(ids)
    assert after["m1"] == expected(
        data, "m1", [legacy, windowed], 100, 120
    )  # 81 in the v2 order, then epoch 1 windowed
    assert after["main/1"] == expected(data, "main/1", [legacy], 150, 180)
    assert after["m1"][81:] != expected(data, "m1", [legacy, legacy], 100, 120)[81:]
    # The blend itself continues exactly: the same sources, sample for sample, as a run that never stopped.
    reference = block_ids(take(make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader(), 55))[250:]
    assert [source for source, _ in ids] == [source for source, _ in reference]
    assert "the checkpoint ran with seed 42, the order of state version 2" in caplog.text


@pytest.mark.parametrize("workers_after", [0, 2])
def test_the_v2_order_survives_a_save_and_resume_in_the_current_version(scenario, workers_after):
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 25)
    v2 = as_version_2(first.state_dict())
    never_stopped = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    never_stopped.load_state_dict(v2)
    reference = block_ids(take(never_stopped, 30))

    head_loader = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    head_loader.load_state_dict(v2)
    head = block_ids(take(head_loader, 4))
    saved = head_loader.state_dict()
    assert saved["version"] == STATE_VERSION and saved["shuffle_window"] == 4
    assert saved["sources"]["m1"]["pinned_order"] == {"epoch": 0, "seed": 42, "shuffle_window": LEGACY_WINDOW}
    tail_loader = make(
        scenario, batch_size=10, num_workers=workers_after, literal_weights_str=WEIGHTS
    ).train_dataloader()
    tail_loader.load_state_dict(saved)
    assert head + block_ids(take(tail_loader, 26)) == reference


def test_a_version_2_checkpoint_at_an_epoch_boundary_needs_no_v2_order(scenario):
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    state = first.state_dict()
    state.update(samples=1810, taken={"main/1": 1086, "m1": 724})  # m1 exactly at the end of epoch 3
    state["sources"]["main/1"]["draws"], state["sources"]["m1"]["draws"] = 1086, 724
    data = make(scenario, batch_size=10, literal_weights_str=WEIGHTS)
    resumed = data.train_dataloader()
    resumed.load_state_dict(as_version_2(state))
    after = offsets_by_source(block_ids(take(resumed, 10)))
    assert after["m1"] == expected(data, "m1", {4: Ordering(42, 4)}, 724, 40)
    assert after["main/1"] == expected(data, "main/1", [Ordering(42, LEGACY_WINDOW)], 1086, 60)  # mid-epoch: v2 order


def test_a_changed_shuffle_window_applies_from_each_source_next_epoch(scenario, caplog):
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 25)
    data = make(scenario, batch_size=10, literal_weights_str=WEIGHTS, shuffle_window=1)
    resumed = data.train_dataloader()
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        resumed.load_state_dict(first.state_dict())
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    after = offsets_by_source(block_ids(take(resumed, 30)))
    assert after["m1"] == expected(data, "m1", [Ordering(42, 4), Ordering(42, 1)], 100, 120)
    assert "resuming with seed 42, shuffle window 1; the checkpoint ran with seed 42, shuffle window 4" in caplog.text
    assert resumed.state_dict()["sources"]["m1"].get("pinned_order") is None  # epoch 0 is over


def test_a_state_version_from_the_future_is_refused(scenario):
    loader = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    state = loader.state_dict()
    state["version"] = STATE_VERSION + 1
    with pytest.raises(
        ValueError, match=rf"state version {STATE_VERSION + 1} is not one of \(1, 2, 3, 4, 5, 6\).*upgrade sharded_mix"
    ):
        loader.load_state_dict(state)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_shuffle_window_must_be_a_positive_whole_number(scenario, window):
    with pytest.raises(ValueError, match=rf"shuffle_window is {window!r}; use a whole number of chunks, 1 or more"):
        make(scenario, literal_weights_str=WEIGHTS, shuffle_window=window)


def as_version_1(state: dict) -> dict:
    """A state as version 1 wrote it: version 2's, without a stage name or a block size per source."""
    old = as_version_2(state)
    old["version"] = 1
    del old["stage"]
    for entry in [*old["sources"].values(), *old["dropped"].values()]:
        del entry["block_size"]
    return old


def as_version_3(state: dict, seed: int) -> dict:
    """A state as version 3 wrote it (no fingerprints or nodes) for a run seeded with ``seed``: its orders used only
    the low 32 bits of the seed."""
    old = copy.deepcopy(state)
    old.update(version=3, seed=seed)
    del old["nodes"]
    for entry in [*old["sources"].values(), *old["dropped"].values()]:
        del entry["fingerprint"]
    return old


def test_a_version_1_checkpoint_finishes_its_epochs_in_the_v2_order_like_a_version_2_one(scenario):
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 25)
    saved = first.state_dict()
    read = {}
    for version, convert in ((1, as_version_1), (2, as_version_2)):
        data = make(scenario, batch_size=10, literal_weights_str=WEIGHTS)
        resumed = data.train_dataloader()
        resumed.load_state_dict(convert(saved))
        read[version] = block_ids(take(resumed, 30))
    assert read[1] == read[2]
    legacy, windowed = Ordering(42, LEGACY_WINDOW), Ordering(42, 4)
    assert offsets_by_source(read[1])["m1"] == expected(data, "m1", [legacy, windowed], 100, 120)


def test_a_version_3_checkpoint_finishes_its_epoch_in_the_order_of_the_seeds_low_32_bits(scenario, caplog):
    big = 2**40 + 42  # its low 32 bits are 42: the seed version 3 ordered epochs with
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 25)  # m1 at draw 100 of 181, main/1 at 150 of 1,206
    data = make(scenario, batch_size=10, literal_weights_str=WEIGHTS, seed=big)
    resumed = data.train_dataloader()
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        resumed.load_state_dict(as_version_3(first.state_dict(), big))
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    after = offsets_by_source(block_ids(take(resumed, 30)))
    old, new = Ordering(42, 4), Ordering(big, 4)
    assert after["m1"] == expected(data, "m1", [old, new], 100, 120)  # 81 in the 32-bit order, then all 64 bits
    assert after["main/1"] == expected(data, "main/1", [old], 150, 180)
    assert f"seed 42 -> {big}" in caplog.text


def test_a_version_4_checkpoint_ran_on_one_node_and_is_resliced_like_a_version_5_one(scenario, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    first = make(scenario, batch_size=10, literal_weights_str=WEIGHTS).train_dataloader()
    take(first, 5)
    saved = first.state_dict()
    v4 = copy.deepcopy(saved)
    v4["version"] = 4
    del v4["nodes"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    for rank in range(4):
        monkeypatch.setenv("RANK", str(rank))
        read = []
        for state in (saved, v4):
            resumed = make(scenario, batch_size=10, nodes=2, literal_weights_str=WEIGHTS).train_dataloader()
            resumed.load_state_dict(state)
            read.append(block_ids(take(resumed, 5)))
            assert "split" in resumed.state_dict()["sources"]["main/1"]
        assert read[0] == read[1]
