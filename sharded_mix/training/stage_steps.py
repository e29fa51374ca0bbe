"""Where each data stage starts, in optimizer steps, for schedules tied to data stages.

The data module publishes it when LitGPT connects it (after the optimizer exists, before the first
step); an optimizer with ``decay_start_stage`` reads it at its first step. One run per process.
"""

from __future__ import annotations

from collections.abc import Mapping

_published: dict[str, int] = {}


def publish_stage_steps(starts: Mapping[str, int]) -> None:
    _published.clear()
    _published.update(starts)


def stage_start_step(name: str) -> int:
    """The first optimizer step of data stage ``name``; a ``ValueError`` if no data module published it."""
    if name not in _published:
        known = (
            f"the data stages are {', '.join(sorted(_published))}"
            if _published
            else ("no sharded_mix.ShardedMixedDataset with stages starting at steps was set up in this run")
        )
        raise ValueError(
            f"optimizer decay_start_stage is {name!r}, but {known}; name one of its stages (e.g. anneal), or use decay_start_step."
        )
    return _published[name]
