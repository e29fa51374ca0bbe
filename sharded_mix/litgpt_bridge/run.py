"""What a ``litgpt pretrain`` run knows, read from its frames and files as plain values."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sharded_mix.config import checkpoint_step
from sharded_mix.litgpt_bridge.version import _calling_local, require_supported_litgpt
from sharded_mix.mixing.run_plan import RunContext
from sharded_mix.streaming.checkpoint_files import checkpoint_state  # read here, and by tools through here

logger = logging.getLogger(__name__)

__all__ = ["checkpoint_state"]


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
