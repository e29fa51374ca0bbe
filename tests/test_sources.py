"""Sources: epoch orders (pure) and block reads, direct from the chunk files or through litdata."""

from pathlib import Path

import numpy as np
import pytest
import torch
from litdata.streaming import StreamingDataset, TokensLoader

from conftest import encoded_tokens, write_token_shard
from sharded_mix.discovery import discover_shards, read_index
from sharded_mix.sources import ChunkMaps, SourceReader, direct_chunk_layout, epoch_order
from sharded_mix.stream import mixture_loader


def test_epoch_order_is_a_chunk_local_permutation():
    chunk_blocks = [5, 3, 7]
    order = epoch_order(chunk_blocks, seed=1, shard_id="c1", epoch=0)
    assert sorted(order.tolist()) == list(range(15))
    chunk_of = np.repeat(np.arange(3), chunk_blocks)[order]
    assert (np.diff(chunk_of) != 0).sum() == 2  # each chunk is read in one run
    assert order.tolist() != list(range(15))


def test_epoch_orders_depend_on_seed_shard_and_epoch_only():
    chunk_blocks = [50, 50]
    base = epoch_order(chunk_blocks, 7, "m1", 3)
    assert np.array_equal(base, epoch_order(chunk_blocks, 7, "m1", 3))
    for other in (epoch_order(chunk_blocks, 8, "m1", 3), epoch_order(chunk_blocks, 7, "m2", 3), epoch_order(chunk_blocks, 7, "m1", 4)):
        assert not np.array_equal(base, other)
    assert epoch_order(chunk_blocks, 7, "m1", 3, shuffle=False).tolist() == list(range(100))


def _odd_shard(path: Path, dtype: torch.dtype = torch.int32, **kwargs) -> Path:
    """Documents of uneven lengths, so blocks straddle documents and chunks end mid-block."""
    tokens = encoded_tokens(3, 7_000)
    cuts = [0, 1, 130, 900, 901, 2_500, 4_444, 7_000]
    documents = [tokens[a:b] % 60_000 if dtype == torch.uint16 else tokens[a:b] for a, b in zip(cuts, cuts[1:])]
    return write_token_shard(path, documents, dtype=dtype, **kwargs)


def _reader(path: Path, block_size: int, maps: ChunkMaps | None = None) -> SourceReader:
    (shard,) = discover_shards(str(path.parent))
    return SourceReader(shard, block_size, seed=0, shuffle=False, maps=maps or ChunkMaps(np.dtype(shard.dtype)))


def _litdata_blocks(path: Path, block_size: int) -> list[np.ndarray]:
    dataset = StreamingDataset(str(path), item_loader=TokensLoader(block_size=block_size))
    return [np.asarray(dataset[index]) for index in range(len(dataset))]


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint16])
def test_direct_reads_equal_litdata_blocks(tmp_path, dtype):
    path = _odd_shard(tmp_path / "data" / "c1", dtype)
    reader = _reader(path, block_size=33)
    expected = _litdata_blocks(path, 33)
    assert reader.direct and reader.blocks == len(expected) and len(read_index(path)["chunks"]) > 3
    for block, want in enumerate(expected):
        row = np.empty(33, dtype=reader.maps.dtype)
        reader.read_into(block, row)
        assert np.array_equal(row, want), block


def test_compressed_shards_are_read_through_litdata(tmp_path):
    pytest.importorskip("zstd")
    path = _odd_shard(tmp_path / "data" / "c1", compression="zstd")
    reader = _reader(path, block_size=33)
    assert not reader.direct
    for block, want in enumerate(_litdata_blocks(path, 33)):
        row = np.empty(33, dtype=np.int32)
        reader.read_into(block, row)
        assert np.array_equal(row, want), block


def test_files_that_do_not_match_the_layout_are_left_to_litdata(tmp_path):
    path = _odd_shard(tmp_path / "data" / "c1")
    index = read_index(path)
    assert direct_chunk_layout(str(path), index, np.dtype("int32")) is not None
    assert direct_chunk_layout(str(path), index, np.dtype("int16")) is None  # sizes disagree
    assert direct_chunk_layout(str(path), {**index, "config": {**index["config"], "encryption": "fernet"}}, np.dtype("int32")) is None
    (path / index["chunks"][-1]["filename"]).unlink()
    assert direct_chunk_layout(str(path), index, np.dtype("int32")) is None


def test_at_most_max_open_chunk_maps(tmp_path):
    path = _odd_shard(tmp_path / "data" / "c1")
    maps = ChunkMaps(np.dtype("int32"), max_open=2)
    reader = _reader(path, block_size=33, maps=maps)
    expected = _litdata_blocks(path, 33)
    for block in [0, reader.blocks - 1, reader.blocks // 2, 1, reader.blocks - 2]:
        row = np.empty(33, dtype=np.int32)
        reader.read_into(block, row)
        assert np.array_equal(row, expected[block])
        assert len(maps._maps) <= 2


def test_batches_keep_the_shard_token_dtype(tmp_path):
    path = _odd_shard(tmp_path / "data" / "c1", torch.uint16)
    shards = discover_shards(str(path.parent))
    loader = mixture_loader(shards, {"c1": 1.0}, block_size=33, batch_size=4, seed=0, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    assert batch.dtype == torch.uint16 and batch.shape == (4, 33)
    assert np.array_equal(batch.numpy(), np.stack(_litdata_blocks(path, 33)[:4]))
