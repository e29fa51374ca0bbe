"""``sharded-mix batch``: the rows of any optimizer step of a run, as configured (a LitGPT config) or as it happened
(an ``out_dir``: the checkpoints' data states and saved configs), without training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sharded_mix.config import checkpoint_step
from sharded_mix.tools.checkpoints import CHECKPOINT_FILE, checkpoint_steps

HYPERPARAMETERS = "hyperparameters.yaml"
"""What LitGPT saves beside each checkpoint: the config the run was launched with."""


@dataclass(frozen=True)
class StepSource:
    """Where a step's stream comes from: the config in force, and the data state it continues (None: step 0)."""

    config: Path
    checkpoint: Path | None
    ranks_from: Path | None = None
    """A checkpoint of the run that says how many ranks it read on (a config may say ``devices: auto``)."""


def source_of_step(run: Path, step: int) -> StepSource:
    """The config and data state that answer ``step`` of ``run``: a config YAML (the run as configured, from its
    ``resume`` checkpoint if that exists and precedes the step), or an ``out_dir`` (its newest checkpoint before
    the step and the config saved with it; steps before its first checkpoint follow its ``resume`` checkpoint's
    run)."""
    if step < 1:
        raise ValueError(f"--step is {step}; steps count from 1 (the first optimizer step).")
    if run.is_file():
        return _from_config(run, step)
    steps = _checkpoints(run)
    last = max(steps)
    if step > last:
        raise ValueError(
            f"--step {step} is past {str(run)!r}'s last checkpoint (step {last:,}): give a step in 1..{last:,}, or "
            "the run's config YAML to ask about steps it has not reached."
        )
    before = [saved for saved in steps if saved < step]
    if before:
        directory = steps[max(before)]
        return StepSource(directory / HYPERPARAMETERS, directory / CHECKPOINT_FILE)
    first = steps[min(steps)]
    return replace(_from_config(first / HYPERPARAMETERS, step), ranks_from=first / CHECKPOINT_FILE)


def _checkpoints(out_dir: Path) -> dict[int, Path]:
    steps = checkpoint_steps(out_dir)
    if not steps:
        raise ValueError(
            f"{str(out_dir)!r} holds no step-*/{CHECKPOINT_FILE} checkpoints; give a run's out_dir or config."
        )
    return steps


def _from_config(config: Path, step: int | None) -> StepSource:
    """What answers ``step`` of a config's run (None: the run's first step, after the checkpoint it resumes)."""
    import yaml

    resume = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("resume")
    resumed = checkpoint_step(resume) if isinstance(resume, str) else None
    if resumed is None:
        return StepSource(config, None)
    checkpoint = Path(resume)
    if checkpoint.name != CHECKPOINT_FILE:
        checkpoint = checkpoint / CHECKPOINT_FILE
    if step is not None and resumed >= step:  # the run this one resumed trained that step
        return source_of_step(checkpoint.parent.parent, step)
    if not checkpoint.is_file():
        raise ValueError(
            f"{str(config)!r} resumes from {resume!r}, which is not here; the rows after it depend on its data state."
        )
    return StepSource(config, checkpoint)


def world_of(config: Mapping) -> int | None:
    """``devices × num_nodes`` of a LitGPT config, when both are whole numbers."""
    devices, nodes = config.get("devices", 1), config.get("num_nodes", 1)
    if isinstance(devices, int) and isinstance(nodes, int) and not isinstance(devices, bool):
        return devices * nodes
    return None


@dataclass
class StreamAt:
    """A run's training stream rebuilt offline: the stream, its cursor at the source's checkpoint (or step 0), the
    ranks, rounds per step, the run's last step (from ``train.max_tokens``, if set) and its config."""

    stream: object
    cursor: object
    world_size: int
    rounds_per_step: int
    last_step: int | None
    config: dict
    storage_options: dict | None = None


def stream_at(source: StepSource, world_size: int | None = None) -> StreamAt:
    """The stream ``source`` names, with its cursor where the source's checkpoint left it."""
    import yaml

    from sharded_mix.litgpt_bridge import checkpoint_state
    from sharded_mix.streaming.stream import MixtureLoader, MixtureStream, ReadOptions
    from sharded_mix.tools.offline import offline_data_module, quiet_logs

    config = yaml.safe_load(source.config.read_text(encoding="utf-8")) or {}
    state = None
    if source.checkpoint is not None:
        saved = checkpoint_state(source.checkpoint)
        state = None if saved is None else saved.get("train_dataloader")
        if not isinstance(state, Mapping):
            raise ValueError(f"{str(source.checkpoint)!r} holds no readable sharded_mix data state.")
    world = world_size or (state["world_size"] if state is not None else world_of(config))
    if world is None and source.ranks_from is not None:
        saved = checkpoint_state(source.ranks_from) or {}
        world = (saved.get("train_dataloader") or {}).get("world_size")
    if world is None:
        raise ValueError(
            f"{str(source.config)!r} does not say how many ranks read (devices: {config.get('devices')!r}); give "
            "--world-size."
        )
    data, sizes = offline_data_module(source.config)
    if sizes.global_batch_size is None:
        raise ValueError(f"{str(source.config)!r} sets no train.global_batch_size; a step's rows depend on it.")
    plan = data.run_plan()
    stream = MixtureStream(
        plan.shards,
        plan.stream_stages(world),
        plan.micro_batch_size,
        shuffle=data.shuffle,
        world_size=world,
        cache=data.chunk_cache(),
        nodes=data.nodes or config.get("num_nodes") or 1,
    )
    options = ReadOptions(on_data_change=data.on_data_change, restart_on_resume=data.restart_data_on_resume)
    loader = MixtureLoader(stream, options, plan)
    if state is not None:
        with quiet_logs():
            loader.load_state_dict(state)
    if plan.global_batch_size % world:
        raise ValueError(f"global batch size {plan.global_batch_size} is not a multiple of {world} ranks.")
    step_tokens = plan.global_batch_size * sizes.max_seq_length
    last = None if sizes.max_tokens is None else sizes.max_tokens // step_tokens
    return StreamAt(stream, loader.cursor, world, plan.global_batch_size // world, last, config, data.storage_options)


def step_rows_of(
    run: Path, step: int, ranks: Sequence[int] | None = None, world_size: int | None = None, read_tokens: bool = False
):
    """``(rows, world size, tokenizer_dir)`` of ``step`` of ``run`` (``streaming.provenance.step_rows``), each row
    with the input documents it holds when its shard has prepare's document files."""
    from sharded_mix.streaming.provenance import step_rows
    from sharded_mix.tools.documents import ShardDocuments

    at = stream_at(source_of_step(run, step), world_size)
    bad = [rank for rank in ranks or () if not 0 <= rank < at.world_size]
    if bad:
        raise ValueError(f"--rank {bad[0]} is not a rank of the run; give 0..{at.world_size - 1}.")
    rows = step_rows(
        at.stream, at.cursor, step, at.rounds_per_step, ranks or range(at.world_size), read_tokens=read_tokens
    )
    opened: dict[str, ShardDocuments | None] = {}
    for position, row in enumerate(rows):
        if row.shard not in opened:
            opened[row.shard] = ShardDocuments.open(row.shard, at.storage_options)
        if opened[row.shard] is not None:
            documents = tuple(opened[row.shard].in_range(row.position, row.position + row.length))
            rows[position] = replace(row, documents=documents)
    return rows, at.world_size, at.config.get("tokenizer_dir")


def reads_of(
    run: Path,
    source: str,
    position: int | None = None,
    until_step: int | None = None,
    world_size: int | None = None,
    document: int | None = None,
):
    """``(reads, first step, last step, tokens)``: every read of the block holding token ``position`` of
    ``source`` (or of the blocks holding ``document``, by prepare's document files) in ``run`` from its first step
    (its resume checkpoint's, for a run that resumed one) to ``until_step`` (default: the step
    ``train.max_tokens`` ends it at; for an ``out_dir``, its last checkpoint); ``tokens``: the ``[first, stop)``
    asked about."""
    from sharded_mix.streaming.provenance import block_reads, source_shard
    from sharded_mix.tools.documents import ShardDocuments

    if (position is None) == (document is None):
        raise ValueError("give one of --position (a token of the shard) and --document (a document of the shard).")
    if position is not None and position < 0:
        raise ValueError(f"--position is {position}; give a token offset >= 0.")

    if run.is_file():
        start, last_checkpoint = _from_config(run, None), None
    else:
        steps = _checkpoints(run)
        first = steps[min(steps)]
        start = replace(_from_config(first / HYPERPARAMETERS, None), ranks_from=first / CHECKPOINT_FILE)
        last_checkpoint = max(steps)
    at = stream_at(start, world_size)
    until = until_step or last_checkpoint or at.last_step
    if until is None:
        raise ValueError(f"{str(run)!r} sets no train.max_tokens: give --until-step, the last step to search.")
    if until < 1:
        raise ValueError(f"--until-step is {until}; give a step >= 1.")
    first_step = at.cursor.samples // at.rounds_per_step + 1
    if document is None:
        tokens = (position, position + 1)
    else:
        shard = source_shard(at.stream, source)
        documents = ShardDocuments.open(shard.path, at.storage_options)
        if documents is None:
            raise ValueError(
                f"--document: {source}'s shard {shard.path} has no document files (`sharded-mix prepare` writes them); "
                "give --position, a token offset as `batch` prints it."
            )
        tokens = documents.span(document)
    reads = block_reads(at.stream, at.cursor, source, tokens, at.rounds_per_step, until)
    return reads, first_step, until, tokens
