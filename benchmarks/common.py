"""Helpers shared by the benchmark scripts: output, machine description, verdicts, memory readings, and the
four-source mixture that ``bench_throughput.py`` and ``bench_first_batch.py`` both read."""

from __future__ import annotations

import argparse
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
    cores = f"{machine['cores']} cores ({machine['usable_cores']} usable)"
    versions = f"torch {machine['torch']}, litdata {machine['litdata']}, numpy {machine['numpy']}"
    load_end = machine.get("loadavg_end", (float("nan"),))[0]
    return [
        f"machine: {machine['cpu']}; {cores}; {machine['platform']}",
        f"python {machine['python']}, {versions}; "
        f"load average at start {machine['loadavg_start'][0]:.2f}, at end {load_end:.2f}",
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


# --------------------------------------------------------------------------------------------
# the mixture of bench_throughput.py and bench_first_batch.py: four uint16 token shards
# --------------------------------------------------------------------------------------------

# shard directory -> (shard id, weight): the blend both scripts read
MIX = {"1": ("main/1", 0.4), "2": ("main/2", 0.3), "c1": ("c1", 0.2), "m1": ("m1", 0.1)}
VOCAB = 50_000  # token ids below this (fits uint16)


def random_documents(
    rng: np.random.Generator, tokens: int, min_len: int = 200, max_len: int = 8000
) -> list[np.ndarray]:
    """``tokens`` random uint16 token ids cut into documents of random length."""
    ids = rng.integers(0, VOCAB, size=tokens, dtype=np.uint16)
    cuts, at = [], 0
    while at < tokens:
        at += int(rng.integers(min_len, max_len + 1))
        cuts.append(min(at, tokens))
    return np.split(ids, cuts[:-1])


def build_mix(base: Path, tokens_per_source: int, chunk_bytes: int, seed: int) -> None:
    """The four shards of ``MIX`` under ``base``, unless the ones there were written with the same parameters."""
    from sharded_mix.tools.prepare import write_token_shard

    meta = {"tokens_per_source": tokens_per_source, "chunk_bytes": chunk_bytes, "seed": seed, "dirs": sorted(MIX)}
    meta_path = base / "bench_meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        log(f"  reusing shards in {base}")
        return
    shutil.rmtree(base, ignore_errors=True)
    for number, name in enumerate(sorted(MIX)):
        rng = np.random.default_rng([seed, number])
        write_token_shard(base / name, random_documents(rng, tokens_per_source), chunk_bytes, torch.uint16)
    meta_path.write_text(json.dumps(meta))


def add_mix_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the mixture and its loader that both scripts take."""
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to write the shards (kept; reused if they match); default: a temp dir, removed",
    )
    p.add_argument(
        "--tokens-per-source", type=int, default=25_000_000, help="uint16 tokens in each of the four sources"
    )
    p.add_argument("--chunk-mb", type=float, default=32.0, help="litdata chunk file size (chunk_bytes) in MB")
    p.add_argument("--block-size", type=int, default=2049)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="0,2", help="comma-separated num_workers values")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="small fast run for smoke testing (< 1 minute)")


def finish_mix_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """``--quick`` shrinks the shards; ``--workers`` becomes a list of ints."""
    if args.quick:
        args.tokens_per_source = min(args.tokens_per_source, 2_000_000)
        args.chunk_mb = min(args.chunk_mb, 2.0)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    return args


def mix_shards(root: Path, args: argparse.Namespace) -> tuple[dict, dict[str, float], dict]:
    """Write (or reuse) the mixture under ``root/mix``: ``({shard id: Shard}, weights, the data record)``."""
    from sharded_mix.streaming.discovery import discover_shards

    t = time.perf_counter()
    mix_base = root / "mix"
    log(f"[1/3] writing 4 sources x {args.tokens_per_source:,} tokens to {mix_base} ...")
    build_mix(mix_base, args.tokens_per_source, int(args.chunk_mb * (1 << 20)), args.seed)
    by_id = {shard.id: shard for shard in discover_shards(mix_base)}
    shards = {shard_id: by_id[shard_id] for shard_id, _ in MIX.values()}
    data = {
        "tokens_per_source": args.tokens_per_source,
        "total_mb": 4 * args.tokens_per_source * 2 / 1e6,
        "chunk_mb": args.chunk_mb,
        "chunks_per_source": max(s.chunks for s in shards.values()),
        "blocks_per_source": {s.id: s.blocks(args.block_size) for s in shards.values()},
        "write_s": time.perf_counter() - t,
    }
    return shards, {shard_id: w for shard_id, w in MIX.values()}, data


def mix_data_line(data: dict, args: argparse.Namespace) -> str:
    """The ``data:`` line of a report: sources, sizes, chunks, blocks and batches."""
    return (
        f"data: 4 sources x {data['tokens_per_source']:,} uint16 tokens ({data['total_mb']:.0f} MB), chunks of "
        f"{data['chunk_mb']:g} MB ({data['chunks_per_source']} per source), blocks of {args.block_size}, "
        f"batch {args.batch_size}"
    )
