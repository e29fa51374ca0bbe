"""The mixture engine on shards whose tokens encode (source, position)."""

import logging
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import BLOCK, block_ids, make, take, write_source

from sharded_mix import ShardedMixedDataset


def test_no_premature_repeats_while_the_small_source_cycles(scenario, caplog):
    data = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4")
    logging.getLogger("sharded_mix").addHandler(caplog.handler)
    try:
        blocks = block_ids(take(data.train_dataloader(), 201))  # 2,010 samples = 1,206 main blocks
    finally:
        logging.getLogger("sharded_mix").removeHandler(caplog.handler)
    main = [offset for source, offset in blocks if source == 1]
    math = [offset for source, offset in blocks if source == 2]
    assert len(main) == 1206 and len(set(main)) == 1206  # every main block once: 0% repeats
    assert len(math) == 804
    for start in range(0, 804, 181):  # each epoch of m1 is a permutation of its 181 blocks
        epoch = math[start : start + 181]
        assert len(set(epoch)) == len(epoch)
        if len(epoch) == 181:
            assert set(epoch) == set(math[:181])
    assert math[:181] != math[181:362]  # reshuffled each epoch
    assert "source m1 finished epoch 3; starting epoch 4" in caplog.text  # epochs count from 0, as in the state


@pytest.mark.parametrize("weights", ["main/1:0.6,m1:0.4", "main/1:0.9,m1:0.1", "main/1:0.5,m1:0.5"])
def test_prefix_counts_follow_the_weights(scenario, weights):
    data = make(scenario, batch_size=8, literal_weights_str=weights)
    shares = {1: float(weights.split(",")[0].split(":")[1]), 2: float(weights.split(",")[1].split(":")[1])}
    counts = Counter()
    for n, (source, _) in enumerate(block_ids(take(data.train_dataloader(), 50)), start=1):
        counts[source] += 1
        for key, share in shares.items():
            assert abs(counts[key] - share * n) < 1


@pytest.mark.parametrize("num_workers", [1, 2])
def test_the_stream_does_not_depend_on_num_workers(scenario, num_workers):
    reference = block_ids(take(make(scenario, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader(), 30))
    data = make(scenario, num_workers=num_workers, literal_weights_str="main/1:0.6,m1:0.4")
    assert block_ids(take(data.train_dataloader(), 30)) == reference


@pytest.mark.parametrize("stop", [1, 7, 45, 46, 100])
@pytest.mark.parametrize("workers_before, workers_after", [(0, 0), (2, 0), (0, 2)])
def test_resume_equals_never_stopping(scenario, stop, workers_before, workers_after):
    fields = {"literal_weights_str": "main/1:0.6,m1:0.4", "batch_size": 10}
    reference = block_ids(take(make(scenario, **fields).train_dataloader(), stop + 20))
    first = make(scenario, num_workers=workers_before, **fields).train_dataloader()
    head = block_ids(take(first, stop))
    state = first.state_dict()
    second = make(scenario, num_workers=workers_after, **fields).train_dataloader()
    second.load_state_dict(state)
    assert head + block_ids(take(second, 20)) == reference


def test_state_is_plain_data_keyed_by_shard_id(scenario):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 25)
    state = loader.state_dict()
    assert state["samples"] == 250 and state["taken"] == {"main/1": 150, "m1": 100}
    assert state["sources"]["m1"]["epoch"] == 0 and state["sources"]["m1"]["position"] == 100
    assert state["sources"]["main/1"]["tokens"] == 150 * BLOCK
    torch.save(state, scenario / "state.pt")
    assert torch.load(scenario / "state.pt", weights_only=True) == state  # no pickled objects


def test_state_survives_reordering_the_sources(scenario):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    reference = block_ids(take(loader, 30))
    head_loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    head = block_ids(take(head_loader, 12))
    reordered = make(scenario, batch_size=10, literal_weights_str="m1:0.4,main/1:0.6").train_dataloader()
    reordered.load_state_dict(head_loader.state_dict())
    assert head + block_ids(take(reordered, 18)) == reference


def test_resume_is_o1_at_a_hundred_million_samples(scenario):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    state = loader.state_dict()
    n = 100_000_000
    state.update(samples=n, taken={"main/1": 60_000_000, "m1": 40_000_000})
    state["sources"]["main/1"]["draws"] = 60_000_000
    state["sources"]["m1"]["draws"] = 40_000_000
    loader.load_state_dict(state)
    blocks = block_ids(take(loader, 1))
    assert [source for source, _ in blocks] == [1, 2, 1, 2, 1, 1, 2, 1, 2, 1]
    from sharded_mix.mixing.orders import Ordering, epoch_order

    (main_shard,) = [s for s in loader.dataset.shards.values() if s.id == "main/1"]
    reader_chunks = [tokens // BLOCK for tokens in main_shard.chunk_tokens]
    epoch, position = divmod(60_000_000, 1206)
    expected_block = epoch_order(reader_chunks, Ordering(42), "main/1", epoch).block(position)
    assert blocks[0][1] == expected_block * BLOCK


def test_max_epochs_per_source_names_the_source(scenario):
    loader = make(
        scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4", max_epochs_per_source=2
    ).train_dataloader()
    with pytest.raises(
        ValueError,
        match=r"max_epochs_per_source=2: source 'm1' .* 181 blocks \(2,896 tokens\) "
        r"and the run has asked 5,8\d\d tokens",
    ):
        take(loader, 100)


def _rank_worker(rank: int, world: int, base: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_MASTER_PORT"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    data = make(Path(base), batch_size=5, literal_weights_str="main/1:0.6,m1:0.4")
    torch.save(take(data.train_dataloader(), 20), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_get_disjoint_samples_and_follow_the_blend(scenario, tmp_path):
    os.environ["TEST_MASTER_PORT"] = str(29500 + os.getpid() % 1000)
    mp.start_processes(_rank_worker, args=(2, str(scenario), str(tmp_path)), nprocs=2, start_method="spawn")
    per_rank = [block_ids(torch.load(tmp_path / f"rank{rank}.pt")) for rank in range(2)]
    main = [offset for ids in per_rank for source, offset in ids if source == 1]
    math = [offset for ids in per_rank for source, offset in ids if source == 2]
    assert len(main) == len(set(main)) == 120 and len(math) == 80  # 200 samples, 0.6 / 0.4
    assert len(set(math[:40]) & set(math[40:])) == 0  # both ranks' m1 draws are one epoch, disjoint
    assert set(per_rank[0]).isdisjoint(per_rank[1])


def test_a_source_smaller_than_ranks_times_workers_still_streams(tmp_path):
    from sharded_mix.mixing.run_plan import stream_stage
    from sharded_mix.streaming.discovery import discover_shards
    from sharded_mix.streaming.stream import MixtureLoader, MixtureStream, ReadOptions

    write_source(tmp_path, "1", 1, 40 * BLOCK, doc_tokens=BLOCK)
    write_source(tmp_path, "q1", 2, 2 * BLOCK, doc_tokens=BLOCK)  # 2 blocks for 4 ranks × 2 workers
    shards = discover_shards(tmp_path)
    seen = []
    for rank in range(4):
        stage = stream_stage(shards, {"main/1": 0.5, "q1": 0.5}, BLOCK, seed=0)
        stream = MixtureStream(shards, [stage], 2, shuffle=True, rank=rank, world_size=4)
        seen.append(block_ids(take(MixtureLoader(stream, ReadOptions(num_workers=2)), 4)))
    small = [offset for ids in seen for source, offset in ids if source == 2]
    assert len(small) == 16 and Counter(small) == {0: 8, BLOCK: 8}  # 8 epochs of its 2 blocks
    main = [offset for ids in seen for source, offset in ids if source == 1]
    assert len(set(main)) == len(main) == 16


def test_resuming_with_another_block_size_starts_each_source_next_epoch(scenario):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 3)
    data = ShardedMixedDataset(
        data_path=scenario,
        val_data_path=scenario / "main" / "1",
        num_workers=0,
        literal_weights_str="main/1:0.6,m1:0.4",
    )
    data.connect(batch_size=10, max_seq_length=31)
    data.setup()
    resized = data.train_dataloader()
    resized.load_state_dict(loader.state_dict())
    state = resized.state_dict()
    assert state["block_size"] == 32
    assert {
        source: (entry["epoch"], entry["position"], entry["blocks"]) for source, entry in state["sources"].items()
    } == {"m1": (1, 0, 90), "main/1": (1, 0, 603)}
    assert take(resized, 1)[0].shape == (10, 32)
