"""SFT examples: task files encoded with LitGPT's ``SFTDataset`` (length policy applied), the mixed epochs as a
``Dataset``, the sampler that restarts them at a sample, and the training loader that tells its ``LoaderProgress``
the task of every row it hands out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from litgpt.data import SFTDataset
from litgpt.prompts import PromptStyle
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sharded_mix.mixing.sft_epochs import SFTEpochs
from sharded_mix.streaming.sft_files import apply_template, read_records

logger = logging.getLogger(__name__)

TASKS = "tasks"
"""The batch key of each row's source (its index in ``SFTEpochs.sources``); the training loader takes it out."""


@dataclass(frozen=True)
class EncodedTask:
    """One task file's records and their encodings (``input_ids``, ``labels``, ``token_counts``), length policy
    applied."""

    name: str
    path: str
    records: list[dict]
    examples: list[dict]
    truncated: int = 0
    dropped: int = 0
    without_targets: int = 0


def fit_length(example: dict, max_seq_length: int) -> dict:
    """``example`` cut to ``max_seq_length`` tokens, as LitGPT's ``SFTDataset`` cuts it."""
    input_ids, labels = example["input_ids"][:max_seq_length], example["labels"][:max_seq_length]
    counts = example["token_counts"]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "token_counts": {"raw": min(counts["raw"], len(input_ids)), "raw_plus_prompt_template": len(input_ids)},
    }


def encode_task(
    name: str,
    path: str | Path,
    tokenizer: Tokenizer,
    prompt_style: PromptStyle,
    mask_prompt: bool,
    ignore_index: int,
    max_seq_length: int = -1,
    long_examples: str = "truncate",
    template: dict[str, str] | None = None,
) -> EncodedTask:
    """Read, template and tokenize a task file with LitGPT's ``SFTDataset``; examples longer than ``max_seq_length``
    (-1: no limit) are cut to it (``truncate``) or left out (``drop``)."""
    records = apply_template(read_records(path), template, f"task {name!r} ({path})")
    dataset = SFTDataset(records, tokenizer, prompt_style, -1, mask_prompt, ignore_index)
    kept, examples, truncated, dropped, without_targets = [], [], 0, 0, 0
    for index in range(len(dataset)):
        example = dataset[index]
        if 0 < max_seq_length < len(example["input_ids"]):
            if long_examples == "drop":
                dropped += 1
                continue
            example = fit_length(example, max_seq_length)
            truncated += 1
        if not bool((example["labels"][1:] != ignore_index).any()):
            without_targets += 1
        examples.append(example)
        kept.append(records[index])
    return EncodedTask(name, str(path), kept, examples, truncated, dropped, without_targets)


def target_tokens(examples: Sequence[dict], ignore_index: int) -> np.ndarray:
    """Per example, the tokens its loss is taken over: labels after the first (LitGPT's loops shift the targets by
    one) that are not ``ignore_index``."""
    return np.fromiter(
        (int((example["labels"][1:] != ignore_index).sum()) for example in examples),
        dtype=np.int64,
        count=len(examples),
    )


class MixedExamples(Dataset):
    """Sample ``s`` of the mixture (any ``s >= 0``: epoch ``s // len(self)``); ``len``: the epoch size."""

    def __init__(self, epochs: SFTEpochs, pools: dict[str, Sequence[dict]], records: list[dict]) -> None:
        self.epochs, self.pools = epochs, pools
        self.task = {source: index for index, source in enumerate(epochs.sources)}
        self.data = records  # what LitGPT picks a generation example from

    def __len__(self) -> int:
        return self.epochs.epoch_size

    def __getitem__(self, sample: int) -> dict:
        """The example, with ``task``: the index of its source in ``epochs.sources``."""
        source, index = self.epochs.example(sample)
        return {**self.pools[source][index], "task": self.task[source]}


class Examples(Dataset):
    """Encoded examples, in order (validation)."""

    def __init__(self, examples: list[dict], records: list[dict]) -> None:
        self.examples, self.data = examples, records

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


class EpochSampler(Sampler[int]):
    """Yields the samples of one epoch per iteration: ``e·N .. e·N + N − 1`` for the e-th (from ``start``, a sample)."""

    def __init__(self, epoch_size: int, start: int = 0) -> None:
        self.epoch_size, self.start = epoch_size, start
        self.epoch = start // epoch_size
        self.first = start
        """The first sample of the pass started last."""

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self):
        first = self.epoch * self.epoch_size
        self.epoch += 1
        self.first = max(first, self.start)
        return iter(range(self.first, first + self.epoch_size))


class TaskCollate:
    """LitGPT's SFT collate, adding ``tasks``: each row's source index (picklable for DataLoader workers)."""

    def __init__(self, collate: Callable[[list[dict]], dict]) -> None:
        self.collate = collate

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.collate(samples)
        batch[TASKS] = torch.tensor([sample["task"] for sample in samples], dtype=torch.int64)
        return batch


class LoaderProgress:
    """What the training loader handed out: kept in the main process of each rank, and turned into the samples of
    all ranks by the epoch layout, with no communication.

    Each pass over an epoch (one ``iter`` of the loader) hands out rows from its first sample on. On one rank the
    rows are the pass's samples in order; over ``W`` ranks (Fabric's ``DistributedSampler`` split of the sampler: row
    ``i`` of rank ``r`` is the pass's sample ``r + W·i``, wrapping around at its end) every rank hands out as many
    rows, so ``m`` rows on each rank are the pass's first ``W·m`` samples. LitGPT's finetune loops fast-forward the
    loader through the batches a resumed run trained, so the count stays whole-run. Samples before the sampler's
    ``start`` count as trained (a run that starts there trained them before).
    """

    def __init__(self, epochs: SFTEpochs, sampler: EpochSampler, targets: Mapping[str, np.ndarray | int]) -> None:
        self.epochs, self.sampler, self.targets = epochs, sampler, targets
        self.world_size: int | None = 1
        """Ranks the passes are split over; None when the loader's sampler is not one whose split is known."""
        self.passes: list[list[int]] = []
        """Per pass: its first sample and the rows this rank handed out of it."""
        self.batches = 0
        """Micro-batches handed out (the same on every rank)."""
        self.last_rows: tuple[list[str], tuple[int, ...]] | None = None
        """The sources and each row's index into them, of the micro-batch handed out last."""

    def start_pass(self, sampler: Sampler) -> None:
        """A pass hands out its first batch; ``sampler``: the loader's (ours, or Fabric's split of it over ranks)."""
        if isinstance(sampler, EpochSampler):
            world = 1
        elif (
            isinstance(sampler, DistributedSampler)
            and not sampler.shuffle
            and len(sampler.dataset) == self.epochs.epoch_size
        ):
            world = sampler.num_replicas
        else:
            world = None
        if world is None and self.world_size is not None:
            logger.warning(
                "log_data_metrics: the SFT training loader's sampler is a %s, whose split over ranks is unknown; "
                "data/samples, data/tokens, data/share and data/epoch are not logged (data/loss is).",
                type(sampler).__name__,
            )
        self.world_size = world
        self.passes.append([self.sampler.first, 0])

    def hand_out(self, tasks: list[int]) -> None:
        self.passes[-1][1] += len(tasks)
        self.batches += 1
        self.last_rows = (self.epochs.sources, tuple(tasks))

    def consumed(self, leave_out_last: bool = False) -> dict[str, tuple[int, int]] | None:
        """Per source, samples and target tokens (``targets``) handed out so far over all ranks; ``leave_out_last``:
        without the last micro-batch. None when the split over ranks is unknown."""
        if self.world_size is None:
            return None
        epochs, size = self.epochs, self.epochs.epoch_size
        totals = dict.fromkeys(epochs.sources, (0, 0))

        def add(epoch: int, begin: int, end: int, times: int = 1) -> None:
            if times and end > begin:
                for source, (samples, tokens) in epochs.counts(epoch, begin, end, self.targets).items():
                    before = totals[source]
                    totals[source] = (before[0] + times * samples, before[1] + times * tokens)

        whole, rest = divmod(self.sampler.start, size)
        add(0, 0, size, whole)  # every epoch holds the same examples
        add(whole, 0, rest)
        for number, (first, rows) in enumerate(self.passes):
            if leave_out_last and number == len(self.passes) - 1 and self.last_rows is not None:
                rows -= len(self.last_rows[1])
            epoch, offset = divmod(first, size)
            repeats, rest = divmod(self.world_size * rows, size - offset)
            add(epoch, offset, size, repeats)
            add(epoch, offset, offset + rest)
        return totals


class SFTLoader(DataLoader):
    """The training DataLoader: each batch's ``tasks`` go to its ``progress`` (in the main process, as the batch is
    handed out), not to LitGPT, whose loop sees the batch LitGPT's own collate makes."""

    def __init__(self, *args, progress: LoaderProgress | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def __iter__(self):
        started = False
        for batch in super().__iter__():
            tasks = batch.pop(TASKS, None)
            if self.progress is not None and tasks is not None:
                if not started:
                    self.progress.start_pass(self.sampler)
                    started = True
                self.progress.hand_out(tasks.tolist())
            yield batch
