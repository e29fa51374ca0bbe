"""``ShardedMixedDataset``: the LitGPT data module users put in their YAML (fields + LitGPT's four methods).

config → plan → run: ``__post_init__`` (or ``connect``, under a command-line parser) validates the fields once
into a ``DataConfig``; ``connect`` takes the run's context from the LitGPT bridge and checks the stages and the
stop; ``setup`` finds and checks the shards and resolves the ``RunPlan``; the loaders are built from the plan.
Runtime objects live in ``self._state``, never in dataclass fields, so LitGPT's hyperparameter dump shows the
init args only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from sharded_mix import litgpt_bridge
from sharded_mix.config import expand_path
from sharded_mix.data_config import DataConfig, validate_fields
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW
from sharded_mix.mixing.plan import PlanRow, format_mixture_plan, format_stage_plan, mixture_rows
from sharded_mix.mixing.run_plan import RunContext, RunPlan, check_run, resolve
from sharded_mix.mixing.stages import DataStage, StagePlanRow
from sharded_mix.mixing.stop import finished_at
from sharded_mix.mixing.weights import MixSpec, resolve_weights
from sharded_mix.shards import MAIN_TYPE
from sharded_mix.streaming.cache import ChunkCache, default_cache_dir
from sharded_mix.streaming.distributed import distributed_rank_world, log_rank_zero, run_nodes
from sharded_mix.streaming.identity import check_run_tokenizer
from sharded_mix.streaming.layout import (
    Mixture,
    check_cache_budget,
    check_cache_dir,
    check_chunk_files,
    check_held_out,
    check_one_dtype,
    check_single_directory_blend,
    data_dirs,
    discover_mixture,
    reused_for_validation,
    unhashed_note,
)
from sharded_mix.streaming.stream import MixtureLoader, ReadOptions, training_loader
from sharded_mix.streaming.validation import validation_loader
from sharded_mix.training.attention import document_training
from sharded_mix.training.data_metrics import DataMetrics

logger = logging.getLogger(__name__)


@dataclass
class _RunState:
    """What ``connect`` and ``setup`` worked out (not init args)."""

    config: DataConfig | None = None
    invalid: ValueError | None = None
    """A bad field found while a command-line parser built the module: raised at ``connect``."""
    context: RunContext = field(default_factory=RunContext)
    micro_batch_size: int = 1
    max_seq_length: int = 2048
    train: Mixture | None = None
    val: Mixture | None = None
    plan: RunPlan | None = None
    metrics: DataMetrics | None = None
    """The ``data/`` metrics of a ``litgpt pretrain`` run (``log_data_metrics``)."""
    tokenizer: Tokenizer | None = None
    token_limit: int | None = None
    """Token ids of shards without a manifest must stay below it (the model's or the tokenizer's vocabulary)."""


@dataclass
class ShardedMixedDataset(DataModule):
    """Typed litdata token shards under one base directory, mixed with weights you choose.

    Main shards are numbered directories (``1``, ``2`` or ``main/1``), typed shards are
    prefix + number (``c1`` code, ``m1`` math, ``w1`` web, ...). Give the blend in exactly one of
    ``literal_weights_str``, ``mix_weights_str`` or ``mix_config_path``, optionally with
    ``proportional_sampling`` and ``mix_temperature``.
    """

    data_path: str | Path = Path("data/")
    """Base directory of the shards, or its URL (``s3://bucket/mix``, ``gs://...``). If it holds ``train/`` (and
    ``val/``), those are used, as in the reference layout. A single litdata directory works too (one source, id
    ``main``). ``~`` and ``$VARS`` are expanded."""
    val_data_path: str | Path | None = None
    """Validation data: one litdata directory, or a typed base directory mixed with the training weights.
    Default: ``<data_path>/val``."""
    mix_weights_str: str | None = None
    """Weights per type, split equally across that type's shards, e.g. ``main:0.8,code:0.15,math:0.05``.
    With ``proportional_sampling`` they are per-type multipliers of shard size."""
    literal_weights_str: str | None = None
    """Weights per shard id, e.g. ``main/1:0.8,q1:0.1,q2:0.1``; shards not named are left out."""
    proportional_sampling: bool = False
    """Weight every shard by its token count (times its type's multiplier from ``mix_weights_str``)."""
    mix_config_path: str | Path | None = None
    """A YAML or JSON mix file: ``{weights: {main: 0.88, math: 0.12}}`` or ``{literal_weights: {...}}``."""
    mix_temperature: float = 1.0
    """Sampling temperature: p ∝ w^(1/T). 1 keeps the weights; > 1 flattens them; < 1 sharpens them."""
    shard_types: dict[str, str] | None = None
    """Extra or renamed shard types, type name -> directory prefix, e.g. ``{legal: l, python: c}``."""
    seed: int = 42
    """Seed for shuffling and mixing."""
    num_workers: int = 4
    """DataLoader worker processes per rank."""
    shuffle: bool = True
    """Shuffle training blocks (validation is never shuffled)."""
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW
    """Chunks whose blocks are shuffled together: each epoch of a source visits its chunks in a shuffled order,
    this many at a time, and permutes the blocks of those chunks. 1: one chunk at a time. Memory per source and
    loader process: 8 bytes × shuffle_window × blocks per chunk. A change applies from each source's next epoch."""
    max_epochs_per_source: int | None = None
    """Stop with an error when a source would start more passes than this (default: no limit)."""
    storage_options: dict | None = None
    """For URL data paths: the object store's options (obstore's names), e.g. ``{endpoint: https://...,
    region: us-east-1}``; ``allow_http: true`` for plain-http endpoints. Credentials may also come from the environment
    (``AWS_*``, ...)."""
    cache_dir: str | None = None
    """For URL data paths: where whole chunk files are downloaded, shared by the ranks and workers of a node (default:
    ``$SHARDED_MIX_CACHE_DIR``, else a directory under the system temp dir). Put it on local disk."""
    max_cache_size: int | str | None = None
    """For URL data paths: the most bytes of chunk files ``cache_dir`` may hold, e.g. ``200GB`` (None: no bound). The
    least recently used chunks outside what the loaders read now or next are deleted; it must hold at least
    sources × (shuffle_window + prefetch_chunks) chunks. Validation copies are not counted."""
    verify_chunks: str = "first_read"
    """``first_read``: a chunk whose shard has content hashes (``checksums.json``: written by ``sharded-mix prepare``,
    added by ``sharded-mix hash``) is hashed once per node where its bytes are first read (while it downloads, or when
    first mapped) and must match before any of its blocks reaches a batch; ``off``: sizes are checked only."""
    prefetch_chunks: int = 8
    """For URL data paths: chunks each loader process downloads ahead of its reads, past the shuffle window it is in,
    in the order the epoch will read them (0: download each chunk when first read)."""
    nodes: int | None = None
    """Nodes the run spans. Each node reads its own contiguous slice of every epoch of every source, so it downloads
    about 1/nodes of a remote mixture (and pages in 1/nodes of a local one). None: taken from the launcher (LitGPT's
    ``--num_nodes``, SLURM, torchrun), else 1. Resuming on another number of nodes shares the rest of each epoch out
    anew, without repeats or skips."""
    exclude_shards: list[str] | None = None
    """Shard ids to leave out of discovery, e.g. ``[c2, main/3]``: the way to train without a shard directory that is
    broken or not a shard (any other directory named like a shard must be a readable shard, or setup stops)."""
    on_data_change: str = "error"
    """When resuming, what to do with a source whose shard changed since the checkpoint (its content fingerprint
    differs): ``error`` (stop and say which), ``restart`` (it starts over; blocks it gave may come again) or
    ``continue`` (it keeps its position over the new content). The last two log a WARNING with what they cost."""
    stages: list[DataStage] | None = None
    """Data stages, each ``{name, start_step | start_tokens, [end_step | end_tokens], <mixture fields>, [seed],
    [seq_len]}``; omitted fields inherit the top-level ones. None: one stage, ``default``, from the top-level fields."""
    global_batch_size: int | None = None
    """Set it to ``train.global_batch_size`` when stages start at steps (LitGPT does not pass it to data modules)."""
    anneal_start_step: int | None = None
    """Shortcut for two stages: the top-level blend, then ``anneal_weights`` from this step on."""
    anneal_start_tokens: int | None = None
    """Or: the anneal starts after this many tokens."""
    anneal_weights: str | None = None
    """The anneal blend, in the top level's form (shard ids if ``literal_weights_str`` is used, else types)."""
    stop_at_step: int | None = None
    """End the training stream after this optimizer step (LitGPT then validates and writes ``final/``), without
    touching ``max_tokens`` or the LR schedule. A relaunch after ``final/`` holds that step exits at once."""
    stop_after_steps: int | None = None
    """Or: end it this many steps after the step the run first resumed at (step 0 for a fresh run), as the reference
    fork's ``max_additional_steps``, without editing the config: relaunches from the run's own checkpoints keep the
    first resume's step (kept in the data state with ``out_dir``)."""
    restart_data_on_resume: bool = False
    """The reference implementation's behaviour: at every resume each source starts over from its first block (blocks
    already trained on come again; the blend and stages keep their steps). Default: continue exactly."""
    log_data_metrics: bool = True
    """Under ``litgpt pretrain``, log the mixture with the run's logger at each ``train.log_interval``: per source id
    ``data/samples/<id>`` and ``data/tokens/<id>`` (all ranks, since the run's first step, across resumes and
    stages), ``data/share/<id>`` (realised share of the current stage), ``data/target/<id>`` (its weight),
    ``data/epoch/<id>`` (epochs read), ``data/loss/<id>`` (mean training loss per token since the last log, all
    ranks), and ``data/stage`` with stages."""
    attention: str = "causal"
    """``causal`` (LitGPT's), or ``document``: under ``litgpt pretrain`` every token attends only within its document
    (documents end at ``eos_id``), RoPE positions restart at each document, and each EOS's prediction of the next
    document's first token is left out of the loss. Shards, order, blend and resume state are the same."""
    eos_id: int | None = None
    """The token that ends a document, for ``attention: document`` (default: the tokenizer's EOS)."""
    cross_document_loss: bool = False
    """With ``attention: document``: keep each EOS's prediction of the next document's first token in the loss."""
    val_split_fraction: float | None = None
    """Reference configs only: accepted, no effect (a WARNING names it)."""
    fast_dev_run: bool | int | None = None
    """Reference configs only: accepted, no effect."""
    data_split: str | None = None
    """Reference configs only: accepted, no effect."""
    dataset_name: str | None = None
    """Reference configs only: accepted, no effect."""
    num_samples: int | None = None
    """Reference configs only: accepted, no effect."""
    num_val_samples: int | None = None
    """Reference configs only: accepted, no effect."""

    def __post_init__(self) -> None:
        super().__init__()
        self._state = _RunState()
        try:
            self._state.config = validate_fields(self)
        except ValueError as err:
            if not litgpt_bridge.built_by_jsonargparse():
                raise
            self._state.invalid = err  # raised at connect: one line, not a parser's traceback of union subtypes
            return
        for warning in self._state.config.warnings:
            logger.warning("%s", warning)

    @property
    def config(self) -> DataConfig:
        if self._state.invalid is not None:
            raise self._state.invalid
        return self._state.config

    @property
    def mix_spec(self) -> MixSpec:
        return self.config.mix.top_spec

    @property
    def train_mixture(self) -> Mixture | None:
        return self._state.train

    @property
    def val_mixture(self) -> Mixture | None:
        return self._state.val

    def connect(
        self, tokenizer: Tokenizer | None = None, batch_size: int = 1, max_seq_length: int | None = None
    ) -> None:
        config = self.config
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size (train.micro_batch_size) is {batch_size!r}; use a whole number >= 1.")
        litgpt_bridge.guard_pretrain_run()  # one writer per out_dir, a complete checkpoint to resume
        context = litgpt_bridge.run_context()
        if context.global_batch_size is not None and self.global_batch_size not in (None, context.global_batch_size):
            raise ValueError(
                f"global_batch_size is {self.global_batch_size} in the data args but train.global_batch_size is "
                f"{context.global_batch_size}: stages would start at the wrong steps. Make them equal, or drop the "
                "data one (it is taken from train.global_batch_size)."
            )
        if context.global_batch_size is None and self.global_batch_size is not None:
            context = replace(context, global_batch_size=self.global_batch_size)
        elif context.global_batch_size is not None and self.global_batch_size is None:
            log_rank_zero("global_batch_size %d, from train.global_batch_size", context.global_batch_size)
        self._state.context = context
        documents = document_training(self.attention, self.eos_id, self.cross_document_loss, tokenizer)
        if context.under_litgpt:
            self._state.metrics = DataMetrics() if self.log_data_metrics else None
            litgpt_bridge.attach_to_training_loop(self._state.metrics, documents)
        self._state.micro_batch_size = batch_size
        self._state.tokenizer = tokenizer
        self._state.max_seq_length = max_seq_length if max_seq_length is not None else 2048
        check_run(config.mix, context, self._state.max_seq_length)  # stages and stop, before any I/O
        if context.out_dir is not None and config.mix.stop.active:
            self._exit_if_finished(context)

    def _exit_if_finished(self, context: RunContext) -> None:
        """A relaunch of a run whose ``final/`` already holds its stop step does nothing (``final/`` stays)."""
        final = litgpt_bridge.final_state(context.out_dir)
        step = None if final is None else finished_at(self.config.mix.stop, final, context.out_dir)
        if step is not None:
            log_rank_zero(
                "DATA STOP: %s/final already holds step %d, where this run stops; nothing to do (delete final/ to "
                "train it again)",
                context.out_dir,
                step,
            )
            raise SystemExit(0)

    def data_dirs(self) -> tuple[str, str | None]:
        """The training base directory and the validation path (None if there is none); directories or URLs."""
        val = None if self.val_data_path is None else expand_path(self.val_data_path, "val_data_path")
        return data_dirs(expand_path(self.data_path, "data_path"), val, self.storage_options)

    def chunk_cache(self) -> ChunkCache:
        """The node's cache of remote chunk files (unused when every shard is local)."""
        return ChunkCache(
            self.cache_dir or default_cache_dir(),
            self.storage_options,
            self.config.max_cache_size,
            verify=self.verify_chunks == "first_read",
            token_limit=self._state.token_limit,
        )

    def setup(self, stage: str = "") -> None:
        """Discover shards, resolve the plan, check every chunk file, and log the plan (rank zero)."""
        config, state = self.config, self._state
        train_base, val_base = self.data_dirs()
        if val_base is None:
            raise ValueError(
                f"val_data_path is not set and {str(Path(str(self.data_path)) / 'val')!r} does not exist; set "
                "val_data_path to a litdata directory or a typed base directory of validation shards, or use the "
                "layout <data_path>/train + <data_path>/val."
            )
        block_size = state.max_seq_length + 1
        state.train = self._mixture(train_base, "data_path", block_size)
        plan = resolve(
            config.mix,
            state.train.shards,
            state.train.weights,
            state.context,
            state.micro_batch_size,
            state.max_seq_length,
            train_base,
        )
        state.plan = plan
        state.val = reused_for_validation(val_base, state.train) or self._mixture(val_base, "val_data_path", block_size)
        used = {source for weights in plan.stage_weights for source in weights}
        trained = [shard for shard in state.train.shards if shard.id in used]
        known = {shard.path for shard in trained}
        check_chunk_files(trained + [shard for shard in state.val.sources if shard.path not in known])
        detail = f"shuffle_window {self.shuffle_window} + prefetch_chunks {self.prefetch_chunks}"
        check_cache_budget(trained, config.max_cache_size, self.shuffle_window + self.prefetch_chunks, detail)
        check_one_dtype(trained, state.val.sources, train_base)
        tokenizer_note, state.token_limit = check_run_tokenizer(trained, state.tokenizer, state.context)
        check_held_out(trained, state.val.sources)
        check_cache_dir(self.chunk_cache(), trained, state.val.sources, self.cache_dir)
        for note in (tokenizer_note, unhashed_note(trained, self.verify_chunks)):
            if note:
                log_rank_zero("%s", note)
        litgpt_bridge.publish_stage_steps(plan.stage_steps())
        details = (
            f"mode={config.mix.top_spec.mode} from {config.mix.top_spec.origin}, "
            f"temperature={config.mix.top_spec.temperature:g}, seed={self.seed}, shuffle_window={self.shuffle_window}, "
            f"block={block_size} tokens"
        )
        log_rank_zero("%s", format_mixture_plan(self.plan_rows(), f"train {train_base}", details))
        log_rank_zero("%s", format_stage_plan(self.plan(), f"{len(plan.schedule)} stage(s), train {train_base}"))
        log_rank_zero("Validation data: %s (%d sources)", val_base, len(state.val.sources))

    def _mixture(self, base: str, field_name: str, block_size: int) -> Mixture:
        config = self.config

        def weigh(shards):
            return resolve_weights(config.mix.top_spec, shards, list(config.shard_types))

        mixture = discover_mixture(
            base, field_name, weigh, config.shard_types, self.exclude_shards or (), self.storage_options, block_size
        )
        if field_name == "data_path" and [shard.id for shard in mixture.shards] == [MAIN_TYPE]:
            check_single_directory_blend(self.config.mix.schedule, base)
        return mixture

    def run_plan(self) -> RunPlan:
        """The resolved plan of this run; call after ``setup``."""
        if self._state.plan is None:
            raise RuntimeError("call connect(...) and setup() before asking for data loaders or the plan.")
        return self._state.plan

    def plan(self, max_tokens: int | None = None, resume_step: int | None = None) -> list[StagePlanRow]:
        """The stage plan as rows (stage, steps, tokens, source, weight, tokens and epochs); call after ``setup``.

        By default it spans this run: from the step it resumes to its stop step, else to ``train.max_tokens``;
        ``max_tokens`` and ``resume_step`` plan another span.
        """
        plan = self.run_plan()
        return plan.rows(max_tokens if max_tokens is not None else self._state.context.max_tokens, resume_step)

    def plan_rows(self) -> list[PlanRow]:
        """The training mixture as rows (id, type, tokens, weight, blocks, path); call after ``setup``."""
        self.run_plan()
        mixture = self._state.train
        return mixture_rows(mixture.shards, mixture.weights, self._state.max_seq_length + 1)

    def train_dataloader(self) -> MixtureLoader:
        plan = self.run_plan()
        rank, world_size = distributed_rank_world()
        options = ReadOptions(
            shuffle=self.shuffle,
            num_workers=self.num_workers,
            max_epochs_per_source=self.max_epochs_per_source,
            on_data_change=self.on_data_change,
            restart_on_resume=self.restart_data_on_resume,
            cache=self.chunk_cache(),
            prefetch_chunks=self.prefetch_chunks,
            nodes=run_nodes(self.nodes, self._state.context.fabric_nodes, rank, world_size),
        )
        loader = training_loader(plan, options)
        if self._state.metrics is not None:
            self._state.metrics.watch(loader, (source for stage in loader.cursor.stages for source in stage.weights))
        return loader

    def val_dataloader(self) -> DataLoader:
        self.run_plan()
        mixture = self._state.val
        return validation_loader(
            mixture.shards,
            mixture.weights,
            self._state.max_seq_length + 1,
            self._state.micro_batch_size,
            self.seed,
            self.num_workers,
            self.chunk_cache(),
        )
