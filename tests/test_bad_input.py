"""Bad input and damaged data: one case per row of the reliability issue's table.

Each case ends in a ``ValueError`` before the first batch whose message names the field, shard or file
at fault, or (the last tests) in a correct recovery logged at WARNING.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import BLOCK, block_ids, take, write_source
from damage import delete, edit_index, empty, index_dim_too_small, index_says_int16, truncate, unreadable

from sharded_mix import ShardedMixedDataset
from sharded_mix.mixing.state import STATE_VERSION

BLEND = "main:0.6,code:0.3,math:0.1"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """main/1 (2,000 tokens), c1 and c2 (800 each), m1 (800): several chunks each."""
    for number, (name, tokens) in enumerate([("main/1", 2000), ("c1", 800), ("c2", 800), ("m1", 800)], start=1):
        write_source(tmp_path / "data", name, number, tokens, doc_tokens=BLOCK)
    return tmp_path / "data"


def first_batch(produced: list, base: Path, state: dict | None = None, batch_size: int = 4, **fields) -> None:
    """Construct, connect, set up, resume from ``state`` and take one batch into ``produced``: LitGPT's order."""
    fields = {
        "mix_weights_str": BLEND,
        "val_data_path": base / "main" / "1",
        "num_workers": 0,
        "data_path": base,
        **fields,
    }
    data = ShardedMixedDataset(**fields)
    data.connect(batch_size=batch_size, max_seq_length=BLOCK - 1)
    data.setup()
    loader = data.train_dataloader()
    if state is not None:
        loader.load_state_dict(state)
    produced.extend(take(loader, 1))


def saved_state(base: Path, batches: int = 5, **fields) -> dict:
    """The data state of a healthy run after ``batches`` batches."""
    fields = {
        "mix_weights_str": BLEND,
        "val_data_path": base / "main" / "1",
        "num_workers": 0,
        "data_path": base,
        **fields,
    }
    data = ShardedMixedDataset(**fields)
    data.connect(batch_size=4, max_seq_length=BLOCK - 1)
    data.setup()
    loader = data.train_dataloader()
    take(loader, batches)
    return loader.state_dict()


def loader_with_seed(base: Path, seed: int):
    data = ShardedMixedDataset(
        data_path=base, mix_weights_str=BLEND, val_data_path=base / "main" / "1", num_workers=0, seed=seed
    )
    data.connect(batch_size=4, max_seq_length=BLOCK - 1)
    data.setup()
    return data.train_dataloader()


def broken_dir(name: str):
    def damage(base: Path) -> dict:
        {
            "no_index": lambda: (base / "c2" / "index.json").unlink(),
            "dangling_link": lambda: (base / "c3").symlink_to(base / "nowhere"),
            "link_loop": lambda: (base / "m2").symlink_to(base / "m2"),
            "index_is_a_list": lambda: (base / "c2" / "index.json").write_text("[]"),
            "unreadable_dir": lambda: unreadable_dir(base / "c2"),
        }[name]()
        return {}

    damage.__name__ = name
    return damage


def unreadable_dir(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any directory whatever its mode")
    path.chmod(0)


def stray_index_at_the_root(base: Path) -> dict:
    shutil.copy(base / "c1" / "index.json", base / "index.json")
    return {}


def one_directory_with_a_type_blend(base: Path) -> dict:
    return {"data_path": base / "c1", "mix_weights_str": "main:0.5,code:0.5"}


def one_directory_with_a_literal_blend(base: Path) -> dict:
    return {"data_path": base / "c1", "mix_weights_str": None, "literal_weights_str": "main:0.5,c1:0.5"}


def mix_file(text: str):
    def write(base: Path) -> dict:
        path = base.parent / "mix.yaml"
        path.write_text(text)
        return {"mix_weights_str": None, "mix_config_path": path}

    write.__name__ = "mix_file_" + ("empty" if not text else "commented_out")
    return write


def fields(name: str, **values):
    def given(base: Path) -> dict:
        return values

    given.__name__ = name
    return given


def damaged_chunk(damage):
    def apply(base: Path) -> dict:
        damage(base / "c1")
        return {}

    apply.__name__ = f"chunk_{damage.__name__}"
    return apply


def chunk_name_outside_the_shard(base: Path) -> dict:
    edit_index(base / "c1", lambda index: index["chunks"][0].update(filename="../c2/chunk-0-0.bin"))
    return {}


def damaged_state(name: str, damage):
    def apply(base: Path) -> dict:
        state = saved_state(base)
        damage(state)
        return {"state": state}

    apply.__name__ = f"state_{name}"
    return apply


def rewritten_shard(tokens: int):
    """c1 rewritten after the checkpoint: new content of the same size, or more tokens."""

    def apply(base: Path) -> dict:
        state = saved_state(base)
        shutil.rmtree(base / "c1")
        write_source(base, "c1", 9, tokens, doc_tokens=BLOCK)
        return {"state": state}

    apply.__name__ = "shard_rewritten_same_size" if tokens == 800 else "shard_grew"
    return apply


def grew_before_fingerprints(base: Path) -> dict:
    """A state version 3 checkpoint (no fingerprints): a changed size is still caught."""
    state = saved_state(base)
    state["version"] = 3
    for entry in state["sources"].values():
        del entry["fingerprint"]
    shutil.rmtree(base / "c1")
    write_source(base, "c1", 9, 1600, doc_tokens=BLOCK)
    return {"state": state}


CASES = [
    (broken_dir("no_index"), r"(?s)c2 \(.*/c2\): has no index.json.*exclude_shards"),
    (broken_dir("dangling_link"), r"(?s)c3 \(.*/c3\): a dangling symlink to '.*nowhere'.*exclude_shards"),
    (broken_dir("link_loop"), r"(?s)m2 \(.*/m2\): a symlink loop"),
    (broken_dir("unreadable_dir"), r"(?s)c2 \(.*/c2\): cannot be read \(permission denied\)"),
    (broken_dir("index_is_a_list"), r"(?s)c2 \(.*/c2\): .*index.json is not a litdata index"),
    (stray_index_at_the_root, r"data_path '.*/data' holds an index.json of its own and shard directories"),
    (
        one_directory_with_a_type_blend,
        r"data_path '.*/c1' is one litdata directory .* mix_weights_str names code: the blend would be ignored",
    ),
    (one_directory_with_a_literal_blend, r"data_path '.*/c1' is one litdata directory .* literal_weights_str names c1"),
    (mix_file(""), r"mix_config_path '.*mix.yaml' holds no blend"),
    (mix_file("# weights: {main: 0.9, math: 0.1}\n"), r"mix_config_path '.*mix.yaml' holds no blend"),
    (fields("seed_string", seed="abc"), r"seed is 'abc'; use a whole number"),
    (fields("seed_none", seed=None), r"seed is None; use a whole number"),
    (fields("seed_float", seed=3.2), r"seed is 3.2; use a whole number"),
    (fields("seed_bool", seed=True), r"seed is True; use a whole number"),
    (fields("seed_negative", seed=-1), r"seed is -1; use a whole number"),
    (
        fields("seed_past_64_bits", seed=2**64),
        r"seed is 18446744073709551616; use a whole number from 0 to 2\*\*64 - 1",
    ),
    (fields("stage_seed_float", stages=[{"name": "a", "start_step": 0, "seed": 3.5}]), r"stages\[0\] 'a': seed is 3.5"),
    (fields("batch_size_zero", batch_size=0), r"batch_size \(train.micro_batch_size\) is 0"),
    (
        fields("on_data_change_unknown", on_data_change="ignore"),
        r"on_data_change is 'ignore'; use one of error, restart, continue",
    ),
    (damaged_chunk(delete), r"shard 'c1': chunk file '.*/c1/chunk-0-0.bin' is missing"),
    (damaged_chunk(truncate), r"shard 'c1': chunk file '.*/c1/chunk-0-0.bin' holds [\d,]+ bytes, expected [\d,]+"),
    (damaged_chunk(empty), r"shard 'c1': chunk file '.*/c1/chunk-0-0.bin' holds 0 bytes, .*the file is empty"),
    (damaged_chunk(unreadable), r"shard 'c1': chunk file '.*/c1/chunk-0-0.bin' cannot be read \(permission denied\)"),
    (
        damaged_chunk(index_says_int16),
        r"shard 'c1': chunk file '.*/c1/chunk-0-\d-?\d*.bin' holds .* not 2 \(int16\): index.json's dtype",
    ),
    (
        damaged_chunk(index_dim_too_small),
        r"shard 'c1': chunk file '.*/c1/chunk-0-0.bin' holds [\d,]+ bytes, expected [\d,]+ .*larger",
    ),
    (
        chunk_name_outside_the_shard,
        r"(?s)c1 \(.*/c1\): .*chunk 0: filename '\.\./c2/chunk-0-0\.bin' is not a file name inside the shard",
    ),
    (damaged_state("empty", lambda state: state.clear()), r"train_dataloader state in the checkpoint is empty"),
    (
        damaged_state("sources_emptied", lambda state: state["sources"].clear()),
        r"sources is \{\}, expected one entry per source",
    ),
    (damaged_state("key_missing", lambda state: state.pop("taken")), r"taken is 'missing'"),
    (
        damaged_state("draws_negative", lambda state: state["sources"]["c1"].update(draws=-3)),
        r"sources\['c1'\]\.draws is -3, expected a whole number >= 0",
    ),
    (
        damaged_state("draws_string", lambda state: state["sources"]["c1"].update(draws="abc")),
        r"sources\['c1'\]\.draws is 'abc'",
    ),
    (
        damaged_state("version_unknown", lambda state: state.update(version=STATE_VERSION + 1)),
        r"state version \d+ is not one of",
    ),
    (
        damaged_state("nodes_not_dividing_ranks", lambda state: state.update(world_size=4, nodes=3)),
        r"nodes is 3, expected a divisor of world_size 4",
    ),
    (
        damaged_state(
            "split_not_covering_the_epoch",
            lambda state: state["sources"]["c1"].update(
                split={"epoch": 0, "world_size": 2, "nodes": 2, "start": 0, "intervals": [[0, 3]]}
            ),
        ),
        r"sources\['c1'\]\.split\.intervals is \[\[0, 3\]\], expected \[lo, hi\] pairs",
    ),
    (fields("nodes_zero", nodes=0), r"nodes is 0; use the number of nodes the run spans"),
    (
        rewritten_shard(800),
        r"(?s)on_data_change=error: 1 source\(s\) changed.*c1 \(.*/c1\): content [0-9a-f]+ in the checkpoint, "
        r"content [0-9a-f]+ now",
    ),
    (
        rewritten_shard(1600),
        r"(?s)on_data_change=error: 1 source\(s\) changed.*c1 .*\(chunks \d+ -> \d+, tokens 800 -> 1,600\)",
    ),
    (
        grew_before_fingerprints,
        r"(?s)on_data_change=error: 1 source\(s\) changed.*c1 .*: 50 blocks in the checkpoint, 100 blocks now",
    ),
]


@pytest.mark.parametrize("damage, message", CASES, ids=[damage.__name__ for damage, _ in CASES])
def test_bad_input_is_one_clear_error_before_the_first_batch(base, damage, message):
    arguments = damage(base)
    produced: list = []
    with pytest.raises(ValueError, match=message):
        first_batch(produced, base, **arguments)
    assert produced == []


def test_an_excluded_broken_shard_is_left_out_and_the_rest_trains(base):
    (base / "c2" / "index.json").unlink()
    produced: list = []
    first_batch(produced, base, exclude_shards=["c2"])
    assert len(produced) == 1


def test_a_global_batch_size_that_disagrees_with_litgpt_is_refused_at_connect(base):
    from litgpt.args import TrainArgs
    from litgpt.pretrain import get_dataloaders

    data = ShardedMixedDataset(
        data_path=base, mix_weights_str=BLEND, val_data_path=base / "main" / "1", num_workers=0, global_batch_size=8
    )
    train = TrainArgs(global_batch_size=16, micro_batch_size=4, max_seq_length=BLOCK - 1)
    with pytest.raises(ValueError, match="global_batch_size is 8 in the data args but train.global_batch_size is 16"):
        get_dataloaders(None, data, None, train, BLOCK - 1)


def test_litgpt_global_batch_size_is_taken_when_the_data_args_have_none(base):
    from litgpt.args import TrainArgs
    from litgpt.pretrain import get_dataloaders

    class Fabric:  # what get_dataloaders asks of Fabric
        @staticmethod
        def rank_zero_first():
            from contextlib import nullcontext

            return nullcontext()

    stages = [{"name": "web", "start_step": 0}, {"name": "math", "start_step": 2, "mix_weights_str": "math:1"}]
    data = ShardedMixedDataset(
        data_path=base, mix_weights_str=BLEND, val_data_path=base / "main" / "1", num_workers=0, stages=stages
    )
    train = TrainArgs(global_batch_size=8, micro_batch_size=4, max_seq_length=BLOCK - 1)
    loader, _ = get_dataloaders(Fabric(), data, None, train, BLOCK - 1)
    assert data.run_plan().global_batch_size == 8 and data.global_batch_size is None  # init args stay as given
    sources = [source for source, _ in block_ids(take(loader, 6))]
    assert set(sources[:16]) == {1, 2, 3, 4} and set(sources[16:]) == {4}  # m1 is source 4; step 2 starts at sample 16


def test_restart_and_continue_are_logged_with_their_cost(base, caplog):
    state = saved_state(base, batches=10)
    drawn = state["sources"]["c1"]["draws"]
    shutil.rmtree(base / "c1")
    write_source(base, "c1", 9, 800, doc_tokens=BLOCK)
    for policy, first_draws in (("restart", 0), ("continue", drawn)):
        caplog.clear()
        data = ShardedMixedDataset(
            data_path=base,
            mix_weights_str=BLEND,
            val_data_path=base / "main" / "1",
            num_workers=0,
            on_data_change=policy,
        )
        data.connect(batch_size=4, max_seq_length=BLOCK - 1)
        data.setup()
        loader = data.train_dataloader()
        with caplog.at_level(logging.WARNING, logger="sharded_mix"):
            loader.load_state_dict(state)
        assert f"on_data_change={policy}: 1 source(s) changed" in caplog.text
        assert ("starts over from its first block" if policy == "restart" else "keeps its draw count") in caplog.text
        assert loader.state_dict()["sources"]["c1"]["draws"] == first_draws
        assert loader.state_dict()["sources"]["main/1"]["draws"] == state["sources"]["main/1"]["draws"]
        batches = take(loader, 3)
        assert {source for source, _ in block_ids(batches)} <= {
            1,
            3,
            4,
            9,
        }  # the new c1 is source 9, the old one (2) is gone


def test_a_changed_max_seq_length_on_resume_is_a_warning_with_its_cost(base, caplog):
    state = saved_state(base, batches=3)
    data = ShardedMixedDataset(data_path=base, mix_weights_str=BLEND, val_data_path=base / "main" / "1", num_workers=0)
    data.connect(batch_size=4, max_seq_length=2 * BLOCK - 1)
    data.setup()
    loader = data.train_dataloader()
    with caplog.at_level(logging.WARNING, logger="sharded_mix"):
        loader.load_state_dict(state)
    assert "train.max_seq_length changed since the checkpoint (15 -> 31)" in caplog.text
    assert "left in those epochs are not read in this pass. Resume with max_seq_length 15 to keep them" in caplog.text


def test_a_staged_run_resumed_on_fewer_ranks_keeps_its_stage_at_the_same_step(base, monkeypatch):
    stages = [{"name": "web", "start_step": 0}, {"name": "math", "start_step": 4, "mix_weights_str": "math:1"}]

    def loader(rank: int, world_size: int):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        data = ShardedMixedDataset(
            data_path=base,
            mix_weights_str=BLEND,
            val_data_path=base / "main" / "1",
            num_workers=0,
            stages=stages,
            global_batch_size=8,
        )
        data.connect(batch_size=4, max_seq_length=BLOCK - 1)
        data.setup()
        return data.train_dataloader()

    ranks = [loader(rank, 2) for rank in range(2)]
    before = [
        block_ids(take(rank_loader, 2)) for rank_loader in ranks
    ]  # steps 0 and 1: one micro-batch per rank and step
    state = ranks[0].state_dict()
    assert state["samples"] == 8 and state["world_size"] == 2

    alone = loader(0, 1)
    alone.load_state_dict(state)
    assert alone.cursor.samples == 16  # step 2 on one rank
    after = block_ids(take(alone, 6))  # steps 2 and 3 (two micro-batches each), then step 4
    assert {source for source, _ in after[:16]} != {4} and {source for source, _ in after[16:]} == {
        4
    }  # math from step 4 on
    read = before[0] + before[1] + after
    assert len(read) == len(set(read))  # nothing read twice across the change of ranks


def test_inspect_reports_directories_named_like_shards_that_are_not(base, capsys):
    from sharded_mix.cli import main

    (base / "c2" / "index.json").unlink()
    (base / "c3").symlink_to(base / "nowhere")
    assert main(["inspect", str(base)]) == 1
    out = capsys.readouterr().out
    assert (
        "c2 (" in out
        and "has no index.json" in out
        and "c3 (" in out
        and "dangling symlink" in out
        and "exclude_shards" in out
    )


def test_an_unreadable_shard_directory_is_named(base, monkeypatch):
    """The permission case without root's powers: discovery asks ``os.access`` as it would for another user."""
    import sharded_mix.streaming.discovery as discovery

    real_access = os.access
    monkeypatch.setattr(
        discovery.os, "access", lambda path, mode: not str(path).endswith("/c2") and real_access(path, mode)
    )
    produced: list = []
    with pytest.raises(ValueError, match=r"(?s)c2 \(.*/c2\): cannot be read \(permission denied\).*exclude_shards"):
        first_batch(produced, base)
    assert produced == []


def test_seeds_use_all_64_bits_and_a_version_3_checkpoint_keeps_its_32_bit_order(base):
    from sharded_mix.mixing.orders import Ordering, epoch_order

    chunk_blocks = [7, 9, 5, 8]

    def order(seed: int) -> list[int]:
        epoch = epoch_order(chunk_blocks, Ordering(seed, 2), "c1", 0)
        return [epoch.block(position) for position in range(sum(chunk_blocks))]

    assert order(42) != order(42 + 2**32) and order(42 + 2**32) != order(42 + 2**33)

    low, high = 42, 42 + 2**32
    reference = block_ids(take(loader_with_seed(base, low), 8))[5 * 4 :]  # what version 3 read after batch 5 for `high`
    state = saved_state(base, seed=low)
    state.update(version=3, seed=high)  # as version 3 wrote it for seed 2**32 + 42
    for entry in state["sources"].values():
        del entry["fingerprint"]
    loader = loader_with_seed(base, high)
    loader.load_state_dict(state)
    assert block_ids(take(loader, 3)) == reference


def test_a_single_directory_given_with_a_trailing_slash_is_still_one_directory(base):
    produced: list = []
    with pytest.raises(ValueError, match=r"data_path '.*/c1/' is one litdata directory .* mix_weights_str names code"):
        first_batch(produced, base, data_path=f"{base / 'c1'}/", mix_weights_str="main:0.5,code:0.5")
    assert produced == []
