#!/usr/bin/env python
"""Start-up of the data module with many tiny shards (discovery, weights, loader, first batch).

Run from the repository root:

    .venv/bin/python benchmarks/bench_startup.py            # 200 and 1,000 shards; about 20 s on 2 cores
    .venv/bin/python benchmarks/bench_startup.py --quick    # 50 and 200 shards

Each tiny shard holds two blocks of uint16 tokens (~8 KB), spread over ``main/N``, ``cN``, ``mN``,
``wN`` and ``qN``. Two timings, each the median of ``--repeats`` runs with ``num_workers=0``:
``discover_shards`` + ``mix_spec_from_fields(proportional_sampling=True)`` + ``resolve_weights``
+ ``mixture_loader`` + first batch, and the same through the data module
(``ShardedMixedDataset(...).connect(...)``, ``setup()``, ``train_dataloader()``, first batch) with a
one-shard validation directory. Target: 1,000 shards start in <= 3 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import data_root, log, machine_info, machine_lines, quiet, verdict  # noqa: E402

from sharded_mix.datamodule import ShardedMixedDataset  # noqa: E402
from sharded_mix.mixing.weights import mix_spec_from_fields, resolve_weights  # noqa: E402
from sharded_mix.shards import DEFAULT_SHARD_TYPES  # noqa: E402
from sharded_mix.streaming.discovery import discover_shards  # noqa: E402
from sharded_mix.streaming.stream import mixture_loader  # noqa: E402
from sharded_mix.tools.prepare import write_token_shard  # noqa: E402

TARGET_STARTUP_S = 3.0  # start-up with the largest shard count, at most
TARGET_STARTUP_SHARDS = 1000
VOCAB = 50_000  # token ids below this (fits uint16)


def type_plan(count: int) -> list[str]:
    """Directory names for ``count`` tiny shards, spread over main and the typed prefixes."""
    prefixes = ["main", "c", "m", "w", "q"]
    numbers = dict.fromkeys(prefixes, 0)
    names = []
    for i in range(count):
        prefix = prefixes[i % len(prefixes)]
        numbers[prefix] += 1
        names.append(f"main/{numbers[prefix]}" if prefix == "main" else f"{prefix}{numbers[prefix]}")
    return names


def build_many(base: Path, count: int, block_size: int, seed: int) -> None:
    """``count`` tiny shards (two blocks, ~8 KB of uint16 tokens each) under ``base``."""
    meta = {"count": count, "block_size": block_size, "seed": seed}
    meta_path = base / "bench_meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return
    shutil.rmtree(base, ignore_errors=True)
    rng = np.random.default_rng([seed, count])
    for name in type_plan(count):
        docs = [rng.integers(0, VOCAB, size=block_size + 50, dtype=np.uint16) for _ in range(2)]
        write_token_shard(base / name, docs, chunk_bytes=1 << 20, dtype=torch.uint16)
    meta_path.write_text(json.dumps(meta))


def time_startup(base: Path, args) -> dict:
    """discover_shards + resolve_weights (proportional) + mixture_loader + first batch, num_workers=0."""
    timings = {}
    start = time.perf_counter()
    shards = discover_shards(base)
    timings["discover_s"] = time.perf_counter() - start
    t = time.perf_counter()
    spec = mix_spec_from_fields(proportional_sampling=True)
    weights = resolve_weights(spec, shards, list(DEFAULT_SHARD_TYPES))
    timings["weights_s"] = time.perf_counter() - t
    t = time.perf_counter()
    loader = mixture_loader(shards, weights, args.block_size, args.batch_size, args.seed, True, 0)
    timings["loader_s"] = time.perf_counter() - t
    t = time.perf_counter()
    iterator = iter(loader)
    batch = next(iterator)
    timings["first_batch_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    assert tuple(batch.shape) == (args.batch_size, args.block_size)
    assert len(shards) == len(weights), (len(shards), len(weights))
    timings["shards"] = len(shards)
    del iterator, loader
    gc.collect()
    return timings


def time_datamodule(base: Path, val: Path, args) -> dict:
    """ShardedMixedDataset(...).connect(...); setup(); train_dataloader(); first batch (num_workers=0)."""
    start = time.perf_counter()
    data = ShardedMixedDataset(
        data_path=base, val_data_path=val, proportional_sampling=True, num_workers=0, seed=args.seed
    )
    data.connect(batch_size=args.batch_size, max_seq_length=args.block_size - 1)
    data.setup()
    setup_s = time.perf_counter() - start
    iterator = iter(data.train_dataloader())
    batch = next(iterator)
    total = time.perf_counter() - start
    assert tuple(batch.shape) == (args.batch_size, args.block_size)
    del iterator, data
    gc.collect()
    return {"setup_s": setup_s, "total_s": total}


def report(results: dict) -> list[str]:
    lines = machine_lines(results["machine"])
    lines.append("")
    lines.append(
        "Start-up: discover_shards + resolve_weights + mixture_loader + first batch, num_workers=0 (median of repeats)"
    )
    lines.append(
        "| shards | discover (s) | weights (s) | loader (s) | first batch (s) | total (s) "
        "| data module setup+first batch (s) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for n, row in results["startup"].items():
        dm = row.get("datamodule_total_s")
        lines.append(
            f"| {n} | {row['discover_s']:.3f} | {row['weights_s']:.3f} | {row['loader_s']:.3f} | "
            f"{row['first_batch_s']:.3f} | {row['total_s']:.3f} | {'' if dm is None else f'{dm:.3f}'} |"
        )
    lines.append("")
    lines.append("Target")
    lines.append("| measure | value | target | result |")
    lines.append("|---|---:|---:|---|")
    for n, row in results["startup"].items():
        ok = row["total_s"] <= TARGET_STARTUP_S
        target = f"<= {TARGET_STARTUP_S:.0f} s" if int(n) >= TARGET_STARTUP_SHARDS else "(info)"
        result = verdict(ok) if int(n) >= TARGET_STARTUP_SHARDS else ""
        lines.append(f"| start-up, {n} shards | {row['total_s']:.2f} s | {target} | {result} |")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where to write the shards (kept; reused if they match); default: a temp dir, removed",
    )
    p.add_argument("--shard-counts", default="200,1000", help="comma-separated tiny-shard counts")
    p.add_argument("--block-size", type=int, default=2049)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="repeats of each timing (median)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="50 and 200 shards, 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.shard_counts, args.repeats = "50,200", 3
    args.shard_counts = [int(n) for n in str(args.shard_counts).split(",") if n.strip()]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    began = time.perf_counter()
    quiet()
    results: dict = {"machine": machine_info()}
    with data_root(args.data_dir, "bench_startup_") as root:
        # ---- start-up with many shards
        log(f"start-up with {args.shard_counts} tiny shards")
        val = root / "val"
        build_many_val = not (val / "index.json").is_file()
        if build_many_val:
            rng = np.random.default_rng(args.seed)
            write_token_shard(
                val,
                [rng.integers(0, VOCAB, size=args.block_size * 2, dtype=np.uint16)],
                chunk_bytes=1 << 20,
                dtype=torch.uint16,
            )
        startup: dict = {}
        for n in args.shard_counts:
            base = root / f"many-{n}"
            t = time.perf_counter()
            build_many(base, n, args.block_size, args.seed)
            built = time.perf_counter() - t
            runs = [time_startup(base, args) for _ in range(args.repeats)]
            row = {
                key: statistics.median(r[key] for r in runs)
                for key in ("discover_s", "weights_s", "loader_s", "first_batch_s", "total_s")
            }
            row["total_all_s"] = [r["total_s"] for r in runs]
            row["shards"] = runs[0]["shards"]
            dm = [time_datamodule(base, val, args) for _ in range(args.repeats)]
            row["datamodule_setup_s"] = statistics.median(r["setup_s"] for r in dm)
            row["datamodule_total_s"] = statistics.median(r["total_s"] for r in dm)
            row["build_s"] = built
            startup[str(n)] = row
            log(
                f"      {n} shards (built in {built:.1f} s): total {row['total_all_s']}, "
                f"data module {row['datamodule_total_s']:.3f} s"
            )
        results["startup"] = startup
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - began
    lines = report(results)
    log("\n".join(["", *lines, "", f"total run time {results['total_s']:.1f} s"]))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
