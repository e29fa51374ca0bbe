"""Per-source validation loss of a LitGPT checkpoint: the loss on each validation shard on its own.

LitGPT reports one validation loss over the whole mixture; a midtraining study wants it per
source (did math improve, did web data get forgotten?).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.tools.checkpoints import resolve_checkpoint

CONFIG_FILE = "model_config.yaml"


@dataclass(frozen=True)
class SourceLoss:
    source: str
    type: str
    loss: float
    perplexity: float
    blocks: int
    tokens: int


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """A LitGPT ``GPT`` from a checkpoint directory (``lit_model.pth`` + ``model_config.yaml``): a training
    checkpoint (``{"model": ...}``) or converted weights."""
    import torch
    from litgpt import GPT, Config

    checkpoint_file = resolve_checkpoint(checkpoint)
    config_file = checkpoint_file.parent / CONFIG_FILE
    if not config_file.is_file():
        raise ValueError(f"{str(checkpoint_file.parent)!r} has no {CONFIG_FILE}; give a LitGPT checkpoint directory.")
    model = GPT(Config.from_file(config_file))
    state = torch.load(checkpoint_file, map_location="cpu", mmap=True, weights_only=True)
    model.load_state_dict(state.get("model", state))
    return model.to(device).eval()


def source_losses(
    model, val_base: str | Path, seq_len: int | None = None, max_blocks: int = 64, batch_size: int = 8, device: str = "cpu"
) -> list[SourceLoss]:
    """Mean next-token loss on the first ``max_blocks`` blocks (in order) of every shard under ``val_base``."""
    import torch
    from litdata.streaming import StreamingDataset, TokensLoader
    from litgpt.utils import chunked_cross_entropy

    seq_len = seq_len or model.config.block_size
    block_size = seq_len + 1
    results = []
    for shard in discover_shards(val_base, field="val_data_path"):
        blocks = min(max_blocks, shard.blocks(block_size))
        if blocks < 1:
            raise ValueError(f"validation shard {shard.id!r} ({shard.path}) holds no block of {block_size} tokens; lower --seq-len.")
        dataset = StreamingDataset(shard.path, item_loader=TokensLoader(block_size=block_size), shuffle=False)
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, blocks, batch_size):
                batch = torch.stack([torch.as_tensor(dataset[i]) for i in range(start, min(start + batch_size, blocks))]).long().to(device)
                logits = model(batch[:, :-1])
                loss = chunked_cross_entropy(logits, batch[:, 1:], chunk_size=0)
                total += loss.item() * batch.shape[0]
                count += batch.shape[0]
        mean = total / count
        results.append(SourceLoss(shard.id, shard.type, mean, math.exp(min(mean, 50.0)), count, count * seq_len))
    return results


def format_source_losses(losses: list[SourceLoss], title: str) -> str:
    header = f"{'source':<14} {'type':<10} {'loss':>8} {'ppl':>12} {'blocks':>7} {'tokens':>10}"
    lines = [f"===== PER-SOURCE VALIDATION LOSS: {title} =====", header, "-" * len(header)]
    lines += [f"{r.source:<14} {r.type:<10} {r.loss:>8.4f} {r.perplexity:>12.2f} {r.blocks:>7,} {r.tokens:>10,}" for r in losses]
    return "\n".join(lines)
