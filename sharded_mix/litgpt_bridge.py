"""The only module that reads or changes LitGPT's internals; everything else gets plain values from it.

LitGPT tells a data module its micro-batch size and sequence length only. What else a run needs is read here,
from ``litgpt pretrain``'s own frames and files: its ``TrainArgs`` (global batch size, ``max_tokens``), its
``Fabric`` (``num_nodes``), its ``out_dir`` and the checkpoint it resumes (``RunContext``); whether ``final/``
already holds the stop step; and, for ``ScheduledAdamW``, LitGPT's per-iteration LR (``get_lr``) and where each
data stage starts; the ``data/`` metrics in its training log, with per-row losses from its loss call; and
``litgpt pretrain``'s arguments, for ``convert-config``. Each entry point first calls ``require_supported_litgpt``:
one version check, one error.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import weakref
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sharded_mix.config import checkpoint_step
from sharded_mix.mixing.run_plan import RunContext

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

    fabric = _calling_local("fabric", Fabric)
    out_dir = _calling_local("out_dir", Path)
    resume_path = _resume_path(out_dir)
    return RunContext(
        global_batch_size=getattr(train, "global_batch_size", None),
        max_tokens=getattr(train, "max_tokens", None),
        max_steps=getattr(train, "max_steps", None),
        fabric_nodes=getattr(getattr(fabric, "strategy", None), "num_nodes", None),
        out_dir=None if out_dir is None else str(out_dir.resolve()),
        resume_step=(checkpoint_step(resume_path) or 0) if resume_path is not None else 0,
        resume_stop=_saved_stop(resume_path),
        under_litgpt=train is not None,
    )


def _resume_path(out_dir: Path | None) -> Path | None:
    """The checkpoint ``litgpt pretrain`` will resume (its ``resume`` local resolved as LitGPT resolves it), or None."""
    from litgpt.utils import find_resume_path

    resume = _calling_local("resume", (bool, str, Path))
    if not resume or out_dir is None:
        return None
    try:
        return find_resume_path(resume, out_dir)
    except FileNotFoundError:
        return None  # LitGPT raises its own error right after


def checkpoint_state(path: str | Path) -> dict | None:
    """``step_count`` and the data state (``train_dataloader``) of a LitGPT checkpoint, memory-mapped (no tensor
    is read); None when the file is missing or unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # a half-written checkpoint is not one to read positions from
        logger.warning("cannot read %s (%s); ignoring it", path, err)
        return None
    return {key: checkpoint.get(key) for key in ("step_count", "train_dataloader")}


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


TRAINING_LOG = 'fabric.log_dict(metrics, step=state["iter_num"] - 1)'
"""Where ``litgpt pretrain``'s loop logs its training metrics (``loss``, ``iter``, ``learning_rate``, ...)."""
TRAINING_LOSS = "loss = chunked_cross_entropy(logits, targets)"
"""Its training loss of a micro-batch: the per-token losses of ``litgpt.utils.chunked_cross_entropy``, averaged."""


def attach_data_metrics(metrics) -> None:
    """When ``litgpt pretrain`` connects the data module: add ``metrics.values(all_reduce)`` to the training metrics
    LitGPT logs (whatever its logger), and hand ``metrics.add_row_losses`` each training micro-batch's per-row losses.
    A loop other than the expected one gets one WARNING: without its log call no metrics, without its loss call no
    ``data/loss``. Outside ``litgpt pretrain`` nothing changes."""
    from lightning.fabric import Fabric
    from litgpt.args import TrainArgs

    fabric = _calling_local("fabric", Fabric)
    pretrain = sys.modules.get("litgpt.pretrain")
    if fabric is None or pretrain is None or _calling_local("train", TrainArgs) is None:
        return
    installed = require_supported_litgpt()
    source = inspect.getsource(inspect.unwrap(pretrain.fit))
    if TRAINING_LOG not in source or "\n    fit(" not in inspect.getsource(pretrain.main):
        logger.warning(
            "log_data_metrics: litgpt %s's pretrain loop is not the expected one (`main` calling `fit`, which logs "
            "with `%s`); no data/ metrics are logged (install %s).",
            installed,
            TRAINING_LOG,
            SUPPORTED_RANGE,
        )
        return
    log_dict = fabric.log_dict

    def log_with_data_metrics(values: Mapping[str, Any], step: int | None = None) -> None:
        if "loss" in values and "iter" in values:  # the training log, on every rank at the same step
            values = {**values, **metrics.values(lambda tensor: fabric.all_reduce(tensor, reduce_op="sum"))}
        log_dict(values, step=step)

    fabric.log_dict = log_with_data_metrics
    fit = inspect.unwrap(pretrain.fit)

    def fit_then_summarise(*args, **kwargs):
        result = fit(*args, **kwargs)
        state = inspect.signature(fit).bind_partial(*args, **kwargs).arguments.get("state")
        metrics.log_summary(state.get("iter_num") if isinstance(state, Mapping) else None)
        return result

    fit_then_summarise.__wrapped__ = fit
    pretrain.fit = fit_then_summarise  # `main` calls it by its module name, after the data module is connected
    from litgpt import utils

    loss_source = inspect.getsource(utils.chunked_cross_entropy)
    if (
        TRAINING_LOSS not in source
        or getattr(pretrain.chunked_cross_entropy, "__wrapped__", pretrain.chunked_cross_entropy)
        is not utils.chunked_cross_entropy
        or "torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))"
        not in loss_source
    ):
        logger.warning(
            "log_data_metrics: litgpt %s computes its training loss otherwise than `%s` over "
            "litgpt.utils.chunked_cross_entropy; data/loss is not logged, the counts are.",
            installed,
            TRAINING_LOSS,
        )
        return
    pretrain.chunked_cross_entropy = _loss_with_row_losses(utils.chunked_cross_entropy, weakref.ref(metrics))


def _loss_with_row_losses(chunked_cross_entropy, metrics_ref):
    """``litgpt.utils.chunked_cross_entropy`` computed as it does (same operations, same result), handing the
    per-row losses of a training micro-batch (grad enabled, unchunked logits) to the live metrics."""
    import torch
    from torch.nn.functional import cross_entropy

    def loss(logits, targets, chunk_size: int = 128, ignore_index: int = -100):
        metrics = metrics_ref()
        if metrics is None or not torch.is_grad_enabled() or not isinstance(logits, torch.Tensor) or chunk_size == 0:
            return chunked_cross_entropy(logits, targets, chunk_size, ignore_index)
        flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
        losses = torch.cat(
            [
                cross_entropy(logit_chunk, target_chunk, ignore_index=ignore_index, reduction="none")
                for logit_chunk, target_chunk in zip(flat_logits.split(chunk_size), flat_targets.split(chunk_size))
            ]
        )
        non_masked_elems = (flat_targets != ignore_index).sum()
        metrics.add_row_losses(losses.detach().view(targets.shape).sum(1), (targets != ignore_index).sum(1))
        return losses.sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))

    loss.__wrapped__ = chunked_cross_entropy
    return loss


def attach_scheduled_lr(optimizer) -> None:
    """When ``litgpt pretrain`` builds ``optimizer``, make its per-iteration LR (applied, and logged as
    ``learning_rate``) the optimizer's ``next_lr()``; outside ``litgpt pretrain`` nothing changes."""
    pretrain = sys.modules.get("litgpt.pretrain")
    main = getattr(pretrain, "main", None)
    frame = sys._getframe(1)
    while frame is not None and not (main is not None and frame.f_code is main.__code__):
        frame = frame.f_back
    if frame is None:
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
