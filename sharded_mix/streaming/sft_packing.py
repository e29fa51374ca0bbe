"""Packed SFT training rows: the setup checks (EOS, prompts), the rows as a ``Dataset``, the sampler that serves each
epoch's rows (split over ranks), and what the loader handed out in samples.

A packed row is several whole examples end to end (``mixing.packing``: best fit within windows of samples). Each
example keeps its labels (prompt masking unchanged) but its first token's label is ``ignore_index``: the prediction
from one example's EOS to the next example's first token is never trained, so with attention kept inside each
EOS-ended example (``training.document_attention``) every example's loss is its unpacked loss. Rows are padded at the
end to the row length (``train.max_seq_length``) as LitGPT's collate pads. Replay blocks take a row each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from sharded_mix.mixing.packing import PackedEpochs, padding_share
from sharded_mix.streaming.distributed import log_rank_zero
from sharded_mix.streaming.sft_examples import EncodedTask, LoaderProgress, MixedExamples

logger = logging.getLogger(__name__)

PAD_ID = 0
"""The input id of padding, LitGPT's SFT collate's (``get_sft_collate_fn``'s ``pad_id``)."""
NO_TASK = -1
"""The ``task`` of a packed row's padding (each other token's is its example's task index)."""


def check_packing_fields(packing: object, window: object) -> None:
    """``packing`` and ``packing_window`` as the user wrote them."""
    if not isinstance(packing, bool):
        raise ValueError(f"packing is {packing!r}; use true or false.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f"packing_window is {window!r}; give a number of consecutive samples packed together, 1 or more "
            "(default 1024)."
        )


def packing_eos_id(eos_id: int | None, max_seq_length: int) -> int:
    """The EOS id that ends each packed example; refuses a run without a row length or an EOS token."""
    if max_seq_length is None or max_seq_length <= 0:
        raise ValueError(
            f"packing: true needs train.max_seq_length (the length of a packed row), which is {max_seq_length}; set "
            "it (e.g. train.max_seq_length: 2048), or set packing: false."
        )
    if eos_id is None:
        raise ValueError(
            "packing: true finds where each packed example ends from the EOS token, and the tokenizer has none; use "
            "packing: false."
        )
    return int(eos_id)


def eos_misplaced(task: EncodedTask, eos_id: int, capacity: int) -> tuple[int, int]:
    """How many of ``task``'s examples hold ``eos_id`` before their last token, and how many shorter than
    ``capacity`` do not end with it (an example cut to ``capacity`` fills a row alone and may end anywhere); numpy
    over the task's cached tokens (``TaskExamples``: ``tokens``, ``starts``, ``lengths``)."""
    examples = task.examples
    tokens, starts, lengths = np.asarray(examples.tokens), examples.starts, examples.lengths
    if not len(lengths):
        return 0, 0
    ends_with_eos = tokens[starts + lengths - 1] == eos_id
    hits = np.flatnonzero(tokens == eos_id)
    example = np.searchsorted(starts, hits, side="right") - 1
    inside = example >= 0
    example, hits = example[inside], hits[inside]
    before_end = hits - starts[example] < lengths[example] - 1
    inner = np.unique(example[before_end])
    return len(inner), int((~ends_with_eos & (lengths < capacity)).sum())


def check_task(task: EncodedTask, eos_id: int, capacity: int, kind: str = "task") -> None:
    """Refuse a task whose examples cannot be packed: EOS before an example's end or an example not ended by it
    (packed examples are told apart by EOS), or a prompt that fills a whole row (no response token left: under
    ``mask_prompt``, nothing to train on; only an example cut to ``capacity`` can have one)."""
    inside, unended = eos_misplaced(task, eos_id, capacity)
    where = f"packing: {kind} {task.name!r} ({task.path})"
    if inside:
        raise ValueError(
            f"{where} has {inside} example(s) holding the EOS token (id {eos_id}) before their end; packed examples "
            "are told apart by EOS, so each must hold it only as its last token. Clean the EOS text out of those "
            "records, or set packing: false."
        )
    if unended:
        raise ValueError(
            f"{where} has {unended} example(s) not ended by the EOS token (id {eos_id}); packed examples are told "
            "apart by EOS. Use a tokenizer and prompt style that end each response with EOS, or set packing: false."
        )
    filled = int((task.prompt_lengths >= capacity).sum())
    if filled and kind == "task":
        raise ValueError(
            f"{where} has {filled} example(s) whose prompt fills the whole row of train.max_seq_length {capacity} "
            f"tokens, leaving no response token; raise train.max_seq_length, set long_examples: drop, or set "
            "packing: false."
        )


def join_examples(examples: Sequence[dict], ignore_index: int, length: int, tasks: Sequence[int]) -> dict:
    """One row of ``examples`` end to end, each with its labels but its first token's label ``ignore_index``, padded
    at the end to ``length`` tokens as LitGPT's collate pads (``PAD_ID``, ``ignore_index``); ``task``: each token's
    task (``tasks``: each example's; ``NO_TASK`` for padding)."""
    ids, labels = [], []
    for example in examples:
        label = torch.as_tensor(example["labels"]).clone()
        label[0] = ignore_index
        ids.append(torch.as_tensor(example["input_ids"]))
        labels.append(label)
    padding = length - sum(len(part) for part in ids)
    ids.append(torch.full((padding,), PAD_ID, dtype=ids[0].dtype))
    labels.append(torch.full((padding,), ignore_index, dtype=labels[0].dtype))
    counts = [example["token_counts"] for example in examples]
    owners = torch.repeat_interleave(torch.tensor([*tasks, NO_TASK]), torch.tensor([len(part) for part in ids]))
    return {
        "input_ids": torch.cat(ids),
        "labels": torch.cat(labels),
        "token_counts": {key: sum(count[key] for count in counts) for key in ("raw", "raw_plus_prompt_template")},
        "task": owners,
    }


class PackedRows(Dataset):
    """The packed rows of the mixture: row ``r`` of epoch ``e`` at index ``e · epoch_size + r`` (an epoch never has
    more rows than samples); ``len``: the rows of epoch 0 (LitGPT's steps per epoch). Every row is padded to the row
    length: LitGPT sizes the model on the longest row of epoch 0, and a later epoch's rows may be longer than those,
    while the batches keep one shape (one compiled attention kernel)."""

    def __init__(self, examples: MixedExamples, packing: PackedEpochs, ignore_index: int) -> None:
        self.examples, self.packing, self.ignore_index = examples, packing, ignore_index
        self.data = examples.data  # what LitGPT picks a generation example from

    def __len__(self) -> int:
        return self.packing.rows(0)

    def item_lengths(self) -> np.ndarray:
        """Each row's tokens (all padded to the row length)."""
        return np.full(len(self), self.packing.capacity, dtype=np.int64)

    def __getitem__(self, index: int) -> dict:
        epoch, number = divmod(int(index), self.packing.epochs.epoch_size)
        pools = self.examples.pools
        row = self.packing.row(epoch, number)
        examples = [pools[source][example] for source, example in row]
        tasks = [self.examples.task[source] for source, _ in row]
        return join_examples(examples, self.ignore_index, self.packing.capacity, tasks)


def pack_mixture(
    examples: MixedExamples,
    tasks: Mapping[str, EncodedTask],
    val_tasks: Mapping[str, EncodedTask],
    eos_id: int,
    max_seq_length: int,
    window: int,
    ignore_index: int,
) -> PackedRows:
    """The training rows of ``examples`` packed into rows of ``max_seq_length`` tokens, after checking every task
    (and the validation tasks, which the model also reads under document attention); logs epoch 0's padding."""
    eos_id = packing_eos_id(eos_id, max_seq_length)
    for task in tasks.values():
        check_task(task, eos_id, max_seq_length)
    for task in val_tasks.values():
        check_task(task, eos_id, max_seq_length, "val task")
    lengths: dict[str, np.ndarray | int] = {name: task.lengths for name, task in tasks.items()}
    for source in examples.epochs.sources:
        lengths.setdefault(source, max_seq_length)  # replay blocks: a row each
    packing = PackedEpochs(examples.epochs, lengths, max_seq_length, window)
    _, _, epoch_lengths, rows = packing.epoch(0)
    log_rank_zero(
        "packing: epoch 0's %d samples fill %d rows of %d tokens (%.2f%% padding), best fit within windows of %d "
        "samples",
        len(epoch_lengths),
        len(rows),
        max_seq_length,
        100 * padding_share(epoch_lengths, rows, max_seq_length),
        window,
    )
    return PackedRows(examples, packing, ignore_index)


class PackedSampler(DistributedSampler):
    """Serves one epoch's rows per pass (from epoch ``start_epoch`` on), split over ``world_size`` ranks as Fabric
    splits a sampler: rank ``r`` takes rows ``r, r + W, ...``, wrapping around at the epoch's end so every rank takes
    as many. Being a ``DistributedSampler``, Fabric keeps it as it is. ``len``: this rank's rows of the first pass
    (epochs differ by a few rows; each pass serves its own epoch's rows)."""

    def __init__(self, rows: PackedRows, start_epoch: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rows, num_replicas=world_size, rank=rank, shuffle=False)
        self.packing = rows.packing
        self.start_epoch = self.pass_epoch = start_epoch
        """The first epoch served; the epoch of the pass started last."""
        self._next = start_epoch

    def __len__(self) -> int:
        return -(-self.packing.rows(self.start_epoch) // self.num_replicas)

    def __iter__(self):
        epoch = self.pass_epoch = self._next
        self._next += 1
        count = self.packing.rows(epoch)
        mine = (self.rank + self.num_replicas * np.arange(-(-count // self.num_replicas))) % count
        return iter((epoch * self.packing.epochs.epoch_size + mine).tolist())


def packed_sampler(rows: PackedRows, start: int, rank: int, world_size: int) -> PackedSampler:
    """The sampler of packed rows starting at sample ``start``, which must begin an epoch (a row holds several
    samples)."""
    epoch, rest = divmod(start, rows.packing.epochs.epoch_size)
    if rest:
        raise ValueError(
            f"start is sample {start}; with packing a loader starts at an epoch's first sample (a multiple of "
            f"{rows.packing.epochs.epoch_size})."
        )
    return PackedSampler(rows, epoch, rank, world_size)


class PackedProgress(LoaderProgress):
    """``LoaderProgress`` for packed rows: ``m`` rows handed out on each of ``W`` ranks are the first ``W·m`` rows of
    the pass's epoch (wrapping around), and a prefix of an epoch's rows is a prefix of its packed sample order, so
    the samples of all ranks follow from the packing. A row holds several tasks: ``last_token_sources`` names each
    token's (``data/loss`` is attributed token by token)."""

    def __init__(self, sampler: PackedSampler, targets: Mapping[str, np.ndarray | int]) -> None:
        super().__init__(sampler.packing.epochs, sampler, targets)
        self.packing = sampler.packing
        self.last_batch = 0
        """Rows of the micro-batch handed out last."""
        self.last_token_sources: torch.Tensor | None = None
        """(B, T): each token's source index in the micro-batch handed out last (``NO_TASK``: padding)."""
        self._finished: dict[int, dict[str, tuple[int, int]]] = {}  # per finished pass, its counts past whole epochs

    def start_pass(self, sampler: Sampler) -> None:
        world = sampler.num_replicas if isinstance(sampler, PackedSampler) else None
        if world is None and self.world_size is not None:
            logger.warning(
                "log_data_metrics: the packed SFT training loader's sampler is a %s, not its PackedSampler; "
                "data/samples, data/tokens, data/share and data/epoch are not logged.",
                type(sampler).__name__,
            )
        self.world_size = world
        epoch = self.sampler.pass_epoch
        self.passes.append([epoch, 0, self.packing.rows(epoch)])

    def hand_out(self, tasks: torch.Tensor) -> None:
        self.passes[-1][1] += len(tasks)
        self.batches += 1
        self.last_batch = len(tasks)
        self.last_rows = (self.epochs.sources, ())
        self.last_token_sources = tasks

    def consumed(self, leave_out_last: bool = False) -> dict[str, tuple[int, int]] | None:
        if self.world_size is None:
            return None
        totals = dict.fromkeys(self.epochs.sources, (0, 0))
        whole = self.epochs.counts(0, 0, self.epochs.epoch_size, self.targets)  # every epoch: the same examples

        def add(counted: Mapping[str, tuple[int, int]], times: int = 1) -> None:
            for source, (samples, tokens) in counted.items():
                before = totals[source]
                totals[source] = (before[0] + times * samples, before[1] + times * tokens)

        add(whole, self.sampler.start_epoch)
        for number, (epoch, rows, count) in enumerate(self.passes):
            current = number == len(self.passes) - 1
            if leave_out_last and current:
                rows -= self.last_batch
            repeats, rest = divmod(self.world_size * rows, count)
            add(whole, repeats)
            if current:
                add(self.packing.counts(epoch, rest, self.targets))
            else:  # a finished pass: its counts do not change
                if number not in self._finished:
                    self._finished[number] = self.packing.counts(epoch, rest, self.targets)
                add(self._finished[number])
        return totals
