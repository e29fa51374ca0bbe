"""One writer per run: global rank zero of ``litgpt pretrain`` holds ``out_dir/.sharded_mix.lock`` until it exits
(``claim_out_dir``, which also sets aside the half-written checkpoints a resume would pick).

The lock file says who holds it (host, pid, SLURM job and array task, start time). It is created with
``O_CREAT | O_EXCL`` (atomic, on NFS too) and held with ``fcntl.flock``, which the kernel drops when the holder's
process dies: a lock file whose flock can be taken is stale. While held, the file's modification time is refreshed
every ``HEARTBEAT_S`` seconds, and the file is removed at exit.

When another lock is found, it is live, and this run refused, unless it is stale:
- its holder ran on this host and its flock is free (the process is gone: killed, crashed, out of memory); on a
  filesystem without flock (Lustre mounted without ``-o flock``, NFS without its lock daemon), its pid is gone;
- it is this very SLURM job (same ``SLURM_JOB_ID``): a requeue of the job, whose old process is gone, unless that
  process still runs on this host (two steps of one job on one out_dir are refused);
- its holder ran on another host, its flock is free and it was not refreshed for ``STALE_AFTER_S`` seconds. flock
  may not reach across hosts on a shared filesystem (NFS without lock propagation), and a pid cannot be checked on
  another host, so a lock from another host counts as live until it has gone ten heartbeats without a refresh.
A stale lock is taken over with one WARNING naming its holder.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".sharded_mix.lock"
HEARTBEAT_S = 60
STALE_AFTER_S = 600
"""A lock from another host whose flock is free counts as live until this long after its last refresh."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock (plain data, as the lock file keeps it)."""

    host: str
    pid: int
    started: str
    """When it took the lock (local time, ISO 8601 with the UTC offset)."""
    job: str | None = None
    """``SLURM_JOB_ID`` (each array task has its own)."""
    array_job: str | None = None
    array_task: str | None = None
    restart: str | None = None
    """``SLURM_RESTART_COUNT``: how often SLURM requeued the job."""

    @classmethod
    def current(cls) -> Holder:
        env = os.environ
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            job=env.get("SLURM_JOB_ID") or None,
            array_job=env.get("SLURM_ARRAY_JOB_ID") or None,
            array_task=env.get("SLURM_ARRAY_TASK_ID") or None,
            restart=env.get("SLURM_RESTART_COUNT") or None,
        )

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names; None for an empty or foreign file."""
        try:
            fields = json.loads(text)
            return cls(**{name: fields.get(name) for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return None

    def describe(self) -> str:
        slurm = []
        if self.job:
            slurm.append(f"SLURM job {self.job}")
        if self.array_task is not None:
            slurm.append(
                f"array task {self.array_job}_{self.array_task}" if self.array_job else f"task {self.array_task}"
            )
        if self.restart and self.restart != "0":
            slurm.append(f"restart {self.restart}")
        return f"pid {self.pid} on host {self.host}" + (f" ({', '.join(slurm)})" if slurm else "")


def stale_reason(holder: Holder | None, flock_free: bool | None, me: Holder, age_s: float) -> str | None:
    """Why the lock ``holder`` left is stale (so this run, ``me``, may take it over), or None while it is live.

    ``flock_free``: this process could take the file's flock (None: the filesystem has no flock, as Lustre mounted
    without ``-o flock``: the pid decides on this host); ``age_s``: seconds since the file was last refreshed.
    """
    if holder is None:
        unheld = flock_free or (flock_free is None and age_s > STALE_AFTER_S)
        return "its lock file names no holder and nothing holds it" if unheld else None
    alive_here = holder.host == me.host and _pid_alive(holder.pid)
    if holder.job and holder.job == me.job and not alive_here:
        return f"it is this SLURM job ({me.job}): a requeue of this very run, whose old process is gone"
    if holder.host == me.host:
        gone = flock_free if flock_free is not None else not _pid_alive(holder.pid)
        return f"its process {holder.pid} is gone (it no longer holds the lock)" if gone else None
    if flock_free is not False and age_s > STALE_AFTER_S:
        return (
            f"it ran on another host and its lock was last refreshed {_duration(age_s)} ago (a live holder refreshes "
            f"it every {HEARTBEAT_S} s; after {STALE_AFTER_S // 60} minutes it counts as gone)"
        )
    return None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"


def _refusal(
    out_dir: Path, path: Path, holder: Holder | None, me: Holder, flock_free: bool | None, age_s: float
) -> str:
    who = "a run that has not written who it is yet" if holder is None else holder.describe()
    since = "" if holder is None else f" since {holder.started}"
    if holder is not None and holder.host != me.host and flock_free is not False:
        live = (
            f"it runs on another host, where its process cannot be checked from here, and refreshed its lock "
            f"{_duration(age_s)} ago; a lock from another host counts as live until {STALE_AFTER_S // 60} minutes "
            "after its last refresh"
        )
    elif holder is not None and holder.host == me.host and not _pid_alive(holder.pid):
        live = f"pid {holder.pid} has exited, but a process it started still holds the lock"
    elif flock_free is None:
        live = "its process is alive"
    else:
        live = "its lock is held"
    stop = f" (scancel {holder.job})" if holder is not None and holder.job else ""
    return (
        f"out_dir {out_dir} is in use by another run: {who} has held {path}{since} ({live}). Two runs writing one "
        "out_dir overwrite each other's step-* and final/ checkpoints. Give this run another out_dir, or stop the "
        f"other run first{stop}; if you are sure it is gone, delete {path}."
    )


class _Held:
    """A lock this process holds: its open file (with the flock) and path."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def is_ours(self) -> bool:
        try:
            now, held = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


_HELD: dict[str, _Held] = {}
_heartbeat: threading.Event | None = None


def claim_out_dir(out_dir: str | Path, resume: Any, pick: Callable[[], Path | None]) -> None:
    """Global rank zero of a training run makes it the one writer of ``out_dir`` (``hold_run_lock``) and, when it
    resumes, makes ``pick()`` (the checkpoint the trainer resumes) a complete one (``settle_resume``); their
    ``ValueError`` is raised on every rank, before any step."""
    from sharded_mix.streaming.checkpoint_files import settle_resume
    from sharded_mix.streaming.distributed import from_rank_zero  # torch: not needed by the lock itself

    def claim() -> None:
        hold_run_lock(out_dir)
        if resume:
            settle_resume(pick, resume, Path(out_dir))

    from_rank_zero(claim)


def hold_run_lock(out_dir: str | Path) -> Path:
    """Make this process the one writer of ``out_dir`` until it exits, and return the lock file's path.

    A ``ValueError`` naming the holder when another live run holds it; a stale lock is taken over with one
    WARNING. Holding it again from the same process changes nothing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    key = os.path.realpath(path)
    held = _HELD.get(key)
    if held is not None and held.is_ours():
        return path
    me = Holder.current()
    for _ in range(3):
        fd = _create(path, me)
        if fd is not None:
            _keep(key, _Held(fd, path))
            return path
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # released meanwhile
        kept = False
        try:
            flock_free = _try_flock(fd)
            if not _Held(fd, path).is_ours():
                continue  # replaced meanwhile
            holder = Holder.parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
            age_s = time.time() - os.fstat(fd).st_mtime
            reason = stale_reason(holder, flock_free, me, age_s)
            if reason is None:
                raise ValueError(_refusal(out_dir, path, holder, me, flock_free, age_s))
            who = "a holder that wrote no name" if holder is None else f"{holder.describe()} (since {holder.started})"
            logger.warning(
                "%s: taking over the lock of %s from %s: %s. This run is now the one writer of its out_dir.",
                path,
                out_dir,
                who,
                reason,
            )
            if flock_free:
                _write(fd, me)
                _keep(key, _Held(fd, path))
                kept = True
                return path
            os.unlink(path)  # its holder keeps a flock on a file nobody opens again; this run makes a new one
        finally:
            if not kept:
                os.close(fd)
    raise ValueError(
        f"cannot lock out_dir {out_dir}: {path} changed under this run three times in a row (runs starting on it at "
        "the same moment?). Give each run its own out_dir, and start this one again."
    )


def _create(path: Path, me: Holder) -> int | None:
    """The open lock file, created, flocked and written by this process; None when one exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    if _try_flock(fd) is False:  # another run judged the empty file stale in the instant before the flock
        os.close(fd)
        return None
    _write(fd, me)
    return fd


_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
"""What flock fails with on a filesystem that has none (Lustre without ``-o flock``, NFS without its lock daemon)."""


def _try_flock(fd: int) -> bool | None:
    """Whether this process took the file's flock (None: the filesystem has no flock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if err.errno in _NO_FLOCK:
            return None
        raise
    return True


def _write(fd: int, me: Holder) -> None:
    data = (json.dumps(asdict(me), indent=1) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _keep(key: str, held: _Held) -> None:
    global _heartbeat
    _HELD[key] = held
    if _heartbeat is None:
        _heartbeat = threading.Event()
        threading.Thread(target=_refresh, args=(_heartbeat,), name="sharded_mix-run-lock", daemon=True).start()
        atexit.register(release_run_locks)


def _refresh(stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        for held in list(_HELD.values()):
            try:
                os.utime(held.fd)
            except OSError:
                pass  # a full or unreachable filesystem: the next refresh tries again


def release_run_locks() -> None:
    """Remove the lock files this process holds (at exit): a lock taken over meanwhile is left to its new holder."""
    global _heartbeat
    for key, held in list(_HELD.items()):
        try:
            if held.is_ours():
                os.unlink(held.path)
        except OSError:
            pass
        finally:
            os.close(held.fd)
            del _HELD[key]
    if _heartbeat is not None:
        _heartbeat.set()
        _heartbeat = None
        atexit.unregister(release_run_locks)
