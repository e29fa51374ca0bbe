"""Content hashes of chunk files (xxh3-128), and the node ledger that remembers which files were verified.

A shard's hashes live in ``checksums.json`` beside its ``index.json`` (plain litdata ignores it):
``{"algorithm": "xxh3_128", "chunks": {"<chunk file>": {"bytes": n, "xxh3_128": "<32 hex>"}}}``. ``prepare`` and
``merge`` write it; ``sharded-mix hash`` adds it to any shard. A chunk is verified once per node where its bytes are
first read: while it downloads (remote), or when a process first maps it (local; a node's cache copy the same
way). The ledger is one empty file per verified (path, size, mtime, hash) under the node's cache directory, so the
other processes of the node and later runs do not hash the file again; a file changed since has another key.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import xxhash

CHECKSUMS_FILE = "checksums.json"
ALGORITHM = "xxh3_128"
VERIFY_MODES = ("first_read", "off")


def new_hasher():
    """An incremental xxh3-128 hasher: ``update(bytes)``, ``hexdigest()``."""
    return xxhash.xxh3_128()


def file_digest(path: str | Path) -> str:
    """The xxh3-128 of a whole file, hashed from a memory map (no copy, one pass)."""
    hasher = new_hasher()
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size:
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                hasher.update(mapped)
    return hasher.hexdigest()


def read_digest(path: str | Path, block: int = 1 << 22) -> str:
    """The xxh3-128 of a whole file, read in blocks into one buffer: the same hash as ``file_digest``, and the
    process's memory does not grow with the file."""
    hasher = new_hasher()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()


def checksums_listing(hashes: Mapping[str, tuple[int, str]]) -> dict:
    """``checksums.json``'s content for ``{chunk file: (bytes, xxh3-128 hex)}``."""
    chunks = {name: {"bytes": size, ALGORITHM: digest} for name, (size, digest) in sorted(hashes.items())}
    return {"algorithm": ALGORITHM, "chunks": chunks}


def write_checksums(directory: str | Path, hashes: Mapping[str, tuple[int, str]]) -> Path:
    """Write ``directory/checksums.json`` atomically (a temporary file, then a rename)."""
    path = Path(directory) / CHECKSUMS_FILE
    temporary = path.with_name(f".{CHECKSUMS_FILE}.{os.getpid()}")
    temporary.write_text(json.dumps(checksums_listing(hashes), indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def chunk_hashes(listing: Mapping, chunk_files: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The hash of each of ``chunk_files`` from a ``checksums.json`` listing; a ``ValueError`` naming ``where`` when
    it is not one, or misses a chunk of the shard."""
    if not isinstance(listing, Mapping) or listing.get("algorithm") != ALGORITHM:
        algorithm = listing.get("algorithm") if isinstance(listing, Mapping) else None
        raise ValueError(
            f"{where} is not a {ALGORITHM} {CHECKSUMS_FILE} (algorithm {algorithm!r}); rerun `sharded-mix hash`."
        )
    chunks = listing.get("chunks") or {}
    missing = [
        name for name in chunk_files if not isinstance(chunks.get(name), Mapping) or ALGORITHM not in chunks[name]
    ]
    if missing:
        raise ValueError(
            f"{where} has no hash for {len(missing)} of the shard's {len(chunk_files)} chunk files (first: "
            f"{missing[0]}); it was written for another index.json. Rerun `sharded-mix hash` on the shard."
        )
    return tuple(str(chunks[name][ALGORITHM]) for name in chunk_files)


def mismatch_error(shard_id: str, chunk_file: str, where: str, expected: str, found: str) -> ValueError:
    return ValueError(
        f"shard {shard_id!r} chunk {chunk_file} ({where}) has {ALGORITHM} {found}, its {CHECKSUMS_FILE} says "
        f"{expected}: the file was changed or damaged after it was hashed. Restore the shard (or rerun `sharded-mix "
        "prepare`), or exclude it with exclude_shards."
    )


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), shared by the processes of a node."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


class Ledger:
    """Which files this node verified: one empty file per (real path, size, mtime, expected hash) under
    ``directory`` (atomic to create, so any number of processes share it)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _entry(self, path: str | Path, expected: str) -> Path | None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        key = f"{os.path.realpath(path)}\n{info.st_size}\n{info.st_mtime_ns}\n{expected}"
        return self.directory / xxhash.xxh3_128_hexdigest(key.encode())

    def verified(self, path: str | Path, expected: str) -> bool:
        entry = self._entry(path, expected)
        return entry is not None and entry.exists()

    def remember(self, path: str | Path, expected: str) -> None:
        entry = self._entry(path, expected)
        if entry is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            entry.touch()
