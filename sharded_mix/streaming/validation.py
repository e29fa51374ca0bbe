"""The validation loader: litdata's ``CombinedStreamingDataset`` over unshuffled shards (finite, deterministic)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from litdata.streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader

from sharded_mix.shards import Shard
from sharded_mix.streaming.cache import ChunkCache
from sharded_mix.streaming.storage import is_url


def validation_loader(
    shards: Sequence[Shard],
    weights: Mapping[str, float],
    block_size: int,
    batch_size: int,
    seed: int,
    num_workers: int,
    cache: ChunkCache | None = None,
) -> StreamingDataLoader:
    """The validation mixture: unshuffled shards sampled with their weights, the same blocks every time.

    A remote validation shard is copied whole into ``cache`` first (litdata reads it there)."""
    chosen = [shard for shard in shards if weights.get(shard.id, 0) > 0]
    datasets = [
        StreamingDataset(
            input_dir=cache.mirror(shard) if is_url(shard.path) else shard.path,
            item_loader=TokensLoader(block_size=block_size),
            shuffle=False,
            drop_last=True,
            seed=seed % 2**32,
        )
        for shard in chosen
    ]
    combined = CombinedStreamingDataset(
        datasets=datasets, seed=seed, weights=[weights[shard.id] for shard in chosen], iterate_over_all=False
    )
    return StreamingDataLoader(
        combined, batch_size=batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=True
    )
