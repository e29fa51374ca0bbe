"""sharded_mix: a LitGPT data module for typed, sharded, mixed litdata token shards."""

import importlib
import logging

# `litgpt pretrain` configures no logging; like Lightning, show our INFO lines (plans, transitions) anyway.
_logger = logging.getLogger(__name__)
if not _logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[sharded_mix] %(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False

# Exports load on first use, so that data-preparation workers do not import lightning.
_EXPORTS = {
    "ShardedMixedDataset": "sharded_mix.datamodule",
    "SFTMixture": "sharded_mix.sft",
    "DEFAULT_SHARD_TYPES": "sharded_mix.shards",
    "Shard": "sharded_mix.shards",
    "discover_shards": "sharded_mix.streaming.discovery",
    "MixSpec": "sharded_mix.mixing.weights",
    "mix_spec_from_fields": "sharded_mix.mixing.weights",
    "resolve_weights": "sharded_mix.mixing.weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sharded_mix' has no attribute {name!r}")
