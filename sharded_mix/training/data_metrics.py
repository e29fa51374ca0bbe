"""The mixture measured while it trains: per-source ``data/...`` metrics for LitGPT's own logger.

Counts need no communication. Under ``litgpt pretrain`` they come from the training loader's cursor: every rank
draws the same source each round, so a source's samples over all ranks are its rounds times the world size, carried
in the checkpoint's data state from the run's first step (``CursorCounts``). Under ``litgpt finetune_*`` they come
from the SFT plan: the rows each rank handed out and the epoch layout say which samples all ranks read
(``PlanCounts``). Losses per source come from each micro-batch's per-row losses (the bridge hands them over),
summed on the device and all-reduced only when LitGPT logs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

logger = logging.getLogger(__name__)


def format_summary(where: str, consumed: Mapping[str, tuple[int, int]], epochs: Mapping[str, float]) -> str:
    """The summary table: per source its samples, trained tokens, share of all samples and epochs read."""
    total = sum(samples for samples, _ in consumed.values())
    header = f"{'source':<14} {'samples':>14} {'tokens':>18} {'share':>8} {'epochs':>8}"
    lines = [f"===== DATA SUMMARY: {total:,} samples over all ranks, {where} =====", header, "-" * len(header)]
    for source, (samples, tokens) in sorted(consumed.items()):
        share = samples / total if total else 0.0
        read = f"{epochs[source]:.3f}" if source in epochs else "-"
        lines.append(f"{source:<14} {samples:>14,} {tokens:>18,} {share:>8.4f} {read:>8}")
    return "\n".join(lines)


def source_measures(
    consumed: Mapping[str, tuple[int, int]], current: Mapping[str, tuple[float, float, float]]
) -> dict[str, float]:
    """``data/samples`` and ``data/tokens`` of each source of ``consumed`` (samples, tokens); ``data/share``,
    ``data/target`` and ``data/epoch`` of each source of ``current`` (share, target weight, epochs read)."""
    measures: dict[str, float] = {}
    for source, (samples, tokens) in sorted(consumed.items()):
        measures[f"data/samples/{source}"] = samples
        measures[f"data/tokens/{source}"] = tokens
    for source, (share, target, epoch) in current.items():
        measures[f"data/share/{source}"] = share
        measures[f"data/target/{source}"] = target
        measures[f"data/epoch/{source}"] = epoch
    return measures


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
    return format_summary(f"stage {cursor.stage.name}", consumed, epochs)


def stream_measures(cursor) -> dict[str, float]:
    """The count metrics of a ``mixing.cursor.Cursor``: per source its samples and trained tokens so far (all ranks,
    whole run), and for the current stage's sources the realised share of the stage so far, the target weight and
    the epochs read (fractional); ``data/stage`` when the run has several stages."""
    stage = cursor.stage
    taken, total_weight = sum(cursor.taken), sum(stage.weights.values())
    current = {
        source: (
            cursor.taken[index] / taken if taken else 0.0,
            stage.weights[source] / total_weight,
            cursor.draws(index) / stage.blocks[source],
        )
        for index, source in enumerate(cursor.ids)
    }
    measures = source_measures(cursor.consumed(), current)
    if len(cursor.stages) > 1:
        measures["data/stage"] = cursor.index
    return measures


def plan_measures(
    consumed: Mapping[str, tuple[int, int]],
    weights: Mapping[str, float],
    pools: Mapping[str, int],
    names: Iterable[str],
) -> dict[str, float]:
    """The count metrics of an SFT mixture, for each of ``names``: samples and target tokens (``consumed``), share
    of all samples so far, blend weight (``weights``, normalised) and passes over its examples (``pools``); a task
    the blend leaves out has zeros."""
    total = sum(samples for samples, _ in consumed.values())
    everyone = {name: consumed.get(name, (0, 0)) for name in names}
    current = {
        name: (
            samples / total if total else 0.0,
            weights.get(name, 0.0),
            samples / pools[name] if name in pools else 0.0,
        )
        for name, (samples, _) in everyone.items()
    }
    return source_measures(everyone, current)


class CursorCounts:
    """The counts of ``litgpt pretrain``'s loader (``streaming.stream.MixtureLoader``), from its cursor."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def measures(self) -> dict[str, float]:
        return stream_measures(self.loader.cursor)

    def fetched(self) -> int:
        """Micro-batches the loader handed out over the run."""
        return self.loader.cursor.samples // self.loader.dataset.batch_size

    def summary(self, leave_out_last: bool) -> str:
        untrained = ()
        if leave_out_last and self.loader.last_rows is not None:
            ids, sources = self.loader.last_rows
            untrained = [ids[index] for index in sources]
        return summary_text(self.loader.cursor, untrained)


class PlanCounts:
    """The counts of an SFT loader's ``progress`` (``streaming.sft_examples.LoaderProgress``: ``consumed()`` per
    source, ``batches``, and ``epochs``, the plan), for the task ``names``."""

    def __init__(self, progress, names: Iterable[str]) -> None:
        self.progress, self.names = progress, sorted(set(names))

    def measures(self, leave_out_last: bool = False) -> dict[str, float]:
        consumed = self.progress.consumed(leave_out_last)
        if consumed is None:
            return {}
        epochs = self.progress.epochs
        return plan_measures(consumed, epochs.weights, epochs.pools, self.names)

    def fetched(self) -> int:
        return self.progress.batches

    def summary(self, leave_out_last: bool) -> str:
        measures = self.measures(leave_out_last)
        if not measures:
            return ""
        consumed = {name: (measures[f"data/samples/{name}"], measures[f"data/tokens/{name}"]) for name in self.names}
        epochs = {name: measures[f"data/epoch/{name}"] for name in self.names}
        return format_summary("SFT mixture", consumed, epochs)


class DataMetrics:
    """What LitGPT logs of the mixture at each ``train.log_interval``: the count metrics of the training loader
    (``CursorCounts`` under ``litgpt pretrain``, ``PlanCounts`` under ``litgpt finetune_*``), and
    ``data/loss/<id>``, the mean training loss per token of each source's rows since the last log, over all
    ranks."""

    def __init__(self) -> None:
        self.loader = None
        """What hands out the training rows: its ``last_rows`` (source ids, each row's index into them)."""
        self.counts = None
        """Its count metrics: ``measures()``, ``fetched()`` and ``summary(leave_out_last)``."""
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        self._window: torch.Tensor | None = None  # [2, sources]: loss sums and target tokens since the last log
        self._attributed = None  # the last rows whose losses were added

    def watch(self, loader, source_ids: Iterable[str], counts=None) -> None:
        """Measure ``loader``, which reads (over all its stages) the sources ``source_ids``; ``counts``: its count
        metrics (default: ``CursorCounts(loader)``, a pretraining loader's cursor)."""
        self.loader = loader
        self.counts = counts if counts is not None else CursorCounts(loader)
        self.ids = sorted(set(source_ids))
        self._index = {source: index for index, source in enumerate(self.ids)}
        self._window = None
        self._attributed = None

    def add_token_losses(self, losses: torch.Tensor, targets: torch.Tensor) -> None:
        """The (B, T) per-token losses and target mask of the micro-batch the loader handed out last: by token when
        its rows hold several sources (packed SFT rows: the loader's ``last_token_sources``, (B, ≥ T) source indices,
        -1 for padding, aligned on the right with the targets, which LitGPT's finetune loops shift by one), else by
        row (``add_row_losses``)."""
        token_sources = getattr(self.loader, "last_token_sources", None)
        if token_sources is None or token_sources.shape[0] != losses.shape[0] or self.loader.last_rows is None:
            self.add_row_losses(losses.sum(1), targets.sum(1))
            return
        ids = self.loader.last_rows[0]
        sources = token_sources[:, -losses.shape[1] :].to(losses.device)
        counted = targets & (sources >= 0)
        lookup = torch.tensor([self._index[source] for source in ids], device=losses.device)
        self._add(lookup[sources[counted]], losses[counted], torch.ones_like(losses[counted]))
        self._attributed = self.loader.last_rows

    def add_row_losses(self, loss_sums: torch.Tensor, tokens: torch.Tensor) -> None:
        """Per-row loss sums and target token counts of the micro-batch the loader handed out last."""
        if self.loader is None or self.loader.last_rows is None:
            return
        ids, sources = self.loader.last_rows
        if len(sources) != loss_sums.shape[0]:
            return  # not the loader's batch (a caller cut or joined rows): nothing to attribute
        self._attributed = self.loader.last_rows
        rows = torch.tensor([self._index[ids[index]] for index in sources], device=loss_sums.device)
        self._add(rows, loss_sums, tokens)

    def _add(self, sources: torch.Tensor, losses: torch.Tensor, tokens: torch.Tensor) -> None:
        if self._window is None or self._window.device != losses.device:
            self._window = torch.zeros(2, len(self.ids), dtype=torch.float64, device=losses.device)
        self._window[0].index_add_(0, sources, losses.detach().to(torch.float64))
        self._window[1].index_add_(0, sources, tokens.detach().to(torch.float64))

    def log_summary(self, trained_micro_batches: int | None) -> None:
        """The per-source summary of the run, logged on rank zero at the end of LitGPT's loop, which may fetch one
        micro-batch past its last step: left out when ``trained_micro_batches`` (the loop's ``iter_num``) is one
        less than the micro-batches fetched, or, when it is None, when no training loss of it came in (while per-row
        losses come in at all)."""
        if self.loader is None or rank_zero_only.rank != 0:
            return
        last = self.loader.last_rows
        if trained_micro_batches is not None:
            leave_out = last is not None and trained_micro_batches == self.counts.fetched() - 1
        else:
            leave_out = last is not None and self._attributed is not None and self._attributed is not last
        text = self.counts.summary(leave_out)
        if text:
            logger.info("%s", text)

    def values(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The metrics now; ``all_reduce`` sums a tensor over the ranks (every rank calls this at the same step)."""
        if self.loader is None:
            return {}
        measures = self.counts.measures()
        if self._window is not None:
            sums, tokens = all_reduce(self._window.clone()).tolist()
            self._window.zero_()
            for source, total, count in zip(self.ids, sums, tokens):
                if count:
                    measures[f"data/loss/{source}"] = total / count
        return measures
