"""What a shard is: the ``Shard`` record, shard types and directory names, and ``index.json`` → ``Shard`` (pure).

Layout rules (see README, "Shard layout"):
- main shards are numbered directories directly under the base (``1``, ``2``) or under
  ``main/`` (``main/1``); their id is ``main/<n>``;
- typed shards are named prefix + number (``c1``, ``m3``, ``w12``); their id is the name;
- a shard is any such directory holding litdata's ``index.json``.

Every layer shares this model; finding shards on disk is ``streaming/discovery.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAIN_TYPE = "main"
INDEX_FILE = "index.json"

DEFAULT_SHARD_TYPES: dict[str, str] = {
    "code": "c",
    "math": "m",
    "instruct": "i",
    "qa": "q",
    "books": "b",
    "news": "n",
    "papers": "p",
    "web": "w",
}
"""Typed shard prefixes (type name -> directory prefix). ``main`` has no prefix."""

HEADER_ITEM_BYTES = 4
"""TokensLoader chunk header: a uint32 item count N, then N + 1 uint32 byte offsets, then the tokens."""


def chunk_header_bytes(items: int) -> int:
    """Bytes before the first token of a TokensLoader chunk holding ``items`` documents."""
    return (items + 2) * HEADER_ITEM_BYTES


_TYPED_NAME = re.compile(r"^([A-Za-z_]+)(\d+)$")


@dataclass(frozen=True)
class TokenizerIdentity:
    """The tokenizer a shard's manifest names."""

    name: str
    vocab_sha256: str | None
    vocab_fingerprint: str | None
    vocab_size: int | None

    @classmethod
    def from_manifest(cls, manifest: Any) -> TokenizerIdentity | None:
        record = manifest.get("tokenizer") if isinstance(manifest, Mapping) else None
        if not isinstance(record, Mapping):
            return None
        size = record.get("vocab_size")
        return cls(
            str(record.get("name") or record.get("dir") or "?"),
            record.get("vocab_sha256"),
            record.get("vocab_fingerprint"),
            size if isinstance(size, int) else None,
        )


@dataclass(frozen=True)
class Shard:
    """One litdata token shard: a mixture source, with what reading it needs (O(chunks), from ``index.json``)."""

    id: str
    type: str
    path: str
    tokens: int
    documents: int
    chunk_tokens: tuple[int, ...] = field(repr=False)
    dtype: str
    chunk_files: tuple[str, ...] = field(default=(), repr=False)
    """Chunk file names, relative to ``path``."""
    chunk_items: tuple[int, ...] = field(default=(), repr=False)
    """Documents in each chunk (they size the chunk file's header)."""
    plain_tokens: bool = False
    """Whether the chunks are in the plain TokensLoader layout (no compression or encryption), so they can be
    memory-mapped; other shards are read through litdata."""
    fingerprint: str = ""
    """A hash of ``index.json`` and samples of the chunk bytes (``discovery.content_fingerprint``): it changes when the
    shard is rewritten; checkpoints record it."""
    chunk_hashes: tuple[str, ...] = field(default=(), repr=False)
    """Each chunk file's xxh3-128 from the shard's ``checksums.json`` (``streaming.checksums``); empty: none."""
    chunk_etags: tuple[str | None, ...] = field(default=(), repr=False)
    """Each chunk object's ETag as discovery listed it (remote shards); a download must find the same."""
    tokenizer: TokenizerIdentity | None = field(default=None, repr=False)
    """The tokenizer its ``manifest.json`` names (shards written by ``sharded-mix prepare``); None: unknown."""
    prepare_run: str | None = field(default=None, repr=False)
    """The id of the ``sharded-mix prepare`` run that wrote it (its manifest's ``prepare_run``; a train shard and its
    held-out val shard share it); None: unknown."""
    held_out: bool = False
    """Whether its manifest says it is the held-out (``split: val``) part of a ``prepare`` run, which must be the
    run that wrote the training shard of the same id."""

    @property
    def chunks(self) -> int:
        return len(self.chunk_tokens)

    def chunk_bytes(self, chunk: int) -> int | None:
        """The size chunk file ``chunk`` must have in the plain TokensLoader layout (None for other layouts)."""
        if not self.plain_tokens:
            return None
        return chunk_header_bytes(self.chunk_items[chunk]) + self.chunk_tokens[chunk] * np.dtype(self.dtype).itemsize

    def blocks(self, block_size: int) -> int:
        """Blocks litdata's ``TokensLoader`` cuts from this shard (blocks never span chunks)."""
        return sum(tokens // block_size for tokens in self.chunk_tokens)


def resolve_shard_types(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default types with user ``overrides`` (type name -> prefix) merged in.

    A new name for an existing prefix renames that type; a new prefix adds a type.
    """
    types = dict(DEFAULT_SHARD_TYPES)
    for name, prefix in (overrides or {}).items():
        if not isinstance(name, str) or not name or name == MAIN_TYPE:
            raise ValueError(f"shard_types: type name {name!r} is not allowed; use a non-empty name other than 'main'.")
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z_]+", prefix):
            raise ValueError(
                f"shard_types: prefix {prefix!r} for type {name!r} must be letters only, e.g. {{{name}: x}} "
                f"for directories x1, x2, ..."
            )
        for old_name in [n for n, p in types.items() if p == prefix]:
            del types[old_name]
        types[name] = prefix
    return types


def classify_shard_name(name: str, shard_types: Mapping[str, str], under_main: bool = False) -> tuple[str, str] | None:
    """Map a directory name to ``(shard id, type)``, or ``None`` if it is not a shard name."""
    if name.isdigit():
        return f"{MAIN_TYPE}/{int(name)}", MAIN_TYPE
    if under_main:
        return None
    match = _TYPED_NAME.match(name)
    if match is None:
        return None
    prefix_to_type = {prefix: type_name for type_name, prefix in shard_types.items()}
    type_name = prefix_to_type.get(match.group(1))
    return (name, type_name) if type_name else None


def index_token_dtype(index: dict) -> str:
    """The token dtype a litdata token shard was written with, e.g. ``'uint16'``."""
    from litdata.constants import _NUMPY_DTYPES_MAPPING, _TORCH_DTYPES_MAPPING

    formats = index["config"].get("data_format") or ["?"]
    kind, _, code = str(formats[0]).partition(":")
    mapping = _TORCH_DTYPES_MAPPING if "tensor" in kind else _NUMPY_DTYPES_MAPPING if "numpy" in kind else {}
    dtype = mapping.get(int(code)) if code.isdigit() else None
    return str(dtype).removeprefix("torch.") if dtype is not None else str(formats[0])


def _chunk_entry(shard_id: str, path: str | Path, number: int, chunk: object) -> tuple[str, int, int]:
    """``(file name, tokens, documents)`` of one ``index.json`` chunk entry, checked."""
    where = f"shard {shard_id!r} at {str(path)!r}: {INDEX_FILE} chunk {number}"
    if not isinstance(chunk, Mapping):
        raise ValueError(f"{where} is {chunk!r}, not an object; re-run `sharded-mix prepare` for this shard.")
    if chunk.get("dim") is None:
        raise ValueError(
            f"shard {shard_id!r} at {str(path)!r} is not a token shard (its chunks have no 'dim'); "
            "write it with litdata optimize(item_loader=TokensLoader()) or `sharded-mix prepare`."
        )
    filename, tokens, items = chunk.get("filename"), chunk.get("dim"), chunk.get("chunk_size") or 0
    for name, value in (("dim", tokens), ("chunk_size", items)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{where}: {name} is {value!r}, not a whole number >= 0; re-run `sharded-mix prepare` for this shard."
            )
    if not isinstance(filename, str) or not is_plain_file_name(filename):
        raise ValueError(
            f"{where}: filename {filename!r} is not a file name inside the shard (no '/', '..' or absolute paths); "
            "the index was edited or written by another tool. Re-run `sharded-mix prepare` for this shard."
        )
    return filename, tokens, items


def is_plain_file_name(name: str) -> bool:
    """Whether ``name`` names a file directly inside a directory (no separators, ``.`` or ``..``)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def shard_from_index(shard_id: str, type_name: str, path: str | Path, index: dict) -> Shard:
    """Build a ``Shard`` from its parsed ``index.json``: token counts are the chunks' ``dim``."""
    entries = [_chunk_entry(shard_id, path, number, chunk) for number, chunk in enumerate(index["chunks"])]
    chunk_tokens = tuple(tokens for _, tokens, _ in entries)
    chunk_items = tuple(items for _, _, items in entries)
    return Shard(
        id=shard_id,
        type=type_name,
        path=str(path),
        tokens=sum(chunk_tokens),
        documents=sum(chunk_items),
        chunk_tokens=chunk_tokens,
        dtype=index_token_dtype(index),
        chunk_files=tuple(filename for filename, _, _ in entries),
        chunk_items=chunk_items,
        plain_tokens=is_plain_token_shard(index),
    )


def is_plain_token_shard(index: dict) -> bool:
    """Whether ``index.json`` describes chunks in the plain TokensLoader layout (uncompressed, unencrypted)."""
    config = index["config"]
    formats = config.get("data_format") or []
    return not (
        config.get("compression")
        or config.get("encryption")
        or config.get("item_loader") != "TokensLoader"
        or len(formats) != 1
        or not str(formats[0]).startswith(("no_header_tensor:", "no_header_numpy:"))
    )


def describe_layout(shard_types: Mapping[str, str]) -> str:
    """Human text of what discovery looks for, for error messages."""
    typed = ", ".join(f"{prefix}1 ({name})" for name, prefix in shard_types.items())
    return f"numbered dirs 1, 2, ... or main/1, main/2, ... and typed dirs {typed}, each holding {INDEX_FILE}"
