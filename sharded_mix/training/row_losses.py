"""LitGPT's chunked cross-entropy computed as it computes it, with each token's loss handed out and, for document
attention, the targets across a document boundary left out (the bridge puts it in LitGPT's loop)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.functional import cross_entropy


def chunked_loss(
    chunked_cross_entropy: Callable,
    logits: torch.Tensor | list[torch.Tensor],
    targets: torch.Tensor,
    chunk_size: int = 128,
    ignore_index: int = -100,
    on_tokens: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    left_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``chunked_cross_entropy(logits, targets, chunk_size, ignore_index)`` (LitGPT's, same operations, same result).

    ``left_out``: (B, ≥ T) bool, targets set to ``ignore_index`` where True (aligned with the inputs: position t
    predicts ``targets[:, t]``). ``on_tokens``: given, for a training micro-batch (grad enabled, chunked: logits as one
    tensor, or as the list of ``lm_head`` chunks of the finetune loops), the (B, T) per-token losses (detached, 0
    where left out) and the (B, T) mask of the target tokens.
    """
    if left_out is not None and targets.dim() == 2:
        targets = targets.masked_fill(left_out[:, : targets.size(1)].to(targets.device), ignore_index)
    if on_tokens is None or not torch.is_grad_enabled() or chunk_size == 0 or targets.dim() != 2:
        return chunked_cross_entropy(logits, targets, chunk_size, ignore_index)
    if isinstance(logits, list):  # lm_head was chunked: chunks along the sequence, targets split alike
        logit_chunks = [logit_chunk.reshape(-1, logit_chunk.size(-1)) for logit_chunk in logits]
        target_chunks = [target_chunk.reshape(-1) for target_chunk in targets.split(logits[0].size(1), dim=1)]
    else:
        flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
        logit_chunks, target_chunks = flat_logits.split(chunk_size), flat_targets.split(chunk_size)
    loss_chunks = [
        cross_entropy(logit_chunk, target_chunk, ignore_index=ignore_index, reduction="none")
        for logit_chunk, target_chunk in zip(logit_chunks, target_chunks)
    ]
    non_masked_elems = (targets != ignore_index).sum()
    rows = targets.size(0)
    if isinstance(logits, list):
        token_losses = torch.cat([chunk.detach().view(rows, -1) for chunk in loss_chunks], dim=1)
    else:
        token_losses = torch.cat(loss_chunks).detach().view(rows, -1)
    on_tokens(token_losses, targets != ignore_index)
    return torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))
