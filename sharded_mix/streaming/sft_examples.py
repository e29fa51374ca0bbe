"""SFT examples: task files encoded as LitGPT's ``SFTDataset`` encodes them (through the token cache, length policy
applied on read), the mixed epochs as a ``Dataset``, the sampler that restarts them at a sample, and the training
loader that tells its ``LoaderProgress`` the task of every row it hands out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from litgpt.prompts import PromptStyle
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sharded_mix.mixing.sft_epochs import SFTEpochs
from sharded_mix.streaming.cache import default_cache_dir
from sharded_mix.streaming.sft_cache import CACHE_SUBDIR, TokenCache
from sharded_mix.streaming.sft_tokens import TaskExamples, TaskRecords, templated_records

logger = logging.getLogger(__name__)

TASKS = "tasks"
"""The batch key of each row's source (its index in ``SFTEpochs.sources``); the training loader takes it out."""


@dataclass(frozen=True)
class EncodedTask:
    """One task file's kept examples (``TaskExamples``: dicts of ``input_ids``, ``labels``, ``token_counts`` read
    lazily, and per-example arrays), their records (a list, or ``TaskRecords`` read on first use), and the counts of
    the length policy."""

    name: str
    path: str
    records: Sequence[dict]
    examples: TaskExamples
    truncated: int = 0
    dropped: int = 0
    without_targets: int = 0

    @property
    def lengths(self) -> np.ndarray:
        """Per kept example, its tokens (int64, length policy applied)."""
        return self.examples.lengths

    @property
    def prompt_lengths(self) -> np.ndarray:
        """Per kept example, its prompt's tokens (int64, at most its length): masked under ``mask_prompt``."""
        return self.examples.prompt_lengths

    @property
    def target_tokens(self) -> np.ndarray:
        """Per kept example, labels after the first that are not ``ignore_index`` (int64)."""
        return self.examples.targets


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
    cache: TokenCache | None = None,
    keep_records: bool = True,
) -> EncodedTask:
    """A task file's examples as LitGPT's ``SFTDataset`` encodes them, tokenized once into ``cache`` (default: under
    the node's cache directory) and read from it; examples longer than ``max_seq_length`` (-1: no limit) are cut to
    it (``truncate``) or left out (``drop``). ``keep_records``: the kept records as a list (else read on first use)."""
    cache = cache or TokenCache(default_cache_dir() / CACHE_SUBDIR, tokenizer)
    where = f"task {name!r} ({path})"
    read: list[list[dict]] = []

    def records() -> list[dict]:
        if not read:
            read.append(templated_records(path, template, where))
        return read[0]

    entry = cache.load(path, prompt_style, template, records, f"task {name!r}")
    examples = TaskExamples(entry, mask_prompt, ignore_index, max_seq_length, long_examples)
    if keep_records:
        kept: Sequence[dict] = [records()[index] for index in examples.indices.tolist()]
    else:
        kept = TaskRecords(path, template, where, examples.indices)
    return EncodedTask(name, str(path), kept, examples, examples.truncated, examples.dropped, examples.without_targets)


def target_tokens(examples: Sequence[dict], ignore_index: int) -> np.ndarray:
    """Per example, the tokens its loss is taken over: labels after the first (LitGPT's loops shift the targets by
    one) that are not ``ignore_index`` (a task's ``TaskExamples`` has them already)."""
    if isinstance(examples, TaskExamples) and examples.ignore_index == ignore_index:
        return examples.targets
    return np.fromiter(
        (int((example["labels"][1:] != ignore_index).sum()) for example in examples),
        dtype=np.int64,
        count=len(examples),
    )


class Concatenation(Sequence):
    """Sequences one after the other (the validation tasks' examples)."""

    def __init__(self, parts: Sequence[Sequence]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0, *map(len, self.parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.parts[part][index - int(self.starts[part])]


class MixedExamples(Dataset):
    """Sample ``s`` of the mixture (any ``s >= 0``: epoch ``s // len(self)``); ``len``: the epoch size."""

    def __init__(self, epochs: SFTEpochs, pools: dict[str, Sequence[dict]], records: Sequence[dict]) -> None:
        self.epochs, self.pools = epochs, pools
        self.task = {source: index for index, source in enumerate(epochs.sources)}
        self.data = records  # what LitGPT picks a generation example from

    def __len__(self) -> int:
        return self.epochs.epoch_size

    def item_lengths(self) -> np.ndarray:
        """Each sample's tokens (``len(self[s]["input_ids"])``, epoch 0), read from the pools' lengths."""
        sources, examples = self.epochs.epoch_examples(0)
        lengths = np.empty(len(examples), dtype=np.int64)
        for index, source in enumerate(self.epochs.sources):
            at, pool = sources == index, self.pools[source]
            lengths[at] = pool.lengths[examples[at]] if hasattr(pool, "lengths") else pool.block_size
        return lengths

    def __getitem__(self, sample: int) -> dict:
        """The example, with ``task``: the index of its source in ``epochs.sources``."""
        source, index = self.epochs.example(sample)
        return {**self.pools[source][index], "task": self.task[source]}


class Examples(Dataset):
    """Encoded examples, in order (validation)."""

    def __init__(self, examples: Sequence[dict], records: Sequence[dict]) -> None:
        self.examples, self.data = examples, records

    def __len__(self) -> int:
        return len(self.examples)

    def item_lengths(self) -> np.ndarray:
        """Each example's tokens (``len(self[i]["input_ids"])``)."""
        parts = getattr(self.examples, "parts", [self.examples])
        if all(hasattr(part, "lengths") for part in parts):
            return np.concatenate([part.lengths for part in parts]).astype(np.int64)
        return np.array([len(example["input_ids"]) for example in self.examples], dtype=np.int64)

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
    """LitGPT's SFT collate, adding ``tasks``: each row's source index, or for packed rows each token's (picklable
    for DataLoader workers)."""

    def __init__(self, collate: Callable[[list[dict]], dict]) -> None:
        self.collate = collate

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.collate(samples)
        tasks = [sample["task"] for sample in samples]
        batch[TASKS] = torch.stack(tasks) if isinstance(tasks[0], torch.Tensor) else torch.tensor(tasks)
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
                self.progress.hand_out(tasks.tolist() if tasks.dim() == 1 else tasks)  # packed rows: per token
            yield batch
