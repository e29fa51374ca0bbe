"""Attention that stays inside each document of a row.

A row of token ids holds whole or cut documents, each ended by the EOS token. ``document_layout`` finds them: a
document starts at the row's first token and after every EOS. Each token then attends only to the earlier tokens
of its own document, and its RoPE position counts from its document's first token. The mask is a FlexAttention
``BlockMask`` (built once per batch, and compiled, on GPU), or a dense boolean mask for SDPA where flex attention
is not available or not worth it (CPU); ``backend`` picks, ``auto`` by default.

``document_attention(model, eos_id)`` applies it to a LitGPT ``GPT`` for as long as the ``with`` block lasts,
through ``litgpt_bridge.patch_document_attention`` (the only code that knows the model's internals).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from sharded_mix.litgpt_bridge import patch_document_attention

BACKENDS = ("auto", "flex", "sdpa")


@dataclass(frozen=True)
class DocumentLayout:
    """Where each token of a batch of rows sits among the rows' documents."""

    positions: torch.Tensor
    """(B, T) int64: each token's position within its document (its RoPE position)."""
    documents: torch.Tensor
    """(B, T) int64: each token's document, numbered from 0 along its row."""
    mask: Any
    """What the attention takes: a FlexAttention ``BlockMask``, or a (B, 1, T, T) boolean mask (True: attend)."""


@dataclass(frozen=True)
class DocumentTraining:
    """Document attention for a LitGPT training run (``litgpt_bridge.attach_to_training_loop``)."""

    eos_id: int
    """The token that ends a document."""
    cross_document_loss: bool = False
    """Whether the prediction from a document's EOS to the next document's first token counts in the loss."""


def document_training(
    attention: str, eos_id: int | None, cross_document_loss: bool, tokenizer: Any
) -> DocumentTraining | None:
    """What ``attention: document`` asks of a training run (None for ``causal``): the EOS id is ``eos_id``, else the
    tokenizer's; neither is a ``ValueError``."""
    if attention != "document":
        return None
    eos = eos_id if eos_id is not None else getattr(tokenizer, "eos_id", None)
    if eos is None:
        raise ValueError(
            "attention is document, but the tokenizer has no EOS token and eos_id is not set: documents cannot be "
            "found. Set eos_id to the id of the token that ends each document (prepare ends every document with it)."
        )
    return DocumentTraining(int(eos), cross_document_loss)


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(backend: str, device: torch.device, flex_possible: bool = True) -> str:
    """``flex`` or ``sdpa``: ``auto`` takes flex attention on CUDA when it is available (and the model can use it),
    dense SDPA masks elsewhere; ``flex`` where it cannot run is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"document attention backend is {backend!r}; use one of {', '.join(BACKENDS)}.")
    usable = flex_possible and flex_attention_available()
    if backend == "auto":
        return "flex" if usable and device.type == "cuda" else "sdpa"
    if backend == "flex" and not usable:
        raise ValueError(
            "document attention backend flex: torch.nn.attention.flex_attention is not available here or the model's "
            "attention cannot use it; use backend auto or sdpa."
        )
    return backend


def document_layout(
    idx: torch.Tensor, eos_id: int, backend: str = "auto", flex_possible: bool = True
) -> DocumentLayout:
    """The documents of the rows ``idx`` (B, T): a new document after every ``eos_id``."""
    rows, length = idx.shape
    ends = idx == eos_id
    starts = torch.zeros_like(ends)
    starts[:, 1:] = ends[:, :-1]
    documents = starts.long().cumsum(1)
    steps = torch.arange(length, device=idx.device).expand(rows, length)
    first = torch.where(starts, steps, torch.zeros_like(steps)).cummax(1).values
    if pick_backend(backend, idx.device, flex_possible) == "flex":
        mask = _block_mask(documents)
    else:
        causal = torch.ones(length, length, dtype=torch.bool, device=idx.device).tril()
        mask = ((documents[:, :, None] == documents[:, None, :]) & causal)[:, None]
    return DocumentLayout(steps - first, documents, mask)


@torch.compiler.disable  # built eagerly once per batch (its own compiled kernels), outside a compiled model's graph
def _block_mask(documents: torch.Tensor) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document_causal(batch, head, query, key):
        return (documents[batch, query] == documents[batch, key]) & (query >= key)

    rows, length = documents.shape
    return create_block_mask(
        same_document_causal, rows, None, length, length, device=documents.device, _compile=documents.is_cuda
    )


@functools.cache
def compiled_flex_attention(on_cuda: bool) -> Any:
    """``flex_attention``, compiled on GPU (its fused kernel); eager on CPU, where it only serves correctness."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if on_cuda else flex_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale: float) -> torch.Tensor:
    """Attention of (B, heads, T, head size) queries, keys and values under a ``DocumentLayout.mask``."""
    if isinstance(mask, torch.Tensor):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return compiled_flex_attention(q.is_cuda)(q, k, v, block_mask=mask, scale=scale)


def cross_document_targets(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) bool: the positions whose next-token target is the first token of another document (the input is
    EOS), left out of the loss unless ``cross_document_loss``."""
    return idx == eos_id


@contextmanager
def document_attention(model: torch.nn.Module, eos_id: int, backend: str = "auto") -> Iterator[None]:
    """Inside the block, ``model(idx)`` (a LitGPT ``GPT``, or Fabric's wrapper of one; ``idx`` of shape (B, T))
    computes document-masked, position-reset logits: every token attends only within its EOS-delimited document,
    and RoPE positions restart at each document. Calls with ``input_pos`` (KV-cache generation) are unchanged.

    ``backend``: ``auto`` (flex attention on CUDA, dense SDPA masks elsewhere), ``flex`` or ``sdpa``. A model the
    patch does not know (not a LitGPT ``GPT`` with ``CausalSelfAttention``, or with sliding-window attention or
    attention logit softcapping) is a ``ValueError``.
    """
    if isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0:
        raise ValueError(f"eos_id is {eos_id!r}; give the tokenizer's EOS token id (a whole number >= 0).")
    pick_backend(backend, torch.device("cpu"))  # an unknown name fails here, before the model is touched
    patch = patch_document_attention(model, functools.partial(document_layout, eos_id=eos_id, backend=backend))
    try:
        yield
    finally:
        patch.undo()
