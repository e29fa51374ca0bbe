"""Find typed litdata token shards under a base directory: one listing plus one ``index.json`` read per shard.

The naming rules and the ``Shard`` record are ``shards.py`` (pure); this module is the I/O.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from sharded_mix.shards import INDEX_FILE, MAIN_TYPE, Shard, classify_shard_name, describe_layout, resolve_shard_types, shard_from_index


logger = logging.getLogger(__name__)


def _natural_key(shard_id: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", shard_id))


def read_index(path: str | Path) -> dict:
    """Load a shard's ``index.json``; ``ValueError`` if it is missing or not litdata's format."""
    index_path = Path(path) / INDEX_FILE
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"shard {str(path)!r}: cannot read {INDEX_FILE} ({err}); re-run `sharded-mix prepare`.") from err
    if not isinstance(index.get("chunks"), list) or "config" not in index:
        raise ValueError(f"shard {str(path)!r}: {index_path} is not a litdata index (no 'chunks'/'config').")
    return index


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    except FileNotFoundError:
        return []


def _has_index(path: str) -> bool:
    return os.path.isfile(os.path.join(path, INDEX_FILE))


def find_shard_dirs(base: str | Path, shard_types: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """List ``(shard id, type, path)`` of every shard under ``base``, sorted by id."""
    base = str(base)
    if _has_index(base):
        return [(MAIN_TYPE, MAIN_TYPE, base)]
    found: dict[str, tuple[str, str, str]] = {}
    ignored = []

    def add(shard_id: str, type_name: str, path: str) -> None:
        if shard_id in found:
            raise ValueError(
                f"data_path {base!r}: shard {shard_id!r} exists both as {found[shard_id][2]!r} and {path!r}; "
                "keep one of them."
            )
        found[shard_id] = (shard_id, type_name, path)

    for name in _subdirs(base):
        path = os.path.join(base, name)
        if name == MAIN_TYPE:
            for sub in _subdirs(path):
                classified = classify_shard_name(sub, shard_types, under_main=True)
                if classified and _has_index(os.path.join(path, sub)):
                    add(*classified, os.path.join(path, sub))
            continue
        classified = classify_shard_name(name, shard_types)
        if classified is None:
            if _has_index(path):
                ignored.append(name)
        elif _has_index(path):
            add(*classified, path)
    if ignored:
        logger.warning(
            "Ignoring litdata directories with no known type prefix under %s: %s (add them with shard_types, "
            "e.g. {legal: l} for l1, l2, ...)",
            base,
            ", ".join(ignored),
        )
    return [found[key] for key in sorted(found, key=_natural_key)]


def discover_shards(base: str | Path, shard_types: Mapping[str, str] | None = None, field: str = "data_path") -> list[Shard]:
    """Every shard under ``base`` with its token counts read from ``index.json``."""
    types = resolve_shard_types(shard_types)
    if not base or not str(base).strip():
        raise ValueError(f"{field} is empty; set it to the directory holding your shards, e.g. {field}: data/mix.")
    if not os.path.isdir(base):
        raise ValueError(f"{field} {str(base)!r} does not exist or is not a directory; point it at your shards' base directory.")
    found = find_shard_dirs(base, types)
    if not found:
        raise ValueError(
            f"{field} {str(base)!r}: no shards found. Looked for {describe_layout(types)}. "
            "Prepare shards with `sharded-mix prepare`, or add your prefixes with shard_types."
        )
    return [shard_from_index(shard_id, type_name, path, read_index(path)) for shard_id, type_name, path in found]
