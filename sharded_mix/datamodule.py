"""``ShardedMixedDataset``: the LitGPT data module users put in their YAML."""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from sharded_mix.config import load_mix_file, parse_size
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW
from sharded_mix.mixing.plan import PlanRow, format_mixture_plan, format_stage_plan, mixture_rows
from sharded_mix.mixing.stages import (
    DataStage,
    Stage,
    StagePlanRow,
    TopLevel,
    build_stages,
    stage_plan_rows,
    stage_starts,
)
from sharded_mix.mixing.state import DATA_CHANGE_POLICIES
from sharded_mix.mixing.weights import MixSpec, check_type_names, mix_spec_from_fields, resolve_weights
from sharded_mix.shards import MAIN_TYPE, Shard, resolve_shard_types
from sharded_mix.streaming.cache import ChunkCache, default_cache_dir
from sharded_mix.streaming.chunk_checks import capped, chunk_file_problems
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.streaming.distributed import check_node_layout, distributed_rank_world, from_rank_zero, launcher_nodes
from sharded_mix.streaming.storage import RemoteDir, is_url, join_url
from sharded_mix.streaming.stream import staged_loader, stream_stage, validation_loader
from sharded_mix.training.stage_steps import publish_stage_steps
from sharded_mix.training.stop import StopRule, finished_at

logger = logging.getLogger(__name__)

REFERENCE_ONLY_ARGS = (
    "val_split_fraction",
    "fast_dev_run",
    "data_split",
    "dataset_name",
    "num_samples",
    "num_val_samples",
)
"""Init args of the reference implementation's data module that only its download helper read."""


def expand_path(value: str | Path, field_name: str) -> str:
    """``~`` and ``$VARS`` expanded, so configs can say ``$DATA_ROOT/mix`` instead of a personal path (URLs: ``$VARS`` only)."""
    expanded = os.path.expandvars(str(value) if is_url(str(value)) else os.path.expanduser(str(value)))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ValueError(
            f"{field_name} {str(value)!r}: environment variable {unset[0]} is not set; export it or write the path out."
        )
    return expanded


def calling_local(name: str, kind: type):
    """The local ``name`` of type ``kind`` of the nearest calling frame that has one, or None.

    LitGPT tells a data module its micro-batch size only; its ``TrainArgs`` (``global_batch_size``) and its
    ``Fabric`` (``num_nodes``) are locals ``train`` and ``fabric`` of ``litgpt pretrain``'s ``get_dataloaders``,
    which calls ``connect``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        value = frame.f_locals.get(name)
        if isinstance(value, kind):
            return value
        frame = frame.f_back
    return None


def calling_train_args():
    """The ``TrainArgs`` of the LitGPT command calling ``connect``, or None."""
    from litgpt.args import TrainArgs

    return calling_local("train", TrainArgs)


def calling_fabric_nodes() -> int | None:
    """``num_nodes`` of the ``Fabric`` of the LitGPT command calling ``connect``, or None."""
    from lightning.fabric import Fabric

    fabric = calling_local("fabric", Fabric)
    return getattr(getattr(fabric, "strategy", None), "num_nodes", None) if fabric is not None else None


def calling_out_dir() -> Path | None:
    """``out_dir`` of the ``litgpt pretrain`` run calling ``connect``, or None."""
    return calling_local("out_dir", Path)


def final_checkpoint_state(out_dir: Path) -> dict | None:
    """``step_count`` and the data state of ``out_dir/final/lit_model.pth`` (memory-mapped: no tensor is read), or None."""
    import torch

    path = out_dir / "final" / "lit_model.pth"
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # a half-written final/ is not a finished run
        logger.warning("cannot read %s (%s); treating the run as not finished", path, err)
        return None
    return {key: checkpoint.get(key) for key in ("step_count", "train_dataloader")}


def log_rank_zero(message: str, *args) -> None:
    if rank_zero_only.rank == 0:
        logger.info(message, *args)


@dataclass(frozen=True)
class Mixture:
    """Shards found under one base directory and the weight of each."""

    base: str
    shards: tuple[Shard, ...]
    weights: dict[str, float]

    @property
    def sources(self) -> list[Shard]:
        return [shard for shard in self.shards if self.weights.get(shard.id, 0) > 0]


def _check_blocks(shards, block_size: int, where: str, what: str) -> None:
    """Every shard must hold at least one block (blocks never straddle chunks)."""
    for shard in shards:
        if shard.blocks(block_size) < 1:
            raise ValueError(
                f"{where}: shard {shard.id!r} ({shard.path}) has {shard.tokens:,} tokens in {shard.chunks} chunk(s), "
                f"no chunk holding one block of {what} = {block_size} tokens; lower train.max_seq_length (or the stage's "
                "seq_len), give the shard weight 0, or re-prepare it with larger chunks."
            )


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
    """For URL data paths: the object store's options (obstore's names), e.g. ``{endpoint: https://..., region: us-east-1}``;
    ``allow_http: true`` for plain-http endpoints. Credentials may also come from the environment (``AWS_*``, ...)."""
    cache_dir: str | None = None
    """For URL data paths: where whole chunk files are downloaded, shared by the ranks and workers of a node (default:
    ``$SHARDED_MIX_CACHE_DIR``, else a directory under the system temp dir). Put it on local disk."""
    max_cache_size: int | str | None = None
    """For URL data paths: the most bytes of chunk files ``cache_dir`` may hold, e.g. ``200GB`` (None: no bound). The
    least recently used chunks outside what the loaders read now or next are deleted; it must hold at least
    sources × (shuffle_window + prefetch_chunks) chunks. Validation copies are not counted."""
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
    """When resuming, what to do with a source whose shard changed since the checkpoint (its content fingerprint differs):
    ``error`` (stop and say which), ``restart`` (it starts over; blocks it gave may come again) or ``continue`` (it
    keeps its position over the new content). The last two log a WARNING with what they cost."""
    stages: list[DataStage] | None = None
    """Data stages, each ``{name, start_step | start_tokens, [end_step | end_tokens], <mixture fields>, [seed], [seq_len]}``;
    omitted fields inherit the top-level ones. None: one stage, ``default``, from the top-level fields."""
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
    _fabric_nodes: int | None = field(init=False, repr=False, default=None)
    _run: str | None = field(init=False, repr=False, default=None)
    _run_steps: int | None = field(init=False, repr=False, default=None)  # where train.max_tokens ends the run
    stop_rule: StopRule = field(init=False, repr=False, default_factory=StopRule)

    batch_size: int = field(init=False, repr=False, default=1)
    seq_length: int = field(init=False, repr=False, default=2049)
    mix_spec: MixSpec | None = field(init=False, repr=False, default=None)
    schedule: list[Stage] = field(init=False, repr=False, default_factory=list)
    stage_weights: list[dict[str, float]] = field(init=False, repr=False, default_factory=list)
    train_mixture: Mixture | None = field(init=False, repr=False, default=None)
    val_mixture: Mixture | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__init__()
        if self.data_path is None or not str(self.data_path).strip():
            raise ValueError(
                "data_path is empty; set it to the directory holding your shards, e.g. data_path: data/mix."
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers is {self.num_workers}; use 0 (load in the main process) or more.")
        if isinstance(self.shuffle_window, bool) or not isinstance(self.shuffle_window, int) or self.shuffle_window < 1:
            raise ValueError(
                f"shuffle_window is {self.shuffle_window!r}; use a whole number of chunks, 1 or more "
                f"(1: one chunk at a time; default {DEFAULT_SHUFFLE_WINDOW})."
            )
        if (
            isinstance(self.prefetch_chunks, bool)
            or not isinstance(self.prefetch_chunks, int)
            or self.prefetch_chunks < 0
        ):
            raise ValueError(
                f"prefetch_chunks is {self.prefetch_chunks!r}; use a whole number of chunks >= 0 (0: no read-ahead)."
            )
        if self.max_cache_size is not None:
            self.max_cache_size = parse_size(self.max_cache_size, "max_cache_size")
        if self.nodes is not None and (
            isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1
        ):
            raise ValueError(
                f"nodes is {self.nodes!r}; use the number of nodes the run spans (1 or more), or leave it unset."
            )
        if self.on_data_change not in DATA_CHANGE_POLICIES:
            raise ValueError(
                f"on_data_change is {self.on_data_change!r}; use one of {', '.join(DATA_CHANGE_POLICIES)} (default error)."
            )
        if self.exclude_shards is not None and (
            isinstance(self.exclude_shards, str)
            or not all(isinstance(name, str) and name for name in self.exclude_shards)
        ):
            raise ValueError(
                f"exclude_shards is {self.exclude_shards!r}; give a list of shard ids, e.g. exclude_shards: [c2, main/3]."
            )
        self.shard_types = resolve_shard_types(self.shard_types)
        mix_config = None
        if self.mix_config_path is not None:
            mix_config = load_mix_file(expand_path(self.mix_config_path, "mix_config_path"))
        self.mix_spec = mix_spec_from_fields(
            literal_weights_str=self.literal_weights_str,
            mix_weights_str=self.mix_weights_str,
            proportional_sampling=self.proportional_sampling,
            mix_config=mix_config,
            mix_temperature=self.mix_temperature,
            mix_config_origin=f"mix_config_path {str(self.mix_config_path)!r}",
        )
        check_type_names(self.mix_spec, list(self.shard_types))
        top = TopLevel(
            self.mix_weights_str,
            self.literal_weights_str,
            self.proportional_sampling,
            None if self.mix_config_path is None else str(self.mix_config_path),
            self.mix_temperature,
            self.seed,
        )
        self.schedule = build_stages(
            top,
            self.stages,
            self.anneal_start_step,
            self.anneal_start_tokens,
            self.anneal_weights,
            read_mix_file=lambda path: load_mix_file(expand_path(path, "mix_config_path")),
        )
        for stage in self.schedule:
            try:
                check_type_names(stage.spec, list(self.shard_types))
            except ValueError as err:
                raise ValueError(f"stage {stage.name!r}: {err}") from None
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ValueError(f"global_batch_size is {self.global_batch_size}; set it to train.global_batch_size.")
        self.stop_rule = StopRule(self.stop_at_step, self.stop_after_steps)
        ignored = [name for name in REFERENCE_ONLY_ARGS if getattr(self, name) is not None]
        if ignored:
            logger.warning(
                "data init_args %s are accepted for reference configs but have no effect here (the reference's download "
                "helper read them); drop them, or run `sharded-mix convert-config` on the config.",
                ", ".join(ignored),
            )

    def connect(
        self, tokenizer: Tokenizer | None = None, batch_size: int = 1, max_seq_length: int | None = None
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size (train.micro_batch_size) is {batch_size!r}; use a whole number >= 1.")
        train = calling_train_args()
        self._adopt_global_batch_size(train)
        self._fabric_nodes = calling_fabric_nodes()
        out_dir = calling_out_dir()
        self._run = None if out_dir is None else str(out_dir.resolve())
        self.batch_size = batch_size
        self.seq_length = (max_seq_length if max_seq_length is not None else 2048) + 1
        starts = stage_starts(
            self.schedule, self.global_batch_size, self.seq_length - 1
        )  # order, gaps and overlaps, before any I/O
        for stage in self.schedule:
            if stage.seq_len is not None and stage.seq_len > self.seq_length - 1:
                raise ValueError(
                    f"stage {stage.name!r}: seq_len {stage.seq_len} is larger than the model's max_seq_length "
                    f"{self.seq_length - 1}; raise train.max_seq_length to at least {stage.seq_len}, or lower the stage's seq_len."
                )
        self._check_stop(train)
        if self.global_batch_size is not None:
            publish_stage_steps(
                {stage.name: -(-start // self.global_batch_size) for stage, start in zip(self.schedule, starts)}
            )
        if out_dir is not None and self.stop_rule.active:
            self._exit_if_finished(out_dir)

    def _check_stop(self, train) -> None:
        """A stop step needs the global batch size, and ``train.max_tokens`` must not end the run before it."""
        rule = self.stop_rule
        if not rule.active:
            return
        name = "stop_at_step" if rule.at_step is not None else "stop_after_steps"
        if self.global_batch_size is None:
            raise ValueError(
                f"{name} is set but the global batch size is unknown (LitGPT does not pass it to data modules); set "
                "train.global_batch_size, or global_batch_size in the data init_args."
            )
        max_tokens = getattr(train, "max_tokens", None)
        step_tokens = self.global_batch_size * (self.seq_length - 1)
        if max_tokens is not None:
            self._run_steps = max_tokens // step_tokens
        rule.check_within(0, self._run_steps, step_tokens)  # stop_after_steps: a resume can only move the stop later

    def _exit_if_finished(self, out_dir: Path) -> None:
        """A relaunch of a run whose ``final/`` already holds its stop step does nothing (``final/`` stays as it is)."""
        final = final_checkpoint_state(out_dir)
        step = None if final is None else finished_at(self.stop_rule, final, self._run)
        if step is not None:
            log_rank_zero(
                "DATA STOP: %s/final already holds step %d, where this run stops; nothing to do (delete final/ to train it again)",
                out_dir,
                step,
            )
            raise SystemExit(0)

    def _adopt_global_batch_size(self, train) -> None:
        """Take ``train.global_batch_size`` from the LitGPT command connecting us, or refuse one that disagrees."""
        if train is None or train.global_batch_size is None:
            return
        if self.global_batch_size is None:
            self.global_batch_size = train.global_batch_size
            log_rank_zero("global_batch_size %d, from train.global_batch_size", self.global_batch_size)
        elif self.global_batch_size != train.global_batch_size:
            raise ValueError(
                f"global_batch_size is {self.global_batch_size} in the data args but train.global_batch_size is "
                f"{train.global_batch_size}: stages would start at the wrong steps. Make them equal, or drop the data one "
                "(it is taken from train.global_batch_size)."
            )

    def data_dirs(self) -> tuple[str, str | None]:
        """The training base directory and the validation path (None if there is none); directories or URLs."""
        data_path = expand_path(self.data_path, "data_path")
        if self.val_data_path is not None:
            return data_path, expand_path(self.val_data_path, "val_data_path")
        if is_url(data_path):
            data_path = data_path.rstrip("/")
            subdirs = set(from_rank_zero(lambda: RemoteDir(data_path, self.storage_options).list_dir()[0]))
            if "train" in subdirs:
                return join_url(data_path, "train"), join_url(data_path, "val") if "val" in subdirs else None
            return data_path, None
        reference_train, reference_val = os.path.join(data_path, "train"), os.path.join(data_path, "val")
        if os.path.isdir(reference_train):
            return reference_train, reference_val if os.path.isdir(reference_val) else None
        return data_path, None

    def chunk_cache(self) -> ChunkCache:
        """The node's cache of remote chunk files (unused when every shard is local)."""
        return ChunkCache(self.cache_dir or default_cache_dir(), self.storage_options, self.max_cache_size)

    def _check_cache_budget(self, shards: list[Shard]) -> None:
        """``max_cache_size`` must hold every remote source's current window and read-ahead."""
        remote = [shard for shard in shards if is_url(shard.path) and shard.chunks]
        if self.max_cache_size is None or not remote:
            return
        per_source = self.shuffle_window + self.prefetch_chunks
        needed = sum(
            per_source * max(shard.chunk_bytes(chunk) or 0 for chunk in range(shard.chunks)) for shard in remote
        )
        if self.max_cache_size < needed:
            raise ValueError(
                f"max_cache_size {self.max_cache_size:,} bytes is below the working set of this run's {len(remote)} remote "
                f"source(s): {needed:,} bytes ({per_source} of each source's largest chunks: shuffle_window "
                f"{self.shuffle_window} + prefetch_chunks {self.prefetch_chunks}); raise it to at least {needed:,}, or "
                "lower prefetch_chunks."
            )

    def _mixture(self, base: str, field_name: str) -> Mixture:
        shards = from_rank_zero(
            lambda: discover_shards(
                base,
                self.shard_types,
                field=field_name,
                exclude=self.exclude_shards or (),
                storage_options=self.storage_options,
            )
        )
        if len(shards) == 1 and shards[0].id == MAIN_TYPE:  # only a single litdata directory gets the bare id
            if field_name == "data_path":
                self._check_single_directory_blend(base)
            weights = {shards[0].id: 1.0}  # a plain litdata directory, not a typed base
        else:
            try:
                weights = resolve_weights(self.mix_spec, shards, list(self.shard_types))
            except ValueError as err:
                raise ValueError(f"{field_name} {base!r}: {err}") from None
        mixture = Mixture(base=base, shards=tuple(shards), weights=weights)
        _check_blocks(mixture.sources, self.seq_length, f"{field_name} {base!r}", "max_seq_length + 1")
        return mixture

    def _check_single_directory_blend(self, base: str) -> None:
        """A blend naming anything but ``main`` cannot apply to one litdata directory: refuse it rather than ignore it."""
        for stage in self.schedule:
            named = sorted(name for name, weight in stage.spec.weights.items() if weight > 0 and name != MAIN_TYPE)
            if named:
                where = "" if len(self.schedule) == 1 else f"stage {stage.name!r}: "
                raise ValueError(
                    f"{where}data_path {base!r} is one litdata directory (it holds index.json), but {stage.spec.origin} names "
                    f"{', '.join(named)}: the blend would be ignored. Point data_path at the base directory holding the typed "
                    "shards (1/, c1/, m1/, ...), or drop the blend to train this directory alone."
                )

    def setup(self, stage: str = "") -> None:
        """Discover shards, resolve weights, check them, and log the plan (rank zero)."""
        train_base, val_base = self.data_dirs()
        if val_base is None:
            raise ValueError(
                f"val_data_path is not set and {os.path.join(str(self.data_path), 'val')!r} does not exist; set "
                "val_data_path to a litdata directory or a typed base directory of validation shards, or use the "
                "layout <data_path>/train + <data_path>/val."
            )
        self.train_mixture = self._mixture(train_base, "data_path")
        self.val_mixture = self._mixture(val_base, "val_data_path")
        self.stage_weights = [self._stage_weights(stage) for stage in self.schedule]
        used = {source for weights in self.stage_weights for source in weights}
        trained = [shard for shard in self.train_mixture.shards if shard.id in used]
        self._check_chunk_files(trained + self.val_mixture.sources)
        self._check_cache_budget(trained)
        dtypes = {
            (f"{label}{shard.id}", shard.dtype)
            for label, shards in (("", trained), ("val:", self.val_mixture.sources))
            for shard in shards
        }
        if len({dtype for _, dtype in dtypes}) > 1:
            listing = ", ".join(f"{shard_id}={dtype}" for shard_id, dtype in sorted(dtypes))
            raise ValueError(
                f"data_path {train_base!r}: the shards in the blend have different token dtypes ({listing}); "
                "re-prepare them with one tokenizer (same vocabulary size) so they share a dtype."
            )
        details = (
            f"mode={self.mix_spec.mode} from {self.mix_spec.origin}, temperature={self.mix_spec.temperature:g}, "
            f"seed={self.seed}, shuffle_window={self.shuffle_window}, block={self.seq_length} tokens"
        )
        log_rank_zero("%s", format_mixture_plan(self.plan_rows(), f"train {train_base}", details))
        log_rank_zero("%s", format_stage_plan(self.plan(), f"{len(self.schedule)} stage(s), train {train_base}"))
        log_rank_zero("Validation data: %s (%d sources)", val_base, len(self.val_mixture.sources))

    @staticmethod
    def _check_chunk_files(shards: list[Shard]) -> None:
        """Every chunk file of the run's shards is there, readable and of its indexed size (one stat each, no reads)."""
        problems = [problem for shard in shards for problem in chunk_file_problems(shard, limit=5)]
        if problems:
            shown = capped(problems, 20, "problems")
            raise ValueError(
                "the shards of this run have chunk file problems, found before training:\n  "
                + "\n  ".join(shown)
                + "\n`sharded-mix inspect --verify DATA_PATH` lists every shard's problems."
            )

    def _stage_weights(self, stage: Stage) -> dict[str, float]:
        mixture = self.train_mixture
        if stage.spec == self.mix_spec:
            weights = mixture.weights
        else:
            try:
                weights = resolve_weights(stage.spec, mixture.shards, list(self.shard_types))
            except ValueError as err:
                raise ValueError(f"stage {stage.name!r}, data_path {mixture.base!r}: {err}") from None
        block_size = stage.block_size(self.seq_length - 1)
        chosen = [shard for shard in mixture.shards if weights.get(shard.id, 0) > 0]
        _check_blocks(chosen, block_size, f"stage {stage.name!r}, data_path {mixture.base!r}", "seq_len + 1")
        return weights

    def plan(self, max_tokens: int | None = None, resume_step: int = 0) -> list[StagePlanRow]:
        """The stage plan as rows (stage, steps, tokens, source, weight, tokens and epochs); call after ``setup``.

        ``max_tokens`` (``train.max_tokens``) bounds the last stage when it has no end of its own; a stop step
        ends the run; ``resume_step`` (the step of the checkpoint the run resumes) is where it starts.
        """
        mixture = self._require_setup()
        sizes = {stage.block_size(self.seq_length - 1) for stage in self.schedule}
        source_blocks = {shard.id: {size: shard.blocks(size) for size in sizes} for shard in mixture.shards}
        return stage_plan_rows(
            self.schedule,
            self.stage_weights,
            source_blocks,
            self.global_batch_size,
            self.seq_length - 1,
            max_tokens,
            resume_step,
            self.stop_rule.stop_step(resume_step),
        )

    def plan_rows(self) -> list[PlanRow]:
        """The training mixture as rows (id, type, tokens, weight, blocks, path); call after ``setup``."""
        mixture = self._require_setup()
        return mixture_rows(mixture.shards, mixture.weights, self.seq_length)

    def _require_setup(self) -> Mixture:
        if self.train_mixture is None:
            raise RuntimeError("call connect(...) and setup() before asking for data loaders or the plan.")
        return self.train_mixture

    def train_dataloader(self) -> DataLoader:
        mixture = self._require_setup()
        rank, world_size = distributed_rank_world()
        nodes = self.node_count(rank, world_size)
        max_seq_length = self.seq_length - 1
        starts = stage_starts(self.schedule, self.global_batch_size, max_seq_length, self.batch_size, world_size)
        stages = [
            stream_stage(
                mixture.shards,
                weights,
                stage.block_size(max_seq_length),
                stage.seed,
                stage.name,
                start,
                str(stage.start),
                self.shuffle_window,
            )
            for stage, weights, start in zip(self.schedule, self.stage_weights, starts)
        ]
        return staged_loader(
            mixture.shards,
            stages,
            self.batch_size,
            self.shuffle,
            self.num_workers,
            self.max_epochs_per_source,
            self.on_data_change,
            self.chunk_cache(),
            self.prefetch_chunks,
            nodes,
            self.stop_rule,
            self.global_batch_size,
            self._run,
            self.restart_data_on_resume,
            self._run_steps,
        )

    def node_count(self, rank: int, world_size: int) -> int:
        """The nodes of the run: the ``nodes`` field, else the launcher's; checked against the ranks."""
        nodes, origin = (
            (self.nodes, "the nodes field")
            if self.nodes is not None
            else launcher_nodes(world_size, self._fabric_nodes)
        )
        check_node_layout(rank, world_size, nodes)
        if nodes > 1:
            log_rank_zero("%d nodes (from %s): each reads its own slice of every epoch of every source", nodes, origin)
        return nodes

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        mixture = self.val_mixture
        return validation_loader(
            mixture.shards,
            mixture.weights,
            self.seq_length,
            self.batch_size,
            self.seed,
            self.num_workers,
            self.chunk_cache(),
        )
