"""Sources: block reads, direct from the chunk files or through litdata."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encoded_tokens, write_token_shard
from litdata.streaming import StreamingDataset, TokensLoader

from sharded_mix.shards import is_plain_token_shard
from sharded_mix.streaming.discovery import discover_shards, read_index
from sharded_mix.streaming.sources import ChunkMaps, SourceReader
from sharded_mix.streaming.stream import mixture_loader


def _odd_shard(path: Path, dtype: torch.dtype = torch.int32, **kwargs) -> Path:
    """Documents of uneven lengths, so blocks straddle documents and chunks end mid-block."""
    tokens = encoded_tokens(3, 7_000)
    cuts = [0, 1, 130, 900, 901, 2_500, 4_444, 7_000]
    documents = [tokens[a:b] % 60_000 if dtype == torch.uint16 else tokens[a:b] for a, b in zip(cuts, cuts[1:])]
    return write_token_shard(path, documents, dtype=dtype, **kwargs)


def _reader(path: Path, block_size: int, maps: ChunkMaps | None = None) -> SourceReader:
    (shard,) = discover_shards(str(path.parent))
    return SourceReader(shard, block_size, None, maps=maps or ChunkMaps(np.dtype(shard.dtype)))


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


def test_only_plain_token_shards_are_read_directly(tmp_path):
    path = _odd_shard(tmp_path / "data" / "c1")
    index = read_index(path)
    assert is_plain_token_shard(index)
    for change in ({"encryption": "fernet"}, {"compression": "zstd"}, {"item_loader": "PyTreeLoader"}):
        assert not is_plain_token_shard({**index, "config": {**index["config"], **change}})


@pytest.mark.parametrize("damage", ["missing", "truncated", "grown"])
def test_a_damaged_chunk_file_is_an_error_naming_it(tmp_path, damage):
    path = _odd_shard(tmp_path / "data" / "c1")
    victim = path / read_index(path)["chunks"][-1]["filename"]
    if damage == "missing":
        victim.unlink()
    else:
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size + (-10 if damage == "truncated" else 10))
    reader = _reader(path, block_size=33)
    row = np.empty(33, dtype=np.int32)
    reader.read_into(0, row)  # the first chunk is fine
    with pytest.raises(
        ValueError,
        match=rf"shard 'c1': chunk file '.*{victim.name}' "
        r"(is missing|holds [\d,]+ bytes, expected [\d,]+ \(index.json: )",
    ):
        reader.read_into(reader.blocks - 1, row)


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
