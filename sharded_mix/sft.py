"""``SFTMixture``: the LitGPT data module for ``litgpt finetune_full`` / ``finetune_lora`` over a mixture of task
files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from litgpt.data import DataModule, get_sft_collate_fn
from litgpt.prompts import PromptStyle
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from sharded_mix import litgpt_bridge
from sharded_mix.config import expand_path
from sharded_mix.data_config import parse_weights, prompt_style_named
from sharded_mix.mixing.plan import format_sft_plan
from sharded_mix.mixing.sft_epochs import SFTEpochs
from sharded_mix.streaming.cache import LEDGER_DIR, default_cache_dir
from sharded_mix.streaming.checksums import VERIFY_MODES
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.streaming.distributed import distributed_rank_world, log_rank_zero
from sharded_mix.streaming.identity import check_run_tokenizer
from sharded_mix.streaming.sft_cache import CACHE_SUBDIR, TokenCache
from sharded_mix.streaming.sft_examples import (
    Concatenation,
    EncodedTask,
    EpochSampler,
    Examples,
    LoaderProgress,
    MixedExamples,
    SFTLoader,
    TaskCollate,
    encode_task,
    target_tokens,
)
from sharded_mix.streaming.sft_files import ReplayBlocks
from sharded_mix.streaming.sft_packing import (
    PackedProgress,
    PackedRows,
    check_packing_fields,
    pack_mixture,
    packed_sampler,
    packing_eos_id,
)
from sharded_mix.streaming.verify import ChunkVerifier
from sharded_mix.training.attention import DocumentTraining
from sharded_mix.training.data_metrics import DataMetrics, PlanCounts

logger = logging.getLogger(__name__)

REPLAY_SOURCE = "replay"
LONG_EXAMPLE_POLICIES = ("truncate", "drop")


@dataclass
class SFTMixture(DataModule):
    """Instruction task files (JSON / JSONL) mixed by weights, optionally with pretraining blocks replayed among them.

    An epoch is ``epoch_size`` samples (default: every task example once, plus the replay share). Its sources follow
    the exact blend; each source gives the same examples every epoch (whole passes, then distinct examples), in an
    order reshuffled every epoch: ``litgpt finetune_full`` counts ``train.epochs`` of it.
    """

    train_data: dict[str, str | Path] | str | Path = field(default_factory=dict)
    """Task files by name, ``{gsm8k: data/gsm8k/train.json, lima: data/lima.jsonl}``, or one file (named by its
    stem)."""
    val_data: dict[str, str | Path] | str | Path | None = None
    """Validation task files: one file or several by name; LitGPT's validation loss is over all their examples."""
    weights: dict[str, float] | str | None = None
    """The blend of the tasks, ``{gsm8k: 0.7, lima: 0.3}`` or ``gsm8k:0.7,lima:0.3`` (default: their sizes, so an
    epoch holds every example once). When given, every task needs one: weight 0 leaves it out (not trained on)."""
    epoch_size: int | None = None
    """Samples per epoch (default: the tasks' examples, divided by 1 − replay_share)."""
    templates: dict[str, dict[str, str]] | None = None
    """Per task name (train or val), format strings building ``instruction`` / ``input`` / ``output`` from other
    fields, e.g. ``{sciq: {instruction: "{question}", input: "{support}", output: "{correct_answer}"}}``."""
    prompt_style: str | PromptStyle = "alpaca"
    """A LitGPT prompt style (``litgpt.prompts``), applied to every task."""
    mask_prompt: bool = False
    """Train (and validate) on the response only: prompt tokens get ``ignore_index`` labels."""
    ignore_index: int = -100
    """The label of tokens left out of the loss."""
    long_examples: str = "truncate"
    """Examples longer than ``train.max_seq_length``: ``truncate`` (cut to it, as LitGPT does) or ``drop`` (left out
    of the pools). Setup logs how many; both are counted per task."""
    packing: bool = False
    """Lay whole training examples end to end in rows of ``train.max_seq_length`` tokens (which must be set), so
    batches hold little padding. The model attends only within each example, with positions restarting there (found
    from the EOS ending each example: an example holding EOS anywhere else is an error), and each example's first token
    is no target, so every example's loss is its unpacked loss. Validation stays one example per row; ``data/loss``
    is attributed to tasks token by token."""
    packing_window: int = 1024
    """With ``packing``: the samples packed together (best fit, longest first). Each window of this many consecutive
    samples fills rows of its own, so the blend stays exact window by window; larger windows pad less."""
    replay_data_path: str | Path | None = None
    """Pretraining token shards (a typed base directory or one litdata directory) replayed among the tasks."""
    replay_share: float = 0.0
    """The share of every epoch's samples that are replay blocks, in [0, 1)."""
    replay_block_size: int | None = None
    """Tokens per replay block (default: ``train.max_seq_length``)."""
    seed: int = 42
    """Seed of the draws and the epoch orders."""
    num_workers: int = 4
    """DataLoader worker processes."""
    token_cache: str | Path | None = None
    """Where task files are kept tokenized (default: ``sft_tokens`` in the node's cache directory,
    ``$SHARDED_MIX_CACHE_DIR`` or ``<temp dir>/sharded_mix_cache_<uid>``). A file is tokenized once, by up to 8
    processes (the usable cores); a run with the same file, tokenizer, prompt style and template only hashes the file
    and maps the tokens (docs/sft.md)."""
    shuffle: bool = True
    """Reshuffle each source's examples every epoch (False: every epoch in the same order)."""
    verify_chunks: str = "first_read"
    """For the replay shards: ``first_read`` checks each chunk with a content hash (``checksums.json``) once per node
    before it is read, and the token ids of shards without a manifest (see ``ShardedMixedDataset``); ``off``: not."""
    log_data_metrics: bool = True
    """Under ``litgpt finetune_full`` / ``_lora`` / ``_adapter`` / ``_adapter_v2``, log the mixture with the run's
    logger at each ``train.log_interval``: per task (``train_data`` names, and ``replay``) ``data/samples/<task>``
    (examples trained so far, all ranks) and ``data/tokens/<task>`` (their target tokens: labels after the first that
    are not ``ignore_index``), ``data/share/<task>`` (share of all samples so far), ``data/target/<task>`` (its blend
    weight), ``data/epoch/<task>`` (passes over its examples) and ``data/loss/<task>`` (mean training loss per target
    token since the last log, all ranks)."""

    tokenizer: Tokenizer | None = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    max_seq_length: int = field(default=-1, init=False, repr=False)
    epochs: SFTEpochs | None = field(default=None, init=False, repr=False)
    tasks: dict[str, EncodedTask] = field(default_factory=dict, init=False, repr=False)
    val_tasks: dict[str, EncodedTask] = field(default_factory=dict, init=False, repr=False)
    train_dataset: MixedExamples | PackedRows | None = field(default=None, init=False, repr=False)
    test_dataset: Examples | None = field(default=None, init=False, repr=False)
    targets: dict[str, np.ndarray | int] = field(default_factory=dict, init=False, repr=False)
    """Per source, each example's target tokens (replay: one number for every block)."""
    train_progress: LoaderProgress | None = field(default=None, init=False, repr=False)
    data_metrics: DataMetrics | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__init__()
        self.train_files = self._files(self.train_data, "train_data")
        if self.val_data is None:
            raise ValueError(
                "val_data is not set; give one validation task file, or several by name, e.g. val_data: "
                "{gsm8k: data/gsm8k/val.json}."
            )
        self.val_files = self._files(self.val_data, "val_data")
        if self.verify_chunks not in VERIFY_MODES:
            raise ValueError(f"verify_chunks is {self.verify_chunks!r}; use one of {', '.join(VERIFY_MODES)}.")
        self.task_weights = parse_weights(self.weights)
        unknown = sorted(set(self.task_weights or {}) - set(self.train_files))
        if unknown:
            raise ValueError(
                f"weights name {unknown[0]!r}, which is not in train_data ({', '.join(self.train_files)}); weight the "
                "train_data names."
            )
        unweighted = [
            name for name in self.train_files if self.task_weights is not None and name not in self.task_weights
        ]
        if unweighted:
            raise ValueError(
                f"weights {self.weights!r} give no weight to task(s) {', '.join(map(repr, unweighted))} of train_data; "
                "give each task a weight (0 to leave it out on purpose)."
            )
        if self.task_weights is not None and not any(weight > 0 for weight in self.task_weights.values()):
            raise ValueError(f"weights {self.weights!r} give no task a positive weight; weight at least one task.")
        if self.long_examples not in LONG_EXAMPLE_POLICIES:
            raise ValueError(f"long_examples is {self.long_examples!r}; use one of {', '.join(LONG_EXAMPLE_POLICIES)}.")
        if not 0 <= self.replay_share < 1:
            raise ValueError(
                f"replay_share is {self.replay_share!r}; use a share in [0, 1), e.g. 0.1 for 10% replay blocks."
            )
        if self.replay_share > 0 and self.replay_data_path is None:
            raise ValueError(
                f"replay_share is {self.replay_share:g} but replay_data_path is not set; set it to the pretraining "
                "shards to replay."
            )
        if self.replay_share > 0 and REPLAY_SOURCE in self.train_files:
            raise ValueError(
                f"train_data names a task {REPLAY_SOURCE!r}, the name of the replay source; rename that task."
            )
        if self.epoch_size is not None and (
            isinstance(self.epoch_size, bool) or not isinstance(self.epoch_size, int) or self.epoch_size < 1
        ):
            raise ValueError(
                f"epoch_size is {self.epoch_size!r}; use a whole number of samples, 1 or more (default: the tasks' "
                "examples)."
            )
        check_packing_fields(self.packing, self.packing_window)
        if self.num_workers < 0:
            raise ValueError(f"num_workers is {self.num_workers}; use 0 (load in the main process) or more.")
        if isinstance(self.prompt_style, str):
            self.prompt_style = prompt_style_named(self.prompt_style)

    @staticmethod
    def _files(value, field_name: str) -> dict[str, str]:
        if isinstance(value, (str, Path)):
            value = {Path(str(value)).stem: value}
        if not isinstance(value, dict) or not value:
            raise ValueError(
                f"{field_name} is {value!r}; give a task file, or task files by name, e.g. {{gsm8k: data/gsm8k.json}}."
            )
        return {str(name): expand_path(path, f"{field_name}.{name}") for name, path in value.items()}

    def connect(
        self, tokenizer: Tokenizer | None = None, batch_size: int = 1, max_seq_length: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = -1 if max_seq_length is None else max_seq_length
        self.data_metrics = None
        metrics = DataMetrics() if self.log_data_metrics else None
        documents = None
        if self.packing:  # the loss across an example boundary is masked in the labels (sft_packing.join_examples)
            eos_id = packing_eos_id(getattr(tokenizer, "eos_id", None), self.max_seq_length)
            documents = DocumentTraining(eos_id, cross_document_loss=True)
        if litgpt_bridge.attach_to_training_loop(metrics, documents):
            self.data_metrics = metrics

    def _encode(self, name: str, path: str, cache: TokenCache, keep_records: bool) -> EncodedTask:
        return encode_task(
            name,
            path,
            self.tokenizer,
            self.prompt_style,
            self.mask_prompt,
            self.ignore_index,
            self.max_seq_length,
            self.long_examples,
            (self.templates or {}).get(name),
            cache,
            keep_records,
        )

    def setup(self, stage: str = "") -> None:
        """Read and tokenize every task file, lay out the epochs, and log the plan."""
        if self.tokenizer is None:
            raise RuntimeError("call connect(tokenizer, ...) before setup().")
        weights = self.task_weights or {name: None for name in self.train_files}
        root = default_cache_dir() / CACHE_SUBDIR if self.token_cache is None else self.token_cache
        cache = TokenCache(expand_path(root, "token_cache"), self.tokenizer)
        self.tasks = {
            name: self._encode(name, path, cache, keep_records=False)
            for name, path in self.train_files.items()
            if weights.get(name, 0) != 0
        }  # training records are read only if LitGPT asks for one; validation ones are kept (its generation prompt)
        self.val_tasks = {
            name: self._encode(name, path, cache, keep_records=True) for name, path in self.val_files.items()
        }
        pools: dict[str, Sequence[dict]] = {name: task.examples for name, task in self.tasks.items()}
        for name, task in self.tasks.items():
            if not task.examples:
                raise ValueError(
                    f"task {name!r} ({task.path}) has no example left to train on ({task.dropped} longer than "
                    "max_seq_length were dropped)."
                )
        if self.task_weights is None:
            blend = {name: float(len(pool)) for name, pool in pools.items()}
        else:
            blend = {name: weight for name, weight in self.task_weights.items() if weight > 0}
        total = sum(blend.values())
        blend = {name: (1 - self.replay_share) * weight / total for name, weight in blend.items()}
        if self.replay_share > 0:
            pools[REPLAY_SOURCE] = self._replay_blocks()
            blend[REPLAY_SOURCE] = self.replay_share
        epoch_size = self.epoch_size or max(
            1, round(sum(len(task.examples) for task in self.tasks.values()) / (1 - self.replay_share))
        )
        self.epochs = SFTEpochs(
            blend, {name: len(pool) for name, pool in pools.items()}, epoch_size, self.seed, self.shuffle
        )
        first_task = next(iter(self.tasks.values()))
        self.train_dataset = MixedExamples(self.epochs, pools, first_task.records)
        self.targets = {name: target_tokens(task.examples, self.ignore_index) for name, task in self.tasks.items()}
        if REPLAY_SOURCE in pools:
            self.targets[REPLAY_SOURCE] = pools[REPLAY_SOURCE].block_size - 1  # every token but the first
        val_examples = Concatenation([task.examples for task in self.val_tasks.values()])
        if not val_examples:
            raise ValueError(
                f"val_data ({', '.join(self.val_files.values())}) holds no example; give validation examples."
            )
        self.test_dataset = Examples(
            val_examples, [record for task in self.val_tasks.values() for record in task.records]
        )
        log_rank_zero("%s", format_sft_plan(self.epochs, blend, self.tasks, self.val_tasks, self.max_seq_length))
        if self.packing:
            rows = (self.tokenizer.eos_id, self.max_seq_length, self.packing_window, self.ignore_index)
            self.train_dataset = pack_mixture(self.train_dataset, self.tasks, self.val_tasks, *rows)

    def _replay_blocks(self) -> ReplayBlocks:
        block_size = self.replay_block_size or self.max_seq_length
        if block_size is None or block_size < 2:
            raise ValueError("replay needs a block size: set replay_block_size, or train.max_seq_length.")
        if 0 < self.max_seq_length < block_size:
            raise ValueError(
                f"replay_block_size {block_size} is larger than train.max_seq_length {self.max_seq_length}; lower it."
            )
        base = expand_path(self.replay_data_path, "replay_data_path")
        shards = discover_shards(base, field="replay_data_path")
        note, limit = check_run_tokenizer(shards, self.tokenizer, litgpt_bridge.run_context())
        if note:
            log_rank_zero("replay_data_path: %s", note)
        verify = self.verify_chunks == "first_read"
        blocks = ReplayBlocks(
            shards, block_size, ChunkVerifier(default_cache_dir() / LEDGER_DIR, limit) if verify else None
        )
        if len(blocks) < 1:
            raise ValueError(
                f"replay_data_path {base!r} holds no block of {block_size} tokens; lower replay_block_size."
            )
        return blocks

    def _collate(self):
        return get_sft_collate_fn(max_seq_length=self.max_seq_length, ignore_index=self.ignore_index)

    def train_dataloader(self, start: int = 0) -> DataLoader:
        """The training loader; ``start``: the sample to start at (0; LitGPT's finetune_full replays batches
        instead). ``train_progress`` follows what it hands out (the ``data/`` counts)."""
        if self.train_dataset is None:
            raise RuntimeError("call connect(...) and setup() before asking for data loaders.")
        if isinstance(self.train_dataset, PackedRows):
            sampler = packed_sampler(self.train_dataset, start, *distributed_rank_world())
            self.train_progress = PackedProgress(sampler, self.targets)
        else:
            sampler = EpochSampler(len(self.train_dataset), start)
            self.train_progress = LoaderProgress(self.epochs, sampler, self.targets)
        if self.data_metrics is not None:
            names = [*self.train_files, *([REPLAY_SOURCE] if self.replay_share > 0 else [])]
            self.data_metrics.watch(self.train_progress, names, PlanCounts(self.train_progress, names))
        return SFTLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=TaskCollate(self._collate()),
            progress=self.train_progress,
        )

    def val_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            raise RuntimeError("call connect(...) and setup() before asking for data loaders.")
        return DataLoader(
            self.test_dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self._collate(),
        )
