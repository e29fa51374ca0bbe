"""Shard discovery on real (tiny) litdata directories."""

import json

import numpy as np
import pytest
import torch
from conftest import write_source, write_token_shard

from sharded_mix.shards import classify_shard_name, resolve_shard_types
from sharded_mix.streaming.discovery import discover_shards


def test_reference_layout(reference_layout):
    shards = discover_shards(reference_layout)
    assert [(s.id, s.type) for s in shards] == [
        ("c1", "code"),
        ("m1", "math"),
        ("main/1", "main"),
        ("main/2", "main"),
        ("q1", "qa"),
        ("q2", "qa"),
    ]
    tokens = {s.id: s.tokens for s in shards}
    assert tokens == {"main/1": 3000, "main/2": 2000, "c1": 1500, "m1": 1200, "q1": 800, "q2": 600}
    assert all(s.dtype == "int32" for s in shards)


def test_main_directory_layout(tmp_path):
    write_source(tmp_path, "main/1", 1, 500)
    write_source(tmp_path, "main/2", 2, 700)
    write_source(tmp_path, "w3", 3, 400)
    assert [(s.id, s.type, s.tokens) for s in discover_shards(tmp_path)] == [
        ("main/1", "main", 500),
        ("main/2", "main", 700),
        ("w3", "web", 400),
    ]


def test_no_cap_on_main_shards(tmp_path):
    for number in range(1, 61):
        write_token_shard(tmp_path / str(number), np.arange(70))
    ids = [s.id for s in discover_shards(tmp_path)]
    assert ids == [f"main/{n}" for n in range(1, 61)]


def test_tokens_are_chunk_dims_not_chunk_sizes(tmp_path):
    documents = [np.arange(n) for n in (10, 250, 33, 999, 7)]
    path = write_token_shard(tmp_path / "c1", documents, chunk_bytes=1000)
    index = json.loads((path / "index.json").read_text())
    assert len(index["chunks"]) > 1
    (shard,) = discover_shards(tmp_path)
    assert shard.tokens == sum(len(d) for d in documents) == 1299
    assert shard.documents == 5
    assert shard.chunk_tokens == tuple(c["dim"] for c in index["chunks"])
    assert shard.blocks(100) == sum(dim // 100 for dim in shard.chunk_tokens)


def test_uint16_dtype_is_read_from_the_index(tmp_path):
    write_token_shard(tmp_path / "1", np.arange(200), dtype=torch.uint16)
    (shard,) = discover_shards(tmp_path)
    assert shard.dtype == "uint16"


def test_custom_types_add_and_rename(tmp_path):
    for name in ("1", "l1", "c1", "x7"):
        write_token_shard(tmp_path / name, np.arange(100))
    found = {s.id: s.type for s in discover_shards(tmp_path, {"legal": "l", "python": "c"})}
    assert found == {"main/1": "main", "l1": "legal", "c1": "python"}  # x7 has no known prefix
    assert "code" not in resolve_shard_types({"python": "c"})


def test_classify_shard_name_is_pure():
    types = resolve_shard_types()
    assert classify_shard_name("12", types) == ("main/12", "main")
    assert classify_shard_name("w12", types) == ("w12", "web")
    assert classify_shard_name("train", types) is None
    assert classify_shard_name("cc1", types) is None
    assert classify_shard_name("c1", types, under_main=True) is None


def test_directories_named_like_shards_without_index_are_errors_unless_excluded(tmp_path):
    write_source(tmp_path, "1", 1, 300)
    (tmp_path / "2").mkdir()
    (tmp_path / "m1").mkdir()
    (tmp_path / "notes").mkdir()
    with pytest.raises(
        ValueError,
        match=r"(?s)2 shard directories are not usable.*main/2 \(.*/2\): has no index.json"
        r".*m1 \(.*/m1\): has no index.json.*exclude_shards",
    ):
        discover_shards(tmp_path)
    assert [s.id for s in discover_shards(tmp_path, exclude=["main/2", "m1"])] == ["main/1"]


def test_a_single_litdata_directory_is_one_main_source(tmp_path):
    write_source(tmp_path, "corpus", 1, 300)
    (shard,) = discover_shards(tmp_path / "corpus")
    assert (shard.id, shard.type, shard.tokens) == ("main", "main", 300)


def test_missing_and_empty_data_path(tmp_path):
    with pytest.raises(ValueError, match="data_path is empty"):
        discover_shards("")
    with pytest.raises(ValueError, match="does not exist"):
        discover_shards(tmp_path / "missing")


def test_no_shards_found_says_what_was_looked_for(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match=r"no shards found\. Looked for numbered dirs 1, 2, .* c1 \(code\)"):
        discover_shards(tmp_path)


def test_same_main_shard_twice_is_an_error(tmp_path):
    write_source(tmp_path, "1", 1, 100)
    write_source(tmp_path, "main/1", 2, 100)
    with pytest.raises(ValueError, match="'main/1' exists both"):
        discover_shards(tmp_path)


def test_bad_shard_types():
    with pytest.raises(ValueError, match="shard_types: prefix '1x'"):
        resolve_shard_types({"legal": "1x"})
    with pytest.raises(ValueError, match="shard_types: type name 'main'"):
        resolve_shard_types({"main": "z"})


def test_unreadable_index(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read index.json"):
        discover_shards(tmp_path)
