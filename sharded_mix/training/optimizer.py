"""``ScheduledAdamW``: AdamW that sets the LR of every step from its own schedule, and keeps its step in its state.

LitGPT's ``pretrain`` computes an LR before every micro-batch (cosine to ``max_tokens``), writes it
into the param groups and logs it as ``learning_rate``. This optimizer overrides the LR in ``step()``
with its schedule's, so the schedule applies whatever LitGPT computed; and, so that the logged
``learning_rate`` is the LR applied, it takes over LitGPT's per-iteration ``get_lr`` for the run it is
built in (through the LitGPT bridge, which checks LitGPT's loop first and refuses one that differs).
"""

from __future__ import annotations

import logging

import torch

from sharded_mix.litgpt_bridge import attach_scheduled_lr, stage_start_step
from sharded_mix.training.schedules import LRSchedule, lr_schedule

logger = logging.getLogger(__name__)

STEP_KEY = "scheduled_step"
"""Param-group key: optimizer steps taken (saved with the optimizer state, so it survives a resume)."""
DECAY_KEY = "decay_from"
"""Param-group key of a ``decay`` schedule: [first step, LR there, decay_steps, decay_shape, end ratio or min_lr]."""


class ScheduledAdamW(torch.optim.AdamW):
    # The docstring's first line is the title of LitGPT's ``--optimizer.help``, so it stays one line: concatenated.
    (
        "AdamW whose ``lr`` is the peak of a schedule: ``cosine``, ``wsd``, ``decay`` (from a checkpoint's LR) or "
        """``constant``.

    See ``sharded_mix.training.schedules`` for the schedule args. The step count is the optimizer's own
    (``scheduled_step`` in its param groups; from AdamW's per-parameter ``step`` when resuming a
    checkpoint written by another optimizer), so a resume continues the schedule exactly.
    """
    )

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        fused: bool | None = None,
        foreach: bool | None = None,
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
    ) -> None:
        self.lr_schedule: LRSchedule = lr_schedule(
            lr,
            schedule,
            total_steps,
            warmup_steps,
            warmup_fraction,
            min_lr,
            decay_steps,
            decay_shape,
            final_lr_ratio,
            decay_start_step,
            decay_start_stage,
        )
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            fused=fused,
            foreach=foreach,
        )
        self._stage_start: int | None = None
        attach_scheduled_lr(self)
        logger.info("LR schedule: %s", self.lr_schedule.describe())

    @property
    def steps_taken(self) -> int:
        group = self.param_groups[0]
        if STEP_KEY not in group:
            steps = [int(state["step"]) for state in self.state.values() if "step" in state]
            for each in self.param_groups:
                each[STEP_KEY] = max(steps, default=0)
        return group[STEP_KEY]

    def next_lr(self) -> float:
        """The LR the next ``step()`` applies."""
        step, schedule = self.steps_taken, self.lr_schedule
        if schedule.kind == "decay":
            return schedule.lr_at(step, decay_from=self._decay_from(step))
        if schedule.decay_start_stage is not None and self._stage_start is None:
            self._stage_start = stage_start_step(schedule.decay_start_stage)
            logger.info(
                "LR decay starts at step %d, where data stage %r starts", self._stage_start, schedule.decay_start_stage
            )
        return schedule.lr_at(step, stage_start=self._stage_start)

    def _decay_from(self, step: int) -> tuple[int, float]:
        """The step and LR this decay started from: kept in the state, else here and now (the resumed LR)."""
        schedule = self.lr_schedule
        identity = [
            schedule.decay_steps,
            schedule.decay_shape,
            schedule.final_lr_ratio if schedule.final_lr_ratio is not None else schedule.min_lr,
        ]
        saved = self.param_groups[0].get(DECAY_KEY)
        if saved is None or list(saved[2:]) != identity:
            saved = [step, float(self.param_groups[0]["lr"]), *identity]
            for group in self.param_groups:
                group[DECAY_KEY] = saved
            logger.info(
                "LR decay starts at step %d from the %s LR %g, to %g over %d steps (%s)",
                step,
                "resumed" if step else "configured",
                saved[1],
                schedule.end_lr(saved[1]),
                schedule.decay_steps,
                schedule.decay_shape,
            )
        return saved[0], saved[1]

    @torch.no_grad()
    def step(self, closure=None):
        lr, steps = self.next_lr(), self.steps_taken
        for group in self.param_groups:
            group["lr"] = lr
        loss = super().step(closure)
        for group in self.param_groups:
            group[STEP_KEY] = steps + 1
        return loss
