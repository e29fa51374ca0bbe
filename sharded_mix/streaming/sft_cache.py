"""The SFT token cache: each task file tokenized once (``sft_tokenize``, in worker processes) into arrays that
training reads through memory maps.

An entry is a directory ``<root>/<key>``: ``tokens.bin`` (every example's prompt and response tokens, untruncated,
uint16 or int32), ``offsets.bin`` (int64, examples + 1: where each example starts), ``prompt_lengths.bin`` and
``raw_counts.bin`` (int64, one per example), and ``meta.json`` (the format, the counts, each file's bytes and
xxh3-128, what the key was made of). The key is an xxh3-128 of the format version, the task file's bytes (xxh3-128),
the tokenizer (its whole serialized processor, BOS / EOS ids, ``use_bos``), the prompt style (class, attributes and
what it makes of a sample record) and the template: any change is another entry. Masking and the length policy are
applied on read, so none of them (nor ``max_seq_length``) is part of the key.

A run with the same inputs hashes the task file and reuses the entry. Entries are written in a temporary
directory and renamed into place; one process of a node builds a key (an ``flock`` per key) while the others wait
and then read it. An entry whose files do not match its ``meta.json`` (sizes, hashes), or that cannot be read, is
built again, with one INFO line saying why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from lightning.fabric.utilities.rank_zero import rank_zero_only
from tqdm import tqdm

from sharded_mix.streaming.checksums import ALGORITHM, exclusive_lock, new_hasher, read_digest
from sharded_mix.streaming.encoding import TokenizerSpec, serialized_model, spec_of, token_dtype_name
from sharded_mix.streaming.identity import vocab_size_with_added
from sharded_mix.streaming.sft_files import check_task_file
from sharded_mix.streaming.sft_tokenize import EncodedChunk, encode_records, processes

logger = logging.getLogger(__name__)

FORMAT = 1
CACHE_SUBDIR = "sft_tokens"
"""The cache's folder under the node's cache directory (``cache.default_cache_dir``), by default."""
META_FILE = "meta.json"
PER_EXAMPLE = ("prompt_lengths", "raw_counts")
SAMPLE_RECORD = {"instruction": "<instruction>", "input": "<input>", "output": "<output>"}
"""What the key records of a prompt style: the text it makes of this record."""
MAX_WORKERS = 8


def default_workers() -> int:
    """Tokenizing processes: the usable cores, at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


class DamagedEntry(Exception):
    """A cache entry that cannot be used; the message says why."""


@dataclass(frozen=True)
class TaskTokens:
    """One task file's cached tokens, memory-mapped: example ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``, its
    first ``prompt_lengths[i]`` tokens the prompt; ``raw_counts[i]``: LitGPT's ``token_counts["raw"]``."""

    directory: Path
    tokens: np.ndarray
    offsets: np.ndarray
    prompt_lengths: np.ndarray
    raw_counts: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_lengths)


def _array(directory: Path, name: str, dtype: str, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r", shape=(count,))


def open_entry(directory: Path) -> TaskTokens:
    """The entry in ``directory``, checked against its ``meta.json``; ``FileNotFoundError`` when there is none,
    ``DamagedEntry`` when it cannot be used."""
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if directory.is_dir():
            raise DamagedEntry(f"its {META_FILE} is missing") from None
        raise
    except (OSError, ValueError) as err:
        raise DamagedEntry(f"its {META_FILE} is unreadable ({err})") from None
    try:
        if meta["format"] != FORMAT:
            raise DamagedEntry(f"its format is {meta['format']!r}, not {FORMAT}")
        examples, tokens, dtype = int(meta["examples"]), int(meta["tokens"]), str(meta["dtype"])
        shapes = {"tokens": (dtype, tokens), "offsets": ("int64", examples + 1)}
        shapes.update({name: ("int64", examples) for name in PER_EXAMPLE})
        for name, (kind, count) in shapes.items():
            recorded = meta["files"][f"{name}.bin"]
            path = directory / f"{name}.bin"
            size = path.stat().st_size
            if size != recorded["bytes"] or size != count * np.dtype(kind).itemsize:
                raise DamagedEntry(f"{name}.bin holds {size:,} bytes, its {META_FILE} says {recorded['bytes']:,}")
            if read_digest(path) != recorded[ALGORITHM]:
                raise DamagedEntry(f"{name}.bin does not have the {ALGORITHM} its {META_FILE} records")
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedEntry(f"its {META_FILE} lacks or garbles {err}") from None
    except FileNotFoundError as err:
        raise DamagedEntry(f"{Path(err.filename).name} is missing") from None
    arrays = {name: _array(directory, name, kind, count) for name, (kind, count) in shapes.items()}
    return TaskTokens(directory, **arrays)


class _EntryWriter:
    """Encoded chunks → the files of an entry in ``directory``, each hashed as it is written."""

    def __init__(self, directory: Path, dtype: str) -> None:
        self.directory, self.dtype = directory, dtype
        self.files = {name: open(directory / f"{name}.bin", "wb") for name in ("tokens", "offsets", *PER_EXAMPLE)}
        self.hashers = {name: new_hasher() for name in self.files}
        self.sizes = dict.fromkeys(self.files, 0)
        self.examples = self.tokens = 0
        self._put("offsets", np.zeros(1, dtype=np.int64))

    def _put(self, name: str, array: np.ndarray) -> None:
        data = array.tobytes()
        self.files[name].write(data)
        self.hashers[name].update(data)
        self.sizes[name] += len(data)

    def write(self, chunk: EncodedChunk) -> None:
        self._put("tokens", chunk.tokens.astype(self.dtype, copy=False))
        self._put("offsets", self.tokens + np.cumsum(chunk.lengths, dtype=np.int64))
        self._put("prompt_lengths", chunk.prompt_lengths.astype(np.int64, copy=False))
        self._put("raw_counts", chunk.raw_counts.astype(np.int64, copy=False))
        self.examples += len(chunk.lengths)
        self.tokens += int(chunk.lengths.sum())

    def close(self) -> None:
        for file in self.files.values():
            file.close()

    def finish(self, key: Mapping[str, Any]) -> None:
        """Close the files and write ``meta.json``."""
        self.close()
        files = {
            f"{name}.bin": {"bytes": self.sizes[name], ALGORITHM: self.hashers[name].hexdigest()} for name in self.files
        }
        meta = {"format": FORMAT, "examples": self.examples, "tokens": self.tokens, "dtype": self.dtype, "files": files}
        text = json.dumps({**meta, "key": key}, indent=1, default=repr)
        (self.directory / META_FILE).write_text(text, encoding="utf-8")


def prompt_style_identity(prompt_style: Any) -> dict:
    """The prompt style as the key sees it: its class, its attributes, and its text for ``SAMPLE_RECORD``."""
    try:
        sample = prompt_style.apply(prompt=SAMPLE_RECORD["instruction"], **SAMPLE_RECORD)
    except Exception as err:  # a style that wants other fields: its error stands for it
        sample = f"{type(err).__name__}: {err}"
    kind = type(prompt_style)
    return {"class": f"{kind.__module__}.{kind.__qualname__}", "vars": vars(prompt_style), "sample": sample}


class TokenCache:
    """Task files → their cached ``TaskTokens`` under ``root``, tokenized with a litgpt ``Tokenizer`` by
    ``workers`` processes (default: ``default_workers()``) when no entry fits."""

    def __init__(self, root: str | Path, tokenizer: Any, workers: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.tokenizer = tokenizer
        self.workers = workers or default_workers()
        self._spec: TokenizerSpec | None = None
        self._identity: dict | None = None
        self._serialized: bytes | None = None
        self.builds = 0
        """Entries this cache tokenized (0 when every task file was found)."""

    @property
    def spec(self) -> TokenizerSpec:
        """What the tokenizing processes load (a cold build only: it sizes the vocabulary)."""
        if self._spec is None:
            dtype = token_dtype_name(vocab_size_with_added(self.tokenizer))
            self._spec = spec_of(self.tokenizer, dtype, self._model())
        return self._spec

    def _model(self) -> bytes:
        if self._serialized is None:
            self._serialized = serialized_model(self.tokenizer)
        return self._serialized

    def identity(self) -> dict:
        """The tokenizer as the key sees it: a hash of its whole processor (vocabulary, merges, normalization, added
        tokens; stricter than ``identity.vocab_fingerprint``, and a third of its time), and its special tokens."""
        if self._identity is None:
            tokenizer = self.tokenizer
            self._identity = {
                "model_xxh3_128": xxhash.xxh3_128_hexdigest(self._model()),
                "backend": tokenizer.backend,
                "bos_id": tokenizer.bos_id,
                "eos_id": tokenizer.eos_id,
                "use_bos": bool(tokenizer.use_bos),
            }
        return self._identity

    def key(self, path: str | Path, prompt_style: Any, template: Mapping[str, str] | None) -> tuple[str, dict]:
        """The entry name of a task file, and what it was made of."""
        check_task_file(path)
        parts = {
            "format": FORMAT,
            "file": read_digest(path),
            "tokenizer": self.identity(),
            "prompt_style": prompt_style_identity(prompt_style),
            "template": dict(template) if template else None,
        }
        text = json.dumps(parts, sort_keys=True, default=repr)
        return xxhash.xxh3_128_hexdigest(text.encode("utf-8")), {**parts, "source": str(path)}

    def load(
        self,
        path: str | Path,
        prompt_style: Any,
        template: Mapping[str, str] | None,
        records: Callable[[], list[dict]],
        label: str,
    ) -> TaskTokens:
        """The entry of a task file; built from ``records()`` (its templated records) when there is none that can
        be used. ``label`` names the task in the log line and the progress bar."""
        name, parts = self.key(path, prompt_style, template)
        directory = self.root / name
        with contextlib.suppress(FileNotFoundError, DamagedEntry):
            return open_entry(directory)
        try:
            (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"token_cache {str(self.root)!r} cannot be created ({err.strerror}); set token_cache (or "
                "$SHARDED_MIX_CACHE_DIR) to a writable directory on local disk."
            ) from None
        with exclusive_lock(self.root / ".locks" / name):
            why = None
            try:
                return open_entry(directory)  # built by another process while this one waited
            except FileNotFoundError:
                pass
            except DamagedEntry as err:
                why = str(err)
            todo = records()
            action = f"tokenizing {label} ({len(todo):,} examples) in {processes(len(todo), self.workers)} process(es)"
            if why is None:
                logger.info("SFT token cache: %s into %s", action, directory)
            else:
                logger.info("SFT token cache: the entry %s cannot be used (%s); %s again", directory, why, action)
            self._build(directory, todo, prompt_style, parts, label)
        return open_entry(directory)

    def _build(self, directory: Path, records: list[dict], prompt_style: Any, parts: dict, label: str) -> None:
        temporary = directory.with_name(f".{directory.name}.{socket.gethostname()}.{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        writer = _EntryWriter(temporary, self.spec.dtype)
        try:
            with tqdm(
                total=len(records), desc=f"tokenizing {label}", unit=" examples", disable=rank_zero_only.rank != 0
            ) as bar:
                encode_records(records, prompt_style, self.spec, self.workers, writer.write, bar.update)
            writer.finish(parts)
            if directory.exists():  # a damaged entry: set aside, then replaced
                aside = temporary.with_name(temporary.name + ".old")
                os.rename(directory, aside)
                shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(temporary, directory)
            except OSError:
                if not directory.is_dir():  # else another node sharing the root renamed its entry first
                    raise
            self.builds += 1
        finally:
            writer.close()
            shutil.rmtree(temporary, ignore_errors=True)
