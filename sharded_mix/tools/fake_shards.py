"""Token shards of any size that take no disk: a real ``index.json`` and sparse chunk files.

Each chunk file is laid out as litdata's ``TokensLoader`` writes it (a uint32 item count, the
item offsets, then the tokens), but only the header is written: ``truncate`` extends the file to
its full size without allocating blocks, so its tokens read as zeros. Use them to measure memory
and start-up at 100B or 1T tokens (``benchmarks/bench_scale.py``), never to train.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sharded_mix.shards import HEADER_ITEM_BYTES

TOKEN_DTYPES = ("uint16", "int32", "uint32", "int64")


def _data_format(dtype: str) -> str:
    """litdata's ``data_format`` entry for numpy token arrays of ``dtype``."""
    from litdata.constants import _NUMPY_DTYPES_MAPPING

    (code,) = [code for code, numpy_dtype in _NUMPY_DTYPES_MAPPING.items() if numpy_dtype == np.dtype(dtype)]
    return f"no_header_numpy:{code}"


def write_sparse_token_shard(path: str | Path, tokens: int, chunk_tokens: int, dtype: str = "uint16") -> Path:
    """A token shard of ``tokens`` tokens in chunks of ``chunk_tokens`` (the last may be shorter), one
    document per chunk; its chunk files are sparse, so it costs a few KB of disk whatever its size."""
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {TOKEN_DTYPES}")
    if tokens < 1 or chunk_tokens < 1:
        raise ValueError(f"tokens ({tokens}) and chunk_tokens ({chunk_tokens}) must be positive")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    itemsize = np.dtype(dtype).itemsize
    header = 3 * HEADER_ITEM_BYTES  # one item: count, two offsets
    chunks = []
    for number, start in enumerate(range(0, tokens, chunk_tokens)):
        dim = min(chunk_tokens, tokens - start)
        filename = f"chunk-0-{number}.bin"
        size = header + dim * itemsize
        with open(path / filename, "wb") as f:
            f.write(np.array([1, header, size], dtype=np.uint32).tobytes())
            f.truncate(size)
        chunks.append({"chunk_bytes": size, "chunk_size": 1, "dim": dim, "filename": filename})
    config = {
        "chunk_bytes": chunk_tokens * itemsize,
        "chunk_size": None,
        "compression": None,
        "data_format": [_data_format(dtype)],
        "data_spec": json.dumps([1, {"type": None, "context": None, "children_spec": []}]),
        "encryption": None,
        "item_loader": "TokensLoader",
    }
    tmp = path / "index.json.tmp"
    tmp.write_text(json.dumps({"chunks": chunks, "config": config}))
    os.replace(tmp, path / "index.json")
    return path
