"""Scale: a ten-billion-token shard streams in memory flat in its size.

Epoch boundaries of many-window sources resume exactly.
"""

import tracemalloc

import numpy as np
import pytest
from conftest import BLOCK, block_ids, make, take, write_source

from sharded_mix import ShardedMixedDataset
from sharded_mix.tools.fake_shards import write_sparse_token_shard


def test_a_ten_billion_token_sparse_shard_streams_without_per_block_memory(tmp_path):
    write_sparse_token_shard(
        tmp_path / "train" / "1", 10_000_000_000, 4_000_000
    )  # 2,500 chunks, 4,878,048 blocks of 2,049
    write_sparse_token_shard(tmp_path / "train" / "c1", 200_000_000, 4_000_000)
    write_sparse_token_shard(tmp_path / "val" / "1", 10_000_000, 4_000_000)
    write_sparse_token_shard(tmp_path / "val" / "c1", 10_000_000, 4_000_000)
    assert sum(f.stat().st_blocks for f in (tmp_path / "train" / "1").iterdir()) * 512 < 16 * 2**20  # sparse: not 20 GB
    data = ShardedMixedDataset(data_path=tmp_path, mix_weights_str="main:0.8,code:0.2", num_workers=0)
    data.connect(batch_size=8, max_seq_length=2048)
    data.setup()
    loader = data.train_dataloader()
    state = loader.state_dict()  # jump to the middle of epoch 3 of main/1 and c1
    state["sources"]["main/1"]["draws"] = 3 * 4_878_048 + 2_000_000
    state["sources"]["c1"]["draws"] = 3 * 97_560 + 50_000
    loader.load_state_dict(state)
    tracemalloc.start()
    try:
        batches = take(loader, 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [tuple(batch.shape) for batch in batches] == [(8, 2049)] * 4 and all(
        int(batch.sum()) == 0 for batch in batches
    )
    per_block_order = 4_878_048 * 8  # what one int64 index per block of main/1 would cost: 39 MB
    assert peak < per_block_order / 20, (
        f"peak {peak:,} bytes"
    )  # chunk orders and one window of 4 chunks per source: ~0.7 MB
    assert loader.state_dict()["sources"]["main/1"]["epoch"] == 3


@pytest.fixture
def many_windows(tmp_path):
    """main/1: 1,206 blocks in 20 chunks (5 windows of 4), m1: 181 blocks."""
    write_source(tmp_path, "main/1", 1, 1206 * BLOCK, doc_tokens=BLOCK)
    write_source(tmp_path, "m1", 2, 181 * BLOCK, doc_tokens=BLOCK)
    return tmp_path


@pytest.mark.parametrize("stop", [133, 134])  # main/1 reaches its epoch's 1,206th draw at batch 134
@pytest.mark.parametrize("workers_after", [0, 2])
def test_resume_just_before_a_many_window_epoch_boundary_continues_exactly(many_windows, stop, workers_after):
    fields = {"literal_weights_str": "main/1:0.9,m1:0.1", "batch_size": 10}
    full = make(many_windows, **fields)
    assert len(full.train_mixture.shards[1].chunk_tokens) >= 16  # main/1 spans several windows
    reference = block_ids(take(full.train_dataloader(), stop + 8))
    first = make(many_windows, **fields).train_dataloader()
    head = block_ids(take(first, stop))
    second = make(many_windows, num_workers=workers_after, **fields).train_dataloader()
    second.load_state_dict(first.state_dict())
    tail = block_ids(take(second, 8))
    assert head + tail == reference
    main = [offset for source, offset in reference if source == 1]
    assert sorted(main[:1206]) == [block * BLOCK for block in range(1206)]  # epoch 0: every block once
    assert main[1206:] != main[: len(main) - 1206]  # epoch 1 is reshuffled
    assert np.unique(main[1206:]).size == len(main[1206:])
