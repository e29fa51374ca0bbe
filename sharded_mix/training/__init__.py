"""What the data module does not decide but the paper's workflow needs: LR schedules, exact stop steps, and
attention that stays inside each document."""

from sharded_mix.training.attention import document_attention
from sharded_mix.training.optimizer import ScheduledAdamW

__all__ = ["ScheduledAdamW", "document_attention"]
