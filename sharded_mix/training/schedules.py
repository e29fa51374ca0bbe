"""Learning-rate schedules as pure functions of the optimizer step (no torch, no I/O).

Step ``s`` counts optimizer steps from 0: the LR of step ``s`` is the one its update uses.
Warmup is linear from ``lr / warmup_steps`` (step 0) to ``lr`` (step ``warmup_steps - 1``).
A decay runs from the LR it starts at to its end LR (``final_lr_ratio`` × that LR, else
``min_lr``) over ``decay_steps`` steps, then holds the end LR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "wsd", "decay", "constant")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exponential")
SCHEDULE_ARGS = (
    "schedule",
    "total_steps",
    "warmup_steps",
    "warmup_fraction",
    "min_lr",
    "decay_steps",
    "decay_shape",
    "final_lr_ratio",
    "decay_start_step",
    "decay_start_stage",
)
"""The schedule's init args of ``ScheduledAdamW`` (besides ``lr``, the peak LR)."""


@dataclass(frozen=True)
class LRSchedule:
    """A validated schedule. ``wsd`` with ``decay_start_stage`` and ``decay`` are completed at run time
    (``resolved_decay_start``, ``lr_at(..., decay_from=...)``)."""

    kind: str
    peak_lr: float
    total_steps: int | None = None
    warmup_steps: int = 0
    min_lr: float = 0.0
    decay_steps: int | None = None
    decay_shape: str = "linear"
    final_lr_ratio: float | None = None
    decay_start_step: int | None = None
    decay_start_stage: str | None = None

    def end_lr(self, start_lr: float) -> float:
        return start_lr * self.final_lr_ratio if self.final_lr_ratio is not None else self.min_lr

    def decay_window(self, stage_start: int | None = None) -> tuple[int, int]:
        """``wsd``: the first step of the decay and its length (``stage_start``: where ``decay_start_stage`` starts)."""
        start = stage_start if self.decay_start_stage is not None else self.decay_start_step
        if start is None:
            start = self.total_steps - self.decay_steps
        length = self.decay_steps if self.decay_steps is not None else self.total_steps - start
        if length < 1:
            raise ValueError(
                f"the wsd decay starts at step {start:,} (data stage {self.decay_start_stage!r}) but total_steps is "
                f"{self.total_steps:,}: no step left to decay; raise total_steps or give decay_steps instead."
            )
        return start, length

    def lr_at(self, step: int, stage_start: int | None = None, decay_from: tuple[int, float] | None = None) -> float:
        """The LR of optimizer step ``step`` (from 0). ``decay_from``: (first step, LR) of a ``decay`` schedule."""
        if self.kind == "decay":
            if decay_from is None:
                raise ValueError("a decay schedule needs the step and LR it starts from (decay_from)")
            start, start_lr = decay_from
            return decayed(start_lr, self.end_lr(start_lr), self.decay_shape, (step - start) / self.decay_steps)
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak_lr
        if self.kind == "cosine":
            span = self.total_steps - self.warmup_steps
            return decayed(self.peak_lr, self.min_lr, "cosine", (step - self.warmup_steps) / span)
        start, length = self.decay_window(stage_start)
        if step < start:
            return self.peak_lr
        return decayed(self.peak_lr, self.end_lr(self.peak_lr), self.decay_shape, (step - start) / length)

    def describe(self) -> str:
        warmup = f"warmup {self.warmup_steps:,} steps, " if self.warmup_steps else ""
        end = f"{self.final_lr_ratio:g} × its start LR" if self.final_lr_ratio is not None else f"{self.min_lr:g}"
        if self.kind == "constant":
            return f"constant: {warmup}lr {self.peak_lr:g}"
        if self.kind == "cosine":
            return f"cosine: {warmup}lr {self.peak_lr:g} to {self.min_lr:g} at step {self.total_steps:,}"
        if self.kind == "decay":
            return f"decay: {self.decay_shape} over {self.decay_steps:,} steps from the resumed step and LR to {end}"
        if self.decay_start_stage is not None:
            where = f"data stage {self.decay_start_stage!r}"
        else:
            where = f"step {self.decay_window()[0]:,}"
        return f"wsd: {warmup}stable at {self.peak_lr:g}, {self.decay_shape} decay from {where} to {end}"


def decayed(start_lr: float, end_lr: float, shape: str, progress: float) -> float:
    """The LR ``progress`` (0 at the decay's first step, 1 at its end; clipped) of the way from ``start_lr`` to
    ``end_lr``."""
    t = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return start_lr + (end_lr - start_lr) * t
    if shape == "cosine":
        return end_lr + (start_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "1-sqrt":
        return end_lr + (start_lr - end_lr) * (1.0 - math.sqrt(t))
    return start_lr * (end_lr / start_lr) ** t


def _whole(value, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"optimizer {name} is {value!r}; use a whole number of optimizer steps >= {minimum}.")
    return value


def _number(value, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (low < value if low_open else low <= value)
        or value > high
    ):
        bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"optimizer {name} is {value!r}; use a number in {bound}.")
    return float(value)


def _unused(kind: str, **given) -> None:
    extra = sorted(name for name, value in given.items() if value is not None)
    if extra:
        raise ValueError(
            f"optimizer schedule {kind!r} does not use {', '.join(extra)}; drop it, or pick the schedule that does."
        )


def lr_schedule(
    lr: float = 1e-3,
    schedule: str = "cosine",
    total_steps: int | None = None,
    warmup_steps: int | None = None,
    warmup_fraction: float | None = None,
    min_lr: float = 0.0,
    decay_steps: int | None = None,
    decay_shape: str = "linear",
    final_lr_ratio: float | None = None,
    decay_start_step: int | None = None,
    decay_start_stage: str | None = None,
) -> LRSchedule:
    """The schedule these init args describe; a ``ValueError`` naming the arg and the fix otherwise."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optimizer schedule is {schedule!r}; use one of {', '.join(SCHEDULES)}.")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"optimizer decay_shape is {decay_shape!r}; use one of {', '.join(DECAY_SHAPES)}.")
    lr = _number(lr, "lr", 0.0, math.inf, low_open=True)
    min_lr = _number(min_lr, "min_lr", 0.0, lr)
    final_lr_ratio = _number(final_lr_ratio, "final_lr_ratio", 0.0, 1.0, low_open=True)
    total_steps = _whole(total_steps, "total_steps", 1)
    warmup_steps = _whole(warmup_steps, "warmup_steps", 0)
    decay_steps = _whole(decay_steps, "decay_steps", 1)
    decay_start_step = _whole(decay_start_step, "decay_start_step", 0)
    warmup_fraction = _number(warmup_fraction, "warmup_fraction", 0.0, 1.0)
    if decay_start_stage is not None and (not isinstance(decay_start_stage, str) or not decay_start_stage.strip()):
        raise ValueError(
            f"optimizer decay_start_stage is {decay_start_stage!r}; give the name of a data stage, e.g. anneal."
        )
    if warmup_steps is not None and warmup_fraction is not None:
        raise ValueError("optimizer warmup_steps and warmup_fraction are both set; give one.")
    if warmup_fraction is not None:
        if total_steps is None:
            raise ValueError(
                f"optimizer warmup_fraction {warmup_fraction:g} is a fraction of total_steps, which is not set; set "
                "total_steps or use warmup_steps."
            )
        warmup_steps = int(warmup_fraction * total_steps)
    warmup_steps = warmup_steps or 0
    if decay_shape == "exponential" and final_lr_ratio is None and min_lr == 0:
        raise ValueError(
            "optimizer decay_shape exponential cannot reach 0; set final_lr_ratio (e.g. 0.1) or min_lr > 0."
        )

    if schedule in ("constant", "cosine"):
        _unused(
            schedule,
            decay_steps=decay_steps,
            final_lr_ratio=final_lr_ratio,
            decay_start_step=decay_start_step,
            decay_start_stage=decay_start_stage,
        )
        if schedule == "cosine" and total_steps is None:
            raise ValueError(
                "optimizer schedule cosine needs total_steps, the step the cosine reaches min_lr (e.g. 61035)."
            )
    elif schedule == "decay":
        _unused(
            schedule,
            total_steps=total_steps,
            warmup_steps=warmup_steps or None,
            decay_start_step=decay_start_step,
            decay_start_stage=decay_start_stage,
        )
        if decay_steps is None:
            raise ValueError(
                "optimizer schedule decay needs decay_steps, how many steps the decay lasts from the resumed step "
                "(e.g. 4500)."
            )
    else:
        starts = [
            name
            for name, value in (("decay_start_step", decay_start_step), ("decay_start_stage", decay_start_stage))
            if value is not None
        ]
        if len(starts) > 1:
            raise ValueError("optimizer decay_start_step and decay_start_stage are both set; give one.")
        known = sum(value is not None for value in (total_steps, decay_steps, decay_start_step))
        if decay_start_stage is None and known < 2:
            raise ValueError(
                "optimizer schedule wsd needs two of total_steps, decay_steps and decay_start_step (e.g. "
                "total_steps: 61035, decay_steps: 6000), or decay_start_stage with decay_steps or total_steps."
            )
        if decay_start_stage is not None and decay_steps is None and total_steps is None:
            raise ValueError(
                "optimizer schedule wsd with decay_start_stage needs decay_steps or total_steps (where the decay ends)."
            )
        if known == 3 and decay_start_step + decay_steps != total_steps:
            raise ValueError(
                f"optimizer decay_start_step {decay_start_step:,} + decay_steps {decay_steps:,} is not total_steps "
                f"{total_steps:,}; give two of the three."
            )
        if decay_start_stage is None and decay_start_step is None and decay_steps > total_steps:
            raise ValueError(f"optimizer decay_steps {decay_steps:,} is more than total_steps {total_steps:,}.")
        if decay_start_step is not None and decay_start_step < warmup_steps:
            raise ValueError(
                f"optimizer decay_start_step {decay_start_step:,} is inside the warmup ({warmup_steps:,} steps); "
                "start the decay after it."
            )
    if schedule in ("cosine", "wsd") and total_steps is not None and warmup_steps >= total_steps:
        raise ValueError(f"optimizer warmup ({warmup_steps:,} steps) is not shorter than total_steps {total_steps:,}.")
    return LRSchedule(
        schedule,
        lr,
        total_steps,
        warmup_steps,
        min_lr,
        decay_steps,
        decay_shape,
        final_lr_ratio,
        decay_start_step,
        decay_start_stage,
    )
