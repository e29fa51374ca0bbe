"""What a node checks of a chunk file before any process reads it, once (``checksums.Ledger`` remembers it).

Two checks: the file's xxh3-128 against the shard's ``checksums.json`` (a ``HashMismatch`` when it differs), and,
for shards whose manifest does not name their tokenizer, that every token id is below the run's vocabulary size.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from sharded_mix.shards import Shard, chunk_header_bytes
from sharded_mix.streaming.checksums import Ledger, exclusive_lock, file_digest, mismatch_error


class HashMismatch(ValueError):
    """A chunk file whose content hash is not the one its shard records."""


class ChunkVerifier:
    """The checks a chunk needs, done and remembered in the node's ledger under ``directory``."""

    def __init__(self, directory: str | Path, token_limit: int | None = None) -> None:
        self.ledger = Ledger(directory)
        self.token_limit = token_limit
        """Token ids must be below this in shards whose manifest names no tokenizer (None: not checked)."""
        self.hashed_bytes = 0

    def limit(self, shard: Shard) -> int | None:
        return self.token_limit if shard.tokenizer is None and shard.plain_tokens else None

    def needed(self, shard: Shard) -> bool:
        return bool(shard.chunk_hashes) or self.limit(shard) is not None

    def key(self, shard: Shard, chunk: int) -> str:
        """What the ledger remembers a file was checked for: its hash and the id limit."""
        expected = shard.chunk_hashes[chunk] if shard.chunk_hashes else "-"
        return f"{expected}|ids<{self.limit(shard)}"

    def done(self, shard: Shard, chunk: int, path: str | Path) -> bool:
        return self.ledger.verified(path, self.key(shard, chunk))

    def check(self, shard: Shard, chunk: int, path: str | Path, where: str, digest: str | None = None) -> None:
        """Check the file (``digest``: its hash, computed already) and remember it; ``HashMismatch`` or
        ``ValueError`` naming shard and chunk when it fails."""
        if shard.chunk_hashes:
            if digest is None:
                digest = file_digest(path)
                self.hashed_bytes += os.path.getsize(path)
            if digest != shard.chunk_hashes[chunk]:
                error = mismatch_error(shard.id, shard.chunk_files[chunk], where, shard.chunk_hashes[chunk], digest)
                raise HashMismatch(str(error))
        limit = self.limit(shard)
        if limit is not None:
            self._check_ids(shard, chunk, path, where, limit)
        self.ledger.remember(path, self.key(shard, chunk))

    def check_once(self, shard: Shard, chunk: int, path: str) -> None:
        """``check`` a local file unless the ledger has it; one process of the node checks, the others wait."""
        if self.done(shard, chunk, path):
            return
        self.ledger.directory.mkdir(parents=True, exist_ok=True)
        lock = self.ledger.directory / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}.lock"
        with exclusive_lock(lock):
            if not self.done(shard, chunk, path):
                self.check(shard, chunk, path, path)

    @staticmethod
    def _check_ids(shard: Shard, chunk: int, path: str | Path, where: str, limit: int) -> None:
        header, count = chunk_header_bytes(shard.chunk_items[chunk]), shard.chunk_tokens[chunk]
        if not count:
            return
        tokens = np.memmap(path, dtype=shard.dtype, mode="r", offset=header, shape=(count,))
        largest = int(tokens.max())
        if largest >= limit or (tokens.dtype.kind == "i" and int(tokens.min()) < 0):
            bad = int(np.flatnonzero((tokens >= limit) | (tokens < 0))[0])
            raise ValueError(
                f"shard {shard.id!r} chunk {shard.chunk_files[chunk]} ({where}) holds token id {int(tokens[bad]):,} "
                f"at token {bad:,}, outside the run's vocabulary of {limit:,}: it was tokenized with another "
                "tokenizer, or is damaged. The shard has no manifest naming its tokenizer; re-prepare it with the "
                "run's tokenizer."
            )
