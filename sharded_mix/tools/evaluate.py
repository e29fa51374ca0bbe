"""Per-source validation loss of a LitGPT checkpoint: the loss on each validation shard, and on each SFT task file,
on its own.

LitGPT reports one validation loss over the whole mixture; a midtraining study wants it per
source (did math improve, did web data get forgotten?), and a fine-tuned checkpoint's loss on each
task file and on the pretraining validation shards (forgetting).
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
    """``blocks``: blocks of a token shard, or examples of a task file; ``tokens``: the tokens the loss is over."""

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
    model,
    val_base: str | Path,
    seq_len: int | None = None,
    max_blocks: int = 64,
    batch_size: int = 8,
    device: str = "cpu",
    eos_id: int | None = None,
) -> list[SourceLoss]:
    """Mean next-token loss on the first ``max_blocks`` blocks (in order) of every shard under ``val_base``; with
    ``eos_id``, under document attention (as ``attention: document`` trains): each EOS's prediction of the next
    document left out."""
    import contextlib

    import torch
    from litdata.streaming import StreamingDataset, TokensLoader
    from litgpt.utils import chunked_cross_entropy

    from sharded_mix.training.attention import cross_document_targets, document_attention

    seq_len = seq_len or model.config.block_size
    block_size = seq_len + 1
    results = []
    for shard in discover_shards(val_base, field="val_data_path"):
        blocks = min(max_blocks, shard.blocks(block_size))
        if blocks < 1:
            raise ValueError(
                f"validation shard {shard.id!r} ({shard.path}) holds no block of {block_size} tokens; lower --seq-len."
            )
        dataset = StreamingDataset(shard.path, item_loader=TokensLoader(block_size=block_size), shuffle=False)
        total, count, tokens = 0.0, 0, 0
        documents = contextlib.nullcontext() if eos_id is None else document_attention(model, eos_id)
        with torch.no_grad(), documents:
            for start in range(0, blocks, batch_size):
                batch = (
                    torch.stack([torch.as_tensor(dataset[i]) for i in range(start, min(start + batch_size, blocks))])
                    .long()
                    .to(device)
                )
                targets = batch[:, 1:]
                if eos_id is not None:
                    targets = targets.masked_fill(cross_document_targets(batch[:, :-1], eos_id), -100)
                loss = chunked_cross_entropy(model(batch[:, :-1]), targets, chunk_size=0)
                scored = int((targets != -100).sum())
                total += loss.item() * scored
                count, tokens = count + batch.shape[0], tokens + scored
        mean = total / max(tokens, 1)
        results.append(SourceLoss(shard.id, shard.type, mean, math.exp(min(mean, 50.0)), count, tokens))
    return results


def load_tokenizer(checkpoint: str | Path):
    """The LitGPT ``Tokenizer`` saved beside a checkpoint (``finetune_full`` copies it into every checkpoint)."""
    from litgpt.tokenizer import Tokenizer

    directory = resolve_checkpoint(checkpoint).parent
    try:
        return Tokenizer(directory)
    except (NotImplementedError, FileNotFoundError) as err:
        raise ValueError(
            f"{str(directory)!r} holds no tokenizer LitGPT can load ({err}); "
            "task files need one, give a checkpoint with tokenizer files."
        ) from None


def checkpoint_prompt_style(checkpoint: str | Path, default: str = "alpaca"):
    """The prompt style a LitGPT finetune saved beside a checkpoint (``prompt_style.yaml``), else ``default``."""
    from litgpt.prompts import PromptStyle, has_prompt_style, load_prompt_style

    directory = resolve_checkpoint(checkpoint).parent
    return load_prompt_style(directory) if has_prompt_style(directory) else PromptStyle.from_name(default)


def task_loss(
    model,
    name: str,
    path: str | Path,
    tokenizer,
    prompt_style,
    mask_prompt: bool = False,
    ignore_index: int = -100,
    max_seq_length: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
) -> SourceLoss:
    """Mean next-token loss over the target tokens of a task file's examples (the first ``max_examples``), encoded as
    ``SFTMixture`` encodes them (prompt style, masking, cut to ``max_seq_length``, default the model's block size)."""
    import torch
    from litgpt.data import get_sft_collate_fn

    from sharded_mix.streaming.sft_examples import encode_task

    max_seq_length = max_seq_length or model.config.block_size
    task = encode_task(name, path, tokenizer, prompt_style, mask_prompt, ignore_index, max_seq_length)
    examples = task.examples[:max_examples] if max_examples else task.examples
    collate = get_sft_collate_fn(max_seq_length=max_seq_length, ignore_index=ignore_index)
    total, targets = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size])
            input_ids, labels = batch["input_ids"].to(device), batch["labels"][:, 1:].to(device)
            logits = model(input_ids)[:, :-1]
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                labels.reshape(-1),
                ignore_index=ignore_index,
                reduction="sum",
            ).item()
            targets += int((labels != ignore_index).sum())
    if targets == 0:
        raise ValueError(
            f"task file {str(path)!r} has no target token to score within {max_seq_length} tokens "
            "(empty, or every response masked or cut off); raise --seq-len, or check the file and --mask-prompt."
        )
    mean = total / targets
    return SourceLoss(name, "sft", mean, math.exp(min(mean, 50.0)), len(examples), targets)


def format_source_losses(losses: list[SourceLoss], title: str) -> str:
    header = f"{'source':<14} {'type':<10} {'loss':>8} {'ppl':>12} {'blocks':>7} {'tokens':>10}"
    lines = [f"===== PER-SOURCE VALIDATION LOSS: {title} =====", header, "-" * len(header)]
    lines += [
        f"{r.source:<14} {r.type:<10} {r.loss:>8.4f} {r.perplexity:>12.2f} {r.blocks:>7,} {r.tokens:>10,}"
        for r in losses
    ]
    return "\n".join(lines)
