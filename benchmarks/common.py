"""Helpers shared by the benchmark scripts: output, machine description, verdicts, memory readings."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import litdata
import numpy as np
import torch


def log(message: str = "") -> None:
    print(message, flush=True)


def report(results: dict, lines: list[str], json_path=None) -> dict:
    """Print the tables with the total run time (``results['seconds']``), and write ``results`` as JSON if asked."""
    log("\n".join(["", *lines, f"\ntotal run time {results['seconds']:.1f} s"]))
    if json_path:
        json_path.write_text(json.dumps(results, indent=1))
    return results


def quiet() -> None:
    """Keep the tables readable: no plan logs from sharded_mix, no library warnings."""
    logging.getLogger("sharded_mix").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def data_root(data_dir: Path | None, prefix: str) -> Iterator[Path]:
    """``data_dir`` (created if needed, kept), or a temporary directory removed at the end."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir
        return
    temp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "litdata": litdata.__version__,
        "numpy": np.__version__,
        "loadavg_start": os.getloadavg(),
    }


def machine_lines(machine: dict) -> list[str]:
    return [
        f"machine: {machine['cpu']}; {machine['cores']} cores ({machine['usable_cores']} usable); {machine['platform']}",
        f"python {machine['python']}, torch {machine['torch']}, litdata {machine['litdata']}, numpy {machine['numpy']}; "
        f"load average at start {machine['loadavg_start'][0]:.2f}, at end {machine.get('loadavg_end', (float('nan'),))[0]:.2f}",
    ]


def time_batches(loader, batches: int) -> tuple[Iterator, float, float]:
    """``(the live iterator, seconds to the first batch, seconds for the next batches)``; the caller keeps the
    iterator alive while it reads its workers' memory, then drops it."""
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return iterator, first, time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident set size (``VmHWM``) in MiB; Linux only."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")


def child_pids(pid: int | None = None) -> list[int]:
    """The direct children of a process (DataLoader workers); Linux only."""
    pid = pid or os.getpid()
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(child) for child in text]
    return children
