"""Stream blocks of tokens from the chosen shards through litdata.

One ``StreamingDataset`` per shard (litdata's ``TokensLoader`` cuts blocks of
``block_size`` tokens), mixed by ``CombinedStreamingDataset`` with the resolved weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from litdata.streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader

from sharded_mix.discovery import Shard


def shard_dataset(shard: Shard, block_size: int, shuffle: bool, seed: int) -> StreamingDataset:
    """A litdata dataset over one shard yielding blocks of ``block_size`` tokens."""
    return StreamingDataset(
        input_dir=shard.path,
        item_loader=TokensLoader(block_size=block_size),
        shuffle=shuffle,
        drop_last=True,
        seed=seed,
    )


def mixture_dataset(
    shards: Sequence[Shard], weights: Mapping[str, float], block_size: int, shuffle: bool, seed: int
) -> CombinedStreamingDataset:
    """The weighted mixture of ``shards`` (those with a weight), each sampled with its weight."""
    chosen = [shard for shard in shards if weights.get(shard.id, 0) > 0]
    return CombinedStreamingDataset(
        datasets=[shard_dataset(shard, block_size, shuffle, seed) for shard in chosen],
        seed=seed,
        weights=[weights[shard.id] for shard in chosen],
        iterate_over_all=False,
    )


def make_dataloader(dataset, batch_size: int, num_workers: int) -> StreamingDataLoader:
    return StreamingDataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=True
    )
