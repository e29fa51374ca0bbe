"""Object storage I/O (``streaming/storage.py``) and the node-local chunk cache (``streaming/cache.py``).

Both against moto's S3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import pickle
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import s3_server
from conftest import write_source

from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.cache import ChunkCache, default_cache_dir
from sharded_mix.streaming.discovery import read_index
from sharded_mix.streaming.storage import ObjectInfo, RemoteDir, is_url, join_url, split_storage_options

s3 = s3_server.s3  # the fixture


@pytest.fixture
def mix(tmp_path: Path, s3) -> tuple[Path, str]:
    """A local base (c1, main/1, main/2, readme.txt) and its copy at ``s3://<new bucket>/mix``."""
    base = tmp_path / "data"
    for number, name in enumerate(["c1", "main/1", "main/2"], start=1):
        write_source(base, name, number, 1500)
    (base / "readme.txt").write_bytes(b"hello")
    url = f"s3://{s3.new_bucket()}/mix"
    s3.upload(base, url)
    return base, url


def remote_shard(base: Path, url: str, name: str):
    """The ``Shard`` of ``<url>/<name>``, built from the local copy's index."""
    return shard_from_index(name, "code", join_url(url, name), read_index(base / name))


def test_is_url_and_join_url():
    for url in [
        "s3://b/mix",
        "S3://b",
        "s3a://b/x",
        "gs://b/x",
        "az://a/c",
        "abfss://c@a/x",
        "http://h/x",
        "https://h/x",
    ]:
        assert is_url(url), url
    for path in ["/data/mix", "data/mix", "file:///data/mix", "", "c:\\data", Path("/data"), None]:
        assert not is_url(path), path
    assert join_url("s3://b/mix/", "/main/", "1") == "s3://b/mix/main/1"
    assert join_url("s3://b", "c1", "", "index.json") == "s3://b/c1/index.json"


def test_list_dir_names_subdirectories_and_objects(mix, s3):
    base, url = mix
    directory = RemoteDir(url, s3.options)
    subdirs, objects = directory.list_dir()
    assert subdirs == ["c1", "main"]
    assert list(objects) == ["readme.txt"] and objects["readme.txt"].size == 5 and objects["readme.txt"].etag
    assert directory.list_dir("main") == (["1", "2"], {})
    subdirs, objects = directory.list_dir("c1/")
    local = sorted(path.name for path in (base / "c1").iterdir())
    assert subdirs == [] and sorted(objects) == local and len(local) > 2
    assert all(info.size == (base / "c1" / name).stat().st_size for name, info in objects.items())
    assert directory.list_dir("nothing-here") == ([], {})


def test_read_bytes_and_info(mix, s3):
    base, url = mix
    directory = RemoteDir(url, s3.options)
    assert directory.read_bytes("c1/index.json") == (base / "c1" / "index.json").read_bytes()
    info = directory.info("main/1/index.json")
    assert info == ObjectInfo((base / "main" / "1" / "index.json").stat().st_size, info.etag) and info.etag


def test_download_is_atomic_and_leaves_no_temporary_files(mix, s3, tmp_path):
    base, url = mix
    directory = RemoteDir(url, s3.options)
    chunk = sorted((base / "c1").glob("chunk-*.bin"))[0]
    target = tmp_path / "out" / chunk.name
    assert directory.download(f"c1/{chunk.name}", target) == chunk.stat().st_size
    assert target.read_bytes() == chunk.read_bytes()
    target.write_bytes(b"previous content")
    with pytest.raises(ValueError, match="does not exist"):
        directory.download("c1/chunk-missing.bin", target)
    assert target.read_bytes() == b"previous content"  # a failed download leaves the destination alone
    assert [path.name for path in target.parent.iterdir()] == [chunk.name]


def test_a_missing_object_is_a_value_error_naming_its_url(mix, s3, tmp_path):
    _, url = mix
    directory = RemoteDir(url, s3.options)
    missing = f"'{url}/c1/chunk-9-9.bin' does not exist"
    for call in (directory.read_bytes, directory.info, lambda name: directory.download(name, tmp_path / "x")):
        with pytest.raises(ValueError, match=f"^object {missing}$"):
            call("c1/chunk-9-9.bin")
    with pytest.raises(ValueError, match="cannot list 's3://no-such-bucket/mix': NoSuchBucket"):
        RemoteDir("s3://no-such-bucket/mix", s3.options).list_dir()
    with pytest.raises(ValueError, match=r"object 's3://no-such-bucket/x' does not exist \(NoSuchBucket"):
        RemoteDir("s3://no-such-bucket", s3.options).read_bytes("x")


def test_unknown_access_keys_are_denied_naming_the_url(mix, s3):
    _, url = mix
    directory = RemoteDir(url, s3.options)
    with s3.checking_credentials():  # moto rejects the dummy keys with 403 InvalidAccessKeyId
        with pytest.raises(
            ValueError, match=rf"^access to '{url}/readme.txt' was denied \(InvalidAccessKeyId: .*AWS_\*"
        ):
            directory.read_bytes("readme.txt")
        with pytest.raises(ValueError, match=rf"^access to '{url}/c1' was denied"):
            directory.list_dir("c1")


def test_a_wrong_endpoint_port_fails_within_seconds(s3):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    directory = RemoteDir("s3://bucket/mix", {**s3.options, "endpoint": f"http://127.0.0.1:{closed_port}"})
    started = time.monotonic()
    with pytest.raises(
        ValueError, match=r"^cannot read 's3://bucket/mix/index.json': .*check the endpoint and the network$"
    ):
        directory.read_bytes("index.json")
    assert time.monotonic() - started < 15


def test_storage_options_are_split_for_obstore(mix, s3):
    config, client, retry = split_storage_options(
        {
            "endpoint": "http://h:1",
            "region": "r",
            "allow_http": True,
            "AWS_TIMEOUT": 60,
            "connect_timeout": "2s",
            "max_retries": "2",
        }
    )
    assert config == {"endpoint": "http://h:1", "region": "r"}
    assert client == {
        "allow_http": True,
        "timeout": timedelta(seconds=60),
        "connect_timeout": "2s",
        "read_timeout": "30s",
    }
    assert retry == {"max_retries": 2, "retry_timeout": timedelta(seconds=60)}
    _, url = mix
    options = {
        **s3.options,
        "allow_http": "true",
        "timeout": 20,
        "retry_timeout": 5,
    }  # strings and numbers, as YAML gives them
    assert RemoteDir(url, options).read_bytes("readme.txt") == b"hello"
    with pytest.raises(ValueError, match=r"storage_options for 's3://.*'bogus_key' is not valid"):
        RemoteDir(url, {**s3.options, "bogus_key": "1"}).list_dir()
    with pytest.raises(ValueError, match="storage_options retry_timeout: expected a number of seconds"):
        RemoteDir(url, {**s3.options, "retry_timeout": "soon"}).list_dir()


def test_credentials_and_endpoint_come_from_aws_variables(mix, s3, monkeypatch):
    _, url = mix
    for name, value in [
        ("AWS_ENDPOINT_URL", s3.endpoint),
        ("AWS_ACCESS_KEY_ID", s3.options["access_key_id"]),
        ("AWS_SECRET_ACCESS_KEY", s3.options["secret_access_key"]),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ]:
        monkeypatch.setenv(name, value)
    assert RemoteDir(url).read_bytes("readme.txt") == b"hello"


def test_remote_dir_and_chunk_cache_survive_pickling(mix, s3, tmp_path):
    base, url = mix
    directory = RemoteDir(url, s3.options)
    directory.list_dir()
    copy = pickle.loads(pickle.dumps(directory))
    assert copy._store is None and copy.url == url and copy.storage_options == s3.options
    assert copy.read_bytes("readme.txt") == b"hello"
    shard = remote_shard(base, url, "c1")
    cache = ChunkCache(tmp_path / "cache", s3.options)
    cache.chunk_file(shard, 0)
    cache_copy = pickle.loads(pickle.dumps(cache))
    assert cache_copy._dirs == {} and cache_copy.cache_dir == cache.cache_dir
    assert Path(cache_copy.chunk_file(shard, 1)).read_bytes() == (base / "c1" / shard.chunk_files[1]).read_bytes()


def test_cache_places_shards_by_url_and_fingerprint(mix, tmp_path, monkeypatch):
    base, url = mix
    shard = remote_shard(base, url, "c1")
    cache = ChunkCache(tmp_path)
    key = f"{shard.path}\n{shard.fingerprint}".encode()
    assert cache.shard_dir(shard) == tmp_path / hashlib.sha256(key).hexdigest()[:16]
    assert cache.shard_dir(dataclasses.replace(shard, path=shard.path + "/")) == cache.shard_dir(shard)
    assert cache.shard_dir(dataclasses.replace(shard, fingerprint="rewritten")) != cache.shard_dir(shard)
    monkeypatch.setenv("SHARDED_MIX_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SHARDED_MIX_CACHE_DIR")
    assert default_cache_dir().name == f"sharded_mix_cache_{os.getuid()}"


def test_a_chunk_is_downloaded_once_and_then_read_from_the_cache(mix, s3, tmp_path):
    base, url = mix
    shard = remote_shard(base, url, "c1")
    cache = ChunkCache(tmp_path / "cache", s3.options)
    local = cache.chunk_file(shard, 1)
    assert Path(local).read_bytes() == (base / "c1" / shard.chunk_files[1]).read_bytes()
    assert cache.chunk_file(shard, 1) == local and cache.downloads == 1
    assert cache.downloaded_bytes == shard.chunk_bytes(1)
    Path(local).write_bytes(b"cut short")  # a damaged cached copy is fetched again
    assert Path(cache.chunk_file(shard, 1)).stat().st_size == shard.chunk_bytes(1) and cache.downloads == 2


def test_two_processes_asking_for_one_chunk_download_it_once(mix, s3, tmp_path):
    base, url = mix
    shard = remote_shard(base, url, "main/1")
    context = multiprocessing.get_context("spawn")  # this process already used obstore: forked children could not
    start, results = context.Barrier(2), context.Queue()
    arguments = (str(tmp_path / "cache"), s3.options, shard, 0, start, results)
    processes = [context.Process(target=s3_server.fetch_chunk_in_this_process, args=arguments) for _ in range(2)]
    for process in processes:
        process.start()
    downloads = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sorted(downloads) == [0, 1] and [process.exitcode for process in processes] == [0, 0]
    cached = ChunkCache(tmp_path / "cache").shard_dir(shard) / shard.chunk_files[0]
    assert cached.read_bytes() == (base / "main" / "1" / shard.chunk_files[0]).read_bytes()


def test_a_chunk_of_the_wrong_size_is_an_error_and_is_not_kept(mix, s3, tmp_path):
    base, url = mix
    shard = remote_shard(base, url, "c1")
    wrong = dataclasses.replace(shard, chunk_tokens=(shard.chunk_tokens[0] + 1, *shard.chunk_tokens[1:]))
    cache = ChunkCache(tmp_path / "cache", s3.options)
    expected, found = f"{wrong.chunk_bytes(0):,}", f"{shard.chunk_bytes(0):,}"
    with pytest.raises(
        ValueError, match=rf"chunk '{url}/c1/{shard.chunk_files[0]}' has {found} bytes but .* implies {expected}"
    ):
        cache.chunk_file(wrong, 0)
    assert not (cache.shard_dir(shard) / shard.chunk_files[0]).exists()


def test_a_mirrored_shard_reads_like_the_local_one(mix, s3, tmp_path):
    from litdata import StreamingDataset, TokensLoader

    base, url = mix
    shard = remote_shard(base, url, "main/2")
    mirrored = ChunkCache(tmp_path / "cache", s3.options).mirror(shard)
    assert mirrored == str(ChunkCache(tmp_path / "cache").shard_dir(shard))
    assert (Path(mirrored) / "index.json").read_bytes() == (base / "main" / "2" / "index.json").read_bytes()

    def blocks(input_dir) -> list[np.ndarray]:
        dataset = StreamingDataset(input_dir=str(input_dir), item_loader=TokensLoader(block_size=16), shuffle=False)
        return [np.asarray(dataset[i]) for i in range(len(dataset))]

    local, far = blocks(base / "main" / "2"), blocks(mirrored)
    assert len(local) == 1500 // 16 and all(np.array_equal(a, b) for a, b in zip(local, far, strict=True))


def test_a_process_forked_after_obstore_was_used_gets_an_error_not_a_hang(mix, s3):
    _, url = mix
    directory = RemoteDir(url, s3.options)
    directory.read_bytes("readme.txt")  # this process has now started obstore's runtime
    results = multiprocessing.get_context("fork").Queue()

    def read_in_child() -> None:
        try:
            directory.read_bytes("readme.txt")
            results.put("no error")
        except RuntimeError as err:
            results.put(str(err))

    child = multiprocessing.get_context("fork").Process(target=read_in_child)
    child.start()
    message = results.get(timeout=30)
    child.join(timeout=30)
    assert "forked from process" in message and "multiprocessing_context='spawn' or 'forkserver'" in message
