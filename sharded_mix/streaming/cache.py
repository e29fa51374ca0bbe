"""A node-local cache of remote shards' chunk files, so they are read through the same memory maps as local shards;
and where every chunk with a content hash is verified, once per node, before a process reads it.

Each chunk is downloaded whole, once per node (again only if it was evicted): the processes of a node (ranks ×
DataLoader workers) share the cache directory, an exclusive ``flock`` on ``<chunk file>.lock`` serializes
check-then-download, and downloads are atomic
(``RemoteDir.download``). A cached file whose size differs from what the shard's ``index.json`` implies is fetched
again. Shards live in ``<cache_dir>/<16 hex of sha256(shard URL, fingerprint)>``. With ``max_bytes`` the cache evicts,
after each download, the least recently used chunks outside what this process reads now or next.

Verification (``verify``, for shards with a ``checksums.json``): a download is hashed as it streams and compared,
with the object's ETag against discovery's, before its atomic rename (a mismatch is fetched once more, then an
error); a cached copy or a local chunk file is hashed the first time a process of the node maps it (one process
hashes, the others wait on a lock) and remembered in the node's ledger (``checksums.Ledger``), so no other process
and no later run hashes it again. A cached copy that fails is deleted and fetched again; a local file that fails is
an error naming it (``verify.ChunkVerifier``: hashes, and the id range of shards without a manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from sharded_mix.shards import INDEX_FILE
from sharded_mix.streaming.checksums import exclusive_lock, mismatch_error, new_hasher
from sharded_mix.streaming.storage import RemoteDir, is_url
from sharded_mix.streaming.verify import ChunkVerifier, HashMismatch

if TYPE_CHECKING:
    from sharded_mix.shards import Shard

CACHE_DIR_VARIABLE = "SHARDED_MIX_CACHE_DIR"
PREFETCH_THREADS = 4
LEDGER_DIR = "verified"
_PREFETCH_THREAD = "sharded-mix-prefetch"
logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$SHARDED_MIX_CACHE_DIR`` if set, else ``<temp dir>/sharded_mix_cache_<uid>``."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / f"sharded_mix_cache_{os.getuid()}"


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


class ChunkCache:
    """Whole chunk files of remote shards, downloaded once per node into a local directory."""

    def __init__(
        self,
        cache_dir: str | Path,
        storage_options: Mapping[str, object] | None = None,
        max_bytes: int | None = None,
        verify: bool = True,
        token_limit: int | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.storage_options = dict(storage_options or {})
        self.max_bytes = max_bytes
        """Chunk files the training cache may hold (None: no bound); validation copies are not counted."""
        self.verify = verify
        """Whether chunks are verified (once per node) before they are read: hashes, and ids of shards without a
        manifest against ``verifier.token_limit``."""
        self.verifier = ChunkVerifier(self.cache_dir / LEDGER_DIR, token_limit)
        self.downloaded_bytes = 0
        self.downloads = 0
        self.evictions = 0
        self._wanted: dict[str, set[str]] = {}  # shard copy -> chunk files this process reads now or next
        self._dirs: dict[str, RemoteDir] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._asked: dict[tuple[str, int], Future] = {}
        self._counting = threading.Lock()

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.cache_dir)!r})"

    def __getstate__(self) -> dict:
        return {
            key: value
            for key, value in self.__dict__.items()
            if key not in ("_dirs", "_pool", "_asked", "_counting", "_wanted")
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _dirs={}, _pool=None, _asked={}, _counting=threading.Lock(), _wanted={})

    def verifies(self, shard: Shard) -> bool:
        return self.verify and self.verifier.needed(shard)

    @property
    def hashed_bytes(self) -> int:
        return self.verifier.hashed_bytes

    def prefetch(self, shard: Shard, chunks: Iterable[int]) -> None:
        """Download these chunks of ``shard`` in background threads, in this order, unless asked before.

        A failed download is left for the read that needs the chunk, which raises the error."""
        chunks = list(chunks)
        with self._counting:
            self._wanted[str(self.shard_dir(shard))] = {shard.chunk_files[chunk] for chunk in chunks}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix=_PREFETCH_THREAD)
        for chunk in chunks:
            key = (shard.path, chunk)
            if key not in self._asked:
                self._asked[key] = self._pool.submit(self.chunk_file, shard, chunk)
        if len(self._asked) > 4 * PREFETCH_THREADS:
            self._asked = {key: future for key, future in self._asked.items() if not future.done()}

    def shard_dir(self, shard: Shard) -> Path:
        """Where ``shard``'s files are cached: named by its URL and fingerprint, so a shard rewritten under the same
        URL is never read from an older copy."""
        key = f"{shard.path.rstrip('/')}\n{shard.fingerprint}"
        return self.cache_dir / hashlib.sha256(key.encode()).hexdigest()[:16]

    def remote_dir(self, shard_url: str) -> RemoteDir:
        """The shard's ``RemoteDir`` (one per URL in this instance)."""
        if shard_url not in self._dirs:
            self._dirs[shard_url] = RemoteDir(shard_url, self.storage_options)
        return self._dirs[shard_url]

    def chunk_file(self, shard: Shard, chunk: int) -> str:
        """The local path of chunk ``chunk`` of ``shard``, ready to read: a remote shard's downloaded first if needed
        (waiting for the read-ahead when it has the chunk in hand), and with ``verify`` checked first (once per
        node)."""
        asked = self._asked.get((shard.path, chunk))
        if asked is not None and not threading.current_thread().name.startswith(_PREFETCH_THREAD):
            with contextlib.suppress(Exception):  # a failure is raised again below, by this read's own attempt
                asked.result()  # the read-ahead is on it: wait rather than fetch or hash it twice
        if not is_url(shard.path):
            path = os.path.join(shard.path, shard.chunk_files[chunk])
            if self.verifies(shard):
                self.verifier.check_once(shard, chunk, path)
            return path
        name = shard.chunk_files[chunk]
        local = self.shard_dir(shard) / name
        expected = shard.chunk_bytes(chunk)
        found = _size_or_none(local)
        if found is not None and (expected is None or found == expected) and self._trusted(shard, chunk, local):
            if self.max_bytes is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(local)  # recently used: evicted last
            return str(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(local.with_name(local.name + ".lock")):
            found = _size_or_none(local)  # another process may have fetched it meanwhile
            if found is None or (expected is not None and found != expected) or not self._trusted(shard, chunk, local):
                self._download(shard, chunk, local, expected)
        if self.max_bytes is not None:
            self._make_room(local)
        return str(local)

    def _trusted(self, shard: Shard, chunk: int, local: Path) -> bool:
        """Whether a cached copy may be read: no check needed, in the ledger, or checked now (a copy whose hash is
        wrong is deleted, and the caller fetches it again)."""
        if not self.verifies(shard) or self.verifier.done(shard, chunk, local):
            return True
        try:
            self.verifier.check(shard, chunk, local, str(local))
            return True
        except FileNotFoundError:
            return False
        except HashMismatch as mismatch:
            logger.warning("%s; the node's cached copy %s is damaged: fetching it again", mismatch, local)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
            return False

    def _make_room(self, keep: Path) -> None:
        """Delete cached chunk files until they fit in ``max_bytes``: never ``keep`` nor a chunk this process reads
        now or next (its sources' current windows and read-ahead), the least recently used first. A process that
        has a deleted chunk mapped keeps reading it; one that needs it again downloads it again."""
        files = []
        for shard_dir in self.cache_dir.iterdir():
            if not shard_dir.is_dir() or (shard_dir / INDEX_FILE).exists():  # a validation copy (``mirror``)
                continue
            for entry in os.scandir(shard_dir):
                if entry.name.startswith(".") or entry.name.endswith(".lock"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat()
                    files.append((info.st_mtime_ns, info.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        if total <= self.max_bytes:
            return
        with self._counting:
            wanted = {(directory, name) for directory, names in self._wanted.items() for name in names}
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path == keep or (str(path.parent), path.name) in wanted:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= size
                with self._counting:
                    self.evictions += 1

    def _download(self, shard: Shard, chunk: int, local: Path, expected: int | None) -> None:
        """Fetch one chunk; with verification, hashed as it streams and checked (ETag and hash) before the rename,
        fetched once more on a hash mismatch."""
        name, directory = shard.chunk_files[chunk], self.remote_dir(shard.path)
        url = directory.url_of(name)
        verifying = self.verifies(shard)
        etag = shard.chunk_etags[chunk] if shard.chunk_etags else None

        def check(found_etag: str | None, digest: str) -> None:
            if etag and found_etag and found_etag != etag:
                raise ValueError(
                    f"chunk {url!r} was replaced after the shard was discovered (ETag {found_etag}, discovery saw "
                    f"{etag}): the shard changed during the run. Restore it, or restart to read the new shard."
                )
            if verifying and shard.chunk_hashes and digest != shard.chunk_hashes[chunk]:
                raise HashMismatch(str(mismatch_error(shard.id, name, url, shard.chunk_hashes[chunk], digest)))

        for attempt in (1, 2):
            try:
                written = directory.download(name, local, new_hasher() if verifying else None, check)
                break
            except HashMismatch as mismatch:
                if attempt == 2:
                    raise
                logger.warning("%s; fetching it once more", mismatch)
        with self._counting:
            self.downloads += 1
            self.downloaded_bytes += written
        if expected is not None and written != expected:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
            raise ValueError(
                f"chunk {url!r} has {written:,} bytes but the shard's {INDEX_FILE} implies {expected:,}; the shard is "
                "damaged or was rewritten after its index was read: re-upload it (or exclude it) and restart."
            )
        if verifying:  # the hash was checked as it streamed; the id range (if asked) is checked now
            self.verifier.check(
                shard, chunk, local, url, digest=shard.chunk_hashes[chunk] if shard.chunk_hashes else None
            )

    def mirror(self, shard: Shard) -> str:
        """``shard_dir(shard)`` made a complete local copy (every chunk, then ``index.json``), for litdata."""
        for chunk in range(shard.chunks):
            self.chunk_file(shard, chunk)
        directory = self.shard_dir(shard)
        self.remote_dir(shard.path).download(INDEX_FILE, directory / INDEX_FILE)  # atomic, and last: a complete copy
        return str(directory)
