"""LitGPT run directories: their checkpoints, linking them into a midtraining run, and the data position saved in
them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sharded_mix.config import checkpoint_step
from sharded_mix.mixing.cursor import entry_position, saved_ordering
from sharded_mix.mixing.state import validate_state
from sharded_mix.mixing.transition import pin_note
from sharded_mix.streaming.checkpoint_files import checkpoint_file_problem  # shared with the training path

CHECKPOINT_FILE = "lit_model.pth"


def _step_entries(out_dir: Path) -> dict[int, Path]:
    """Every entry of ``out_dir`` named ``step-NNNNNNNN``, by step, in step order."""
    return dict(
        sorted((step, entry) for entry in out_dir.iterdir() if (step := checkpoint_step(entry.name)) is not None)
    )


def checkpoint_steps(out_dir: str | Path) -> dict[int, Path]:
    """The ``step-NNNNNNNN`` directories of a LitGPT ``out_dir`` that hold a checkpoint, by step."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"{str(out_dir)!r} is not a directory; give the out_dir of a litgpt pretrain run.")
    return {step: entry for step, entry in _step_entries(out_dir).items() if (entry / CHECKPOINT_FILE).is_file()}


def newest_loadable_checkpoint(out_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete ``step-*/lit_model.pth`` in a LitGPT ``out_dir``, and the newer ones skipped (newest
    first, with why).

    A missing ``out_dir`` or one without ``step-*`` directories gives ``(None, [])``.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None, []
    steps = [entry for entry in _step_entries(out_dir).values() if entry.is_dir() or entry.is_symlink()]
    skipped = []
    for directory in reversed(steps):
        checkpoint = directory / CHECKPOINT_FILE
        problem = checkpoint_file_problem(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append((checkpoint, problem))
    return None, skipped


@dataclass(frozen=True)
class CheckpointLink:
    link: Path
    target: Path
    exists: bool
    """The link is already there, pointing at ``target`` (linking again changes nothing)."""


def plan_checkpoint_links(pretrain_dir: str | Path, midtrain_dir: str | Path, step: int) -> list[CheckpointLink]:
    """Links ``midtrain_dir/step-N -> pretrain_dir/step-N`` for every checkpoint up to ``step``.

    Raises ``ValueError`` on conflicts.
    """
    pretrain_dir, midtrain_dir = Path(pretrain_dir), Path(midtrain_dir)
    steps = checkpoint_steps(pretrain_dir)
    if not steps:
        raise ValueError(
            f"{str(pretrain_dir)!r} has no step-*/{CHECKPOINT_FILE} checkpoints; is it a litgpt pretrain out_dir?"
        )
    if step not in steps:
        raise ValueError(
            f"--step {step}: {str(pretrain_dir)!r} has no checkpoint for that step; it has steps "
            f"{', '.join(map(str, steps))}. Pick one of those (train.save_interval decides which exist)."
        )
    if midtrain_dir.resolve() == pretrain_dir.resolve():
        raise ValueError(
            f"the midtraining out_dir {str(midtrain_dir)!r} is the pretraining run's; "
            "give the midtraining run its own out_dir."
        )
    links = []
    for number, directory in steps.items():
        if number > step:
            continue
        link, target = midtrain_dir / directory.name, directory.resolve()
        if link.is_symlink() and Path(os.path.realpath(link)) == target:
            links.append(CheckpointLink(link, target, exists=True))
        elif link.exists() or link.is_symlink():
            raise ValueError(
                f"{str(link)!r} already exists and is not a link to {str(target)!r}; refusing to replace it. "
                "Use a fresh midtraining out_dir, or remove it yourself if it is stale."
            )
        else:
            links.append(CheckpointLink(link, target, exists=False))
    return links


def link_checkpoints(
    pretrain_dir: str | Path, midtrain_dir: str | Path, step: int, dry_run: bool = False
) -> list[CheckpointLink]:
    """Make ``midtrain_dir`` resume from ``step`` of a pretraining run (``resume: auto`` picks it up)."""
    links = plan_checkpoint_links(pretrain_dir, midtrain_dir, step)
    if not dry_run:
        Path(midtrain_dir).mkdir(parents=True, exist_ok=True)
        for planned in links:
            if not planned.exists:
                planned.link.symlink_to(planned.target, target_is_directory=True)
    return links


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a ``lit_model.pth``, a ``step-*`` directory, or a run's ``out_dir`` (its newest step)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    if path.is_dir():
        steps = checkpoint_steps(path)
        if steps:
            return steps[max(steps)] / CHECKPOINT_FILE
    raise ValueError(
        f"no checkpoint at {str(path)!r}; give a {CHECKPOINT_FILE}, a step-* directory or a run's out_dir."
    )


def read_data_position(path: str | Path) -> dict:
    """The checkpoint's training counters and our data loader state (the model is memory-mapped, not read)."""
    import torch

    checkpoint_file = resolve_checkpoint(path)
    checkpoint = torch.load(checkpoint_file, map_location="cpu", mmap=True, weights_only=True)
    state = checkpoint.get("train_dataloader")
    if not isinstance(state, dict) or "sources" not in state:
        raise ValueError(
            f"{str(checkpoint_file)!r} holds no sharded_mix data state; "
            "was it trained with sharded_mix.ShardedMixedDataset?"
        )
    try:
        state = validate_state(state)
    except ValueError as err:
        raise ValueError(f"{str(checkpoint_file)!r}: {err}") from None
    return {
        "checkpoint": str(checkpoint_file),
        "iter_num": checkpoint.get("iter_num"),
        "step_count": checkpoint.get("step_count"),
        "data": state,
    }


def _iteration_notes(position: dict) -> list[str]:
    """What LitGPT's ``iter_num`` says of the samples: a ``final/`` checkpoint of a run that ended on
    ``train.max_tokens`` holds one micro-batch fetched after the last step and never trained on (a ``step-*`` one is
    saved right after its step: it holds none); an ``iter_num`` in micro-batches of another size or rank count (a
    resume that changed them, before sharded_mix carried ``iter_num`` over) says nothing of the samples."""
    state, iter_num, batch = position["data"], position["iter_num"], position["data"].get("batch_size")
    if not isinstance(iter_num, int) or not batch:
        return []
    extra = state["samples"] - iter_num * batch
    if extra == 0:
        return []
    if extra == batch and checkpoint_step(Path(position["checkpoint"]).parent.name) is None:
        return [
            f"note: {extra:,} of these samples per rank were fetched but not trained on (a LitGPT final/ checkpoint "
            "holds the batch fetched after the last step); resuming from here skips them"
        ]
    return [
        f"note: iter_num {iter_num:,} is not these samples in micro-batches of {batch} ({iter_num * batch:,} samples "
        "per rank): the run was resumed with another micro_batch_size or rank count, and LitGPT kept counting "
        "iter_num in the old micro-batches; the samples are the data position"
    ]


def format_data_position(position: dict) -> str:
    """A table per source: weight, epoch, position in the epoch, and the samples and trained tokens it gave the run
    over all ranks (the ``data/samples`` and ``data/tokens`` metrics)."""
    state = position["data"]
    lines = [
        f"checkpoint {position['checkpoint']}: iter_num {position['iter_num']}, step_count {position['step_count']}",
        f"{state['samples']:,} samples per rank on {state['world_size']} rank(s) on {state['nodes']} node(s), "
        f"blocks of {state['block_size']} tokens, {saved_ordering(state).describe()}",
    ]
    lines += _iteration_notes(position)
    header = f"{'source':<14} {'weight':>8} {'epoch':>6} {'position / blocks':>20} {'samples':>14} {'tokens':>16}  note"
    lines += [header, "-" * len(header)]
    entries = [
        (source, entry, f"{state['weights'][source]:.4f}", "") for source, entry in sorted(state["sources"].items())
    ]
    entries += [
        (source, entry, "-", "dropped by a later blend") for source, entry in sorted(state.get("dropped", {}).items())
    ]
    for source, entry, weight, note in entries:
        position = entry_position(entry, state["block_size"])
        if position.pin is not None:
            note = "; ".join(filter(None, [note, pin_note(position.pin)]))
        if position.split is not None:
            note = "; ".join(filter(None, [note, position.split.describe()]))
        where = f"{entry['position']:,} / {entry['blocks']:,}"
        consumed = state["consumed"].get(source, {"samples": 0, "tokens": 0})
        lines.append(
            f"{source:<14} {weight:>8} {entry['epoch']:>6} {where:>20} {consumed['samples']:>14,} "
            f"{consumed['tokens']:>16,}  {note}".rstrip()
        )
    return "\n".join(lines)
