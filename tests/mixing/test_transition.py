"""Resuming with a changed blend (midtraining): pure carry-over rules, then the loader on encoded shards."""

import logging
from collections import Counter

import pytest
from conftest import BLOCK, block_ids, make, take, write_source

from sharded_mix.mixing.orders import Ordering, epoch_order
from sharded_mix.mixing.transition import SourcePosition, carry_over, format_transition

S42, S7, S3 = Ordering(42), Ordering(7), Ordering(3)

# ---- pure rules -------------------------------------------------------------------------------


def test_sources_continue_start_fresh_or_are_set_aside():
    active = {"main/1": SourcePosition(500, 1000), "c1": SourcePosition(130, 90)}
    carried, dropped, rows = carry_over(
        active, {}, {"main/1": 0.8, "c1": 0.2}, S42, {"main/1": 0.88, "m1": 0.12}, {"main/1": 1000, "m1": 50}, S42
    )
    assert carried == {"main/1": SourcePosition(500, 1000), "m1": SourcePosition(0, 50)}
    assert dropped == {"c1": SourcePosition(130, 90, pin=(1, S42))}  # keeps its epoch's order for a comeback
    assert [(row.id, row.old_weight, row.new_weight, row.status) for row in rows] == [
        ("c1", 0.2, None, "dropped"),
        ("m1", None, 0.12, "new"),
        ("main/1", 0.8, 0.88, "continues"),
    ]


def test_a_new_seed_applies_from_each_source_next_epoch():
    active = {"a": SourcePosition(250, 100), "b": SourcePosition(200, 100), "c": SourcePosition(150, 100, pin=(1, S3))}
    carried, _, _ = carry_over(
        active, {}, dict.fromkeys("abc", 1 / 3), S42, dict.fromkeys("abc", 1 / 3), dict.fromkeys("abc", 100), S7
    )
    assert carried["a"].pin == (2, S42)  # mid-epoch: finishes it in seed 42's order
    assert carried["b"].pin is None  # at an epoch boundary: epoch 2 already uses seed 7
    assert carried["c"].pin == (1, S3)  # an older pin on the same epoch stays


def test_a_new_shuffle_window_applies_from_each_source_next_epoch():
    active = {"a": SourcePosition(250, 100), "b": SourcePosition(200, 100)}
    carried, _, _ = carry_over(
        active, {}, {"a": 0.5, "b": 0.5}, Ordering(42, 4), {"a": 0.5, "b": 0.5}, {"a": 100, "b": 100}, Ordering(42, 1)
    )
    assert carried["a"].pin == (2, Ordering(42, 4)) and carried["b"].pin is None


def test_pins_settle_when_they_no_longer_matter():
    assert SourcePosition(150, 100, pin=(1, S42)).settled(S7).pin == (1, S42)
    assert SourcePosition(150, 100, pin=(1, S7)).settled(S7).pin is None  # the ordering in force anyway
    assert SourcePosition(150, 100, pin=(1, Ordering(7, 1))).settled(S7).pin == (1, Ordering(7, 1))  # another window
    assert SourcePosition(200, 100, pin=(1, S42)).settled(S7).pin is None  # its epoch is over
    assert SourcePosition(250, 100, pin=(1, S42)).settled(S7).pin is None


def test_a_dropped_source_comes_back_where_it_stopped_and_a_changed_shard_restarts():
    dropped = {"m1": SourcePosition(70, 50, pin=(1, S42))}
    carried, still_dropped, rows = carry_over(
        {"main/1": SourcePosition(10, 100)},
        dropped,
        {"main/1": 1.0},
        S7,
        {"main/1": 0.5, "m1": 0.5},
        {"main/1": 120, "m1": 50},
        S7,
    )
    assert carried["m1"] == SourcePosition(70, 50, pin=(1, S42)) and still_dropped == {}
    assert carried["main/1"] == SourcePosition(0, 120)
    assert {row.id: row.status for row in rows} == {"m1": "back", "main/1": "restarted"}


def test_transition_block_is_greppable():
    _, _, rows = carry_over(
        {"main/1": SourcePosition(500, 1000)},
        {},
        {"main/1": 1.0},
        S42,
        {"main/1": 0.88, "m1": 0.12},
        {"main/1": 1000, "m1": 50},
        S7,
    )
    text = format_transition(rows, "resuming after 500 samples per rank", S42, S7)
    assert text.splitlines()[0] == "===== DATA MIX TRANSITION: resuming after 500 samples per rank ====="
    assert "seed 42 -> 7" in text
    assert any(
        line.split()[:6] == ["main/1", "1.0000", "0.8800", "continues", "0", "500"] for line in text.splitlines()
    )
    assert any(line.split()[:6] == ["m1", "-", "0.1200", "new", "0", "0"] for line in text.splitlines())


# ---- the loader on shards whose tokens say (source, offset) -------------------------------------

SOURCES = {1: "main/1", 2: "m1", 3: "c1"}


@pytest.fixture
def midtrain_data(tmp_path):
    """main/1: 1,206 blocks, m1: 181, c1: 90 (one block per document, so block b starts at offset b·BLOCK)."""
    for number, (shard, blocks) in enumerate([("main/1", 1206), ("m1", 181), ("c1", 90)], start=1):
        write_source(tmp_path, shard, number, blocks * BLOCK, doc_tokens=BLOCK)
    return tmp_path


def per_source(ids):
    offsets = {}
    for source, offset in ids:
        offsets.setdefault(SOURCES[source], []).append(offset)
    return offsets


def source_sequence(data, shard_id, seeds, count):
    """The first ``count`` block offsets of a source whose epoch e is ordered with ``seeds[e]``.

    Each of ``seeds`` is a seed or an ``Ordering``.
    """
    (shard,) = [shard for shard in data.train_mixture.shards if shard.id == shard_id]
    chunk_blocks = [tokens // BLOCK for tokens in shard.chunk_tokens]
    offsets = []
    for epoch, seed in enumerate(seeds):
        order = epoch_order(chunk_blocks, seed if isinstance(seed, Ordering) else Ordering(seed), shard_id, epoch)
        offsets += [order.block(position) * BLOCK for position in range(sum(chunk_blocks))]
    assert len(offsets) >= count
    return offsets[:count]


def midtrain(base, state, batches, **fields):
    data = make(base, batch_size=10, **fields)
    loader = data.train_dataloader()
    loader.load_state_dict(state)
    return data, loader, block_ids(take(loader, batches))


def pretrain(base, batches=12, weights="main/1:0.7,m1:0.3"):
    data = make(base, batch_size=10, literal_weights_str=weights)
    loader = data.train_dataloader()
    return data, per_source(block_ids(take(loader, batches))), loader.state_dict()


def assert_follows_weights(ids, weights):
    counts = Counter()
    for n, (source, _) in enumerate(ids, start=1):
        counts[SOURCES[source]] += 1
        for shard_id, weight in weights.items():
            assert abs(counts[shard_id] - weight * n) < 1, (n, shard_id)


@pytest.mark.parametrize(
    "new_weights",
    [
        {"main/1": 0.6, "m1": 0.2, "c1": 0.2},  # a source added
        {"main/1": 0.5, "m1": 0.5},  # weights changed only
        {"main/1": 1.0},  # a source removed
    ],
    ids=["added", "reweighted", "removed"],
)
def test_persisting_sources_continue_without_rereading_and_the_new_blend_holds(midtrain_data, new_weights, caplog):
    data, before, state = pretrain(midtrain_data)
    literal = ",".join(f"{source}:{weight}" for source, weight in new_weights.items())
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        after_data, _, ids = midtrain(midtrain_data, state, 60, literal_weights_str=literal)
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    after = per_source(ids)
    assert set(after) == set(new_weights)
    assert_follows_weights(ids, new_weights)
    for shard_id in new_weights:
        read = before.get(shard_id, []) + after[shard_id]
        assert read == source_sequence(after_data, shard_id, [42] * 6, len(read)), shard_id  # continues its own order
    main = before["main/1"] + after["main/1"]
    assert len(main) == len(set(main))  # nothing read twice in main/1's first epoch
    assert (
        "===== DATA MIX TRANSITION: resuming after 120 samples per rank (12 batches of 10) in stage default ====="
        in caplog.text
    )


def test_a_new_seed_takes_effect_at_each_source_next_epoch(midtrain_data):
    _, before, state = pretrain(midtrain_data, batches=25)  # m1: 75 of its 181 blocks read
    data, _, ids = midtrain(midtrain_data, state, 60, literal_weights_str="main/1:0.7,m1:0.3", seed=7)
    after = per_source(ids)
    m1 = before["m1"] + after["m1"]  # 255 blocks: epoch 0 (seed 42) then 74 of epoch 1 (seed 7)
    assert m1 == source_sequence(data, "m1", [42, 7], len(m1))
    assert m1[181:] != source_sequence(data, "m1", [42, 42], len(m1))[181:]
    main = before["main/1"] + after["main/1"]
    assert main == source_sequence(data, "main/1", [42], len(main))


def test_a_source_dropped_and_brought_back_continues_where_it_stopped(midtrain_data):
    _, before, state = pretrain(midtrain_data)
    _, loader, _ = midtrain(midtrain_data, state, 5, literal_weights_str="main/1:1.0")
    data, _, ids = midtrain(midtrain_data, loader.state_dict(), 20, literal_weights_str="main/1:0.5,m1:0.5")
    m1 = before["m1"] + per_source(ids)["m1"]
    assert m1 == source_sequence(data, "m1", [42], len(m1))


@pytest.mark.parametrize("stop", [1, 9])
def test_resume_after_a_transition_equals_never_stopping(midtrain_data, stop):
    _, _, state = pretrain(midtrain_data)
    fields = {"literal_weights_str": "main/1:0.5,m1:0.2,c1:0.3", "seed": 7}
    _, _, reference = midtrain(midtrain_data, state, stop + 15, **fields)
    _, first, head = midtrain(midtrain_data, state, stop, **fields)
    second = make(midtrain_data, batch_size=10, num_workers=2, **fields).train_dataloader()
    second.load_state_dict(first.state_dict())
    assert head + block_ids(take(second, 15)) == reference


def test_state_after_a_transition_reports_positions_and_pins(midtrain_data):
    _, _, state = pretrain(midtrain_data, batches=25)
    _, loader, _ = midtrain(midtrain_data, state, 2, literal_weights_str="main/1:0.6,c1:0.4", seed=7)
    saved = loader.state_dict()
    assert saved["samples"] == 270 and saved["taken"] == {"c1": 8, "main/1": 12}
    assert saved["sources"]["main/1"]["draws"] == 175 + 12
    pin = {"epoch": 0, "seed": 42, "shuffle_window": 4}
    assert saved["sources"]["main/1"]["pinned_order"] == pin
    assert saved["sources"]["c1"]["draws"] == 8 and "pinned_order" not in saved["sources"]["c1"]
    assert saved["dropped"] == {
        "m1": {
            "draws": 75,
            "epoch": 0,
            "position": 75,
            "blocks": 181,
            "block_size": BLOCK,
            "tokens": 75 * BLOCK,
            "pinned_order": pin,
        }
    }
