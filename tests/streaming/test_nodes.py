"""Several nodes: each reads its own slice of every epoch, the blend stays exact per rank, a resume on another
number of nodes reads the rest of each epoch once, and remote shards are downloaded about 1/nodes per node."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import s3_server
import torch
import torch.multiprocessing as mp
from conftest import BLOCK, block_ids, make, take, write_source

from sharded_mix import ShardedMixedDataset
from sharded_mix.streaming.discovery import discover_shards

s3 = s3_server.s3  # the fixture


def rank_loader(base, monkeypatch, rank: int, world: int, nodes: int | None, **fields):
    """The training loader rank ``rank`` of ``world`` builds (blocks of ``BLOCK`` tokens, batches of 4)."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    if isinstance(base, str):  # a URL
        data = ShardedMixedDataset(data_path=base, num_workers=0, nodes=nodes, **fields)
        data.connect(batch_size=4, max_seq_length=BLOCK - 1)
        data.setup()
        return data.train_dataloader()
    return make(base, batch_size=4, nodes=nodes, **fields).train_dataloader()


def chunk_of(shard, offset: int) -> int:
    """The chunk holding the block at token ``offset``."""
    ends, total = [], 0
    for tokens in shard.chunk_tokens:
        total += tokens // BLOCK * BLOCK
        ends.append(total)
    return next(chunk for chunk, end in enumerate(ends) if offset < end)


@pytest.fixture
def one_source(tmp_path):
    """main/1: 640 blocks in chunks of ~7 blocks."""
    write_source(tmp_path, "main/1", 1, 640 * BLOCK, doc_tokens=BLOCK, chunk_bytes=512)
    return tmp_path


def read_ranks(
    base, monkeypatch, world: int, nodes: int, batches: int, state=None, **fields
) -> list[list[tuple[int, int]]]:
    per_rank = []
    for rank in range(world):
        loader = rank_loader(base, monkeypatch, rank, world, nodes, mix_weights_str="main:1", **fields)
        if state is not None:
            loader.load_state_dict(state)
        per_rank.append(block_ids(take(loader, batches)))
    return per_rank, loader


def test_each_node_reads_a_contiguous_run_of_chunks_and_together_they_cover_the_epoch(one_source, monkeypatch):
    (shard,) = discover_shards(one_source)
    per_rank, _ = read_ranks(one_source, monkeypatch, world=4, nodes=2, batches=40)  # 4 ranks x 40 x 4 = 640: one epoch
    blocks = [block for rank in per_rank for block in rank]
    assert sorted(offset for _, offset in blocks) == list(range(0, 640 * BLOCK, BLOCK))  # every block once
    chunks = [
        {chunk_of(shard, offset) for rank in per_rank[2 * node : 2 * node + 2] for _, offset in rank}
        for node in range(2)
    ]
    assert len(chunks[0] & chunks[1]) <= 1  # at most the chunk cut between the two slices
    assert len(chunks[0]) + len(chunks[1]) <= shard.chunks + 1
    for node in range(2):  # one run of the epoch's chunk order
        assert abs(len(chunks[node]) - shard.chunks / 2) <= 1


def test_one_node_reads_what_it_read_before_and_nodes_do_not_change_the_blend(tmp_path, monkeypatch):
    write_source(tmp_path, "main/1", 1, 400 * BLOCK, doc_tokens=BLOCK, chunk_bytes=512)
    write_source(tmp_path, "m1", 2, 300 * BLOCK, doc_tokens=BLOCK, chunk_bytes=512)
    fields = {"literal_weights_str": "main/1:0.6,m1:0.4"}
    one = [block_ids(take(rank_loader(tmp_path, monkeypatch, rank, 4, None, **fields), 15)) for rank in range(4)]
    two = [block_ids(take(rank_loader(tmp_path, monkeypatch, rank, 4, 2, **fields), 15)) for rank in range(4)]
    assert [[source for source, _ in rank] for rank in one] == [[source for source, _ in rank] for rank in two]
    assert one != two  # the blocks come from each node's slices
    for per_rank in (one, two):
        blocks = [block for rank in per_rank for block in rank]
        assert len(set(blocks)) == len(blocks)  # less than one epoch of each: nothing twice


@pytest.mark.parametrize("world, nodes", [(2, 1), (4, 4), (8, 2), (4, 2)])
def test_resuming_on_another_topology_reads_the_rest_of_the_epoch_once(one_source, monkeypatch, world, nodes):
    first, loader = read_ranks(one_source, monkeypatch, world=4, nodes=2, batches=10)  # 160 of 640 blocks
    state = loader.state_dict()
    assert state["nodes"] == 2 and state["world_size"] == 4
    rest, resumed = read_ranks(
        one_source, monkeypatch, world=world, nodes=nodes, batches=480 // (4 * world), state=state
    )
    blocks = [offset for rank in first + rest for _, offset in rank]
    assert sorted(blocks) == list(range(0, 640 * BLOCK, BLOCK))  # no repeats, no skips
    if (world, nodes) != (4, 2):
        assert (
            "split" in resumed.state_dict()["sources"]["main/1"]
            or resumed.state_dict()["sources"]["main/1"]["position"] == 0
        )


def test_a_split_epoch_survives_a_second_resume(one_source, monkeypatch):
    first, loader = read_ranks(one_source, monkeypatch, world=4, nodes=2, batches=10)  # 160
    middle, loader = read_ranks(one_source, monkeypatch, world=2, nodes=2, batches=20, state=loader.state_dict())  # 160
    saved = loader.state_dict()
    split = saved["sources"]["main/1"]["split"]
    assert split["nodes"] == 2 and split["world_size"] == 4 and split["start"] == 160
    rest, _ = read_ranks(one_source, monkeypatch, world=8, nodes=4, batches=10, state=saved)  # 320
    blocks = [offset for rank in first + middle + rest for _, offset in rank]
    assert sorted(blocks) == list(range(0, 640 * BLOCK, BLOCK))


def test_a_node_count_that_does_not_divide_the_ranks_is_refused(one_source, monkeypatch):
    with pytest.raises(ValueError, match="nodes is 3 but the job has 4 rank"):
        rank_loader(one_source, monkeypatch, 0, 4, 3, mix_weights_str="main:1")


def test_ranks_not_numbered_node_by_node_are_refused(one_source, monkeypatch):
    monkeypatch.setenv("NODE_RANK", "0")
    with pytest.raises(
        ValueError, match=r"rank 2 runs on node 0 \(NODE_RANK\), but with 2 nodes of 2 ranks it should be on node 1"
    ):
        rank_loader(one_source, monkeypatch, 2, 4, 2, mix_weights_str="main:1")


def test_the_node_count_comes_from_slurm_or_torchrun(one_source, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert rank_loader(one_source, monkeypatch, 0, 4, None, mix_weights_str="main:1").dataset.topology.nodes == 2
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "4")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert rank_loader(one_source, monkeypatch, 0, 4, None, mix_weights_str="main:1").dataset.topology.nodes == 4
    assert (
        rank_loader(one_source, monkeypatch, 0, 4, 1, mix_weights_str="main:1").dataset.topology.nodes == 1
    )  # the field wins


def test_two_nodes_each_download_about_half_of_a_remote_epoch(tmp_path, s3, monkeypatch):
    base = tmp_path / "data"
    write_source(base, "main/1", 1, 96 * BLOCK, doc_tokens=BLOCK, chunk_bytes=512)
    write_source(base, "m1", 2, 96 * BLOCK, doc_tokens=BLOCK, chunk_bytes=512)
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    shards = discover_shards(url, storage_options=s3.options)
    total = sum(shard.chunk_bytes(chunk) for shard in shards for chunk in range(shard.chunks))
    largest = sum(max(shard.chunk_bytes(chunk) for chunk in range(shard.chunks)) for shard in shards)
    fields = {
        "literal_weights_str": "main/1:0.5,m1:0.5",
        "storage_options": s3.options,
        "val_data_path": f"{url}/main/1",
        "shuffle_window": 2,
        "prefetch_chunks": 0,
    }
    downloaded, read = [], []
    for node in range(2):  # one rank per node, each node with its own cache
        loader = rank_loader(url, monkeypatch, node, 2, 2, cache_dir=str(tmp_path / f"node{node}"), **fields)
        read.append(block_ids(take(loader, 24)))  # 2 ranks x 24 x 4 = 192 draws: one epoch of each source
        downloaded.append(loader.dataset.cache.downloaded_bytes)
    blocks = Counter(block for node in read for block in node)
    assert len(blocks) == 192 and set(blocks.values()) == {1}  # disjoint slices that cover the epoch
    for node in range(2):
        assert downloaded[node] <= total / 2 + largest  # half, plus the chunk each source's cut shares
    assert sum(downloaded) <= total + largest


def _from_rank_zero_worker(rank: int, base: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_MASTER_PORT"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sharded_mix.streaming.distributed import from_rank_zero

    results = {"value": from_rank_zero(lambda: f"computed on rank {rank}")}
    if rank == 0:
        (Path(base) / "c1").mkdir()  # named like a shard, without index.json: only rank 0 sees it
    try:
        make(Path(base), mix_weights_str="main:1")
    except ValueError as err:
        results["error"] = str(err)
    torch.save(results, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_rank_zero_discovers_and_every_rank_gets_its_result_or_its_error(one_source, tmp_path):
    os.environ["TEST_MASTER_PORT"] = str(30500 + os.getpid() % 1000)
    mp.start_processes(_from_rank_zero_worker, args=(str(one_source), str(tmp_path)), nprocs=2, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert [result["value"] for result in results] == ["computed on rank 0"] * 2
    assert (
        "c1" in results[0]["error"]
        and "has no index.json" in results[0]["error"]
        and results[1]["error"] == results[0]["error"] + " (raised on rank 0)"
    )


def test_the_node_count_comes_from_the_fabric_of_the_litgpt_command(one_source, monkeypatch):
    from lightning.fabric import Fabric

    def get_dataloaders(fabric, data):  # the shape of litgpt pretrain's: ``fabric`` is a local of the caller
        data.connect(batch_size=4, max_seq_length=BLOCK - 1)
        data.setup()
        return data.train_dataloader()

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", num_nodes=2)
    loader = get_dataloaders(
        fabric, ShardedMixedDataset(data_path=one_source, val_data_path=one_source / "main" / "1", num_workers=0)
    )
    assert loader.dataset.topology.nodes == 2 and loader.dataset.node == 1
