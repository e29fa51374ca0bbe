"""The mixture measured while it trains: per-source ``data/...`` metrics for LitGPT's own logger.

Counts come from the training loader's cursor, with no communication: every rank draws the same source each round,
so a source's samples over all ranks are its rounds times the world size, carried in the checkpoint's data state
from the run's first step. Losses per source come from each micro-batch's per-row losses (the bridge hands them
over), summed on the device and all-reduced only when LitGPT logs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

logger = logging.getLogger(__name__)


def summary_text(cursor, untrained: Iterable[str] = ()) -> str:
    """Per source what it gave the run so far (all ranks): samples, trained tokens, share of the run, epochs read;
    ``untrained``: the sources of rows the loader handed out that were not trained on (one each a rank)."""
    consumed, left_out = cursor.consumed(), Counter(untrained)
    trained = cursor.stage.block_size - 1
    for source, rows in left_out.items():
        samples, tokens = consumed[source]
        consumed[source] = (samples - rows * cursor.world_size, tokens - rows * cursor.world_size * trained)
    epochs = {
        source: (cursor.draws(index) - left_out[source] * cursor.world_size) / cursor.stage.blocks[source]
        for index, source in enumerate(cursor.ids)
    }
    total = sum(samples for samples, _ in consumed.values())
    header = f"{'source':<14} {'samples':>14} {'tokens':>18} {'share':>8} {'epochs':>8}"
    lines = [f"===== DATA SUMMARY: {total:,} samples over all ranks, stage {cursor.stage.name} =====", header]
    lines.append("-" * len(header))
    for source, (samples, tokens) in sorted(consumed.items()):
        share = samples / total if total else 0.0
        read = f"{epochs[source]:.3f}" if source in epochs else "-"
        lines.append(f"{source:<14} {samples:>14,} {tokens:>18,} {share:>8.4f} {read:>8}")
    return "\n".join(lines)


def stream_measures(cursor) -> dict[str, float]:
    """The count metrics of a ``mixing.cursor.Cursor``: per source its samples and trained tokens so far (all ranks,
    whole run), and for the current stage's sources the realised share of the stage so far, the target weight and
    the epochs read (fractional); ``data/stage`` when the run has several stages."""
    measures: dict[str, float] = {}
    for source, (samples, tokens) in sorted(cursor.consumed().items()):
        measures[f"data/samples/{source}"] = samples
        measures[f"data/tokens/{source}"] = tokens
    stage = cursor.stage
    taken, total_weight = sum(cursor.taken), sum(stage.weights.values())
    for index, source in enumerate(cursor.ids):
        measures[f"data/share/{source}"] = cursor.taken[index] / taken if taken else 0.0
        measures[f"data/target/{source}"] = stage.weights[source] / total_weight
        measures[f"data/epoch/{source}"] = cursor.draws(index) / stage.blocks[source]
    if len(cursor.stages) > 1:
        measures["data/stage"] = cursor.index
    return measures


class DataMetrics:
    """What ``litgpt pretrain`` logs of the mixture at each ``train.log_interval``: ``stream_measures`` of the
    loader's cursor, and ``data/loss/<id>``, the mean training loss per token of each source's rows since the last
    log, over all ranks."""

    def __init__(self) -> None:
        self.loader = None
        """The training loader (``streaming.stream.MixtureLoader``): its ``cursor`` and ``last_rows``."""
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        self._window: torch.Tensor | None = None  # [2, sources]: loss sums and target tokens since the last log

    def watch(self, loader, source_ids: Iterable[str]) -> None:
        """Measure ``loader``, which reads (over all its stages) the sources ``source_ids``."""
        self.loader = loader
        self.ids = sorted(set(source_ids))
        self._index = {source: index for index, source in enumerate(self.ids)}
        self._window = None

    def add_row_losses(self, loss_sums: torch.Tensor, tokens: torch.Tensor) -> None:
        """Per-row loss sums and target token counts of the micro-batch the loader handed out last."""
        if self.loader is None or self.loader.last_rows is None:
            return
        ids, sources = self.loader.last_rows
        if len(sources) != loss_sums.shape[0]:
            return  # not the loader's batch (a caller cut or joined rows): nothing to attribute
        rows = torch.tensor([self._index[ids[index]] for index in sources], device=loss_sums.device)
        if self._window is None or self._window.device != loss_sums.device:
            self._window = torch.zeros(2, len(self.ids), dtype=torch.float64, device=loss_sums.device)
        self._window[0].index_add_(0, rows, loss_sums.detach().to(torch.float64))
        self._window[1].index_add_(0, rows, tokens.detach().to(torch.float64))

    def log_summary(self, trained_micro_batches: int | None) -> None:
        """The per-source summary of the run, logged on rank zero at the end of LitGPT's loop, which fetches one
        micro-batch past its last step (``trained_micro_batches``: its ``iter_num``)."""
        if self.loader is None or rank_zero_only.rank != 0:
            return
        cursor, untrained = self.loader.cursor, ()
        fetched = cursor.samples // self.loader.dataset.batch_size
        if trained_micro_batches == fetched - 1 and self.loader.last_rows is not None:
            ids, sources = self.loader.last_rows
            untrained = [ids[index] for index in sources]
        logger.info("%s", summary_text(cursor, untrained))

    def values(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The metrics now; ``all_reduce`` sums a tensor over the ranks (every rank calls this at the same step)."""
        if self.loader is None:
            return {}
        measures = stream_measures(self.loader.cursor)
        if self._window is not None:
            sums, tokens = all_reduce(self._window.clone()).tolist()
            self._window.zero_()
            for source, total, count in zip(self.ids, sums, tokens):
                if count:
                    measures[f"data/loss/{source}"] = total / count
        return measures
