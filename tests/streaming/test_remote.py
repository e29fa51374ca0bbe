"""Shards on object storage (s3:// against moto on 127.0.0.1).

Discovery, batches, resume and validation equal the local ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import s3_server
from conftest import BLOCK, block_ids, take, write_source

from sharded_mix import ShardedMixedDataset
from sharded_mix.streaming.discovery import discover_shards

BLEND = "main:0.6,code:0.3,math:0.1"
s3 = s3_server.s3  # the fixture


@pytest.fixture
def shards(tmp_path: Path, s3) -> tuple[Path, str]:
    """The same four shards on local disk and under ``s3://<bucket>/mix``."""
    base = tmp_path / "data"
    for number, (name, tokens) in enumerate([("main/1", 2000), ("c1", 800), ("c2", 800), ("m1", 800)], start=1):
        write_source(base, name, number, tokens, doc_tokens=BLOCK)
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    return base, url


def data_module(data_path, val_data_path, batch_size=4, **fields) -> ShardedMixedDataset:
    fields = {"mix_weights_str": BLEND, "num_workers": 0, **fields}
    data = ShardedMixedDataset(data_path=data_path, val_data_path=val_data_path, **fields)
    data.connect(batch_size=batch_size, max_seq_length=BLOCK - 1)
    data.setup()
    return data


def remote(url: str, s3, cache_dir: Path, **fields) -> ShardedMixedDataset:
    return data_module(url, f"{url}/main/1", storage_options=s3.options, cache_dir=str(cache_dir), **fields)


def test_remote_discovery_finds_what_local_discovery_finds(shards, s3):
    base, url = shards
    local = discover_shards(base)
    found = discover_shards(url, storage_options=s3.options)
    assert [(s.id, s.type, s.tokens, s.chunk_tokens, s.chunk_files) for s in found] == [
        (s.id, s.type, s.tokens, s.chunk_tokens, s.chunk_files) for s in local
    ]
    assert [s.path for s in found] == [f"{url}/c1", f"{url}/c2", f"{url}/m1", f"{url}/main/1"]
    assert all(len(s.fingerprint) == 16 for s in found)


@pytest.mark.parametrize("workers", [0, 2])
def test_remote_batches_equal_local_batches(shards, s3, tmp_path, workers):
    base, url = shards
    local = take(data_module(base, base / "main" / "1", num_workers=workers).train_dataloader(), 12)
    far = take(remote(url, s3, tmp_path / "cache", num_workers=workers).train_dataloader(), 12)
    assert block_ids(far) == block_ids(local)


def settled(loader):
    """``loader`` once its read-ahead downloads (background threads) have finished."""
    for future in list(loader.dataset.cache._asked.values()):
        future.result(timeout=60)
    return loader


def test_resume_from_a_wiped_cache_continues_exactly(shards, s3, tmp_path):
    _, url = shards
    cache = tmp_path / "cache"
    reference = remote(url, s3, cache).train_dataloader()
    never_stopped = block_ids(take(reference, 10))
    first = remote(url, s3, cache).train_dataloader()
    head = block_ids(take(first, 4))
    state = first.state_dict()
    settled(reference), settled(first)
    shutil.rmtree(cache)
    resumed = remote(url, s3, cache).train_dataloader()
    resumed.load_state_dict(state)
    assert head + block_ids(take(resumed, 6)) == never_stopped


def test_validation_reads_remote_shards(shards, s3, tmp_path):
    base, url = shards
    local = take(data_module(base, base / "main" / "1").val_dataloader(), 3)
    far = take(remote(url, s3, tmp_path / "cache").val_dataloader(), 3)
    assert block_ids(far) == block_ids(local)


def test_a_missing_chunk_object_is_an_error_naming_its_url(shards, s3, tmp_path):
    _, url = shards
    s3.delete(f"{url}/c1/chunk-0-0.bin")
    with pytest.raises(ValueError, match=rf"(?s)c1 \({url}/c1\): chunk object '{url}/c1/chunk-0-0.bin' is missing"):
        remote(url, s3, tmp_path / "cache")


def test_a_remote_shard_without_index_is_an_error_unless_excluded(shards, s3, tmp_path):
    _, url = shards
    s3.delete(f"{url}/c2/index.json")
    with pytest.raises(ValueError, match=rf"(?s)c2 \({url}/c2\): has no index.json.*exclude_shards"):
        remote(url, s3, tmp_path / "cache")
    assert [s.id for s in remote(url, s3, tmp_path / "cache", exclude_shards=["c2"]).train_mixture.shards] == [
        "c1",
        "m1",
        "main/1",
    ]


def test_a_url_that_holds_nothing_is_an_error(s3):
    url = f"s3://{s3.new_bucket()}/nothing-here"
    with pytest.raises(ValueError, match=rf"data_path '{url}': nothing found there"):
        discover_shards(url, storage_options=s3.options)


def test_read_ahead_downloads_exactly_the_chunks_the_next_windows_read(tmp_path, s3):
    from sharded_mix.mixing.orders import Ordering, epoch_order

    base = tmp_path / "data"
    write_source(base, "main/1", 1, 2000, doc_tokens=BLOCK, chunk_bytes=512)
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    data = data_module(
        url,
        f"{url}/main/1",
        mix_weights_str="main:1",
        storage_options=s3.options,
        cache_dir=str(tmp_path / "cache"),
        shuffle_window=2,
        prefetch_chunks=4,
    )
    loader = data.train_dataloader()
    (shard,) = data.train_mixture.shards
    assert shard.chunks > 8
    take(loader, 1)  # draws 0-3 of main/1: all in the epoch's first window
    cache = settled(loader).dataset.cache
    order = epoch_order([tokens // BLOCK for tokens in shard.chunk_tokens], Ordering(42, 2), shard.id, 0)
    expected = {shard.chunk_files[chunk] for chunk in order.chunks_from(0, 2 + 4)}  # the window, then 4 chunks ahead
    cached = {path.name for path in cache.shard_dir(shard).glob("chunk-*.bin")}
    assert cached == expected and len(expected) == 6
    assert cache.downloaded_bytes == sum(shard.chunk_bytes(shard.chunk_files.index(name)) for name in expected)


def small_chunk_mix(tmp_path: Path, s3) -> tuple[Path, str]:
    """main/1 and c1 in chunks of ~500 bytes (a dozen or more chunks each), locally and on S3."""
    base = tmp_path / "data"
    write_source(base, "main/1", 1, 2000, doc_tokens=BLOCK, chunk_bytes=512)
    write_source(base, "c1", 2, 1500, doc_tokens=BLOCK, chunk_bytes=512)
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    return base, url


def test_a_bounded_cache_stays_within_its_size_and_gives_the_same_batches(tmp_path, s3):
    base, url = small_chunk_mix(tmp_path, s3)
    fields = {"mix_weights_str": "main:0.7,code:0.3", "shuffle_window": 2, "prefetch_chunks": 2}
    local = block_ids(take(data_module(base, base / "main" / "1", **fields).train_dataloader(), 60))
    shards = discover_shards(url, storage_options=s3.options)
    budget = sum(4 * max(shard.chunk_bytes(chunk) for chunk in range(shard.chunks)) for shard in shards)
    data = remote(url, s3, tmp_path / "cache", max_cache_size=budget, **fields)
    loader = data.train_dataloader()
    iterator, far = iter(loader), []
    cache = loader.dataset.cache
    for _ in range(60):
        far += block_ids([next(iterator)])
        settled(loader)
        held = sum(path.stat().st_size for path in (tmp_path / "cache").rglob("chunk-*.bin"))
        assert held <= budget
    assert far == local  # 60 batches: more than an epoch of main/1, with chunks evicted and fetched again
    assert cache.evictions > 0 and cache.downloaded_bytes > sum(shard.tokens * 4 for shard in shards)


def test_a_cache_budget_below_the_working_set_is_refused_with_the_size_needed(tmp_path, s3):
    _, url = small_chunk_mix(tmp_path, s3)
    with pytest.raises(
        ValueError,
        match=r"max_cache_size 1,000 bytes is below the working set of this run's 2 remote source\(s\): "
        r"[\d,]+ bytes \(10 of each source's largest chunks: shuffle_window 2 \+ prefetch_chunks 8\); "
        r"raise it to at least",
    ):
        remote(url, s3, tmp_path / "cache", mix_weights_str="main:0.7,code:0.3", shuffle_window=2, max_cache_size="1KB")
