"""Find typed litdata token shards under a base directory: one listing plus one ``index.json`` read per shard.

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
from dataclasses import dataclass, field, replace
from pathlib import Path

from sharded_mix.shards import INDEX_FILE, MAIN_TYPE, Shard, classify_shard_name, describe_layout, resolve_shard_types, shard_from_index


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
    picks = sorted({0, len(chunk_files) // 2, len(chunk_files) - 1}) if chunk_files else []
    for chunk in picks:
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
    index_path = Path(path) / INDEX_FILE
    try:
        content = index_path.read_bytes()
        index = json.loads(content)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"shard {str(path)!r}: cannot read {INDEX_FILE} ({reason}); re-run `sharded-mix prepare`.") from err
    if not isinstance(index, dict) or not isinstance(index.get("chunks"), list) or not isinstance(index.get("config"), dict):
        raise ValueError(
            f"shard {str(path)!r}: {index_path} is not a litdata index (a JSON object with 'chunks' and 'config'); "
            "re-run `sharded-mix prepare`."
        )
    return index, content


def read_index(path: str | Path) -> dict:
    """Load a shard's ``index.json``; ``ValueError`` if it is missing or not litdata's format."""
    return _load_index(path)[0]


@dataclass
class BaseScan:
    """What a listing of a base directory found: shard dirs ``(id, type, path)`` and entries that cannot be shards."""

    found: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """``"<path>: <what is wrong>"`` for each entry named like a shard that is not a readable shard directory."""
    unknown: list[str] = field(default_factory=list)
    """litdata directories with no known type prefix (logged, not used)."""


def _entry_problem(path: str) -> str | None:
    """Why ``path`` (named like a shard) is not a readable shard directory, or None."""
    try:
        os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            what = "a symlink loop" if err.errno == errno.ELOOP else f"a dangling symlink to {os.readlink(path)!r}"
            return f"{what}"
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
        raise ValueError(f"{path!r} cannot be listed ({err.strerror}); fix its permissions or point data_path elsewhere.") from err


def scan_base(base: str | Path, shard_types: Mapping[str, str]) -> BaseScan:
    """List the shards under ``base`` (or ``base`` itself, a single litdata directory), sorted by id."""
    base = str(base)
    scan = BaseScan()
    seen: dict[str, str] = {}

    def consider(name: str, path: str, under_main: bool) -> None:
        classified = classify_shard_name(name, shard_types, under_main=under_main)
        if classified is None:
            if not under_main and os.path.isfile(os.path.join(path, INDEX_FILE)):
                scan.unknown.append(name)
            return
        shard_id, type_name = classified
        if shard_id in seen:
            raise ValueError(f"data_path {base!r}: shard {shard_id!r} exists both as {seen[shard_id]!r} and {path!r}; keep one of them.")
        seen[shard_id] = path
        problem = _entry_problem(path)
        if problem:
            scan.problems.append(f"{shard_id} ({path}): {problem}")
        else:
            scan.found.append((shard_id, type_name, path))

    for name in _entries(base):
        path = os.path.join(base, name)
        if name == MAIN_TYPE and os.path.isdir(path):
            for sub in _entries(path):
                consider(sub, os.path.join(path, sub), under_main=True)
        else:
            consider(name, path, under_main=False)
    if os.path.isfile(os.path.join(base, INDEX_FILE)):
        if seen:
            raise ValueError(
                f"data_path {base!r} holds an {INDEX_FILE} of its own and shard directories ({', '.join(sorted(seen, key=_natural_key)[:5])}); "
                f"a base is either one litdata directory or a directory of shards: move the stray {INDEX_FILE} away, or "
                "point data_path at one of them."
            )
        scan.found = [(MAIN_TYPE, MAIN_TYPE, base)]
    scan.found.sort(key=lambda item: _natural_key(item[0]))
    return scan


def discover_shards(
    base: str | Path,
    shard_types: Mapping[str, str] | None = None,
    field: str = "data_path",
    exclude: Collection[str] = (),
) -> list[Shard]:
    """Every shard under ``base`` with its chunks read from ``index.json``; ids in ``exclude`` are skipped.

    Entries named like shards that are not readable shard directories are one ``ValueError`` listing
    them all; a healthy shard is never left out silently.
    """
    types = resolve_shard_types(shard_types)
    if not base or not str(base).strip():
        raise ValueError(f"{field} is empty; set it to the directory holding your shards, e.g. {field}: data/mix.")
    if not os.path.isdir(base):
        raise ValueError(f"{field} {str(base)!r} does not exist or is not a directory; point it at your shards' base directory.")
    scan = scan_base(base, types)
    if scan.unknown:
        logger.warning(
            "Ignoring litdata directories with no known type prefix under %s: %s (add them with shard_types, "
            "e.g. {legal: l} for l1, l2, ...)",
            base,
            ", ".join(scan.unknown),
        )
    problems = [problem for problem in scan.problems if problem.split(" ", 1)[0] not in exclude]
    shards = []
    for shard_id, type_name, path in scan.found:
        if shard_id in exclude:
            continue
        try:
            index, content = _load_index(path)
            shard = shard_from_index(shard_id, type_name, path, index)
            shards.append(replace(shard, fingerprint=content_fingerprint(path, content, shard.chunk_files)))
        except ValueError as err:
            problems.append(f"{shard_id} ({path}): {err}")
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(
            f"{field} {str(base)!r}: {len(problems)} shard director{'y is' if len(problems) == 1 else 'ies are'} not usable, "
            f"and leaving {'it' if len(problems) == 1 else 'them'} out would silently change the blend:\n  {listing}\n"
            f"For each: {SHARD_FIXES}."
        )
    if not shards:
        raise ValueError(
            f"{field} {str(base)!r}: no shards found. Looked for {describe_layout(types)}. "
            "Prepare shards with `sharded-mix prepare`, or add your prefixes with shard_types."
        )
    return shards
