"""SFT examples: task files encoded with LitGPT's ``SFTDataset`` (length policy applied), the mixed epochs as a
``Dataset``, and the sampler that restarts them at a sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from litgpt.data import SFTDataset
from litgpt.prompts import PromptStyle
from litgpt.tokenizer import Tokenizer
from torch.utils.data import Dataset, Sampler

from sharded_mix.mixing.sft_epochs import SFTEpochs
from sharded_mix.streaming.sft_files import apply_template, read_records


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


class MixedExamples(Dataset):
    """Sample ``s`` of the mixture (any ``s >= 0``: epoch ``s // len(self)``); ``len``: the epoch size."""

    def __init__(self, epochs: SFTEpochs, pools: dict[str, Sequence[dict]], records: list[dict]) -> None:
        self.epochs, self.pools = epochs, pools
        self.data = records  # what LitGPT picks a generation example from

    def __len__(self) -> int:
        return self.epochs.epoch_size

    def __getitem__(self, sample: int) -> dict:
        source, index = self.epochs.example(sample)
        return self.pools[source][index]


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

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self):
        first = self.epoch * self.epoch_size
        self.epoch += 1
        return iter(range(max(first, self.start), first + self.epoch_size))
