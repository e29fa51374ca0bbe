"""Reading SFT task files (JSON / JSONL records) and blocks of pretraining shards replayed among them."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sharded_mix.shards import Shard
from sharded_mix.streaming.storage import is_url
from sharded_mix.streaming.verify import ChunkVerifier

TASK_SUFFIXES = (".json", ".jsonl")
REQUIRED_FIELDS = ("instruction", "output")


def is_task_file(path: str | Path) -> bool:
    return Path(path).suffix in TASK_SUFFIXES


def check_task_file(path: str | Path) -> Path:
    """``path``, when it is an existing ``.json`` or ``.jsonl`` file; else the error that says so."""
    path = Path(path)
    if path.suffix not in TASK_SUFFIXES:
        raise ValueError(
            f"task file {str(path)!r}: expected a .json or .jsonl file, not {path.suffix or 'no suffix'!r}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"task file {str(path)!r} does not exist; check the path.")
    return path


def read_records(path: str | Path) -> list[dict]:
    """The records of a ``.json`` file (a list of objects) or a ``.jsonl`` file (one object a line)."""
    path = check_task_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(
            f"task file {str(path)!r} is not UTF-8 text: byte {err.object[err.start]:#04x} at line {line} (byte "
            f"{err.start:,} of the file); re-save it as UTF-8."
        ) from None
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"task file {str(path)!r} is not valid JSON: {err}.") from None
    else:
        records = [
            _jsonl_record(line, number, path) for number, line in enumerate(text.splitlines(), 1) if line.strip()
        ]
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ValueError(f"task file {str(path)!r}: expected a list of objects (JSON) or one object a line (JSONL).")
    return records


def _jsonl_record(line: str, number: int, path: Path) -> object:
    """Line ``number`` (1-based) of a JSONL file, parsed; an error names the file and the line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"task file {str(path)!r} is not valid JSONL: line {number}: {err.msg} (column {err.colno}); fix or remove "
            "that line."
        ) from None


def _kind(value: object) -> str:
    """What a JSON value is, in words: ``a number``, ``a list``, ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {type(None): "null", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def template_fields(template: Mapping[str, str]) -> set[str]:
    """The record fields a template's format strings name."""
    return {name for text in template.values() for _, name, _, _ in string.Formatter().parse(text) if name}


def apply_template(records: Sequence[dict], template: Mapping[str, str] | None, where: str) -> list[dict]:
    """Records with ``instruction`` / ``output`` (and optionally ``input``): as they are (alpaca-style), or built by
    ``template``, e.g. ``{instruction: "{question}", output: "{answer}"}`` (Python format strings over the record)."""
    out = []
    for number, record in enumerate(records):
        if template:
            missing = sorted(template_fields(template) - set(record))
            if missing:
                raise ValueError(
                    f"{where}: record {number} has no field {missing[0]!r} that the template names; its fields are "
                    f"{', '.join(sorted(record)) or 'none'}. Fix the template or the file."
                )
            record = {**record, **{key: text.format_map(record) for key, text in template.items()}}
        for key in (*REQUIRED_FIELDS, "input"):
            value = record.get(key)
            if key in record and not isinstance(value, str) and (value is not None or key != "input"):
                raise ValueError(
                    f"{where}: field {key!r} of record {number} is {_kind(value)} ({value!r:.40}), not text; write it "
                    f"as a string in the file, or give a template that formats it, e.g. {{{key}: '{{{key}}}'}}."
                )
            if key in REQUIRED_FIELDS and not isinstance(value, str):
                raise ValueError(
                    f"{where}: record {number} has no text field {key!r} "
                    f"(fields: {', '.join(sorted(record)) or 'none'}); "
                    "use alpaca-style instruction/input/output records, or give a template for this source, e.g. "
                    "{instruction: '{question}', output: '{answer}'}."
                )
        out.append(record)
    return out


class ReplayBlocks:
    """The blocks of ``block_size`` tokens of pretraining shards, one after the other, as SFT examples trained on
    every token (labels = inputs). Shards are opened lazily, in each DataLoader process; with a ``verifier``, each
    local chunk is checked (once per node) before its first block is read."""

    def __init__(self, shards: Sequence[Shard], block_size: int, verifier: ChunkVerifier | None = None) -> None:
        self.shards = list(shards)
        self.block_size = block_size
        self.starts = np.concatenate([[0], np.cumsum([shard.blocks(block_size) for shard in self.shards])]).astype(
            np.int64
        )
        self.verifier = verifier
        self._datasets: dict[int, object] = {}
        self._checked: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> dict:
        import torch

        if not 0 <= index < len(self):
            raise IndexError(f"replay block {index} of {len(self)}")
        number = int(np.searchsorted(self.starts, index, side="right")) - 1
        block = index - int(self.starts[number])
        self._check(number, block)
        tokens = torch.as_tensor(np.asarray(self._dataset(number)[block])).to(torch.int64)
        return {
            "input_ids": tokens,
            "labels": tokens.clone(),
            "token_counts": {"raw": len(tokens), "raw_plus_prompt_template": len(tokens)},
        }

    def _check(self, number: int, block: int) -> None:
        shard = self.shards[number]
        if self.verifier is None or is_url(shard.path) or not self.verifier.needed(shard):
            return
        blocks = np.cumsum([tokens // self.block_size for tokens in shard.chunk_tokens])
        chunk = int(np.searchsorted(blocks, block, side="right"))
        if (number, chunk) not in self._checked:
            self.verifier.check_once(shard, chunk, os.path.join(shard.path, shard.chunk_files[chunk]))
            self._checked.add((number, chunk))

    def _dataset(self, number: int):
        if number not in self._datasets:
            from litdata.streaming import StreamingDataset, TokensLoader

            loader = TokensLoader(block_size=self.block_size)
            self._datasets[number] = StreamingDataset(self.shards[number].path, item_loader=loader, shuffle=False)
        return self._datasets[number]

    def __getstate__(self) -> dict:
        return {
            **self.__dict__,
            "_datasets": {},
            "_checked": set(),
        }  # open datasets stay in the process that opened them
