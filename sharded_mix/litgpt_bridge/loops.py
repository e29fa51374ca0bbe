"""What we add to LitGPT's training loops: ``data/`` metrics and per-row losses, document attention around ``fit``,
``ScheduledAdamW``'s LR, and where each data stage starts."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharded_mix.litgpt_bridge.attention import patch_document_attention
from sharded_mix.litgpt_bridge.run import _pretrain_main
from sharded_mix.litgpt_bridge.version import SUPPORTED_RANGE, _calling_local, require_supported_litgpt

logger = logging.getLogger(__name__)


# The stage-step registry: the data module publishes where each stage starts when LitGPT connects it (after the
# optimizer exists, before the first step); an optimizer with decay_start_stage reads it at its first step.
_stage_steps: dict[str, int] = {}


def publish_stage_steps(starts: Mapping[str, int]) -> None:
    _stage_steps.clear()
    _stage_steps.update(starts)


def stage_start_step(name: str) -> int:
    """The first optimizer step of data stage ``name``; a ``ValueError`` if no data module published it."""
    if name not in _stage_steps:
        known = (
            f"the data stages are {', '.join(sorted(_stage_steps))}"
            if _stage_steps
            else "no sharded_mix.ShardedMixedDataset with stages starting at steps was set up in this run"
        )
        raise ValueError(
            f"optimizer decay_start_stage is {name!r}, but {known}; name one of its stages (e.g. anneal), or use "
            "decay_start_step."
        )
    return _stage_steps[name]


@dataclass(frozen=True)
class TrainingLoop:
    """What the bridge expects of a LitGPT training loop: the text of its training log call and loss call in
    ``fit``, and of ``main`` calling ``fit``."""

    log: str
    """Where ``fit`` logs its training metrics (``loss``, ``iter``, ...)."""
    loss: str
    """Its training loss of a micro-batch: the per-token losses of ``litgpt.utils.chunked_cross_entropy``, averaged."""
    calls_fit: str
    counts_iter: bool
    """Whether ``fit``'s ``state["iter_num"]`` is the micro-batches trained when it returns (``litgpt pretrain``)."""


_FINETUNE_LOSS = "loss = chunked_cross_entropy(logits, targets[..., 1:])"  # logits: lm_head chunks, the last cut
TRAINING_LOOPS = {
    "litgpt.pretrain": TrainingLoop(
        'fabric.log_dict(metrics, step=state["iter_num"] - 1)',
        "loss = chunked_cross_entropy(logits, targets)",
        "\n    fit(",
        True,
    ),
    "litgpt.finetune.full": TrainingLoop(
        'fabric.log_dict(metrics, step=state["iter_num"])',
        "loss = chunked_cross_entropy(logits[..., :-1, :], targets[..., 1:])",
        "token_counts = fit(",
        False,
    ),
    **{
        f"litgpt.finetune.{name}": TrainingLoop(
            "fabric.log_dict(metrics, step=iter_num)", _FINETUNE_LOSS, "token_counts = fit(", False
        )
        for name in ("lora", "adapter", "adapter_v2")
    },
}
"""The loops ``attach_to_training_loop`` knows, by module: ``litgpt pretrain`` and ``litgpt finetune_*``."""
TRAINING_LOG = TRAINING_LOOPS["litgpt.pretrain"].log
TRAINING_LOSS = TRAINING_LOOPS["litgpt.pretrain"].loss
_LOSS_LINES = (
    "torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))",
    "target_chunks = [target_chunk.reshape(-1) for target_chunk in targets.split(logits[0].size(1), dim=1)]",
)
"""What ``_loss_with_row_losses`` repeats of ``litgpt.utils.chunked_cross_entropy`` (both its chunked branches)."""


def _running_loop() -> tuple[str, Any] | tuple[None, None]:
    """The ``litgpt.finetune.*`` module one of whose functions (``main``, ``get_dataloaders``, ``fit``) is calling
    (``litgpt`` imports every command's module), else ``litgpt.pretrain`` if it is loaded."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("litgpt.finetune.") and name in sys.modules:
            return name, sys.modules[name]
        frame = frame.f_back
    pretrain = sys.modules.get("litgpt.pretrain")
    return ("litgpt.pretrain", pretrain) if pretrain is not None else (None, None)


_loop_hooks: dict[str, Any] = {"metrics": None, "documents": None, "patch": None}
"""What the wrapped loop functions (``fit``, its loss) consult at each call: the live data metrics (a weak
reference), the document attention settings of the data module connected last, and the model's patch while ``fit``
runs."""


def attach_to_training_loop(metrics=None, documents=None) -> bool:
    """When ``litgpt pretrain`` or ``litgpt finetune_full`` / ``_lora`` / ``_adapter`` / ``_adapter_v2`` connects the
    data module. ``metrics``: add ``metrics.values(all_reduce)`` to the training metrics LitGPT logs (whatever its
    logger), hand ``metrics.add_token_losses`` each training micro-batch's per-token losses, and call
    ``metrics.log_summary`` when the loop returns; a loop other than the expected one gets one WARNING and no
    metrics (without its loss call, no ``data/loss``). ``documents`` (a ``DocumentTraining``): while ``fit`` runs,
    the model attends within documents (``patch_document_attention``), and unless ``cross_document_loss`` the loss
    leaves out each EOS's prediction of the next document; a loop the bridge cannot do that in is a
    ``RuntimeError``. Outside those commands nothing changes. True when the metrics are logged."""
    from lightning.fabric import Fabric
    from litgpt.args import TrainArgs

    fabric = _calling_local("fabric", Fabric)
    name, loop = _running_loop()
    if fabric is None or loop is None or _calling_local("train", TrainArgs) is None:
        return False
    try:
        installed = require_supported_litgpt()
    except RuntimeError:
        if metrics is None and documents is None:  # nothing asked of this loop
            return False
        raise
    command = name.removeprefix("litgpt.").replace("finetune.", "finetune_")
    expected = TRAINING_LOOPS.get(name)
    source = "" if expected is None else inspect.getsource(inspect.unwrap(loop.fit))
    if expected is None:
        known = ", ".join(loop.removeprefix("litgpt.").replace("finetune.", "finetune_") for loop in TRAINING_LOOPS)
        problem = f"litgpt {command} is none of {known}"
    elif expected.log not in source or expected.calls_fit not in inspect.getsource(loop.main):
        problem = (
            f"litgpt {installed}'s {command} loop is not the expected one (`main` calling `fit`, which logs with "
            f"`{expected.log}`)"
        )
    else:
        problem = None
    loss_known = problem is None and _loss_is_known(loop, expected, source)
    if documents is not None and not loss_known:
        why = problem or f"litgpt {installed} computes the {command} loss otherwise than `{expected.loss}`"
        raise RuntimeError(
            f"document attention: {why}, so it cannot be applied; install {SUPPORTED_RANGE!r}, or use attention: "
            "causal (packing: false)."
        )
    _loop_hooks.update(metrics=None if metrics is None or problem else weakref.ref(metrics), documents=documents)
    if metrics is not None and problem:
        logger.warning("log_data_metrics: %s; no data/ metrics are logged (install %s).", problem, SUPPORTED_RANGE)
    if problem:
        return False
    _wrap_loop(loop, fabric, expected, loss_known)
    if metrics is not None and not loss_known:
        logger.warning(
            "log_data_metrics: litgpt %s's %s loop computes its training loss otherwise than `%s` over "
            "litgpt.utils.chunked_cross_entropy; data/loss is not logged, the counts are.",
            installed,
            command,
            expected.loss,
        )
    return metrics is not None


def _loss_is_known(loop, expected: TrainingLoop, source: str) -> bool:
    from litgpt import utils

    loss_source = inspect.getsource(utils.chunked_cross_entropy)
    return (
        expected.loss in source
        and getattr(loop.chunked_cross_entropy, "__wrapped__", loop.chunked_cross_entropy)
        is utils.chunked_cross_entropy
        and all(line in loss_source for line in _LOSS_LINES)
    )


def _wrap_loop(loop, fabric, expected: TrainingLoop, loss_known: bool) -> None:
    """Put the hook-consulting wrappers on the loop's ``fit``, its loss and ``fabric.log_dict`` (once each)."""
    from litgpt import utils

    from sharded_mix.training.attention import cross_document_targets
    from sharded_mix.training.row_losses import chunked_loss

    log_dict = fabric.log_dict

    def log_with_data_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
        # Fabric.log_dict's parameters, by name too (lightning's ThroughputMonitor passes metrics=...)
        data_metrics = _live("metrics")
        if data_metrics is not None and "loss" in metrics and "iter" in metrics:  # the training log, every rank
            metrics = {**metrics, **data_metrics.values(lambda tensor: fabric.all_reduce(tensor, reduce_op="sum"))}
        log_dict(metrics, step=step)

    if not getattr(log_dict, "_sharded_mix", False):
        log_with_data_metrics._sharded_mix = True
        fabric.log_dict = log_with_data_metrics
    fit = inspect.unwrap(loop.fit)

    def fit_with_hooks(*args, **kwargs):
        arguments = inspect.signature(fit).bind_partial(*args, **kwargs).arguments
        documents = _loop_hooks["documents"]
        if documents is not None:
            from sharded_mix.training.attention import document_layout

            model = arguments.get("model") or arguments["state"]["model"]
            layout = functools.partial(document_layout, eos_id=documents.eos_id)
            _loop_hooks["patch"] = patch_document_attention(model, layout)
        try:
            result = fit(*args, **kwargs)
        finally:
            patch, _loop_hooks["patch"] = _loop_hooks["patch"], None
            if patch is not None:
                patch.undo()
        data_metrics = _live("metrics")
        if data_metrics is not None:
            state = arguments.get("state")
            trained = state.get("iter_num") if expected.counts_iter and isinstance(state, Mapping) else None
            data_metrics.log_summary(trained)
        return result

    fit_with_hooks.__wrapped__ = fit
    loop.fit = fit_with_hooks  # `main` calls it by its module name, after the data module is connected
    longest = inspect.unwrap(getattr(loop, "get_longest_seq_length", None) or (lambda data: None))
    if 'lengths = [len(d["input_ids"]) for d in data]' in inspect.getsource(longest):

        def longest_known_length(data):  # the finetune loops' fit reads every example once to size the model
            lengths = item_lengths(data)
            if lengths is None:
                return longest(data)
            index = int(np.argmax(lengths))
            return int(lengths[index]), index

        longest_known_length.__wrapped__ = longest
        loop.get_longest_seq_length = longest_known_length
    if not loss_known:
        return

    def loss(logits, targets, chunk_size: int = 128, ignore_index: int = -100):
        data_metrics, documents, patch = _live("metrics"), _loop_hooks["documents"], _loop_hooks["patch"]
        rows = None if documents is None or documents.cross_document_loss or patch is None else patch.input_of(logits)
        left_out = None if rows is None else cross_document_targets(rows, documents.eos_id)
        on_tokens = None if data_metrics is None else data_metrics.add_token_losses
        return chunked_loss(utils.chunked_cross_entropy, logits, targets, chunk_size, ignore_index, on_tokens, left_out)

    loss.__wrapped__ = utils.chunked_cross_entropy
    loop.chunked_cross_entropy = loss


def item_lengths(data) -> Any:
    """The length of every item of ``data`` (a ``ConcatDataset`` of datasets with ``item_lengths()``, as
    ``len(item["input_ids"])``) without reading the items; None when a part cannot say."""
    parts = getattr(data, "datasets", None)
    if not parts or not all(callable(getattr(part, "item_lengths", None)) for part in parts):
        return None
    return np.concatenate([np.asarray(part.item_lengths(), dtype=np.int64) for part in parts])


def _live(name: str) -> Any:
    reference = _loop_hooks[name]
    return None if reference is None else reference()


def attach_scheduled_lr(optimizer) -> None:
    """When ``litgpt pretrain`` builds ``optimizer``, make its per-iteration LR (applied, and logged as
    ``learning_rate``) the optimizer's ``next_lr()``; outside ``litgpt pretrain`` nothing changes."""
    pretrain = sys.modules.get("litgpt.pretrain")
    if _pretrain_main() is None:
        return
    installed = require_supported_litgpt()
    expected = ["learning_rate", "it", "warmup_iters", "max_iters", "min_lr"]
    source = inspect.getsource(inspect.unwrap(pretrain.fit))
    if (
        list(inspect.signature(pretrain.get_lr).parameters) != expected
        or 'lr = get_lr(optimizer.defaults["lr"]' not in source
        or '"learning_rate": lr' not in source
        or 'param_group["lr"] = lr' not in source
    ):
        raise RuntimeError(
            f"sharded_mix.training.ScheduledAdamW: litgpt {installed}'s pretrain loop is not the one it was written "
            'for (`lr = get_lr(optimizer.defaults["lr"], ...)` per iteration, logged as learning_rate), so the LR in '
            f"your logs would not be the LR applied. Install {SUPPORTED_RANGE!r}, or use torch.optim.AdamW and "
            "litgpt's cosine."
        )
    reference = weakref.ref(optimizer)

    def scheduled_lr(learning_rate: float, it: int, warmup_iters: int, max_iters: int, min_lr: float) -> float:
        live = reference()
        return live.next_lr() if live is not None else learning_rate

    pretrain.get_lr = scheduled_lr
