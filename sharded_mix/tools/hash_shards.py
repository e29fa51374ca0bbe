"""``sharded-mix hash``: add content hashes (``checksums.json``) to token shards written by anything.

Every chunk file of every shard under a path (a shard, or a base directory of shards) is hashed with xxh3-128 in
worker processes (xxhash holds the GIL), with a progress bar over bytes. Progress is kept in a partial file beside
``index.json``, so an interrupted run resumes where it stopped: a chunk is hashed again only if its size or
modification time changed. ``index.json`` and the chunks are not touched, so plain litdata reads the shard as before.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.shards import INDEX_FILE, is_plain_file_name
from sharded_mix.streaming.checksums import CHECKSUMS_FILE, chunk_hashes, file_digest, write_checksums
from sharded_mix.streaming.discovery import read_index
from sharded_mix.streaming.storage import is_url

logger = logging.getLogger(__name__)

PARTIAL_FILE = ".checksums.partial.json"
SAVE_EVERY = 64
"""Chunks hashed between two saves of the partial file."""


@dataclass(frozen=True)
class HashReport:
    """What ``hash_shard`` did to one shard."""

    shard: Path
    chunks: int
    hashed: int
    """Chunks hashed now (the others: hashed before, by a resumed run, or already in ``checksums.json``)."""
    bytes_hashed: int

    def describe(self) -> str:
        if not self.hashed:
            return f"{self.shard}: {self.chunks} chunk(s) already hashed"
        return f"{self.shard}: hashed {self.hashed} of {self.chunks} chunk(s), {self.bytes_hashed / 2**30:.2f} GiB"


def shard_dirs(path: Path) -> list[Path]:
    """The shard directories at or under ``path`` (each holding ``index.json``), sorted."""
    if is_url(str(path)):
        raise ValueError(
            f"{path}: sharded-mix hash reads local shards; hash a local copy and upload its {CHECKSUMS_FILE} beside "
            f"{INDEX_FILE}."
        )
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist; give a shard directory or a base directory of shards.")
    if (path / INDEX_FILE).is_file():
        return [path]
    found = sorted(Path(root) for root, _, files in os.walk(path, followlinks=True) if INDEX_FILE in files)
    if not found:
        raise ValueError(f"{str(path)!r} holds no {INDEX_FILE}; give a shard directory or a base directory of shards.")
    return found


def _chunk_files(shard: Path) -> list[str]:
    index = read_index(shard)
    names = [chunk.get("filename") for chunk in index.get("chunks", [])]
    bad = [name for name in names if not isinstance(name, str) or not is_plain_file_name(name)]
    if bad:
        raise ValueError(f"{shard / INDEX_FILE} lists {bad[0]!r}, not a chunk file name inside the shard.")
    return names


def _hash_one(path: str) -> tuple[str, int, int, str]:
    info = os.stat(path)
    return path, info.st_size, info.st_mtime_ns, file_digest(path)


def hash_shard(shard: Path, workers: int = 2, force: bool = False, bar=None) -> HashReport:
    """Write ``shard/checksums.json``, hashing the chunks no earlier (interrupted) run hashed as they are now."""
    names = _chunk_files(shard)
    sizes = {name: os.path.getsize(shard / name) for name in names}
    final = shard / CHECKSUMS_FILE
    if final.is_file() and not force:
        try:
            chunk_hashes(json.loads(final.read_text(encoding="utf-8")), tuple(names), str(final))
            if bar is not None:
                bar.update(sum(sizes.values()))
            return HashReport(shard, len(names), 0, 0)
        except (ValueError, json.JSONDecodeError):
            logger.info("%s does not cover the shard's chunks: hashing it again", final)
    partial_path = shard / PARTIAL_FILE
    done: dict[str, list] = {}
    if partial_path.is_file() and not force:
        done = json.loads(partial_path.read_text(encoding="utf-8"))
    todo = []
    for name in names:
        info = os.stat(shard / name)
        if done.get(name, [None, None])[:2] != [info.st_size, info.st_mtime_ns]:
            todo.append(name)
            done.pop(name, None)
    hashed_bytes = 0
    if bar is not None:
        bar.update(sum(sizes[name] for name in names if name not in todo))

    def save() -> None:
        partial_path.write_text(json.dumps(done), encoding="utf-8")

    if todo:
        with ProcessPoolExecutor(max(1, workers)) as pool:
            futures = [pool.submit(_hash_one, str(shard / name)) for name in todo]
            for count, future in enumerate(as_completed(futures), start=1):
                path, size, mtime, digest = future.result()
                done[Path(path).name] = [size, mtime, digest]
                hashed_bytes += size
                if bar is not None:
                    bar.update(size)
                if count % SAVE_EVERY == 0:
                    save()
    write_checksums(shard, {name: (done[name][0], done[name][2]) for name in names})
    partial_path.unlink(missing_ok=True)
    return HashReport(shard, len(names), len(todo), hashed_bytes)


def hash_path(path: Path, workers: int = 2, force: bool = False, progress: bool = True) -> list[HashReport]:
    """``hash_shard`` for every shard at or under ``path``, with one progress bar over all their bytes."""
    shards = shard_dirs(Path(path))
    total = sum(os.path.getsize(shard / name) for shard in shards for name in _chunk_files(shard))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="hashing", unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)
    try:
        return [hash_shard(shard, workers, force, bar) for shard in shards]
    finally:
        if bar is not None:
            bar.close()
