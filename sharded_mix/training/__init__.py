"""What the data module does not decide but the paper's workflow needs: LR schedules and exact stop steps."""

from sharded_mix.training.optimizer import ScheduledAdamW

__all__ = ["ScheduledAdamW"]
