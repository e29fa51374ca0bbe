"""sharded_mix: a LitGPT data module for typed, sharded, mixed litdata token shards."""

import logging

from sharded_mix.datamodule import ShardedMixedDataset
from sharded_mix.discovery import DEFAULT_SHARD_TYPES, Shard, discover_shards
from sharded_mix.weights import MixSpec, mix_spec_from_fields, resolve_weights

# `litgpt pretrain` configures no logging; like Lightning, show our INFO lines (plans, transitions) anyway.
_logger = logging.getLogger(__name__)
if not _logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[sharded_mix] %(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False

__all__ = [
    "DEFAULT_SHARD_TYPES",
    "MixSpec",
    "Shard",
    "ShardedMixedDataset",
    "discover_shards",
    "mix_spec_from_fields",
    "resolve_weights",
]
