"""One task file's cached tokens read as LitGPT's SFT examples: the length policy and prompt masking applied on
read, with numpy over the whole task at setup and one slice of a memory map per example; and the task's records,
read from the file only when asked for."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sharded_mix.streaming.sft_cache import TaskTokens
from sharded_mix.streaming.sft_files import apply_template, read_records


class TaskExamples(Sequence):
    """The examples a task keeps (``long_examples``: ``truncate`` cuts them to ``max_seq_length``, ``drop`` leaves
    the longer ones out; -1: no limit): item ``i`` is the dict LitGPT's ``SFTDataset`` gives (``input_ids`` int64,
    ``labels``, ``token_counts``), cut as ``SFTDataset`` cuts (``raw`` at most the kept tokens).

    Per kept example (int64 arrays): ``indices`` (its record in the task file), ``starts`` (its first token in
    ``tokens``, the entry's memory-mapped tokens), ``lengths`` (its tokens), ``prompt_lengths`` (its prompt's tokens,
    at most its length), ``raw_counts`` (``token_counts["raw"]``) and ``targets`` (labels after the first that are not
    ``ignore_index``).
    """

    def __init__(
        self,
        entry: TaskTokens,
        mask_prompt: bool,
        ignore_index: int,
        max_seq_length: int = -1,
        long_examples: str = "truncate",
    ) -> None:
        self.mask_prompt, self.ignore_index = mask_prompt, ignore_index
        self.tokens_file = (entry.directory / "tokens.bin", str(entry.tokens.dtype), len(entry.tokens))
        self.tokens = entry.tokens
        offsets = np.asarray(entry.offsets)
        full = np.diff(offsets)
        long = full > max_seq_length if max_seq_length > 0 else np.zeros(len(full), dtype=bool)
        self.dropped = int(long.sum()) if long_examples == "drop" else 0
        self.truncated = 0 if long_examples == "drop" else int(long.sum())
        keep = ~long if self.dropped else np.ones(len(full), dtype=bool)
        self.indices = np.flatnonzero(keep)
        self.starts = offsets[:-1][keep]
        self.lengths = np.minimum(full[keep], max_seq_length) if max_seq_length > 0 else full
        self.prompt_lengths = np.minimum(np.asarray(entry.prompt_lengths)[keep], self.lengths)
        raw = np.asarray(entry.raw_counts)[keep]
        self.raw_counts = np.where(long[keep], np.minimum(raw, self.lengths), raw)
        self.targets = self._targets()

    def _targets(self) -> np.ndarray:
        """Labels after the first that are not ``ignore_index``: every token past the prompt (when masked) and past
        the first, less the tokens whose id is ``ignore_index`` itself."""
        first = np.maximum(1, self.prompt_lengths) if self.mask_prompt else np.ones_like(self.lengths)
        targets = np.maximum(self.lengths - first, 0)
        if 0 <= self.ignore_index <= np.iinfo(self.tokens.dtype).max and len(self.tokens):
            hits = np.flatnonzero(np.asarray(self.tokens) == self.ignore_index)
            example = np.searchsorted(self.starts, hits, side="right") - 1
            inside = example >= 0
            example, hits = example[inside], hits[inside]
            offset = hits - self.starts[example]
            counted = (offset >= first[example]) & (offset < self.lengths[example])
            targets -= np.bincount(example[counted], minlength=len(targets)).astype(targets.dtype)
        return targets

    @property
    def without_targets(self) -> int:
        return int((self.targets == 0).sum())

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        start, length = int(self.starts[index]), int(self.lengths[index])
        input_ids = torch.from_numpy(self.tokens[start : start + length].astype(np.int64))
        labels = input_ids.clone()
        if self.mask_prompt:
            labels[: int(self.prompt_lengths[index])] = self.ignore_index
        return {
            "input_ids": input_ids,
            "labels": labels,
            "token_counts": {"raw": int(self.raw_counts[index]), "raw_plus_prompt_template": length},
        }

    def __getstate__(self) -> dict:
        return {**self.__dict__, "tokens": None}  # a process it is sent to maps the file itself

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        path, dtype, count = self.tokens_file
        self.tokens = np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.empty(0, dtype)


def templated_records(path: str | Path, template: dict[str, str] | None, where: str) -> list[dict]:
    """A task file's records with its template applied (checked: ``sft_files.apply_template``)."""
    return apply_template(read_records(path), template, where)


class TaskRecords(Sequence):
    """The records of a task's kept examples (``indices``), read from the task file on first use only: LitGPT reads
    one to generate a sample from, when the validation records lack the one it asks for."""

    def __init__(self, path: str | Path, template: dict[str, str] | None, where: str, indices: np.ndarray) -> None:
        self.path, self.template, self.where, self.indices = path, template, where, indices
        self._records: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._records is None:
            self._records = templated_records(self.path, self.template, self.where)
        return self._records[int(self.indices[index])]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_records": None}
