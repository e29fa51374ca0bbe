"""Data stages: several blends in one run, each from a step or token boundary (pure, no I/O).

A stage names its start (``start_step`` or ``start_tokens``), optionally its end, and any subset
of the mixture fields; what it omits it inherits from the data module's top-level fields. No
``stages`` means one stage, ``default``, from the top-level fields; a first stage that starts
after 0 gets an automatic ``default`` stage before it.

Boundaries become sample counts per rank: step s starts at sample ``s · global_batch_size /
world_size`` of every rank (LitGPT's micro-batches are the loader's batches), and T tokens are
``T / max_seq_length`` samples over all ranks, LitGPT's own token accounting, rounded up to a
whole micro-batch on every rank. So the first sample of step s comes from the new stage on
every rank and for any ``num_workers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from sharded_mix.mixing.orders import SEED_LIMIT
from sharded_mix.mixing.weights import MixSpec, mix_spec_from_fields

DEFAULT_STAGE = "default"

BLEND_FIELDS = ("mix_weights_str", "literal_weights_str", "proportional_sampling", "mix_config_path")
"""A stage that sets any of these defines its own blend with them; otherwise it inherits the top-level blend."""


@dataclass
class DataStage:
    """One stage of the data schedule, as written under ``stages:`` in the data init_args."""

    name: str
    """Unique name, shown in the plan and the transition logs."""
    start_step: int | None = None
    """First optimizer step of the stage (needs ``global_batch_size`` in the data args)."""
    start_tokens: int | None = None
    """Or: the stage starts once the run has trained on this many tokens (LitGPT's count)."""
    end_step: int | None = None
    """Optional; must equal the next stage's start. On the last stage: where the plan ends."""
    end_tokens: int | None = None
    """Optional, as ``end_step`` but in tokens."""
    mix_weights_str: str | None = None
    literal_weights_str: str | None = None
    proportional_sampling: bool | None = None
    mix_config_path: str | None = None
    mix_temperature: float | None = None
    seed: int | None = None
    seq_len: int | None = None
    """Tokens per sample in this stage (blocks of ``seq_len + 1``); at most the model's ``max_seq_length``."""


@dataclass(frozen=True)
class Boundary:
    unit: str  # "step" or "tokens"
    value: int

    def __str__(self) -> str:
        return f"step {self.value:,}" if self.unit == "step" else f"{self.value:,} tokens"


@dataclass(frozen=True)
class Stage:
    """A resolved stage: its blend as the user wrote it, seed and sequence length, and where it starts."""

    name: str
    start: Boundary
    end: Boundary | None
    spec: MixSpec
    seed: int
    seq_len: int | None
    """None: the model's ``max_seq_length``."""
    inherited: tuple[str, ...] = field(default=())
    """Fields taken from the top level (for the plan)."""
    automatic: bool = False
    """Added because the first stage started after 0."""

    def block_size(self, max_seq_length: int) -> int:
        return (self.seq_len or max_seq_length) + 1


@dataclass(frozen=True)
class TopLevel:
    """The data module's top-level mixture fields, which stages inherit."""

    mix_weights_str: str | None = None
    literal_weights_str: str | None = None
    proportional_sampling: bool = False
    mix_config_path: str | None = None
    mix_temperature: float = 1.0
    seed: int = 42


def check_seed(seed: object, field_name: str = "seed") -> int:
    """A seed is a whole number in [0, 2**64): bools, floats, strings and None are refused, not truncated."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{field_name} is {seed!r}; use a whole number from 0 to 2**64 - 1, e.g. {field_name}: 42.")
    return seed


def _boundary(stage: DataStage, where: str, kind: str) -> Boundary | None:
    step, tokens = getattr(stage, f"{kind}_step"), getattr(stage, f"{kind}_tokens")
    if step is not None and tokens is not None:
        raise ValueError(f"{where}: give {kind}_step or {kind}_tokens, not both.")
    value, unit = (step, "step") if step is not None else (tokens, "tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {kind}_{unit} is {value!r}; use a whole number >= 0.")
    return Boundary(unit, value)


def _stage_spec(stage: DataStage, top: TopLevel, read_mix_file, where: str) -> tuple[MixSpec, tuple[str, ...]]:
    own_blend = any(getattr(stage, name) not in (None, False) for name in BLEND_FIELDS)
    source = stage if own_blend else top
    temperature = stage.mix_temperature if stage.mix_temperature is not None else top.mix_temperature
    given = {
        "blend": own_blend,
        "mix_temperature": stage.mix_temperature is not None,
        "seed": stage.seed is not None,
        "seq_len": stage.seq_len is not None,
    }
    inherited = tuple(name for name, is_given in given.items() if not is_given)
    if source.mix_config_path is not None and read_mix_file is None:
        raise TypeError(f"{where}: mix_config_path is set but build_stages was given no read_mix_file")
    mix_config = read_mix_file(source.mix_config_path) if source.mix_config_path is not None else None
    try:
        spec = mix_spec_from_fields(
            literal_weights_str=source.literal_weights_str,
            mix_weights_str=source.mix_weights_str,
            proportional_sampling=bool(source.proportional_sampling),
            mix_config=mix_config,
            mix_temperature=temperature,
            mix_config_origin=f"mix_config_path {str(source.mix_config_path)!r}",
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return spec, inherited


def build_stages(
    top: TopLevel,
    stages: Sequence[DataStage | Mapping] | None = None,
    anneal_start_step: int | None = None,
    anneal_start_tokens: int | None = None,
    anneal_weights: str | None = None,
    read_mix_file: Callable[[str], Mapping] | None = None,
) -> list[Stage]:
    """Validate the schedule and resolve each stage's fields (inherited ones from ``top``); ``read_mix_file``
    loads a ``mix_config_path`` (``config.load_mix_file``; this module does no I/O)."""
    anneal = anneal_start_step is not None or anneal_start_tokens is not None or anneal_weights is not None
    if anneal:
        if stages:
            raise ValueError("stages and anneal_* are both set; write the anneal as a stage, or drop stages.")
        if anneal_weights is None or (anneal_start_step is None) == (anneal_start_tokens is None):
            raise ValueError(
                "the anneal shortcut needs anneal_weights and exactly one of anneal_start_step or anneal_start_tokens, "
                "e.g. anneal_start_step: 9000, anneal_weights: 'main:0.5,math:0.5'."
            )
        weights_field = "literal_weights_str" if top.literal_weights_str is not None else "mix_weights_str"
        stages = [
            DataStage(name=DEFAULT_STAGE, start_step=0),
            DataStage(
                name="anneal",
                start_step=anneal_start_step,
                start_tokens=anneal_start_tokens,
                **{weights_field: anneal_weights},
            ),
        ]
    specs = [
        stage if isinstance(stage, DataStage) else _data_stage(stage, index) for index, stage in enumerate(stages or [])
    ]
    if not specs:
        specs = [DataStage(name=DEFAULT_STAGE, start_step=0)]

    check_seed(top.seed)
    resolved: list[Stage] = []
    for index, stage in enumerate(specs):
        where = f"stages[{index}]"
        if not isinstance(stage.name, str) or not stage.name.strip():
            raise ValueError(f"{where}: name is {stage.name!r}; give every stage a non-blank name.")
        where = f"stages[{index}] {stage.name!r}"
        start = _boundary(stage, where, "start")
        if start is None:
            raise ValueError(
                f"{where}: no start; give start_step or start_tokens (the first stage usually starts at step 0)."
            )
        if stage.seq_len is not None and (
            isinstance(stage.seq_len, bool) or not isinstance(stage.seq_len, int) or stage.seq_len < 1
        ):
            raise ValueError(f"{where}: seq_len is {stage.seq_len!r}; use a whole number >= 1 (tokens per sample).")
        if stage.seed is not None:
            check_seed(stage.seed, f"{where}: seed")
        spec, inherited = _stage_spec(stage, top, read_mix_file, where)
        resolved.append(
            Stage(
                stage.name,
                start,
                _boundary(stage, where, "end"),
                spec,
                top.seed if stage.seed is None else stage.seed,
                stage.seq_len,
                inherited,
            )
        )

    names = [stage.name for stage in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"stages: name(s) {duplicates} used more than once; give every stage its own name.")
    if resolved[0].start.value > 0:
        if DEFAULT_STAGE in names:
            raise ValueError(
                f"stages: the first stage {resolved[0].name!r} starts at {resolved[0].start}, so the steps before it "
                f"get an automatic {DEFAULT_STAGE!r} stage, but a stage is already called {DEFAULT_STAGE!r}; rename it."
            )
        default_spec, _ = _stage_spec(DataStage(name=DEFAULT_STAGE), top, read_mix_file, "top level")
        resolved.insert(
            0,
            Stage(
                DEFAULT_STAGE,
                Boundary(resolved[0].start.unit, 0),
                resolved[0].start,
                default_spec,
                top.seed,
                None,
                ("blend", "mix_temperature", "seed", "seq_len"),
                automatic=True,
            ),
        )
    return resolved


def _data_stage(mapping: Mapping, index: int) -> DataStage:
    known = {f.name for f in fields(DataStage)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"stages[{index}]: unknown field(s) {unknown}; a stage takes {sorted(known)}.")
    return DataStage(**mapping)


def boundary_samples(
    boundary: Boundary,
    where: str,
    global_batch_size: int | None,
    max_seq_length: int,
    micro_batch_size: int = 1,
    world_size: int = 1,
) -> int:
    """A boundary in samples per rank (with the defaults: over all ranks)."""
    if boundary.value == 0:
        return 0
    if boundary.unit == "step":
        if global_batch_size is None:
            raise ValueError(
                f"{where} is at {boundary}, but the data args have no global_batch_size; LitGPT does not tell the data "
                "module its global batch size. Set global_batch_size (= train.global_batch_size) in the data init_args."
            )
        return boundary.value * global_batch_size // world_size
    global_samples = math.ceil(boundary.value / max_seq_length)
    return math.ceil(global_samples / (micro_batch_size * world_size)) * micro_batch_size


def stage_starts(
    stages: Sequence[Stage],
    global_batch_size: int | None,
    max_seq_length: int,
    micro_batch_size: int = 1,
    world_size: int = 1,
) -> list[int]:
    """Where each stage starts, in samples per rank; checks that the stages are sorted with no gaps or overlaps."""
    if global_batch_size is not None and global_batch_size % (micro_batch_size * world_size):
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a multiple of micro_batch_size {micro_batch_size} × "
            f"{world_size} rank(s); set it to train.global_batch_size."
        )

    def samples(boundary: Boundary, where: str) -> int:
        return boundary_samples(boundary, where, global_batch_size, max_seq_length, micro_batch_size, world_size)

    starts = [samples(stage.start, f"stage {stage.name!r} start") for stage in stages]
    if starts[0] != 0:
        raise ValueError(f"stage {stages[0].name!r} must start at 0.")
    for index, stage in enumerate(stages):
        if index + 1 < len(stages) and starts[index + 1] <= starts[index]:
            nxt = stages[index + 1]
            raise ValueError(
                f"stages are not in order: {nxt.name!r} starts at {nxt.start}, not after {stage.name!r} "
                f"({stage.start}); list the stages in the order they run, each starting after the previous one."
            )
        if stage.end is not None:
            end = samples(stage.end, f"stage {stage.name!r} end")
            if index + 1 < len(stages) and end != starts[index + 1]:
                kind = "a gap" if end < starts[index + 1] else "an overlap"
                raise ValueError(
                    f"stage {stage.name!r} ends at {stage.end} but {stages[index + 1].name!r} starts at "
                    f"{stages[index + 1].start}: {kind}. Make the end equal the next start, or drop end_* (a stage "
                    "runs until the next one starts)."
                )
            if end <= starts[index]:
                raise ValueError(f"stage {stage.name!r} ends at {stage.end}, not after its start {stage.start}.")
    return starts


@dataclass(frozen=True)
class StagePlanRow:
    """One source in one stage of the plan (for notebooks; ``format_stage_plan`` prints them)."""

    stage: str
    start_step: float | None
    end_step: float | None
    """None: the stage runs to the end of the run, whose length the plan was not told."""
    start_tokens: int
    end_tokens: int | None
    seq_len: int
    seed: int
    source: str
    weight: float
    tokens: int | None
    """Tokens of this source the stage trains on (LitGPT's count: samples × max_seq_length)."""
    epochs: float | None
    """Passes over the source in this stage."""
    inherited: tuple[str, ...] = ()
    automatic: bool = False


def stage_plan_rows(
    stages: Sequence[Stage],
    stage_weights: Sequence[Mapping[str, float]],
    source_blocks: Mapping[str, Mapping[int, int]] | None,
    global_batch_size: int | None,
    max_seq_length: int,
    run_end_tokens: int | None = None,
    run_start_step: int = 0,
    run_end_step: int | None = None,
) -> list[StagePlanRow]:
    """Per stage and source: steps, tokens, weight, tokens drawn and epochs.

    ``source_blocks[source][block_size]`` is the source's epoch size in blocks; ``run_end_tokens``
    (``train.max_tokens``) bounds the last stage when it has no end of its own. The run trains from
    ``run_start_step`` (the checkpoint it resumes) to ``run_end_step`` (its stop step), if given:
    stages are cut to that window and stages outside it left out.
    """
    starts = stage_starts(stages, global_batch_size, max_seq_length)  # over all ranks
    ends: list[int | None] = [*starts[1:], None]
    last = stages[-1]
    if last.end is not None:
        ends[-1] = boundary_samples(last.end, f"stage {last.name!r} end", global_batch_size, max_seq_length)
    elif run_end_tokens is not None:
        ends[-1] = max(starts[-1], run_end_tokens // max_seq_length)
    if run_start_step or run_end_step is not None:
        if global_batch_size is None:
            raise ValueError("planning a run from a resumed step or to a stop step needs global_batch_size.")
        first = run_start_step * global_batch_size
        final = None if run_end_step is None else run_end_step * global_batch_size
        if final is not None and ends[-1] is None:
            ends[-1] = final
        kept = [
            (stage, weights, max(start, first), end if final is None or end is None else min(end, final))
            for stage, weights, start, end in zip(stages, stage_weights, starts, ends)
            if (end is None or end > first) and (final is None or start < final)
        ]
        stages, stage_weights, starts, ends = (list(column) for column in zip(*kept)) if kept else ([], [], [], [])
    rows = []
    for stage, weights, start, end in zip(stages, stage_weights, starts, ends):
        block_size = stage.block_size(max_seq_length)
        samples = None if end is None else end - start
        for source, weight in sorted(weights.items()):
            draws = None if samples is None else weight * samples
            blocks = (source_blocks or {}).get(source, {}).get(block_size)
            rows.append(
                StagePlanRow(
                    stage=stage.name,
                    start_step=None if global_batch_size is None else start / global_batch_size,
                    end_step=None if global_batch_size is None or end is None else end / global_batch_size,
                    start_tokens=start * max_seq_length,
                    end_tokens=None if end is None else end * max_seq_length,
                    seq_len=block_size - 1,
                    seed=stage.seed,
                    source=source,
                    weight=weight,
                    tokens=None if draws is None else round(draws * max_seq_length),
                    epochs=None if draws is None or not blocks else draws / blocks,
                    inherited=stage.inherited,
                    automatic=stage.automatic,
                )
            )
    return rows
