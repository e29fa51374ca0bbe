"""Config → plan: what a run will read, resolved once from the validated fields, the shards and the run (pure).

``resolve(mix, shards, context)`` turns the data module's mixture fields (``MixConfig``), the discovered
training shards and what the training command knows (``RunContext``, plain values from the LitGPT bridge)
into a frozen ``RunPlan``: each stage's weights, start and block size, and the stop rule with its steps. The
streaming layer builds the loader from a ``RunPlan``; plans and logs read it; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sharded_mix.mixing.cursor import StreamStage
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW
from sharded_mix.mixing.stages import Stage, StagePlanRow, stage_plan_rows, stage_starts
from sharded_mix.mixing.stop import StopRule
from sharded_mix.mixing.weights import MixSpec, resolve_weights
from sharded_mix.shards import Shard


@dataclass(frozen=True)
class RunContext:
    """What the training command knows of the run (from the LitGPT bridge; all unknown from Python)."""

    global_batch_size: int | None = None
    max_tokens: int | None = None
    max_steps: int | None = None
    fabric_nodes: int | None = None
    out_dir: str | None = None
    """The run's ``out_dir``, resolved: ``stop_after_steps`` anchors are kept for it."""
    resume_step: int = 0
    """The step of the checkpoint the run resumes (0: a fresh run)."""
    resume_stop: Mapping | None = None
    """The stop rule's record in that checkpoint's data state, if any."""
    under_litgpt: bool = False
    tokenizer_dir: str | None = None
    """The directory the run's tokenizer was loaded from (pretrain's ``tokenizer_dir``, finetune's checkpoint)."""
    model_vocab_size: int | None = None
    """The model's (padded) vocabulary size: token ids must be below it."""


@dataclass(frozen=True)
class MixConfig:
    """The mixture fields of the data module, validated."""

    schedule: tuple[Stage, ...]
    top_spec: MixSpec
    known_types: tuple[str, ...]
    shuffle_window: int
    stop: StopRule


@dataclass(frozen=True)
class RunPlan:
    """Everything the training stream follows, fixed before the first step."""

    shards: tuple[Shard, ...]
    """The training base's shards (those of weight 0 included: a resume may carry their positions)."""
    schedule: tuple[Stage, ...]
    stage_weights: tuple[dict[str, float], ...]
    micro_batch_size: int
    max_seq_length: int
    global_batch_size: int | None
    stop: StopRule
    run: str | None
    """The run's ``out_dir`` (``stop_after_steps`` anchors are kept per run)."""
    run_steps: int | None
    """The step ``train.max_tokens`` ends the run at (None: unknown)."""
    resume_step: int = 0
    stop_anchor: int = 0
    """The step ``stop_after_steps`` counts from, as far as known before the checkpoint is loaded."""
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW

    def stop_step(self) -> int | None:
        return self.stop.stop_step(self.stop_anchor)

    def stream_stages(self, world_size: int) -> list[StreamStage]:
        """The stages as the stream draws them on ``world_size`` ranks (starts in samples per rank)."""
        starts = stage_starts(
            self.schedule, self.global_batch_size, self.max_seq_length, self.micro_batch_size, world_size
        )
        return [
            stream_stage(
                self.shards,
                weights,
                stage.block_size(self.max_seq_length),
                stage.seed,
                stage.name,
                start,
                str(stage.start),
                self.shuffle_window,
            )
            for stage, weights, start in zip(self.schedule, self.stage_weights, starts)
        ]

    def stage_steps(self) -> dict[str, int]:
        """The first optimizer step of each stage (for LR schedules tied to stages); empty without a batch size."""
        if self.global_batch_size is None:
            return {}
        starts = stage_starts(self.schedule, self.global_batch_size, self.max_seq_length)
        return {stage.name: -(-start // self.global_batch_size) for stage, start in zip(self.schedule, starts)}

    def rows(self, max_tokens: int | None = None, resume_step: int | None = None) -> list[StagePlanRow]:
        """The stage plan over this run: from the resumed step to the stop step, or to ``max_tokens``."""
        resume = self.resume_step if resume_step is None else resume_step
        anchor = self.stop_anchor if resume_step is None else self.stop.anchor(None, self.run, resume)
        sizes = {stage.block_size(self.max_seq_length) for stage in self.schedule}
        source_blocks = {shard.id: {size: shard.blocks(size) for size in sizes} for shard in self.shards}
        return stage_plan_rows(
            self.schedule,
            self.stage_weights,
            source_blocks,
            self.global_batch_size,
            self.max_seq_length,
            max_tokens,
            resume,
            self.stop.stop_step(anchor),
        )


def stream_stage(
    shards: Sequence[Shard],
    weights: Mapping[str, float],
    block_size: int,
    seed: int,
    name: str = "default",
    start: int = 0,
    label: str = "sample 0",
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
) -> StreamStage:
    """A stage drawing the shards of positive weight in blocks of ``block_size`` from sample ``start`` (per rank);
    with the defaults, the one stage of a run without ``stages``."""
    chosen = {shard.id: shard for shard in shards if weights.get(shard.id, 0) > 0}
    return StreamStage(
        name,
        start,
        {source: weights[source] for source in chosen},
        seed,
        block_size,
        {source: shard.blocks(block_size) for source, shard in chosen.items()},
        label,
        shuffle_window,
    )


def check_blocks(shards: Sequence[Shard], block_size: int, where: str, what: str) -> None:
    """Every shard must hold at least one block (blocks never straddle chunks)."""
    for shard in shards:
        if shard.blocks(block_size) < 1:
            raise ValueError(
                f"{where}: shard {shard.id!r} ({shard.path}) has {shard.tokens:,} tokens in {shard.chunks} chunk(s), "
                f"no chunk holding one block of {what} = {block_size} tokens; lower train.max_seq_length (or the "
                "stage's seq_len), give the shard weight 0, or re-prepare it with larger chunks."
            )


def stage_weights(
    mix: MixConfig, shards: Sequence[Shard], base_weights: Mapping[str, float], max_seq_length: int, base: str
) -> list[dict[str, float]]:
    """Each stage's weight per shard id; ``base_weights`` are the top-level blend's, already resolved."""
    resolved = []
    for stage in mix.schedule:
        if stage.spec == mix.top_spec:
            weights = dict(base_weights)
        else:
            try:
                weights = resolve_weights(stage.spec, shards, list(mix.known_types))
            except ValueError as err:
                raise ValueError(f"stage {stage.name!r}, data_path {base!r}: {err}") from None
        chosen = [shard for shard in shards if weights.get(shard.id, 0) > 0]
        where = f"stage {stage.name!r}, data_path {base!r}"
        check_blocks(chosen, stage.block_size(max_seq_length), where, "seq_len + 1")
        resolved.append(weights)
    return resolved


def check_run(mix: MixConfig, context: RunContext, max_seq_length: int) -> None:
    """What can be checked of the stages and the stop before any shard is read: order, gaps, sequence lengths, and a
    stop step that ``train.max_tokens`` reaches."""
    stage_starts(mix.schedule, context.global_batch_size, max_seq_length)
    for stage in mix.schedule:
        if stage.seq_len is not None and stage.seq_len > max_seq_length:
            raise ValueError(
                f"stage {stage.name!r}: seq_len {stage.seq_len} is larger than the model's max_seq_length "
                f"{max_seq_length}; raise train.max_seq_length to at least {stage.seq_len}, or lower the stage's "
                "seq_len."
            )
    rule = mix.stop
    if not rule.active:
        return
    if context.global_batch_size is None:
        name = "stop_at_step" if rule.at_step is not None else "stop_after_steps"
        raise ValueError(
            f"{name} is set but the global batch size is unknown (LitGPT does not pass it to data modules); set "
            "train.global_batch_size, or global_batch_size in the data init_args."
        )
    step_tokens = context.global_batch_size * max_seq_length
    run_steps = None if context.max_tokens is None else context.max_tokens // step_tokens
    rule.check_within(rule.anchor(context.resume_stop, context.out_dir, context.resume_step), run_steps, step_tokens)


def resolve(
    mix: MixConfig,
    shards: Sequence[Shard],
    base_weights: Mapping[str, float],
    context: RunContext,
    micro_batch_size: int,
    max_seq_length: int,
    base: str,
) -> RunPlan:
    """The run's plan; a ``ValueError`` for any stage or stop that cannot run (before any step)."""
    global_batch_size = context.global_batch_size
    run_steps = None
    if mix.stop.active and global_batch_size is not None and context.max_tokens is not None:
        run_steps = context.max_tokens // (global_batch_size * max_seq_length)
    anchor = mix.stop.anchor(context.resume_stop, context.out_dir, context.resume_step)
    return RunPlan(
        shards=tuple(shards),
        schedule=mix.schedule,
        stage_weights=tuple(stage_weights(mix, shards, base_weights, max_seq_length, base)),
        micro_batch_size=micro_batch_size,
        max_seq_length=max_seq_length,
        global_batch_size=global_batch_size,
        stop=mix.stop,
        run=context.out_dir,
        run_steps=run_steps,
        resume_step=context.resume_step,
        stop_anchor=anchor,
        shuffle_window=mix.shuffle_window,
    )
