"""``ScheduledAdamW``: AdamW that sets the LR of every step from its own schedule, and keeps its step in its state.

LitGPT's ``pretrain`` computes an LR before every micro-batch (cosine to ``max_tokens``), writes it
into the param groups and logs it as ``learning_rate``. This optimizer overrides the LR in ``step()``
with its schedule's, so the schedule applies whatever LitGPT computed; and, so that the logged
``learning_rate`` is the LR applied, it takes over ``litgpt.pretrain.get_lr`` for the run it is
built in (checked against LitGPT's code first; a LitGPT whose loop differs is refused).
"""

from __future__ import annotations

import inspect
import logging
import sys
import weakref

import torch

from sharded_mix.training.schedules import LRSchedule, lr_schedule
from sharded_mix.training.stage_steps import stage_start_step

logger = logging.getLogger(__name__)

STEP_KEY = "scheduled_step"
"""Param-group key: optimizer steps taken (saved with the optimizer state, so it survives a resume)."""
DECAY_KEY = "decay_from"
"""Param-group key of a ``decay`` schedule: [first step, LR there, decay_steps, decay_shape, end ratio or min_lr]."""


class ScheduledAdamW(torch.optim.AdamW):
    """AdamW whose ``lr`` is the peak of a schedule: ``cosine``, ``wsd``, ``decay`` (from a checkpoint's LR) or ``constant``.

    See ``sharded_mix.training.schedules`` for the schedule args. The step count is the optimizer's own
    (``scheduled_step`` in its param groups; from AdamW's per-parameter ``step`` when resuming a
    checkpoint written by another optimizer), so a resume continues the schedule exactly.
    """

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
        if _built_by_litgpt_pretrain():
            show_lr_in_litgpt_logs(self)
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
                "LR decay starts at step %d from the resumed LR %g, to %g over %d steps (%s)",
                step,
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


def _built_by_litgpt_pretrain() -> bool:
    pretrain = sys.modules.get("litgpt.pretrain")
    main = getattr(pretrain, "main", None)
    frame = sys._getframe(1)
    while frame is not None:
        if main is not None and frame.f_code is main.__code__:
            return True
        frame = frame.f_back
    return False


def show_lr_in_litgpt_logs(optimizer: ScheduledAdamW) -> None:
    """Make ``litgpt.pretrain``'s per-iteration LR (applied and logged as ``learning_rate``) the optimizer's next LR."""
    import litgpt
    import litgpt.pretrain as pretrain

    expected = ["learning_rate", "it", "warmup_iters", "max_iters", "min_lr"]
    source = inspect.getsource(pretrain.fit)
    if (
        list(inspect.signature(pretrain.get_lr).parameters) != expected
        or 'lr = get_lr(optimizer.defaults["lr"]' not in source
        or '"learning_rate": lr' not in source
        or 'param_group["lr"] = lr' not in source
    ):
        raise RuntimeError(
            f"sharded_mix.training.ScheduledAdamW: litgpt {litgpt.__version__}'s pretrain loop is not the one it was written for "
            '(litgpt 0.5.x: `lr = get_lr(optimizer.defaults["lr"], ...)` per iteration, logged as learning_rate), so the LR in '
            "your logs would not be the LR applied. Install litgpt>=0.5,<0.6, or use torch.optim.AdamW and litgpt's cosine."
        )
    reference = weakref.ref(optimizer)

    def scheduled_lr(learning_rate: float, it: int, warmup_iters: int, max_iters: int, min_lr: float) -> float:
        live = reference()
        return live.next_lr() if live is not None else learning_rate

    pretrain.get_lr = scheduled_lr
