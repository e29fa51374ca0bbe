"""A run's data module set up offline from its LitGPT config, as ``litgpt pretrain`` would, without training
(``sharded-mix plan``, ``batch`` and ``find``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from sharded_mix.config import load_run_config


@contextlib.contextmanager
def quiet_logs(quiet: bool = True) -> Iterator[None]:
    """sharded_mix's and litdata's INFO lines (setup's plan, resume notes) held back: the command prints its own."""
    loggers = [logging.getLogger(name) for name in ("sharded_mix", "litdata")] if quiet else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def offline_data_module(config: str | Path, quiet: bool = True):
    """``(ShardedMixedDataset, RunSizes)`` of a LitGPT config (or a YAML of init args): built, connected with the
    run's micro-batch size and sequence length, and set up, with ``train.global_batch_size`` passed as LitGPT
    would."""
    from sharded_mix.datamodule import ShardedMixedDataset

    init_args, sizes = load_run_config(config)
    if sizes.global_batch_size is not None:
        init_args.setdefault("global_batch_size", sizes.global_batch_size)
    with quiet_logs(quiet):
        data = ShardedMixedDataset(**init_args)
        data.connect(batch_size=sizes.micro_batch_size, max_seq_length=sizes.max_seq_length)
        data.setup()
    return data, sizes
