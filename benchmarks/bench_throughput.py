#!/usr/bin/env python
"""Throughput of the sharded_mix mixture loader against litdata and raw memmap reads, over the same bytes.

Run from the repository root:

    .venv/bin/python benchmarks/bench_throughput.py            # default run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_throughput.py --quick    # smoke test (< 1 minute)

The bytes are four uint16 token shards ``1``, ``2``, ``c1``, ``m1`` (``common.MIX``). Tokens/s of
blocks of ``--block-size`` tokens in batches of ``--batch-size``, at each ``--workers`` count, for
the same number of batches after a warm-up, of
(a) our mixture (``mixture_loader``, shuffle=True),
(b) one litdata ``StreamingDataset`` over shard ``1`` through ``StreamingDataLoader``,
(c) vanilla litdata ``CombinedStreamingDataset`` over the four shards (same weights),
(d) raw ``numpy.memmap`` reads of random blocks of the chunk files in a plain DataLoader;
then a ratio table with pass/fail against the target.

Time to first batch, fresh and resumed, is ``bench_first_batch.py``; start-up with many shards is
``bench_startup.py``; memory at scale is ``bench_scale.py``.

This is a script, not a test: it writes nothing outside ``--data-dir`` (a temporary directory
by default, removed at the end) and ``--json`` if given.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import (  # noqa: E402
    MIX,
    add_mix_arguments,
    data_root,
    finish_mix_arguments,
    log,
    machine_info,
    machine_lines,
    mix_data_line,
    mix_shards,
    quiet,
    verdict,
)
from litdata import TokensLoader  # noqa: E402
from litdata.streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset  # noqa: E402

from sharded_mix.shards import Shard  # noqa: E402
from sharded_mix.streaming.stream import mixture_loader  # noqa: E402

SINGLE_DIR = "1"  # the shard the single StreamingDataset reads
CANDIDATES = ("ours", "single", "combined", "memmap")
LABELS = {"single": "one StreamingDataset", "combined": "vanilla Combined", "memmap": "raw memmap"}

TARGET_VS_STREAMING = 0.95  # ours / one StreamingDataset at equal workers, at least


# --------------------------------------------------------------------------------------------
# raw memmap baseline
# --------------------------------------------------------------------------------------------


def chunk_layout(shard: Shard) -> list[tuple[str, int, int]]:
    """``(chunk file, byte offset of the tokens, blocks)`` of each chunk of a token shard, from index.json.

    A TokensLoader chunk file is a header (uint32 item count N, then N + 1 uint32 offsets) followed by
    the raw tokens; the first offset is where the tokens start.
    """
    index = json.loads((Path(shard.path) / "index.json").read_text())
    layout = []
    for chunk, tokens in zip(index["chunks"], shard.chunk_tokens):
        path = os.path.join(shard.path, chunk["filename"])
        header = np.fromfile(path, dtype=np.uint32, count=2)
        items, first_offset = int(header[0]), int(header[1])
        assert items == chunk["chunk_size"], (path, items, chunk["chunk_size"])
        assert first_offset == 4 * (items + 2), (path, first_offset, items)
        layout.append((path, first_offset, tokens))
    return layout


class MemmapBlocks(IterableDataset):
    """Endless random blocks read straight from the chunk files with numpy.memmap, sources drawn by weight."""

    def __init__(self, shards: list[Shard], weights: list[float], block_size: int, seed: int) -> None:
        self.layouts = [chunk_layout(shard) for shard in shards]
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.block_size = block_size
        self.seed = seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        bs = self.block_size
        sources = []
        for layout in self.layouts:
            maps = [np.memmap(path, dtype=np.uint16, mode="r", offset=offset) for path, offset, _ in layout]
            blocks = np.asarray([tokens // bs for _, _, tokens in layout], dtype=np.int64)
            sources.append((maps, np.cumsum(blocks), int(blocks.sum())))
        cum_weights = np.cumsum(self.weights)
        while True:
            maps, ends, total = sources[int(np.searchsorted(cum_weights, rng.random(), side="right"))]
            block = int(rng.integers(total))
            chunk = int(np.searchsorted(ends, block, side="right"))
            local = block - (int(ends[chunk - 1]) if chunk else 0)
            yield torch.from_numpy(np.array(maps[chunk][local * bs : (local + 1) * bs]))


def verify_memmap_layout(shard: Shard, block_size: int) -> int:
    """Compare memmap reads with StreamingDataset's blocks (first, last, and a spread of blocks per chunk)."""
    dataset = StreamingDataset(shard.path, item_loader=TokensLoader(block_size=block_size), shuffle=False)
    checked, first_block = 0, 0
    for path, offset, tokens in chunk_layout(shard):
        blocks = tokens // block_size
        mm = np.memmap(path, dtype=np.uint16, mode="r", offset=offset)
        for local in sorted({0, 1, blocks // 2, blocks - 1}):
            ours = np.asarray(mm[local * block_size : (local + 1) * block_size])
            theirs = np.asarray(dataset[first_block + local])
            if not np.array_equal(ours, theirs):
                raise AssertionError(f"memmap layout mismatch in {path} block {local}")
            checked += 1
        first_block += blocks
    return checked


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------


def measure_throughput(make_loader: Callable[[], object], batches: int, warmup: int) -> dict:
    """Steady-state tokens/s over ``batches`` batches after ``warmup`` batches.

    A loader that runs out (litdata's datasets end after one epoch) is restarted; the restart and
    the first batch of the new epoch are left out of the timing and the count (reported as
    ``restarts`` and ``restart_s``), so every candidate is timed over the same number of
    steady-state batches.
    """
    loader = make_loader()
    iterator = iter(loader)
    restarts, restart_s = 0, 0.0

    def restart() -> None:
        nonlocal iterator, restarts, restart_s
        start = time.perf_counter()
        iterator = iter(loader)
        next(iterator)
        restarts += 1
        restart_s += time.perf_counter() - start

    start = time.perf_counter()
    done = 0
    while done < warmup:
        try:
            next(iterator)
            done += 1
        except StopIteration:
            restart()
    warm = time.perf_counter() - start
    tokens, elapsed, done = 0, 0.0, 0
    while done < batches:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            restart()
            continue
        elapsed += time.perf_counter() - start
        tokens += batch.numel()
        done += 1
    iterator = loader = None  # drop the loader (and its workers) before collecting; restart() is done with it
    gc.collect()
    return {
        "tokens_per_s": tokens / elapsed,
        "seconds": elapsed,
        "tokens": tokens,
        "warmup_s": warm,
        "restarts": restarts,
        "restart_s": restart_s,
    }


def build_loader(name: str, workers: int, shards: list[Shard], weights: dict[str, float], single: Shard, args):
    """A fresh loader of candidate ``name`` (one of ``CANDIDATES``) with ``workers`` workers."""
    if name == "ours":
        return mixture_loader(shards, weights, args.block_size, args.batch_size, args.seed, True, workers)
    if name == "memmap":
        memmap = MemmapBlocks(shards, [weights[s.id] for s in shards], args.block_size, args.seed)
        return DataLoader(memmap, batch_size=args.batch_size, num_workers=workers)
    datasets = [
        StreamingDataset(s.path, item_loader=TokensLoader(block_size=args.block_size), shuffle=True, seed=args.seed)
        for s in ([single] if name == "single" else shards)
    ]
    if name == "single":
        return StreamingDataLoader(datasets[0], batch_size=args.batch_size, num_workers=workers)
    combined = CombinedStreamingDataset(
        datasets=datasets, seed=args.seed, weights=[weights[s.id] for s in shards], iterate_over_all=False
    )
    return StreamingDataLoader(combined, batch_size=args.batch_size, num_workers=workers)


# --------------------------------------------------------------------------------------------
# report and main
# --------------------------------------------------------------------------------------------


def report(results: dict, args) -> list[str]:
    lines = machine_lines(results["machine"])
    lines.append(
        f"{mix_data_line(results['data'], args)}, {args.batches} timed batches after {args.warmup} warm-up "
        f"per candidate, {args.rounds} interleaved round(s)"
    )
    lines.append("")
    lines.append("Throughput, M tokens/s: best of rounds (median of rounds)")
    lines.append(
        "| workers | ours (mixture) | one StreamingDataset | vanilla Combined | raw memmap "
        "| restarts per round (ours/one/comb/mm) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---|")
    for w, row in results["throughput"].items():
        cells = " | ".join(
            f"{row[n]['tokens_per_s'] / 1e6:.1f} ({statistics.median(row[n]['rounds']) / 1e6:.1f})" for n in CANDIDATES
        )
        restarts = "/".join(str(row[n]["restarts"]) for n in CANDIDATES)
        lines.append(f"| {w} | {cells} | {restarts} |")
    lines.append("")
    lines.append("Ratios and targets (throughput: best of rounds (median of rounds); the verdict uses best)")
    lines.append("| measure | value | target | result |")
    lines.append("|---|---:|---:|---|")
    for w, row in results["throughput"].items():
        ours = row["ours"]["tokens_per_s"]
        ours_med = statistics.median(row["ours"]["rounds"])
        for name, label in LABELS.items():
            r = ours / row[name]["tokens_per_s"]
            r_med = ours_med / statistics.median(row[name]["rounds"])
            value = f"{r:.2f}x ({r_med:.2f}x)"
            if name == "single":
                target = f">= {TARGET_VS_STREAMING:.2f}x | {verdict(r >= TARGET_VS_STREAMING)}"
                lines.append(f"| ours / {label}, workers={w} | {value} | {target} |")
            else:
                lines.append(f"| ours / {label}, workers={w} | {value} | (info) | |")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_mix_arguments(p)
    p.add_argument("--batches", type=int, default=10_000, help="timed batches per candidate")
    p.add_argument("--warmup", type=int, default=500, help="untimed batches first (includes worker start-up)")
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds of the throughput runs (order rotated); best and median reported",
    )
    args = finish_mix_arguments(p.parse_args(argv))
    if args.quick:
        args.batches = min(args.batches, 1000)
        args.warmup = min(args.warmup, 50)
        args.rounds = 1
    return args


def run_rounds(make: Callable[[str, int], object], args) -> dict:
    """Every candidate at every worker count, ``--rounds`` times in a rotated order; best round kept."""
    throughput: dict = {str(w): {} for w in args.workers}
    for round_ in range(args.rounds):
        names = list(CANDIDATES)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate the order each round
        for w in args.workers:
            for name in names:
                cur = measure_throughput(functools.partial(make, name, w), args.batches, args.warmup)
                best = throughput[str(w)].get(name)
                rounds = (best["rounds"] if best else []) + [cur["tokens_per_s"]]
                chosen = best if best is not None and best["tokens_per_s"] >= cur["tokens_per_s"] else cur
                chosen["rounds"] = rounds
                throughput[str(w)][name] = chosen
                log(
                    f"      round {round_ + 1} workers={w} {name:8s} {cur['tokens_per_s'] / 1e6:7.2f} M tok/s"
                    f" (warm-up {cur['warmup_s']:.2f} s, {cur['seconds']:.2f} s timed, restarts {cur['restarts']})"
                )
    return throughput


def main(argv=None) -> dict:
    args = parse_args(argv)
    began = time.perf_counter()
    quiet()
    machine = machine_info()
    log(
        f"bench_throughput: {machine['cores']} cores, python {machine['python']}, torch {machine['torch']}, "
        f"litdata {machine['litdata']}"
    )
    results: dict = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with data_root(args.data_dir, "bench_throughput_") as root:
        by_id, weights, data = mix_shards(root, args)
        shards = list(by_id.values())
        single = by_id[MIX[SINGLE_DIR][0]]
        data["memmap_blocks_verified"] = checked = verify_memmap_layout(single, args.block_size)
        results["data"] = data
        log(
            f"      done in {data['write_s']:.1f} s; memmap layout verified on {checked} blocks "
            "against StreamingDataset"
        )
        epoch_batches = single.blocks(args.block_size) // args.batch_size
        if args.warmup + args.batches > epoch_batches:
            log(
                f"      note: one StreamingDataset epoch is {epoch_batches} batches < {args.warmup + args.batches}; "
                "it restarts on StopIteration (restarts left out of the timing)"
            )
        log(
            f"[2/3] throughput: {args.batches} batches after {args.warmup} warm-up, workers {args.workers}, "
            f"{args.rounds} round(s)"
        )
        results["throughput"] = run_rounds(lambda name, w: build_loader(name, w, shards, weights, single, args), args)

    machine["loadavg_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - began
    log("[3/3] results")
    results["table"] = lines = report(results, args)
    log("\n".join(["", *lines, "", f"total run time {results['total_s']:.1f} s"]))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
