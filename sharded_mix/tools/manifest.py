"""``manifest.json``: what a shard written by `sharded-mix prepare` was built from, and its one-line description."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sharded_mix.streaming.identity import MANIFEST_FILE

MANIFEST_FORMAT = 1
HASH_BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(shard_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(shard_dir) / MANIFEST_FILE
    path.write_text(
        json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


def read_manifest(shard_dir: str | Path) -> dict[str, Any] | None:
    """The shard's manifest, or None when it has none (or an unreadable one)."""
    path = Path(shard_dir) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def describe_manifest(manifest: dict[str, Any]) -> str:
    """One line: split, sources, record format, selection, tokenizer and the command that built the shard."""
    sources = [
        f"{Path(i['path']).name} ({i['bytes']:,} B, sha256 {i['sha256'][:12]})" for i in manifest.get("inputs", [])
    ]
    sources += [f"dataset {d['label']}" for d in manifest.get("datasets", [])]
    shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
    parts = [f"{manifest.get('split', '?')} split of {shown or 'no inputs'}", str(manifest.get("record", ""))]
    selection = manifest.get("selection") or {}
    picked = [f"{key} {value}" for key, value in selection.items() if value not in (None, 0)]
    if picked:
        parts.append(", ".join(picked))
    tokenizer = manifest.get("tokenizer") or {}
    parts.append(
        f"tokenizer {tokenizer.get('name', '?')} (vocab sha256 {str(tokenizer.get('vocab_sha256', '?'))[:12]})"
    )
    if manifest.get("command"):
        parts.append(f"command: {manifest['command']}")
    return "; ".join(part for part in parts if part)
