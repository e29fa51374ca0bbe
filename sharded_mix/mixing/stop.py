"""Exact stop steps (pure): where the training stream ends, and what a checkpoint records of it.

``stop_at_step`` is an absolute optimizer step. ``stop_after_steps`` counts from the step the run
first resumed at (its anchor): the anchor is kept in the data state with the run's ``out_dir``, so
a relaunch of the same run from its own checkpoints stops at the same step, while a run branching
from another run's checkpoint anchors anew. Nothing is ever written into the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StopRule:
    at_step: int | None = None
    after_steps: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("stop_at_step", self.at_step), ("stop_after_steps", self.after_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} is {value!r}; use a whole number of optimizer steps >= 1, or leave it unset.")
        if self.at_step is not None and self.after_steps is not None:
            raise ValueError(
                f"stop_at_step ({self.at_step}) and stop_after_steps ({self.after_steps}) are both set; give one: an "
                "absolute step, or steps counted from the checkpoint the run resumes."
            )

    @property
    def active(self) -> bool:
        return self.at_step is not None or self.after_steps is not None

    def stop_step(self, anchor: int) -> int | None:
        """The optimizer step after which the stream ends (``anchor``: the step the run first resumed at)."""
        if self.at_step is not None:
            return self.at_step
        return None if self.after_steps is None else anchor + self.after_steps

    def describe(self, anchor: int) -> str:
        if self.at_step is not None:
            return f"stop_at_step {self.at_step:,}"
        return f"stop_after_steps {self.after_steps:,} from step {anchor:,}: step {anchor + self.after_steps:,}"

    def check_within(self, anchor: int, run_steps: int | None, step_tokens: int | None = None) -> None:
        """A ``ValueError`` if ``train.max_tokens``, which ends the run after ``run_steps`` steps of ``step_tokens``
        tokens, ends it before the stop step."""
        stop = self.stop_step(anchor)
        if stop is None or run_steps is None or stop <= run_steps:
            return
        needed = f" ({stop:,} steps × {step_tokens:,} tokens = {stop * step_tokens:,})" if step_tokens else ""
        raise ValueError(
            f"{self.describe(anchor)}, but train.max_tokens ends the run at step {run_steps:,}; raise max_tokens to "
            f"reach step {stop:,}{needed}, or stop earlier."
        )

    def record(self, anchor: int, run: str | None) -> dict:
        """What the data state keeps of the rule (plain data)."""
        return {"at_step": self.at_step, "after_steps": self.after_steps, "from_step": anchor, "run": run}

    def anchor(self, saved: Mapping | None, run: str | None, resume_step: int) -> int:
        """The step ``stop_after_steps`` counts from when resuming at ``resume_step`` a state that kept ``saved``."""
        if self.after_steps is None:
            return 0
        if saved and saved.get("after_steps") == self.after_steps and saved.get("run") == run:
            return int(saved["from_step"])
        return resume_step


def finished_at(rule: StopRule, final_state: Mapping, run: str | None) -> int | None:
    """The stop step a run's ``final/`` checkpoint shows this rule already reached, or None.

    ``final_state``: that checkpoint's ``step_count`` and ``train_dataloader`` (the data state).
    """
    data = final_state.get("train_dataloader")
    saved = data.get("stop") if isinstance(data, Mapping) else None
    steps = final_state.get("step_count")
    if not rule.active or not isinstance(saved, Mapping) or not isinstance(steps, int):
        return None
    if saved.get("at_step") != rule.at_step or saved.get("after_steps") != rule.after_steps or saved.get("run") != run:
        return None
    stop = rule.stop_step(int(saved.get("from_step", 0)))
    return stop if steps == stop else None
