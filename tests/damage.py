"""Ways a shard gets damaged on disk, shared by the inspect and the bad-input tests.

Each edits the first chunk or the index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sharded_mix.shards import chunk_header_bytes, index_token_dtype
from sharded_mix.streaming.discovery import read_index


def first_chunk(shard_dir: Path) -> tuple[Path, dict]:
    entry = read_index(shard_dir)["chunks"][0]
    return shard_dir / entry["filename"], entry


def edit_index(shard_dir: Path, edit) -> None:
    index = read_index(shard_dir)
    edit(index)
    (shard_dir / "index.json").write_text(json.dumps(index))


def patch_token(shard_dir: Path, position: int, value: int) -> None:
    """Overwrite token ``position`` of the first chunk in place (the file keeps its size)."""
    chunk, entry = first_chunk(shard_dir)
    dtype = np.dtype(index_token_dtype(read_index(shard_dir)))
    with open(chunk, "r+b") as f:
        f.seek(chunk_header_bytes(entry["chunk_size"]) + position * dtype.itemsize)
        f.write(np.array([value], dtype=dtype).tobytes())


def truncate(shard_dir: Path) -> None:
    chunk, _ = first_chunk(shard_dir)
    os.truncate(chunk, chunk.stat().st_size - 10)


def empty(shard_dir: Path) -> None:
    os.truncate(first_chunk(shard_dir)[0], 0)


def delete(shard_dir: Path) -> None:
    first_chunk(shard_dir)[0].unlink()


def unreadable(shard_dir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file whatever its mode")
    first_chunk(shard_dir)[0].chmod(0)


def index_says_int32(shard_dir: Path) -> None:
    """The index claims int32 tokens (litdata's torch dtype code 15) over a file written in another dtype."""
    edit_index(shard_dir, lambda index: index["config"].update(data_format=["no_header_tensor:15"]))


def index_says_int16(shard_dir: Path) -> None:
    """The index claims int16 tokens (litdata's torch dtype code 13) over a file written in another dtype."""
    edit_index(shard_dir, lambda index: index["config"].update(data_format=["no_header_tensor:13"]))


def index_dim_too_small(shard_dir: Path) -> None:
    edit_index(shard_dir, lambda index: index["chunks"][0].update(dim=index["chunks"][0]["dim"] - 7))


def header_count_wrong(shard_dir: Path) -> None:
    chunk, entry = first_chunk(shard_dir)
    with open(chunk, "r+b") as f:
        f.write(np.array([entry["chunk_size"] + 1], dtype=np.uint32).tobytes())
