"""LitGPT's iteration count on a resume with another micro-batch size or rank count (pure).

``litgpt pretrain`` counts ``iter_num`` in micro-batches of one rank and restores it as the checkpoint saved it. Its
loop ends when ``iter_num`` reaches ``max_tokens // world_size // (micro_batch_size × max_seq_length)``, steps the
optimizer every ``global_batch_size // world_size // micro_batch_size`` iterations and sets the LR from ``iter_num``.
A count saved with another micro-batch size or rank count is in other units: the run would end at another step
than ``train.max_tokens`` says (25 % past it for micro_batch_size 2 -> 1 halfway), its first step could take part
of a batch and its LR curve would be shifted. The data position (samples per rank) carries over exactly, so the count
in this run's units is that position in micro-batches: ``resumed_iterations`` works it out, and the WARNING.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSizes:
    """What ``litgpt pretrain``'s loop counts with (its ``train`` args, world size and the model's sequence length)."""

    micro_batch_size: int
    world_size: int
    global_batch_size: int
    max_seq_length: int
    max_tokens: int

    @classmethod
    def of(cls, train: object, world_size: int, max_seq_length: int) -> LoopSizes:
        """From LitGPT's ``TrainArgs`` (``micro_batch_size``, ``global_batch_size``, ``max_tokens``)."""
        return cls(train.micro_batch_size, world_size, train.global_batch_size, max_seq_length, train.max_tokens)

    @property
    def per_step(self) -> int:
        """Micro-batches per optimizer step on each rank (LitGPT's ``gradient_accumulation_iters``)."""
        return max(1, self.global_batch_size // self.world_size // self.micro_batch_size)

    @property
    def max_iters(self) -> int:
        return self.max_tokens // self.world_size // (self.micro_batch_size * self.max_seq_length)

    def last_step(self, iter_num: int, step_count: int) -> int:
        """The ``step_count`` LitGPT's loop ends at, from the ``iter_num`` and ``step_count`` it resumes with."""
        if iter_num >= self.max_iters:
            return step_count
        return step_count + self.max_iters // self.per_step - iter_num // self.per_step


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def resumed_iterations(checkpoint: Mapping, state: Mapping, sizes: LoopSizes, path: object) -> tuple[int, str | None]:
    """The ``iter_num`` to resume with, and the WARNING to log (None: the saved count is already in this run's
    units, or nothing says otherwise).

    ``checkpoint``: what the checkpoint at ``path`` holds (its data state ``train_dataloader``: ``samples`` per rank,
    ``batch_size`` and ``world_size``); ``state``: LitGPT's ``iter_num`` and ``step_count``, restored from it.
    """
    iter_num, step_count = state.get("iter_num"), state.get("step_count")
    saved = checkpoint.get("train_dataloader")
    if not (isinstance(saved, Mapping) and isinstance(iter_num, int) and isinstance(step_count, int)):
        return iter_num, None
    samples, old_batch, old_world = saved.get("samples"), saved.get("batch_size"), saved.get("world_size")
    if not (isinstance(samples, int) and _whole(old_world)) or (old_batch or sizes.micro_batch_size, old_world) == (
        sizes.micro_batch_size,
        sizes.world_size,
    ):
        return iter_num, None
    total, per_iteration = samples * old_world, sizes.world_size * sizes.micro_batch_size
    written = f"micro_batch_size {old_batch if _whole(old_batch) else '?'} on {old_world} rank(s)"
    here = f"micro_batch_size {sizes.micro_batch_size} on {sizes.world_size} rank(s)"
    intended = sizes.last_step(total // per_iteration, step_count)
    as_saved = sizes.last_step(iter_num, step_count)
    if total % per_iteration:
        stop = f", or set stop_at_step: {intended} in the data init_args" if as_saved > intended else ""
        return iter_num, (
            f"{path} was written with {written}, this run has {here}: LitGPT counts iter_num in micro-batches "
            f"and restores it as saved ({iter_num}), so it ends this run at step {as_saved}, not at step {intended} "
            f"where train.max_tokens ends it, with its LR schedule shifted; the {total:,} samples trained are no "
            f"whole number of micro-batches here, so iter_num cannot be carried over. Resume with {written}{stop}."
        )
    exact = total // per_iteration
    if exact == iter_num:
        return iter_num, None
    return exact, (
        f"{path} was written with {written}, this run has {here}: LitGPT counts iter_num in micro-batches and "
        f"restores it as saved ({iter_num}), so it would end this run at step {as_saved}, not at step {intended} where "
        f"train.max_tokens ends it, with its LR schedule shifted. iter_num is set to {exact} (the data position, "
        f"{total // sizes.world_size:,} samples per rank, in micro-batches of {sizes.micro_batch_size}): the run ends "
        f"at step {intended} and follows the LR schedule of these settings; nothing to do. To keep LitGPT's count "
        f"as saved, resume with {written}."
    )
