"""Chunks verified once per node where their bytes are first read: local maps, downloads, the node cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import s3_server
from conftest import BLOCK, SOURCE_STRIDE, block_ids, make, take, write_source

from sharded_mix.cli import main
from sharded_mix.streaming.checksums import CHECKSUMS_FILE, file_digest
from sharded_mix.streaming.discovery import discover_shards, read_index
from sharded_mix.tools.hash_shards import PARTIAL_FILE, hash_path, hash_shard

s3 = s3_server.s3  # the fixture
BLEND = "main:0.6,code:0.4"


@pytest.fixture
def hashed(tmp_path: Path) -> Path:
    """Two litdata-written shards (no hashes of their own), then hashed by `sharded-mix hash`."""
    base = tmp_path / "data"
    write_source(base, "main/1", 1, 2400, doc_tokens=BLOCK, chunk_bytes=1024)
    write_source(base, "c1", 2, 1600, doc_tokens=BLOCK, chunk_bytes=1024)
    assert main(["hash", str(base), "--workers", "2", "--no-progress"]) == 0
    return base


def loader_of(base: Path, cache_dir: Path, **fields):
    return make(base, mix_weights_str=BLEND, cache_dir=str(cache_dir), **fields).train_dataloader()


def flip_bytes(path: Path, at_token: int, dtype=np.int32) -> None:
    """Overwrite a few tokens of a chunk file in place (its size and the index stay as they were)."""
    header = 4 * (2 + int(np.frombuffer(path.read_bytes()[:4], dtype=np.uint32)[0]))
    with open(path, "r+b") as file:
        file.seek(header + at_token * np.dtype(dtype).itemsize)
        file.write(np.full(3, -1, dtype=dtype).tobytes())


def first_batch_reading(batches, source: int, chunk_tokens: list[int], chunk: int) -> int:
    """The index of the first batch holding a block of ``source`` from chunk ``chunk``."""
    first, stop = sum(chunk_tokens[:chunk]), sum(chunk_tokens[: chunk + 1])
    for index, batch in enumerate(batches):
        for block in batch:
            if int(block[0]) // SOURCE_STRIDE == source and first <= int(block[0]) % SOURCE_STRIDE < stop:
                return index
    raise AssertionError("the chunk is never read")


def test_hash_writes_a_checksum_per_chunk_and_resumes(hashed: Path, capsys) -> None:
    for shard in (hashed / "main" / "1", hashed / "c1"):
        listing = json.loads((shard / CHECKSUMS_FILE).read_text())
        chunks = [chunk["filename"] for chunk in read_index(shard)["chunks"]]
        assert sorted(listing["chunks"]) == sorted(chunks) and len(chunks) > 3
        assert all(listing["chunks"][name]["xxh3_128"] == file_digest(shard / name) for name in chunks)
    assert [shard.chunk_hashes != () for shard in discover_shards(hashed)] == [True, True]
    assert main(["hash", str(hashed), "--no-progress"]) == 0
    assert "c1: 7 chunk(s) already hashed" in capsys.readouterr().out
    assert hash_shard(hashed / "c1").hashed == 0  # covered: nothing to do
    shard = hashed / "c1"
    names = [chunk["filename"] for chunk in read_index(shard)["chunks"]]
    (shard / CHECKSUMS_FILE).unlink()
    partial = {name: [os.path.getsize(shard / name), os.stat(shard / name).st_mtime_ns, "x"] for name in names[:2]}
    (shard / PARTIAL_FILE).write_text(json.dumps(partial))  # an interrupted run hashed two chunks
    report = hash_path(shard, workers=1, progress=False)[0]
    assert (report.chunks, report.hashed) == (len(names), len(names) - 2)
    assert not (shard / PARTIAL_FILE).exists()


def test_a_flipped_local_chunk_stops_the_loader_before_any_of_its_rows(hashed: Path, tmp_path: Path) -> None:
    clean = take(loader_of(hashed, tmp_path / "cache"), 60)
    shard = discover_shards(hashed)[0]  # c1
    chunk = 2
    flip_bytes(hashed / "c1" / shard.chunk_files[chunk], at_token=5)
    stop = first_batch_reading(clean, 2, list(shard.chunk_tokens), chunk)
    loader = loader_of(hashed, tmp_path / "other-cache")
    seen = []
    with pytest.raises(
        ValueError, match=rf"shard 'c1' chunk {shard.chunk_files[chunk]} .* has xxh3_128 [0-9a-f]+, its"
    ):
        for batch in loader:
            seen.append(batch.clone())
    assert len(seen) == stop and block_ids(seen) == block_ids(clean[:stop])
    unverified = take(loader_of(hashed, tmp_path / "third-cache", verify_chunks="off"), 80)  # all of c1's epoch
    assert any((batch < 0).any() for batch in unverified)  # without verification the damage is trained on


def test_a_node_verifies_each_chunk_once(hashed: Path, tmp_path: Path) -> None:
    first = loader_of(hashed, tmp_path / "cache")
    take(first, 60)
    assert first.dataset.cache.hashed_bytes > 0
    again = loader_of(hashed, tmp_path / "cache")
    assert block_ids(take(again, 60)) == block_ids(take(loader_of(hashed, tmp_path / "cache"), 60))
    assert again.dataset.cache.hashed_bytes == 0  # the ledger remembers


def test_unhashed_shards_get_one_info_line(tmp_path: Path, caplog) -> None:
    base = tmp_path / "data"
    write_source(base, "main/1", 1, 800, doc_tokens=BLOCK)
    with caplog.at_level(logging.INFO):
        make(base, cache_dir=str(tmp_path / "cache"))
    lines = [r.getMessage() for r in caplog.records if "no content hashes" in r.getMessage()]
    assert len(lines) == 1 and "`sharded-mix hash <base dir>`" in lines[0]
    with pytest.raises(ValueError, match="verify_chunks is 'always'; use one of first_read, off"):
        make(base, verify_chunks="always")


# ----------------------------------------------------------------------------- remote


def remote_loader(url: str, s3, cache_dir: Path, **fields):
    data = make_remote(url, s3, cache_dir, **fields)
    return data.train_dataloader()


def make_remote(url, s3, cache_dir, **fields):
    from sharded_mix import ShardedMixedDataset

    data = ShardedMixedDataset(
        data_path=url,
        val_data_path=f"{url}/main/1",
        mix_weights_str=BLEND,
        num_workers=0,
        storage_options=s3.options,
        cache_dir=str(cache_dir),
        prefetch_chunks=0,
        **fields,
    )
    data.connect(batch_size=4, max_seq_length=BLOCK - 1)
    data.setup()
    return data


def test_a_remote_chunk_replaced_after_discovery_is_refused(hashed: Path, tmp_path: Path, s3) -> None:
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(hashed, url)
    clean = take(loader_of(hashed, tmp_path / "local-cache"), 40)
    data = make_remote(url, s3, tmp_path / "cache")
    shard = next(shard for shard in data.run_plan().shards if shard.id == "c1")
    damaged = tmp_path / "damaged"
    damaged.write_bytes((hashed / "c1" / shard.chunk_files[1]).read_bytes())
    flip_bytes(damaged, at_token=2)
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3.client.upload_file(str(damaged), bucket, f"{prefix}/c1/{shard.chunk_files[1]}")  # same size, new ETag
    seen = []
    with pytest.raises(ValueError, match=r"was replaced after the shard was discovered \(ETag"):
        for batch in data.train_dataloader():
            seen.append(batch.clone())
    stop = first_batch_reading(clean, 2, list(shard.chunk_tokens), 1)
    assert block_ids(seen) == block_ids(clean[: len(seen)]) and len(seen) <= stop


def test_a_remote_chunk_that_differs_from_its_hash_is_fetched_twice_then_refused(
    hashed: Path, tmp_path: Path, s3, caplog
) -> None:
    shard = next(shard for shard in discover_shards(hashed) if shard.id == "c1")
    flip_bytes(hashed / "c1" / shard.chunk_files[0], at_token=1)  # damaged before the upload: ETags agree
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(hashed, url)
    loader = remote_loader(url, s3, tmp_path / "cache")
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(ValueError, match=rf"shard 'c1' chunk {shard.chunk_files[0]} \(s3://.*\) has xxh3_128"),
    ):
        take(loader, 60)
    assert sum("fetching it once more" in record.getMessage() for record in caplog.records) == 1
    cache = loader.dataset.cache
    assert not (cache.shard_dir(loader.dataset.shards["c1"]) / shard.chunk_files[0]).exists()  # nothing half-kept


def test_a_damaged_cache_copy_is_fetched_again(hashed: Path, tmp_path: Path, s3, caplog) -> None:
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(hashed, url)
    cache = tmp_path / "cache"
    clean = block_ids(take(remote_loader(url, s3, cache), 60))
    copies = sorted(cache.rglob("chunk-*.bin"))
    assert copies
    flip_bytes(copies[0], at_token=0)
    os.utime(copies[0], ns=(1, 1))  # a new mtime: the ledger no longer vouches for it
    with caplog.at_level(logging.WARNING):
        loader = remote_loader(url, s3, cache)
        again = block_ids(take(loader, 60))
    assert again == clean
    assert any("cached copy" in r.getMessage() and "fetching it again" in r.getMessage() for r in caplog.records)
    assert loader.dataset.cache.downloads == 1
