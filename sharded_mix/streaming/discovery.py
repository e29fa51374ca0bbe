"""Find typed litdata token shards under a base directory or URL: one listing plus one ``index.json`` read per shard.

The naming rules and the ``Shard`` record are ``shards.py`` (pure); this module is the I/O. A
directory entry named like a shard (``c2``, ``main/3``, ``7``) must be a readable directory with a
valid ``index.json``: anything else (an interrupted ``prepare``, a dangling or looping link, a
permission error) is an error naming it, never a shard silently left out of the blend, unless its
id is listed in ``exclude_shards``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from sharded_mix.shards import (
    INDEX_FILE,
    MAIN_TYPE,
    Shard,
    classify_shard_name,
    describe_layout,
    resolve_shard_types,
    shard_from_index,
)
from sharded_mix.streaming.checksums import CHECKSUMS_FILE, chunk_hashes
from sharded_mix.streaming.chunk_checks import capped, listed_chunk_problems
from sharded_mix.streaming.identity import MANIFEST_FILE, parse_manifest
from sharded_mix.streaming.storage import RemoteDir, is_url, join_url

logger = logging.getLogger(__name__)

SHARD_FIXES = "re-run `sharded-mix prepare` for it, remove it, or list its id in exclude_shards"


def _natural_key(shard_id: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", shard_id))


FINGERPRINT_SAMPLE_BYTES = 4096


def content_fingerprint(path: str | Path, index_content: bytes, chunk_files: Sequence[str]) -> str:
    """A short hash of a shard's ``index.json`` and of samples of its chunk bytes (the first and last 4 KiB of
    its first, middle and last chunk files): it changes when the shard is rewritten, even to the same sizes, and
    costs a few small reads whatever the shard's size. A chunk that cannot be read adds its error (set-up
    reports it)."""
    digest = hashlib.sha256(index_content)
    for chunk in _fingerprint_chunks(len(chunk_files)):
        try:
            with open(os.path.join(path, chunk_files[chunk]), "rb") as f:
                digest.update(f.read(FINGERPRINT_SAMPLE_BYTES))
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - FINGERPRINT_SAMPLE_BYTES))
                digest.update(f.read(FINGERPRINT_SAMPLE_BYTES))
        except OSError as err:
            digest.update(f"{chunk}:{err.errno}".encode())
    return digest.hexdigest()[:16]


def _load_index(path: str | Path) -> tuple[dict, bytes]:
    try:
        content = (Path(path) / INDEX_FILE).read_bytes()
    except OSError as err:
        raise ValueError(
            f"shard {str(path)!r}: cannot read {INDEX_FILE} ({err.strerror}); re-run `sharded-mix prepare`."
        ) from err
    return parse_index(content, str(path)), content


def parse_index(content: bytes, path: str) -> dict:
    """A shard's ``index.json`` from its bytes; ``ValueError`` naming ``path`` if it is not litdata's format."""
    try:
        index = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"shard {path!r}: cannot read {INDEX_FILE} ({err}); re-run `sharded-mix prepare`.") from err
    if (
        not isinstance(index, dict)
        or not isinstance(index.get("chunks"), list)
        or not isinstance(index.get("config"), dict)
    ):
        raise ValueError(
            f"shard {path!r}: its {INDEX_FILE} is not a litdata index (a JSON object with 'chunks' and 'config'); "
            "re-run `sharded-mix prepare`."
        )
    return index


def read_index(path: str | Path) -> dict:
    """Load a shard's ``index.json``; ``ValueError`` if it is missing or not litdata's format."""
    return _load_index(path)[0]


@dataclass
class BaseScan:
    """What a listing of a base directory found: shard dirs ``(id, type, path)`` and entries that cannot be shards."""

    base: str
    found: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """``"<id> (<path>): <what is wrong>"`` for each entry named like a shard that is not a readable shard directory."""
    unknown: list[str] = field(default_factory=list)
    """litdata directories with no known type prefix (logged, not used)."""
    seen: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, shard_id: str, type_name: str, path: str, problem: str | None = None) -> None:
        if shard_id in self.seen:
            raise ValueError(
                f"data_path {self.base!r}: shard {shard_id!r} exists both as {self.seen[shard_id]!r} and {path!r}; "
                "keep one of them."
            )
        self.seen[shard_id] = path
        if problem:
            self.problems.append(f"{shard_id} ({path}): {problem}")
        else:
            self.found.append((shard_id, type_name, path))

    def finish(self, base_has_index: bool) -> BaseScan:
        """A base holding ``index.json`` is one litdata directory, the source ``main``, unless it also holds shards."""
        if base_has_index:
            if self.seen:
                raise ValueError(
                    f"data_path {self.base!r} holds an {INDEX_FILE} of its own and shard directories "
                    f"({', '.join(sorted(self.seen, key=_natural_key)[:5])}); a base is either one litdata directory "
                    f"or a directory of shards: move the stray {INDEX_FILE} away, or point data_path at one of them."
                )
            self.found = [(MAIN_TYPE, MAIN_TYPE, self.base)]
        self.found.sort(key=lambda item: _natural_key(item[0]))
        return self


REMOTE_LOADS = 16
"""Shards whose listing and ``index.json`` are fetched at once."""


def _try(load, *args) -> Shard | str:
    try:
        return load(*args)
    except ValueError as err:
        return str(err)


def _load_local_shard(shard_id: str, type_name: str, path: str) -> Shard:
    index, content = _load_index(path)
    shard = shard_from_index(shard_id, type_name, path, index)
    hashes = os.path.join(path, CHECKSUMS_FILE)
    if os.path.isfile(hashes):
        shard = replace(shard, chunk_hashes=_read_hashes(Path(hashes).read_bytes(), shard, hashes))
    manifest = os.path.join(path, MANIFEST_FILE)
    if os.path.isfile(manifest):
        shard = _with_manifest(shard, Path(manifest).read_bytes())
    return replace(shard, fingerprint=content_fingerprint(path, content, shard.chunk_files))


def _with_manifest(shard: Shard, content: bytes) -> Shard:
    """``shard`` with what its ``manifest.json`` says: the tokenizer, and the id of the prepare run that wrote it."""
    try:
        manifest = json.loads(content)
        run, split = manifest.get("prepare_run"), manifest.get("split")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        run = split = None
    run = run if isinstance(run, str) else None
    return replace(shard, tokenizer=parse_manifest(content), prepare_run=run, held_out=split == "val")


def _read_hashes(content: bytes, shard: Shard, where: str) -> tuple[str, ...]:
    try:
        listing = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where} is not JSON ({err}); rerun `sharded-mix hash` on the shard.") from err
    return chunk_hashes(listing, shard.chunk_files, where)


def _load_remote_shard(shard_id: str, type_name: str, url: str, storage_options: Mapping | None) -> Shard:
    """One listing and one ``index.json`` read; chunk objects must be listed with their indexed sizes."""
    directory = RemoteDir(url, storage_options)
    _, objects = directory.list_dir()
    if INDEX_FILE not in objects:
        raise ValueError(f"has no {INDEX_FILE} (an interrupted upload or `sharded-mix prepare`?)")
    content = directory.read_bytes(INDEX_FILE)
    shard = shard_from_index(shard_id, type_name, url, parse_index(content, url))
    problems = listed_chunk_problems(shard, {name: info.size for name, info in objects.items()})
    if problems:
        raise ValueError("; ".join(capped(problems, 5)))
    if MANIFEST_FILE in objects:
        shard = _with_manifest(shard, directory.read_bytes(MANIFEST_FILE))
    if CHECKSUMS_FILE in objects:
        where = directory.url_of(CHECKSUMS_FILE)
        shard = replace(shard, chunk_hashes=_read_hashes(directory.read_bytes(CHECKSUMS_FILE), shard, where))
    digest = hashlib.sha256(content)
    for chunk in _fingerprint_chunks(shard.chunks):
        digest.update((objects[shard.chunk_files[chunk]].etag or "").encode())
    etags = tuple(objects[name].etag for name in shard.chunk_files)
    return replace(shard, fingerprint=digest.hexdigest()[:16], chunk_etags=etags)


def _fingerprint_chunks(chunks: int) -> list[int]:
    """The chunks whose bytes (local) or ETags (remote) join ``index.json`` in a shard's fingerprint."""
    return sorted({0, chunks // 2, chunks - 1}) if chunks else []


def _entry_problem(path: str) -> str | None:
    """Why ``path`` (named like a shard) is not a readable shard directory, or None."""
    try:
        os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            return "a symlink loop" if err.errno == errno.ELOOP else f"a dangling symlink to {os.readlink(path)!r}"
        return f"cannot be read ({err.strerror})"
    if not os.path.isdir(path):
        return "not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "cannot be read (permission denied)"
    index = os.path.join(path, INDEX_FILE)
    if not os.path.lexists(index):
        return f"has no {INDEX_FILE} (an interrupted `sharded-mix prepare`?)"
    if not os.path.isfile(index) or not os.access(index, os.R_OK):
        return f"its {INDEX_FILE} cannot be read"
    return None


def _entries(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError as err:
        raise ValueError(
            f"{path!r} cannot be listed ({err.strerror}); fix its permissions or point data_path elsewhere."
        ) from err


def scan_base(base: str | Path, shard_types: Mapping[str, str]) -> BaseScan:
    """List the shards under ``base`` (or ``base`` itself, a single litdata directory), sorted by id."""
    base = str(base)
    scan = BaseScan(base)

    def consider(name: str, path: str, under_main: bool) -> None:
        classified = classify_shard_name(name, shard_types, under_main=under_main)
        if classified is None:
            if not under_main and os.path.isfile(os.path.join(path, INDEX_FILE)):
                scan.unknown.append(name)
            return
        scan.add(*classified, path, _entry_problem(path))

    for name in _entries(base):
        path = os.path.join(base, name)
        if name == MAIN_TYPE and os.path.isdir(path):
            for sub in _entries(path):
                consider(sub, os.path.join(path, sub), under_main=True)
        else:
            consider(name, path, under_main=False)
    return scan.finish(os.path.isfile(os.path.join(base, INDEX_FILE)))


def scan_remote_base(base: str, shard_types: Mapping[str, str], storage_options: Mapping | None = None) -> BaseScan:
    """``scan_base`` for a URL: one listing of the base (and of ``main/``); each shard's index is checked when
    loaded."""
    base = base.rstrip("/")
    scan = BaseScan(base)
    directory = RemoteDir(base, storage_options)
    subdirs, objects = directory.list_dir()
    for name in sorted(subdirs):
        if name == MAIN_TYPE:
            for sub in sorted(directory.list_dir(MAIN_TYPE)[0]):
                classified = classify_shard_name(sub, shard_types, under_main=True)
                if classified:
                    scan.add(*classified, join_url(base, MAIN_TYPE, sub))
        else:
            classified = classify_shard_name(name, shard_types)
            if classified:
                scan.add(*classified, join_url(base, name))
    return scan.finish(INDEX_FILE in objects)


def discover_shards(
    base: str | Path,
    shard_types: Mapping[str, str] | None = None,
    field: str = "data_path",
    exclude: Collection[str] = (),
    storage_options: Mapping | None = None,
) -> list[Shard]:
    """Every shard under ``base`` (a directory or a URL) with its chunks read from ``index.json``; ids in
    ``exclude`` are skipped.

    Entries named like shards that are not readable shard directories are one ``ValueError`` listing
    them all; a healthy shard is never left out silently. Remote shards are loaded in parallel, and
    their chunk objects checked against the listing (sizes; ETags go into the fingerprint).
    """
    types = resolve_shard_types(shard_types)
    if not base or not str(base).strip():
        raise ValueError(f"{field} is empty; set it to the directory holding your shards, e.g. {field}: data/mix.")
    remote = is_url(base)
    if remote:
        scan = scan_remote_base(str(base), types, storage_options)
        if not scan.found and not scan.problems:
            raise ValueError(
                f"{field} {str(base)!r}: nothing found there (no shard directories and no {INDEX_FILE}); check the "
                "URL, or upload your shards."
            )
    elif not os.path.isdir(base):
        raise ValueError(
            f"{field} {str(base)!r} does not exist or is not a directory; point it at your shards' base directory."
        )
    else:
        scan = scan_base(base, types)
    if scan.unknown:
        logger.warning(
            "Ignoring litdata directories with no known type prefix under %s: %s (add them with shard_types, "
            "e.g. {legal: l} for l1, l2, ...)",
            base,
            ", ".join(scan.unknown),
        )
    problems = [problem for problem in scan.problems if problem.split(" ", 1)[0] not in exclude]
    wanted = [entry for entry in scan.found if entry[0] not in exclude]
    if remote:
        with ThreadPoolExecutor(max_workers=REMOTE_LOADS) as pool:
            loaded = list(pool.map(lambda entry: _try(_load_remote_shard, *entry, storage_options), wanted))
    else:
        loaded = [_try(_load_local_shard, *entry) for entry in wanted]
    shards = []
    for (shard_id, _, path), result in zip(wanted, loaded):
        if isinstance(result, Shard):
            shards.append(result)
        else:
            problems.append(f"{shard_id} ({path}): {result}")
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(
            f"{field} {str(base)!r}: {len(problems)} shard director{'y is' if len(problems) == 1 else 'ies are'} not "
            f"usable, and leaving {'it' if len(problems) == 1 else 'them'} out would silently change the blend:\n  "
            f"{listing}\n"
            f"For each: {SHARD_FIXES}."
        )
    if not shards:
        raise ValueError(
            f"{field} {str(base)!r}: no shards found. Looked for {describe_layout(types)}. "
            "Prepare shards with `sharded-mix prepare`, or add your prefixes with shard_types."
        )
    return shards
