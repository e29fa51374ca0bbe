"""Assemble a typed base directory from litdata directories that live elsewhere, by symlink."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.shards import MAIN_TYPE, classify_shard_name, resolve_shard_types
from sharded_mix.streaming.discovery import read_index


@dataclass(frozen=True)
class DataLink:
    name: str
    """Path inside the base directory, e.g. ``main/1`` or ``m1``."""
    link: Path
    target: Path
    exists: bool
    """Already linked to ``target``: nothing to do."""


def _check_litdata_dir(target: Path, name: str) -> None:
    if not target.is_dir():
        raise ValueError(f"{name}={target}: not a directory; give a litdata directory (one holding index.json).")
    read_index(target)  # ValueError with the reason if it is not a litdata directory


def _check_name(name: str, shard_types: dict[str, str]) -> None:
    parts = name.split("/")
    if (len(parts) == 2 and parts[0] == MAIN_TYPE and parts[1].isdigit()) or (
        len(parts) == 1 and classify_shard_name(name, shard_types)
    ):
        return
    prefixes = ", ".join(f"{prefix}N ({type_name})" for type_name, prefix in shard_types.items())
    raise ValueError(f"--as {name}=...: {name!r} is not a shard name discovery finds; use main/N, N, or {prefixes}.")


def plan_data_links(
    base: str | Path,
    main: list[str | Path] = (),
    named: dict[str, str | Path] | None = None,
    shard_types: dict[str, str] | None = None,
) -> list[DataLink]:
    """The links to make: ``--main`` targets become ``main/1``, ``main/2``, ...

    ``named`` maps shard names to targets.
    """
    types = resolve_shard_types(shard_types)
    base = Path(base)
    wanted: dict[str, Path] = {}
    for number, target in enumerate(main, start=1):
        wanted[f"{MAIN_TYPE}/{number}"] = Path(target)
    for name, target in (named or {}).items():
        _check_name(name, types)
        if name in wanted:
            raise ValueError(f"shard {name!r} is given twice ({wanted[name]} and {target}); give each name once.")
        wanted[name] = Path(target)
    if not wanted:
        raise ValueError("nothing to link; give --main DIR and/or --as NAME=DIR.")
    numbered = {name for name in wanted if name.isdigit()}
    if numbered and any(name.startswith(f"{MAIN_TYPE}/") for name in wanted):
        raise ValueError("main shards given both as main/N and as plain numbers; use one form (--main gives main/N).")
    links = []
    for name, target in wanted.items():
        _check_litdata_dir(target, name)
        target = target.resolve()
        link = base / name
        if link.is_symlink() and Path(os.path.realpath(link)) == target:
            links.append(DataLink(name, link, target, exists=True))
        elif link.exists() or link.is_symlink():
            raise ValueError(
                f"{link} already exists and is not a link to {target}; refusing to replace it. "
                "Pick another base directory or name."
            )
        else:
            links.append(DataLink(name, link, target, exists=False))
    return links


def link_data(base: str | Path, main=(), named=None, shard_types=None, dry_run: bool = False) -> list[DataLink]:
    links = plan_data_links(base, main, named, shard_types)
    if not dry_run:
        for planned in links:
            if not planned.exists:
                planned.link.parent.mkdir(parents=True, exist_ok=True)
                planned.link.symlink_to(planned.target, target_is_directory=True)
    return links
