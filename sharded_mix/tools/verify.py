"""``sharded-mix inspect --verify``: read every chunk's header and a few windows of its tokens, never whole chunks.

Per chunk of a plain token shard: the file checks of ``chunk_checks`` (one ``stat``), then the header (the
item count must be ``index.json``'s ``chunk_size``; the offsets start after the header, never decrease, fall
on token boundaries and end at the file size), then ``SAMPLE_WINDOWS`` windows of ``WINDOW_TOKENS`` tokens
(start, middle, end) whose ids must lie in ``[0, vocab_size)``. Other layouts cannot be read this way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sharded_mix.shards import Shard, chunk_header_bytes
from sharded_mix.streaming.chunk_checks import chunk_file_problem

WINDOW_TOKENS = 4096
SAMPLE_WINDOWS = 3
NOT_VERIFIED = "not verified (compressed/other layout)"


def verify_chunk(shard: Shard, chunk: int, vocab_size: int | None) -> list[str]:
    """Problems of chunk ``chunk`` of a plain token shard: its file, header and sampled token ids."""
    problem = chunk_file_problem(shard, chunk)
    if problem:
        return [problem]
    name = shard.chunk_files[chunk]
    try:
        with open(os.path.join(shard.path, name), "rb") as file:
            problems = header_problems(shard, chunk, file)
            return [f"{name}: {p}" for p in problems or token_problems(shard, chunk, file, vocab_size)]
    except OSError as err:
        return [f"{name}: cannot be read ({err.strerror})"]


def header_problems(shard: Shard, chunk: int, file) -> list[str]:
    """What the chunk's header (item count, offsets) gets wrong, against ``index.json`` and the file size."""
    items, header, size = (
        shard.chunk_items[chunk],
        chunk_header_bytes(shard.chunk_items[chunk]),
        shard.chunk_bytes(chunk),
    )
    values = np.frombuffer(file.read(header), dtype=np.uint32).astype(np.int64)
    if values.size < items + 2:
        return [f"the file ended inside its {header:,}-byte header"]
    if values[0] != items:
        return [
            f"header counts {values[0]:,} documents, index.json's chunk_size says {items:,} "
            "(a corrupt header, or an index.json from another write)"
        ]
    offsets = values[1:]
    problems = []
    if offsets[0] != header:
        problems.append(f"first offset is {offsets[0]:,}, expected the header size {header:,}")
    if offsets[-1] != size:
        problems.append(f"last offset is {offsets[-1]:,}, expected the file size {size:,}")
    decreasing = np.flatnonzero(np.diff(offsets) < 0)
    if decreasing.size:
        problems.append(f"offsets decrease at document {decreasing[0]:,} ({decreasing.size:,} places)")
    itemsize = np.dtype(shard.dtype).itemsize
    misaligned = np.flatnonzero((offsets - header) % itemsize)
    if misaligned.size:
        problems.append(
            f"offset {offsets[misaligned[0]]:,} of document {misaligned[0]:,} is not on a {itemsize}-byte "
            f"{shard.dtype} token boundary (index dtype disagrees with the file?)"
        )
    return problems


def documents_problems(shard: Shard) -> list[str]:
    """What prepare's document files of ``shard`` get wrong against its ``index.json`` (none when it has none)."""
    from sharded_mix.tools.documents import INPUTS_FILE, ShardDocuments

    try:
        documents = ShardDocuments.open(shard.path)
    except (ValueError, OSError, KeyError) as err:
        return [f"{INPUTS_FILE}: cannot be read ({err})"]
    if documents is None:
        return []
    problems = []
    if (documents.documents, documents.tokens) != (shard.documents, shard.tokens):
        problems.append(
            f"{INPUTS_FILE} covers {documents.documents:,} documents of {documents.tokens:,} tokens, index.json holds "
            f"{shard.documents:,} of {shard.tokens:,} (document files from another write; rerun prepare)"
        )
    elif documents.documents and documents.span(documents.documents - 1)[0] >= shard.tokens:
        problems.append(f"documents.bin's last document starts past the shard's {shard.tokens:,} tokens")
    return problems


def sample_windows(tokens: int, window: int = WINDOW_TOKENS) -> list[tuple[int, int]]:
    """``(start, stop)`` token ranges to sample from a chunk of ``tokens`` tokens: its start, middle and end.

    Small chunks are read whole, so the windows never overlap.
    """
    if tokens <= SAMPLE_WINDOWS * window:
        return [(0, tokens)] if tokens else []
    middle = (tokens - window) // 2
    return [(0, window), (middle, middle + window), (tokens - window, tokens)]


def token_problems(shard: Shard, chunk: int, file, vocab_size: int | None) -> list[str]:
    """The first out-of-range token id in the sampled windows (negative, or >= ``vocab_size``), if any."""
    dtype, header = np.dtype(shard.dtype), chunk_header_bytes(shard.chunk_items[chunk])
    bad_count, first = 0, None
    for start, stop in sample_windows(shard.chunk_tokens[chunk]):
        file.seek(header + start * dtype.itemsize)
        ids = np.frombuffer(file.read((stop - start) * dtype.itemsize), dtype=dtype)
        bad = ids < 0 if dtype.kind == "i" else np.zeros(ids.shape, dtype=bool)
        if vocab_size is not None:
            bad |= ids >= vocab_size
        where = np.flatnonzero(bad)
        if where.size and first is None:
            first = (int(ids[where[0]]), start + int(where[0]))
        bad_count += where.size
    if first is None:
        return []
    value, position = first
    what = "negative" if value < 0 else f">= vocab size {vocab_size:,}"
    more = f"; {bad_count - 1:,} more out of range in the sampled tokens" if bad_count > 1 else ""
    return [f"token id {value:,} at token {position:,} is {what} (index dtype or tokenizer mismatch?){more}"]


def tokenizer_vocab_size(tokenizer_dir: str | Path) -> int:
    """Largest token id + 1 of the litgpt tokenizer in ``tokenizer_dir``, added tokens included."""
    from litgpt.tokenizer import Tokenizer

    from sharded_mix.tools.prepare import vocab_size_with_added

    if not Path(tokenizer_dir).is_dir():
        raise ValueError(
            f"--tokenizer-dir {str(tokenizer_dir)!r} is not a directory; pass the directory litgpt's Tokenizer loads."
        )
    try:
        return vocab_size_with_added(Tokenizer(tokenizer_dir))
    except NotImplementedError as err:
        raise ValueError(
            f"--tokenizer-dir {str(tokenizer_dir)!r} holds neither tokenizer.json nor tokenizer.model."
        ) from err


def verify_notes(vocab_size: int | None) -> list[str]:
    """What ``--verify`` checked, for the report."""
    bound = (
        f"in [0, {vocab_size:,})"
        if vocab_size is not None
        else ("not checked against a vocabulary (give --vocab-size or --tokenizer-dir; only negative ids are flagged)")
    )
    return [
        f"verified: every chunk header, and {SAMPLE_WINDOWS} windows of {WINDOW_TOKENS:,} tokens per chunk "
        f"(start, middle, end); token ids {bound}; prepare's document files against index.json"
    ]
