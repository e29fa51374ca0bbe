"""One writer per out_dir: the lock file, live and stale holders (real processes holding real flocks)."""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sharded_mix.streaming import run_lock
from sharded_mix.streaming.run_lock import LOCK_NAME, Holder, hold_run_lock, release_run_locks

HOLD = """
import os, sys, time
from sharded_mix.streaming.run_lock import hold_run_lock
hold_run_lock(sys.argv[1])
print("held", flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # gone without releasing: the lock file stays, the kernel drops the flock
time.sleep(600)
"""
FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""

ALIVE = "import time; print('held', flush=True); time.sleep(600)"


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    yield
    release_run_locks()


@pytest.fixture
def spawn():
    """Start ``python -c CODE ARGS...`` and wait until it says it holds its lock; killed afterwards."""
    started = []

    def start(code, *args, env=None):
        process = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def write_holder(out_dir, **fields) -> None:
    holder = {"host": "node-b", "pid": 4242, "started": "2025-01-02T03:04:05+00:00", **fields}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LOCK_NAME).write_text(json.dumps(holder))


def holder_of(out_dir) -> Holder:
    return Holder.parse((out_dir / LOCK_NAME).read_text())


def test_the_lock_names_its_holder_and_is_released_at_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "981")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "980")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    path = hold_run_lock(tmp_path / "out")
    assert path == tmp_path / "out" / LOCK_NAME
    holder = holder_of(tmp_path / "out")
    assert (holder.host, holder.pid, holder.job, holder.array_task) == (socket.gethostname(), os.getpid(), "981", "3")
    assert holder.describe() == f"pid {os.getpid()} on host {socket.gethostname()} (SLURM job 981, array task 980_3)"
    assert hold_run_lock(tmp_path / "out") == path  # the same process again: nothing changes
    release_run_locks()
    assert not path.exists()


def test_a_second_run_is_refused_with_the_holder_and_the_fix(tmp_path, spawn, caplog):
    out = tmp_path / "out"
    first = spawn(HOLD, out, "stay")
    since = holder_of(out).started
    with pytest.raises(ValueError) as refused:
        hold_run_lock(out)
    assert str(refused.value) == (
        f"out_dir {out} is in use by another run: pid {first.pid} on host {socket.gethostname()} has held "
        f"{out / LOCK_NAME} since {since} (its lock is held). Two runs writing one out_dir overwrite each other's "
        "step-* and final/ checkpoints. Give this run another out_dir, or stop the other run first; if you are sure "
        f"it is gone, delete {out / LOCK_NAME}."
    )
    assert holder_of(out).pid == first.pid  # untouched
    first.send_signal(signal.SIGTERM)  # killed as SLURM kills: no atexit, the lock file stays
    first.wait()
    with caplog.at_level(logging.WARNING, logger="sharded_mix.streaming.run_lock"):
        hold_run_lock(out)
    assert holder_of(out).pid == os.getpid()
    (warning,) = caplog.records
    assert warning.getMessage() == (
        f"{out / LOCK_NAME}: taking over the lock of {out} from pid {first.pid} on host {socket.gethostname()} "
        f"(since {since}): its process {first.pid} is gone (it no longer holds the lock). This run is now the one "
        "writer of its out_dir."
    )


def test_a_dead_holders_lock_is_taken_over_with_one_warning(tmp_path, spawn, caplog):
    out = tmp_path / "out"
    gone = spawn(HOLD, out, "die")
    gone.wait()
    assert (out / LOCK_NAME).exists()
    with caplog.at_level(logging.WARNING):
        hold_run_lock(out)
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert f"from pid {gone.pid} on host {socket.gethostname()}" in caplog.text
    assert f"its process {gone.pid} is gone" in caplog.text
    assert holder_of(out).pid == os.getpid()


def test_the_same_slurm_job_takes_over_its_own_lock_from_another_host(tmp_path, spawn, monkeypatch, caplog):
    """A requeued job on another node: its old node's lock (held there, as NFS may keep it) is this very run's."""
    out = tmp_path / "out"
    write_holder(out, job="777")
    spawn(FLOCK, out / LOCK_NAME)  # the flock still held
    monkeypatch.setenv("SLURM_JOB_ID", "778")
    with pytest.raises(ValueError, match=r"pid 4242 on host node-b \(SLURM job 777\) has held .* \(scancel 777\)"):
        hold_run_lock(out)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with caplog.at_level(logging.WARNING):
        hold_run_lock(out)
    assert "it is this SLURM job (777): a requeue of this very run, whose old process is gone" in caplog.text
    assert (holder_of(out).pid, holder_of(out).job) == (os.getpid(), "777")


def test_two_live_steps_of_one_slurm_job_on_this_host_are_refused(tmp_path, spawn, monkeypatch):
    out = tmp_path / "out"
    first = spawn(HOLD, out, "stay", env={"SLURM_JOB_ID": "777"})
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with pytest.raises(ValueError, match=f"pid {first.pid} on host .* \\(SLURM job 777\\)"):
        hold_run_lock(out)


def test_a_lock_from_another_host_counts_as_live_until_its_refreshes_stop(tmp_path, caplog):
    """Its flock is free here (flock may not reach across hosts on NFS) and its pid cannot be checked."""
    out = tmp_path / "out"
    write_holder(out)
    with pytest.raises(ValueError, match=r"it runs on another host, .* refreshed its lock \d+ s ago; a lock from"):
        hold_run_lock(out)
    old = time.time() - run_lock.STALE_AFTER_S - 60
    os.utime(out / LOCK_NAME, (old, old))
    with caplog.at_level(logging.WARNING):
        hold_run_lock(out)
    assert "it ran on another host and its lock was last refreshed 11 minutes ago" in caplog.text
    assert holder_of(out).pid == os.getpid()


def test_a_lock_file_naming_no_holder(tmp_path, spawn, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    holder = spawn(FLOCK, out / LOCK_NAME)  # a run that created it and has not written it yet
    with pytest.raises(ValueError, match="a run that has not written who it is yet has held"):
        hold_run_lock(out)
    holder.kill()
    holder.wait()
    with caplog.at_level(logging.WARNING):
        hold_run_lock(out)
    assert "from a holder that wrote no name: its lock file names no holder and nothing holds it" in caplog.text


def test_a_filesystem_without_flock_falls_back_to_the_pid(tmp_path, spawn, monkeypatch, caplog):
    """Lustre without ``-o flock`` answers flock with ENOSYS: on this host the holder's pid decides."""
    out = tmp_path / "out"
    write_holder(out, host=socket.gethostname(), pid=spawn(ALIVE).pid)  # alive, holding no flock

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    with pytest.raises(ValueError, match=r"since 2025-01-02T03:04:05\+00:00 \(its process is alive\)"):
        hold_run_lock(out)
    write_holder(out, host=socket.gethostname(), pid=2**22 + 1)  # above any pid_max: gone
    with caplog.at_level(logging.WARNING):
        hold_run_lock(out)
    assert f"its process {2**22 + 1} is gone" in caplog.text
    assert holder_of(out).pid == os.getpid()


def test_the_heartbeat_refreshes_the_lock_file(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    path = hold_run_lock(tmp_path / "out")
    os.utime(path, (1, 1))
    deadline = time.time() + 5
    while path.stat().st_mtime < 10 and time.time() < deadline:
        time.sleep(0.05)
    assert path.stat().st_mtime > time.time() - 60


def _claim_worker(rank: int, free: str, held: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_MASTER_PORT"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    from sharded_mix.streaming.run_lock import _HELD, claim_out_dir

    claim_out_dir(free, False, lambda: None)
    results = {"locks": len(_HELD)}
    try:
        claim_out_dir(held, "auto", lambda: None)
    except ValueError as err:
        results["error"] = str(err)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def test_only_rank_zero_locks_and_every_rank_is_refused(tmp_path, spawn):
    holder = spawn(HOLD, tmp_path / "held", "stay")
    os.environ["TEST_MASTER_PORT"] = str(31500 + os.getpid() % 1000)
    mp.start_processes(
        _claim_worker,
        args=(str(tmp_path / "free"), str(tmp_path / "held"), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [result["locks"] for result in results] == [1, 0]
    assert f"is in use by another run: pid {holder.pid} on host" in results[0]["error"]
    assert results[1]["error"] == results[0]["error"] + " (raised on rank 0)"
    assert not (tmp_path / "free" / LOCK_NAME).exists()  # released when rank 0 exited
    assert holder_of(tmp_path / "held").pid == holder.pid
