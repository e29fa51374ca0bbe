"""The only module that reads or changes LitGPT's internals; everything else gets plain values from it.

LitGPT tells a data module its micro-batch size and sequence length only. What else a run needs is read here, from
``litgpt pretrain``'s own frames and files: its ``TrainArgs`` (global batch size, ``max_tokens``), its ``Fabric``
(``num_nodes``), its ``out_dir`` and the checkpoint it resumes (``RunContext``), with the out_dir lock and ``iter_num``
(``guard_pretrain_run``); whether ``final/`` already holds the stop step; and, for ``ScheduledAdamW``, LitGPT's
per-iteration LR (``get_lr``) and where each data stage starts; the ``data/`` metrics in its training log (and in
``litgpt finetune_*``'s), with per-row losses from its loss call; and ``litgpt pretrain``'s arguments, for
``convert-config``. Each entry point first calls ``require_supported_litgpt``: one version check, one error.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sharded_mix.config import checkpoint_step
from sharded_mix.mixing.run_plan import RunContext
from sharded_mix.streaming.checkpoint_files import checkpoint_state  # read here, and by tools through here

logger = logging.getLogger(__name__)

SUPPORTED_LITGPT = ((0, 5, 13), (0, 6, 0))
"""The litgpt releases whose loop this bridge was written against: >= 0.5.13, < 0.6."""
SUPPORTED_RANGE = "litgpt>=0.5.13,<0.6"


def _release(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(char for char in part if char.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers + [0] * (3 - len(numbers)))


@functools.cache
def require_supported_litgpt() -> str:
    """The installed litgpt version; a ``RuntimeError`` naming the supported range if it is outside it."""
    try:
        installed = version("litgpt")
    except PackageNotFoundError:
        installed = "not installed"
    low, high = SUPPORTED_LITGPT
    if installed == "not installed" or not low <= _release(installed) < high:
        raise RuntimeError(
            f"sharded_mix's LitGPT bridge supports {SUPPORTED_RANGE}, and litgpt is {installed}: its loop, checkpoints "
            f"and LR hook may differ. Install {SUPPORTED_RANGE!r}."
        )
    return installed


def _calling_local(name: str, kind: type) -> Any:
    """The local ``name`` of type ``kind`` in the nearest calling frame that has one, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        value = frame.f_locals.get(name)
        if isinstance(value, kind):
            return value
        frame = frame.f_back
    return None


def run_context() -> RunContext:
    """What the ``litgpt pretrain`` run connecting the data module knows (plain values); an empty context outside one.

    ``litgpt pretrain``'s ``get_dataloaders`` calls ``connect``: its callers' locals ``train``, ``fabric``,
    ``out_dir`` and ``resume`` are the run's.
    """
    from litgpt.args import TrainArgs

    train = _calling_local("train", TrainArgs)
    if train is not None:
        require_supported_litgpt()
    from lightning.fabric import Fabric
    from litgpt.config import Config

    fabric = _calling_local("fabric", Fabric)
    out_dir = _calling_local("out_dir", Path)
    resume_path = _resume_path(out_dir)
    model = _calling_local("config", Config)
    tokenizer_dir = _calling_local("tokenizer_dir", Path) or _calling_local("checkpoint_dir", Path)
    return RunContext(
        global_batch_size=getattr(train, "global_batch_size", None),
        max_tokens=getattr(train, "max_tokens", None),
        max_steps=getattr(train, "max_steps", None),
        fabric_nodes=getattr(getattr(fabric, "strategy", None), "num_nodes", None),
        out_dir=None if out_dir is None else str(out_dir.resolve()),
        resume_step=(checkpoint_step(resume_path) or 0) if resume_path is not None else 0,
        resume_stop=_saved_stop(resume_path),
        under_litgpt=train is not None,
        tokenizer_dir=None if tokenizer_dir is None else str(tokenizer_dir),
        model_vocab_size=getattr(model, "padded_vocab_size", None),
    )


def _pretrain_main():
    """The frame of ``litgpt.pretrain.main`` among the callers, or None."""
    main, frame = getattr(sys.modules.get("litgpt.pretrain"), "main", None), sys._getframe(1)
    while frame is not None and not (main is not None and frame.f_code is main.__code__):
        frame = frame.f_back
    return frame


def guard_pretrain_run() -> None:
    """Under ``litgpt pretrain`` (from ``connect``): ``claim_out_dir``, and ``iter_num`` loaded in this run's units."""
    frame = _pretrain_main()
    if frame is None:
        return
    require_supported_litgpt()
    from sharded_mix.mixing.iterations import LoopSizes, resumed_iterations
    from sharded_mix.streaming.run_lock import claim_out_dir

    fabric, out_dir, resume, train = (frame.f_locals[name] for name in ("fabric", "out_dir", "resume", "train"))
    claim_out_dir(out_dir, resume, functools.partial(_resume_path, out_dir, resume))
    load = fabric.load

    def load_in_run_units(path, state=None, strict=True, **options):  # main calls fabric.load(resume, state)
        remainder = load(path, state, strict=strict, **options)
        if isinstance(state, dict) and "model" in state:
            sizes = LoopSizes.of(train, fabric.world_size, state["model"].max_seq_length)
            state["iter_num"], warning = resumed_iterations(checkpoint_state(path) or {}, state, sizes, path)
            if warning and fabric.global_rank == 0:
                logger.warning("%s", warning)
        return remainder

    fabric.load = load_in_run_units


def _resume_path(out_dir: Path | None, resume: Any = None) -> Path | None:
    """The checkpoint ``litgpt pretrain`` will resume (its ``resume`` local resolved as LitGPT resolves it), or None."""
    from litgpt.utils import find_resume_path

    resume = resume if resume is not None else _calling_local("resume", (bool, str, Path))
    if not resume or out_dir is None:
        return None
    try:
        return find_resume_path(resume, out_dir)
    except FileNotFoundError:
        return None  # LitGPT raises its own error right after


def _saved_stop(path: Path | None) -> Mapping | None:
    state = None if path is None else checkpoint_state(path)
    data = None if state is None else state.get("train_dataloader")
    return data.get("stop") if isinstance(data, Mapping) else None


def final_state(out_dir: str | Path) -> dict | None:
    """What ``out_dir/final/lit_model.pth`` holds of a finished run (see ``checkpoint_state``)."""
    return checkpoint_state(Path(out_dir) / "final" / "lit_model.pth")


def pretrain_parameters() -> Mapping[str, inspect.Parameter]:
    """``litgpt pretrain``'s arguments as its CLI parses them (the ``litgpt`` command table's function)."""
    require_supported_litgpt()
    from litgpt.__main__ import PARSER_DATA

    return inspect.signature(PARSER_DATA["pretrain"]).parameters


def built_by_jsonargparse() -> bool:
    """Whether the calling object is being built by a command-line parser (``litgpt pretrain --config``), whose
    failed instantiations are reported as a traceback of union subtypes rather than our message."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("jsonargparse"):
            return True
        frame = frame.f_back
    return False


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
"""The loops ``attach_data_metrics`` knows, by module: ``litgpt pretrain`` and ``litgpt finetune_*``."""
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


def attach_data_metrics(metrics) -> bool:
    """When ``litgpt pretrain`` or ``litgpt finetune_full`` / ``_lora`` / ``_adapter`` / ``_adapter_v2`` connects the
    data module: add ``metrics.values(all_reduce)`` to the training metrics LitGPT logs (whatever its logger), hand
    ``metrics.add_row_losses`` each training micro-batch's per-row losses, and have ``metrics.log_summary`` called
    when the loop returns. A loop other than the expected one gets one WARNING: without its log call no metrics,
    without its loss call no ``data/loss``. Outside those commands nothing changes. True when the metrics are
    logged."""
    from lightning.fabric import Fabric
    from litgpt.args import TrainArgs

    fabric = _calling_local("fabric", Fabric)
    name, loop = _running_loop()
    if fabric is None or loop is None or _calling_local("train", TrainArgs) is None:
        return False
    installed = require_supported_litgpt()
    command = name.removeprefix("litgpt.").replace("finetune.", "finetune_")
    expected = TRAINING_LOOPS.get(name)
    if expected is None:
        known = ", ".join(loop.removeprefix("litgpt.").replace("finetune.", "finetune_") for loop in TRAINING_LOOPS)
        logger.warning("log_data_metrics: litgpt %s is none of %s; no data/ metrics are logged.", command, known)
        return False
    fit = inspect.unwrap(loop.fit)
    source = inspect.getsource(fit)
    if expected.log not in source or expected.calls_fit not in inspect.getsource(loop.main):
        logger.warning(
            "log_data_metrics: litgpt %s's %s loop is not the expected one (`main` calling `fit`, which logs with "
            "`%s`); no data/ metrics are logged (install %s).",
            installed,
            command,
            expected.log,
            SUPPORTED_RANGE,
        )
        return False
    log_dict, data_metrics = fabric.log_dict, metrics

    def log_with_data_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
        # Fabric.log_dict's parameters, by name too (lightning's ThroughputMonitor passes metrics=...)
        if "loss" in metrics and "iter" in metrics:  # the training log, on every rank at the same step
            metrics = {**metrics, **data_metrics.values(lambda tensor: fabric.all_reduce(tensor, reduce_op="sum"))}
        log_dict(metrics, step=step)

    fabric.log_dict = log_with_data_metrics

    def fit_then_summarise(*args, **kwargs):
        result = fit(*args, **kwargs)
        trained = None
        if expected.counts_iter:
            state = inspect.signature(fit).bind_partial(*args, **kwargs).arguments.get("state")
            trained = state.get("iter_num") if isinstance(state, Mapping) else None
        data_metrics.log_summary(trained)
        return result

    fit_then_summarise.__wrapped__ = fit
    loop.fit = fit_then_summarise  # `main` calls it by its module name, after the data module is connected
    from litgpt import utils

    loss_source = inspect.getsource(utils.chunked_cross_entropy)
    if (
        expected.loss not in source
        or getattr(loop.chunked_cross_entropy, "__wrapped__", loop.chunked_cross_entropy)
        is not utils.chunked_cross_entropy
        or not all(line in loss_source for line in _LOSS_LINES)
    ):
        logger.warning(
            "log_data_metrics: litgpt %s's %s loop computes its training loss otherwise than `%s` over "
            "litgpt.utils.chunked_cross_entropy; data/loss is not logged, the counts are.",
            installed,
            command,
            expected.loss,
        )
        return True
    loop.chunked_cross_entropy = _loss_with_row_losses(utils.chunked_cross_entropy, weakref.ref(metrics))
    return True


def _loss_with_row_losses(chunked_cross_entropy, metrics_ref):
    """``litgpt.utils.chunked_cross_entropy`` computed as it does (same operations, same result), handing the
    per-row losses of a training micro-batch (grad enabled, chunked: logits as one tensor, or as the list of
    ``lm_head`` chunks of the finetune loops) to the live metrics, with each row's target tokens."""
    import torch
    from torch.nn.functional import cross_entropy

    def loss(logits, targets, chunk_size: int = 128, ignore_index: int = -100):
        metrics = metrics_ref()
        if metrics is None or not torch.is_grad_enabled() or chunk_size == 0 or targets.dim() != 2:
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
            row_sums = torch.stack([chunk.detach().view(rows, -1).sum(1) for chunk in loss_chunks]).sum(0)
        else:
            row_sums = torch.cat(loss_chunks).detach().view(rows, -1).sum(1)
        metrics.add_row_losses(row_sums, (targets != ignore_index).sum(1))
        return torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))

    loss.__wrapped__ = chunked_cross_entropy
    return loss


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
