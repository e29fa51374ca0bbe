"""A run's checkpoint files on the training path: whether a ``torch.save`` file is complete, what one holds of the
data (memory-mapped, no tensor read), and the half-written newest ones a resume would pick, set aside.

``tools/checkpoints.py`` (``sharded-mix resume-checkpoint``, the SLURM script's choice) and the LitGPT bridge
(``resume: auto`` under ``litgpt pretrain``) judge a checkpoint by the same ``checkpoint_file_problem``.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_ZIP_LOCAL_HEADER = 30
SET_ASIDE_PREFIX = "incomplete-"
"""A set-aside ``step-N`` directory is renamed ``incomplete-step-N-<UTC time>``: LitGPT's ``step-*`` glob, and
every tool that lists a run's steps, no longer see it."""


def checkpoint_file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete zip-format ``torch.save`` file, or None when it is.

    Reads the zip central directory only, so it is cheap for checkpoints of any size: a save that was cut
    short has no central directory (``torch.save`` writes it last). No CRC pass; the data is not read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)"
        with open(path, "rb") as file:
            magic = file.read(4)
        if not b"PK\x03\x04".startswith(magic):
            return "not a zip-format torch checkpoint (a legacy torch.save file, or not a checkpoint at all)"
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, EOFError, ValueError):
        return "truncated (not a complete zip file)"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if not any(entry.filename.count("/") == 1 and entry.filename.endswith("/data.pkl") for entry in entries):
        return "a zip file without a */data.pkl entry, so not a torch checkpoint"
    for entry in entries:
        end = entry.header_offset + _ZIP_LOCAL_HEADER + len(entry.orig_filename.encode()) + entry.compress_size
        if end > size:
            return f"truncated ({entry.filename} ends at byte {end:,}, past the end of the {size:,}-byte file)"
    return None


def checkpoint_state(path: str | Path) -> dict | None:
    """``step_count``, ``iter_num`` and the data state (``train_dataloader``) of a LitGPT checkpoint, memory-mapped
    (no tensor is read); None when the file is missing or unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # a half-written checkpoint is not one to read positions from
        logger.warning("cannot read %s (%s); ignoring it", path, err)
        return None
    return {key: checkpoint.get(key) for key in ("step_count", "iter_num", "train_dataloader")}


def settle_resume(pick: Callable[[], Path | None], resume: object, out_dir: Path) -> list[tuple[Path, Path, str]]:
    """Make the checkpoint a resume picks a complete one: ``pick()`` is the one LitGPT would resume now.

    For ``resume: auto`` / ``True`` (LitGPT picks the newest ``step-*``), each half-written newest checkpoint's
    directory is renamed aside, with one WARNING naming it, until ``pick()`` names a complete one; when none is,
    the names are put back and a ``ValueError`` lists them. A half-written checkpoint named explicitly
    (``--resume PATH``) is a ``ValueError``. Returns ``(checkpoint, set aside as, problem)`` of each one set aside.
    """
    path = pick()
    if path is None or (problem := checkpoint_file_problem(path)) is None:
        return []
    if resume not in (True, "auto"):
        raise ValueError(
            f"resume checkpoint {path} is {problem}: a save cut short (killed, or a full disk). Resume from a complete "
            f"one: `sharded-mix resume-checkpoint {out_dir}` prints the newest, or use resume: auto, which sets "
            "half-written ones aside."
        )
    moved: list[tuple[Path, Path, str]] = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    while path is not None and problem is not None:
        directory = path.parent
        aside = directory.with_name(f"{SET_ASIDE_PREFIX}{directory.name}-{stamp}")
        if directory.name.startswith(SET_ASIDE_PREFIX) or aside.exists() or any(path == old for old, _, _ in moved):
            break  # not ours to rename (or already renamed): refuse below rather than loop
        directory.rename(aside)
        moved.append((path, aside, problem))
        path = pick()
        problem = None if path is None else checkpoint_file_problem(path)
    if path is None or problem is not None:
        for old, aside, _ in reversed(moved):
            aside.rename(old.parent)
        bad = [(old, why) for old, _, why in moved] + ([] if path is None else [(path, problem)])
        listing = "; ".join(f"{old} is {why}" for old, why in bad)
        raise ValueError(
            f"resume: {resume!r} finds no complete checkpoint in {out_dir}: {listing}. Restore a complete one, or "
            "delete those step-* directories to start the run over (`sharded-mix resume-checkpoint "
            f"{out_dir}` checks them)."
        )
    for old, aside, problem in moved:
        logger.warning(
            "resume: %s would resume %s, which is %s (a save cut short: killed, or a full disk); set it aside as %s, "
            "so LitGPT resumes %s. Delete %s once you do not need it.",
            resume,
            old,
            problem,
            aside,
            path,
            aside,
        )
    return moved
