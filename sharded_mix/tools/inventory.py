"""What a data directory holds: per shard its size, dtype and chunk files, totals per type, and problems found.

Chunk files are checked with one ``stat`` each (``chunk_checks``); ``verify=True`` also reads every chunk's
header and a few windows of its tokens (``verify``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sharded_mix.shards import Shard, index_token_dtype, resolve_shard_types, shard_from_index
from sharded_mix.streaming.chunk_checks import capped, chunk_file_problem
from sharded_mix.streaming.discovery import SHARD_FIXES, read_index, scan_base
from sharded_mix.streaming.layout import held_out_mismatch
from sharded_mix.tools.manifest import describe_manifest, read_manifest
from sharded_mix.tools.verify import NOT_VERIFIED, documents_problems, verify_chunk, verify_notes

CHUNK_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class ShardReport:
    id: str
    type: str
    path: str
    tokens: int | None
    documents: int | None
    chunks: int | None
    dtype: str | None
    bytes_on_disk: int
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What was not checked, e.g. a compressed shard under ``--verify``; not problems."""
    manifest: dict | None = None
    """The shard's ``manifest.json`` (what `sharded-mix prepare` built it from), when it has one."""


@dataclass(frozen=True)
class Inventory:
    """One base directory (or one split of the reference layout)."""

    label: str
    base: str
    shards: list[ShardReport]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def totals_by_type(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for shard in self.shards:
            entry = totals.setdefault(shard.type, {"shards": 0, "tokens": 0, "bytes_on_disk": 0})
            entry["shards"] += 1
            entry["tokens"] += shard.tokens or 0
            entry["bytes_on_disk"] += shard.bytes_on_disk
        return totals

    def all_problems(self) -> list[str]:
        return self.problems + [f"{shard.id}: {problem}" for shard in self.shards for problem in shard.problems]

    def all_notes(self) -> list[str]:
        return self.notes + [f"{shard.id}: {note}" for shard in self.shards for note in shard.notes]

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "base": self.base,
            "shards": [asdict(s) for s in self.shards],
            "totals_by_type": self.totals_by_type(),
            "problems": self.all_problems(),
            "notes": self.all_notes(),
        }


def _size_on_disk(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def chunk_problems(shard: Shard, verify: bool = False, vocab_size: int | None = None) -> list[str]:
    """Problems of ``shard``'s chunk files (one ``stat`` each), with ``verify`` their headers and sampled tokens too."""
    if verify and shard.plain_tokens:
        problems = [problem for chunk in range(shard.chunks) for problem in verify_chunk(shard, chunk, vocab_size)]
        problems += documents_problems(shard)
    else:
        problems = [problem for chunk in range(shard.chunks) if (problem := chunk_file_problem(shard, chunk))]
    return capped(problems, CHUNK_PROBLEMS_SHOWN)


def inspect_shard(
    shard_id: str, type_name: str, path: str, verify: bool = False, vocab_size: int | None = None
) -> ShardReport:
    """One shard's report; what cannot be read becomes a problem, not an exception."""
    size = _size_on_disk(path)
    try:
        index = read_index(path)
    except ValueError as err:
        return ShardReport(shard_id, type_name, path, None, None, None, None, size, (f"unreadable index: {err}",))
    try:
        shard = shard_from_index(shard_id, type_name, path, index)
    except ValueError as err:
        return ShardReport(
            shard_id, type_name, path, None, None, len(index["chunks"]), index_token_dtype(index), size, (str(err),)
        )
    notes = (NOT_VERIFIED,) if verify and not shard.plain_tokens else ()
    problems = tuple(chunk_problems(shard, verify, vocab_size))
    return ShardReport(
        shard_id,
        type_name,
        path,
        shard.tokens,
        shard.documents,
        shard.chunks,
        shard.dtype,
        size,
        problems,
        notes,
        read_manifest(path),
    )


def inspect_base(
    base: str | Path,
    shard_types: dict[str, str] | None = None,
    label: str = "",
    verify: bool = False,
    vocab_size: int | None = None,
) -> Inventory:
    base = str(base)
    if not os.path.isdir(base):
        raise ValueError(f"{base!r} is not a directory; give the base directory of your shards.")
    try:
        scan = scan_base(base, resolve_shard_types(shard_types))
    except ValueError as err:
        return Inventory(label or base, base, [], [str(err)])
    reports = [inspect_shard(shard_id, type_name, path, verify, vocab_size) for shard_id, type_name, path in scan.found]
    problems = [f"{problem} ({SHARD_FIXES})" for problem in scan.problems]
    if not reports and not problems:
        problems.append(f"no shards found under {base}")
    dtypes = sorted({report.dtype for report in reports if report.dtype})
    if len(dtypes) > 1:
        by_dtype = {dtype: [r.id for r in reports if r.dtype == dtype] for dtype in dtypes}
        listing = "; ".join(
            f"{dtype}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}" for dtype, ids in by_dtype.items()
        )
        problems.append(f"mixed token dtypes ({listing}); shards mixed in one run need one tokenizer")
    return Inventory(label or base, base, reports, problems, verify_notes(vocab_size) if verify else [])


def inspect_data_path(
    data_path: str | Path,
    shard_types: dict[str, str] | None = None,
    verify: bool = False,
    vocab_size: int | None = None,
) -> list[Inventory]:
    """The base directory, or its ``train/`` and ``val/`` splits in the reference layout.

    ``verify`` also reads every chunk's header and samples its token ids, bounded by ``vocab_size`` when given.
    """
    data_path = str(data_path)
    splits = [name for name in ("train", "val") if os.path.isdir(os.path.join(data_path, name))]
    if "train" in splits:
        found = [inspect_base(os.path.join(data_path, name), shard_types, name, verify, vocab_size) for name in splits]
    else:
        found = [inspect_base(data_path, shard_types, verify=verify, vocab_size=vocab_size)]
    val_base = os.path.join(data_path, "val")
    found[-1].problems.extend(held_out_problems(found[0], val_base) if os.path.isdir(val_base) else [])
    return found


def held_out_problems(train: Inventory, val_base: str) -> list[str]:
    """Val shards under ``val_base`` (at the train shards' places) not written by the prepare run of their train
    shard, as their manifests say: held-out shards left from an earlier prepare."""
    problems = []
    for report in train.shards:
        val_path = os.path.join(val_base, os.path.relpath(report.path, train.base))
        val_manifest = read_manifest(val_path) or {}
        if val_manifest.get("split") != "val":
            continue  # prepared on its own, not held out of its train shard
        train_run = (report.manifest or {}).get("prepare_run")
        problem = held_out_mismatch(val_path, val_manifest.get("prepare_run"), report.path, train_run)
        if problem:
            problems.append(problem)
    return problems


def _human_bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return f"{count} B"


def format_inventory(inventory: Inventory) -> str:
    header = f"{'shard':<14} {'type':<10} {'tokens':>15} {'documents':>11} {'chunks':>7} {'dtype':<7} {'on disk':>10}"
    lines = [f"===== {inventory.label}: {inventory.base} =====", header, "-" * len(header)]

    def number(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    for s in inventory.shards:
        lines.append(
            f"{s.id:<14} {s.type:<10} {number(s.tokens):>15} {number(s.documents):>11} {number(s.chunks):>7} "
            f"{s.dtype or '?':<7} {_human_bytes(s.bytes_on_disk):>10}"
        )
    lines.append("-" * len(header))
    for type_name, totals in inventory.totals_by_type().items():
        lines.append(
            f"{'total ' + type_name:<25} {totals['tokens']:>15,} in {totals['shards']} shard(s), "
            f"{_human_bytes(totals['bytes_on_disk'])}"
        )
    built = [(s.id, describe_manifest(s.manifest)) for s in inventory.shards if s.manifest]
    if built:
        lines.append("built from (manifest.json):")
        lines += [f"  {shard_id}: {text}" for shard_id, text in built]
    notes = inventory.all_notes()
    if notes:
        lines.append("notes:")
        lines += [f"  - {note}" for note in notes]
    problems = inventory.all_problems()
    lines.append(f"problems: {len(problems)}" if problems else "problems: none")
    lines += [f"  - {problem}" for problem in problems]
    return "\n".join(lines)
