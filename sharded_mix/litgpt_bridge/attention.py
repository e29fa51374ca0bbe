"""The model side of document attention: RoPE positions and masks inside LitGPT's ``CausalSelfAttention``."""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import torch

from sharded_mix.litgpt_bridge.version import require_supported_litgpt


class DocumentPatch:
    """The hooks ``patch_document_attention`` put on a model: the layout of the rows of its last training forward
    (``input``: those rows; ``output_id``: the ``id`` of the logits it returned), and ``undo``."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.layout: Any = None
        self.input: Any = None
        self.output_id: int | None = None
        self.flex_modules: list[Any] = []

    def input_of(self, logits: Any) -> Any:
        """The rows whose forward returned ``logits`` (a tensor, or the finetune loops' list of chunks), else None."""
        return self.input if self.output_id is not None and id(logits) == self.output_id else None

    def undo(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module in self.flex_modules:
            del module.scaled_dot_product_attention
        self.handles, self.flex_modules, self.layout, self.input = [], [], None, None


def patch_document_attention(model, layout_of) -> DocumentPatch:
    """Make ``model(idx)`` (a litgpt ``GPT``, or Fabric's wrapper of one) attend within documents: for a forward
    without ``input_pos``, ``layout_of(idx, flex_possible=...)`` gives each token's position and the mask
    (``training.attention.DocumentLayout``), and every ``CausalSelfAttention`` gets RoPE at those positions
    and that mask (a dense one through LitGPT's own attention, a flex ``BlockMask`` through ``attend``)."""
    installed = require_supported_litgpt()
    from litgpt.model import GPT, Block, CausalSelfAttention

    from sharded_mix.training.attention import attend

    gpt = getattr(model, "module", model)  # Fabric's _FabricModule holds the model as .module
    gpt = getattr(gpt, "_orig_mod", gpt)  # and torch.compile's OptimizedModule as _orig_mod
    config = getattr(gpt, "config", None)
    attentions = [getattr(block, "attn", None) for block in gpt.transformer.h] if isinstance(gpt, GPT) else []
    unknown = (
        not attentions
        or not all(isinstance(attention, CausalSelfAttention) for attention in attentions)
        or config.sliding_window_size is not None
        or config.attention_logit_softcapping is not None
        or "self.attn(x_normed, cos, sin, mask, input_pos, input_pos_maxp1)" not in inspect.getsource(Block.forward)
    )
    if unknown:
        raise ValueError(
            f"document attention: the model ({type(gpt).__module__}.{type(gpt).__qualname__}"
            f"{f', {config.name}' if config is not None else ''}) is not one the patch knows: litgpt {installed}'s GPT "
            "with CausalSelfAttention, no sliding-window attention and no attention logit softcapping; use "
            "attention: causal (or packing: false) for it."
        )
    flex_possible = all(
        type(attention).scaled_dot_product_attention is CausalSelfAttention.scaled_dot_product_attention
        for attention in attentions
    )
    patch = DocumentPatch()

    def before_model(module, args, kwargs):
        idx = args[0] if args else kwargs["idx"]
        training = (args[1] if len(args) > 1 else kwargs.get("input_pos")) is None
        patch.input = idx if training else None
        patch.layout = layout_of(idx, flex_possible=flex_possible) if training else None

    def after_model(module, args, kwargs, output):
        patch.output_id = id(output) if patch.input is not None else None

    def before_attention(module, args, kwargs):  # Block calls attn(x, cos, sin, mask, input_pos, input_pos_maxp1)
        if patch.layout is None:
            return None
        x, cos, sin, _, *rest = args
        positions = patch.layout.positions
        return (x, cos[0][positions], sin[0][positions], patch.layout.mask, *rest), kwargs

    def flex_sdpa(module, q, k, v, mask=None):
        if mask is None or isinstance(mask, torch.Tensor):
            return CausalSelfAttention.scaled_dot_product_attention(module, q, k, v, mask)
        scale = module.mscale**2 / math.sqrt(module.config.attention_scores_scalar or module.config.head_size)
        return attend(q, k, v, mask, scale).transpose(1, 2)

    patch.handles.append(gpt.register_forward_pre_hook(before_model, with_kwargs=True))
    patch.handles.append(gpt.register_forward_hook(after_model, with_kwargs=True))
    for attention in attentions:
        patch.handles.append(attention.register_forward_pre_hook(before_attention, with_kwargs=True))
        if flex_possible:
            attention.scaled_dot_product_attention = functools.partial(flex_sdpa, attention)
            patch.flex_modules.append(attention)
    return patch
