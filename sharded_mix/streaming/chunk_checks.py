"""Whether a shard's chunk files are there as its ``index.json`` says: one ``stat`` and one ``access`` per chunk, no
reads.

A chunk file must be a plain file name inside the shard, exist, be a readable regular file and, in the
plain TokensLoader layout, have exactly the size its index entry implies (header + ``dim`` tokens of
the shard's dtype). ``sharded-mix inspect`` reports what is wrong; the training set-up refuses it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

import numpy as np

from sharded_mix.shards import Shard, chunk_header_bytes, is_plain_file_name
from sharded_mix.streaming.storage import is_url, join_url

CHUNK_FIXES = "restore the file, or re-run `sharded-mix prepare` for this shard"


def chunk_file_problem(shard: Shard, chunk: int) -> str | None:
    """What is wrong with chunk file ``chunk`` of ``shard`` on disk, or None (the message names the file, not the
    shard)."""
    name = shard.chunk_files[chunk]
    if not is_plain_file_name(name):
        return (
            f"chunk {chunk}: file name {name!r} is not a file name inside the shard (no '/', '..' or absolute paths); "
            "index.json was edited or written by another tool. Re-run `sharded-mix prepare` for this shard."
        )
    path = os.path.join(shard.path, name)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"chunk file {path!r} is missing; {CHUNK_FIXES}."
    except OSError as err:
        return f"chunk file {path!r} cannot be read ({err.strerror}); {CHUNK_FIXES}."
    if not stat.S_ISREG(info.st_mode):
        return f"chunk file {path!r} is not a regular file; {CHUNK_FIXES}."
    if not os.access(path, os.R_OK):
        return f"chunk file {path!r} cannot be read (permission denied); fix its permissions."
    expected = shard.chunk_bytes(chunk)
    if expected is not None and info.st_size != expected:
        return (
            f"chunk file {path!r} holds {info.st_size:,} bytes, expected {expected:,} (index.json: "
            f"{shard.chunk_tokens[chunk]:,} {shard.dtype} tokens after a "
            f"{chunk_header_bytes(shard.chunk_items[chunk]):,}-byte header): "
            f"{size_mismatch_cause(shard, chunk, info.st_size)}; {CHUNK_FIXES}."
        )
    return None


def size_mismatch_cause(shard: Shard, chunk: int, size: int) -> str:
    """The likely reason chunk ``chunk`` holds ``size`` bytes instead of what ``index.json`` implies."""
    if size == 0:
        return "the file is empty (an interrupted copy or write?)"
    token_bytes, tokens = size - chunk_header_bytes(shard.chunk_items[chunk]), shard.chunk_tokens[chunk]
    itemsize = np.dtype(shard.dtype).itemsize
    if tokens and token_bytes > 0 and token_bytes % tokens == 0 and token_bytes // tokens in (1, 2, 4, 8):
        return (
            f"that is {tokens:,} tokens of {token_bytes // tokens} bytes, not {itemsize} ({shard.dtype}): "
            "index.json's dtype (or dim) disagrees with the file"
        )
    if size > shard.chunk_bytes(chunk):
        return "the file is larger: index.json's dim or dtype disagrees with the file (rewritten after indexing?)"
    return "the file is truncated, or index.json's dim or dtype disagrees with the file"


def chunk_file_problems(shard: Shard, limit: int | None = 20) -> list[str]:
    """Every problem of ``shard``'s chunk files, each naming the shard and the file; O(chunks), no reads.

    Past ``limit`` problems the rest are counted in one last entry (``None``: list them all). A remote
    shard's chunks were checked against its listing at discovery (``listed_chunk_problems``).
    """
    if is_url(shard.path):
        return []
    problems = [problem for chunk in range(shard.chunks) if (problem := chunk_file_problem(shard, chunk))]
    return [f"shard {shard.id!r}: {problem}" for problem in capped(problems, limit)]


def listed_chunk_problems(shard: Shard, sizes: Mapping[str, int]) -> list[str]:
    """What is wrong with a remote shard's chunk objects, given the sizes its listing reports (name -> bytes)."""
    problems = []
    for chunk, name in enumerate(shard.chunk_files):
        url = join_url(shard.path, name)
        if name not in sizes:
            problems.append(
                f"chunk object {url!r} is missing; upload it again, or re-run `sharded-mix prepare` for this shard"
            )
            continue
        expected = shard.chunk_bytes(chunk)
        if expected is not None and sizes[name] != expected:
            problems.append(
                f"chunk object {url!r} holds {sizes[name]:,} bytes, expected {expected:,}: "
                f"{size_mismatch_cause(shard, chunk, sizes[name])}; upload it again"
            )
    return problems


def capped(problems: list[str], limit: int | None, what: str = "chunk files") -> list[str]:
    """``problems``, the ones past ``limit`` counted in one last entry."""
    if limit is None or len(problems) <= limit:
        return problems
    return problems[:limit] + [f"... and {len(problems) - limit:,} more {what} with problems"]
