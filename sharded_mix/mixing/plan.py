"""Plans as data (for notebooks) and as greppable text (for logs): the mixture, and the stages over a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sharded_mix.mixing.sft_epochs import SFTEpochs
from sharded_mix.mixing.stages import StagePlanRow
from sharded_mix.shards import Shard


@dataclass(frozen=True)
class PlanRow:
    id: str
    type: str
    tokens: int
    weight: float
    blocks: int
    path: str


def mixture_rows(shards: Sequence[Shard], weights: Mapping[str, float], block_size: int) -> list[PlanRow]:
    """One row per discovered shard; shards left out of the blend have weight 0."""
    return [
        PlanRow(shard.id, shard.type, shard.tokens, weights.get(shard.id, 0.0), shard.blocks(block_size), shard.path)
        for shard in shards
    ]


def rows_as_dicts(rows: Sequence[PlanRow]) -> list[dict]:
    return [asdict(row) for row in rows]


def format_mixture_plan(rows: Sequence[PlanRow], title: str, details: str = "") -> str:
    """A fixed-format table headed ``DATA MIXTURE PLAN``."""
    header = f"{'source':<14} {'type':<10} {'tokens':>14} {'blocks':>10} {'weight':>8}"
    lines = [f"===== DATA MIXTURE PLAN: {title} =====", *([details] if details else []), header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.id:<14} {row.type:<10} {row.tokens:>14,} {row.blocks:>10,} {row.weight:>8.4f}")
    used = [row for row in rows if row.weight > 0]
    lines.append("-" * len(header))
    lines.append(
        f"{len(used)} of {len(rows)} sources in the blend, {sum(row.tokens for row in used):,} tokens; "
        f"weight 0 = excluded"
    )
    return "\n".join(lines)


def format_stage_plan(rows: Sequence[StagePlanRow], title: str) -> str:
    """A fixed-format block headed ``DATA STAGE TRAINING PLAN``: per stage its span and per-source weight,
    tokens and epochs, then each source's expected epochs over the run."""
    lines = [f"===== DATA STAGE TRAINING PLAN: {title} ====="]
    stages: dict[str, list[StagePlanRow]] = {}
    for row in rows:
        stages.setdefault(row.stage, []).append(row)
    for name, stage_rows in stages.items():
        first = stage_rows[0]
        steps = (
            "steps ? (no global_batch_size)"
            if first.start_step is None
            else (
                f"steps {first.start_step:,.0f} -> "
                f"{'end' if first.end_step is None else format(first.end_step, ',.0f')}"
            )
        )
        tokens = (
            f"tokens {first.start_tokens:,} -> {'end' if first.end_tokens is None else format(first.end_tokens, ',')}"
        )
        lines.append(
            f"stage {name}{' (added automatically: the first stage starts later)' if first.automatic else ''}: "
            f"{steps}, {tokens}, "
            f"seq_len {first.seq_len}, seed {first.seed}"
            + (f"; inherited from the top level: {', '.join(first.inherited)}" if first.inherited else "")
        )
        lines.append(f"  {'source':<14} {'weight':>8} {'tokens':>16} {'epochs':>8}")
        for row in stage_rows:
            tokens_text = "-" if row.tokens is None else f"{row.tokens:,}"
            epochs_text = "-" if row.epochs is None else f"{row.epochs:.3f}"
            lines.append(f"  {row.source:<14} {row.weight:>8.4f} {tokens_text:>16} {epochs_text:>8}")
    totals: dict[str, float] = {}
    open_ended = any(row.epochs is None for row in rows)
    for row in rows:
        if row.epochs is not None:
            totals[row.source] = totals.get(row.source, 0.0) + row.epochs
    summary = ", ".join(f"{source} {epochs:.3f}" for source, epochs in sorted(totals.items()))
    lines.append(f"expected epochs per source over the run: {summary or '-'}")
    if open_ended:
        lines.append(
            "(the last stage has no end: set its end_step, or run `sharded-mix plan` on the LitGPT config to use "
            "train.max_tokens)"
        )
    return "\n".join(lines)


def plot_stage_plan(rows: Sequence[StagePlanRow], ax=None):
    """Weight per source over steps (tokens when steps are unknown) as a step plot; needs matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting the plan needs matplotlib: pip install matplotlib") from err
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    use_steps = all(row.start_step is not None for row in rows)
    stages = list(dict.fromkeys(row.stage for row in rows))
    spans = {}
    for row in rows:
        start = row.start_step if use_steps else row.start_tokens
        end = row.end_step if use_steps else row.end_tokens
        spans[row.stage] = (start, end)
    last_start, last_end = spans[stages[-1]]
    if last_end is None:  # open-ended: draw the last stage as long as the one before it, or 1 unit
        previous = spans[stages[-2]] if len(stages) > 1 else (0, 1)
        spans[stages[-1]] = (last_start, last_start + max(1, previous[1] - previous[0]))
    for source in sorted({row.source for row in rows}):
        xs, ys = [], []
        for stage in stages:
            weight = next((row.weight for row in rows if row.stage == stage and row.source == source), 0.0)
            start, end = spans[stage]
            xs += [start, end]
            ys += [weight, weight]
        ax.plot(xs, ys, label=source)
    for stage in stages[1:]:
        ax.axvline(spans[stage][0], color="grey", linewidth=0.5)
    ax.set_xlabel("step" if use_steps else "tokens")
    ax.set_ylabel("weight")
    ax.legend(loc="best", fontsize="small")
    return ax


def format_sft_plan(
    epochs: SFTEpochs,
    blend: dict[str, float],
    tasks: Mapping[str, Any],
    val_tasks: Mapping[str, Any],
    max_seq_length: int,
) -> str:
    header = (
        f"{'source':<14} {'examples':>9} {'weight':>8} {'per epoch':>10} {'passes':>7} {'cut':>6} {'dropped':>8}  file"
    )
    limit = "no length limit" if max_seq_length < 1 else f"max_seq_length {max_seq_length}"
    lines = [
        f"===== SFT MIXTURE: {epochs.epoch_size:,} samples per epoch, seed {epochs.seed}, {limit} =====",
        header,
        "-" * len(header),
    ]
    for source in epochs.sources:
        task = tasks.get(source)
        pool, per_epoch = epochs.pools[source], epochs.per_epoch[source]
        where = task.path if task else "pretraining blocks"
        cut, dropped = (task.truncated, task.dropped) if task else (0, 0)
        lines.append(
            f"{source:<14} {pool:>9,} {blend[source]:>8.4f} {per_epoch:>10,} {per_epoch / pool:>7.2f} {cut:>6,} "
            f"{dropped:>8,}  {where}"
        )
    for name, task in val_tasks.items():
        lines.append(
            f"val {name}: {len(task.examples):,} examples ({task.truncated} cut, {task.dropped} dropped), {task.path}"
        )
    silent = [
        f"{task.name} ({task.without_targets})"
        for task in [*tasks.values(), *val_tasks.values()]
        if task.without_targets
    ]
    if silent:
        lines.append(
            "examples without a target token after the cut (they add nothing to the loss): " + ", ".join(silent)
        )
    return "\n".join(lines)
