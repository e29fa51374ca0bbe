#!/usr/bin/env python
"""Memory and start-up of the training stream at 1B, 100B and 1T tokens, on sparse fake shards.

Run from the repository root:

    .venv/bin/python benchmarks/bench_scale.py            # 1B, 100B and 1T; about 2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --quick    # 1B and 10B only (smoke test)

Each mixture is the README's blend ``main:0.8,code:0.15,math:0.05`` over four litdata token shards
``1``, ``2``, ``c1``, ``m1`` (main 2 × 40%, code 15%, math 5% of the tokens) in uint16 chunks of
32M tokens (litdata's 64 MB default), written by ``sharded_mix.tools.fake_shards``: a real
``index.json`` and sparse chunk files, so 1T tokens take ~120 MB of disk (file headers).

Every measurement runs in a fresh process (``--child``) so that peak RSS (``VmHWM``) is its own:

1. fresh start, per ``--workers`` value, in ``--repeats`` processes (the median by first batch is
   reported: the first process after the shards are written pays for their first cold reads, up to
   0.2 s at 1T here, with or without this package's changes): ``ShardedMixedDataset`` connect +
   setup + ``train_dataloader`` (setup: discovery, fingerprints and one ``stat`` per chunk file),
   then ``next(iter(loader))`` (first batch), then ``--batches`` more batches; peak RSS of
   the main process and of each DataLoader worker. The validation loader (litdata, unshuffled) over
   the same shards: its first batch and the main process's peak RSS after it;
2. epoch crossing, workers=0: a state positioned 40 draws before the end of main/1's epoch 2 is
   loaded, and every batch is timed; the batch in which main/1 starts epoch 3 is compared with the
   median batch. This runs twice and the second pass is reported: the first pages the blocks in
   (reading a sparse file's hole costs the kernel a zeroed page, which would drown the
   measurement). The pure cost (a new epoch's chunk order + its first window) is timed apart.

Targets (issue "Scale"): at 1T, first batch <= 1 s and <= 3x the 1B case; peak RSS per process within
150 MiB of the 1B case; epoch crossing <= 50 ms. Throughput against litdata on real shards is
``bench_mixture.py``'s table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import child_pids, data_root, log, machine_info, machine_lines, peak_rss_mib, report, time_batches, verdict  # noqa: E402

from sharded_mix import ShardedMixedDataset  # noqa: E402  (imported before any timing)
from sharded_mix.mixing.orders import Ordering, WindowedOrder  # noqa: E402
from sharded_mix.tools.fake_shards import write_sparse_token_shard  # noqa: E402

MIX = "main:0.8,code:0.15,math:0.05"
SHARES = {"1": 0.4, "2": 0.4, "c1": 0.15, "m1": 0.05}  # of the total tokens
CHUNK_TOKENS = 32 * 2**20  # 64 MB of uint16
BLOCK = 2049
BATCH = 8
SCALES = {"1B": 10**9, "10B": 10**10, "100B": 10**11, "1T": 10**12}
CROSS_BEFORE = 40  # draws of main/1 left in its epoch when the crossing run resumes

TARGET_FIRST_BATCH_S = 1.0
TARGET_FIRST_BATCH_RATIO = 3.0
TARGET_RSS_DELTA_MIB = 150.0
TARGET_CROSSING_MS = 50.0


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def build(base: Path, total: int) -> dict:
    """Sparse shards for a mixture of ``total`` tokens under ``base/train`` (reused when they match)."""
    meta = {"total": total, "chunk_tokens": CHUNK_TOKENS, "shares": SHARES}
    meta_path = base / "bench_meta.json"
    if not (meta_path.is_file() and json.loads(meta_path.read_text()) == meta):
        shutil.rmtree(base, ignore_errors=True)
        for name, share in SHARES.items():
            write_sparse_token_shard(base / "train" / name, int(total * share), CHUNK_TOKENS)
        meta_path.write_text(json.dumps(meta))
        os.sync()  # the write-back of 30,000 new files would otherwise land in the first measurement
    files = sum(1 for _ in (base / "train").rglob("chunk-*.bin"))
    disk = sum(path.stat().st_blocks * 512 for path in (base / "train").rglob("*") if path.is_file())
    return {"chunks": files, "disk_mb": disk / 2**20}


# --------------------------------------------------------------------------------------------
# measurements, each in its own process
# --------------------------------------------------------------------------------------------


def data_module(base: Path, workers: int) -> ShardedMixedDataset:
    data = ShardedMixedDataset(
        data_path=base / "train", val_data_path=base / "train", mix_weights_str=MIX, num_workers=workers
    )
    data.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
    data.setup()
    return data


def measure_fresh(base: Path, workers: int, batches: int) -> dict:
    start = time.perf_counter()
    data = data_module(base, workers)
    loader = data.train_dataloader()
    setup_s = time.perf_counter() - start
    iterator, first_s, steady_s = time_batches(loader, batches)
    workers_rss = [peak_rss_mib(pid) for pid in child_pids()]
    main_rss = peak_rss_mib()
    del iterator
    start = time.perf_counter()
    val_iterator = iter(data.val_dataloader())
    next(val_iterator)
    val_first_s = time.perf_counter() - start
    return {
        "setup_s": setup_s,
        "first_batch_s": first_s,
        "tokens_per_s": batches * BATCH * BLOCK / steady_s,
        "rss_main_mib": main_rss,
        "rss_workers_mib": workers_rss,
        "val_first_batch_s": val_first_s,
        "rss_main_after_val_mib": peak_rss_mib(),
    }


def measure_crossing(base: Path, batches: int) -> dict:
    data = data_module(base, 0)
    loader = data.train_dataloader()
    shard = next(shard for shard in data.train_mixture.shards if shard.id == "main/1")
    blocks = shard.blocks(BLOCK)
    state = loader.state_dict()
    state["sources"]["main/1"]["draws"] = 3 * blocks - CROSS_BEFORE  # epoch 2, 40 draws before its end
    index = loader.cursor.ids.index("main/1")
    for _ in range(2):  # the first pass pages the blocks in (sparse files), the second is timed
        loader.load_state_dict(state)
        times, crossing = [], None
        iterator = iter(loader)
        for batch in range(batches):
            start = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - start)
            if crossing is None and loader.cursor.draws(index) > 3 * blocks:
                crossing = batch
    others = [t for batch, t in enumerate(times) if batch not in (0, crossing)]
    chunk_blocks = [tokens // BLOCK for tokens in shard.chunk_tokens]
    start = time.perf_counter()
    WindowedOrder(chunk_blocks, Ordering(42), "main/1", 3).block(0)
    pure_s = time.perf_counter() - start
    return {
        "blocks": blocks,
        "chunks": len(chunk_blocks),
        "crossing_batch": crossing,
        "crossing_batch_ms": times[crossing] * 1e3,
        "median_batch_ms": statistics.median(others) * 1e3,
        "first_batch_after_resume_ms": times[0] * 1e3,
        "new_epoch_order_ms": pure_s * 1e3,
    }


def run_child(args: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def result_lines(results: dict, args) -> list[str]:
    lines = machine_lines(results["machine"])
    lines.append(
        f"data: blend {MIX} over main/1, main/2, c1, m1 (40/40/15/5% of the tokens), "
        f"uint16 chunks of {CHUNK_TOKENS:,} tokens, sparse files; blocks of {BLOCK}, batch {BATCH}, "
        f"{args.batches} batches after the first"
    )
    lines += [
        "",
        f"Fresh start (each row the median of {args.repeats} new processes by first batch; "
        "the range is over all of them)",
        "| mixture | chunks | disk | workers | setup (s) | first batch (s) | first batch range (s) "
        "| peak RSS main (MiB) | peak RSS per worker (MiB) | val first batch (s) | main RSS after val (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scale, per_scale in results["scales"].items():
        for workers, row in per_scale["fresh"].items():
            spread = f"{min(row['first_batch_runs_s']):.3f}-{max(row['first_batch_runs_s']):.3f}"
            worker_rss = ", ".join(f"{rss:.0f}" for rss in row["rss_workers_mib"]) or "-"
            data = per_scale["data"]
            lines.append(
                f"| {scale} | {data['chunks']:,} | {data['disk_mb']:.0f} MB | {workers} | {row['setup_s']:.2f} | "
                f"{row['first_batch_s']:.3f} | {spread} | {row['rss_main_mib']:.0f} | {worker_rss} | "
                f"{row['val_first_batch_s']:.2f} | {row['rss_main_after_val_mib']:.0f} |"
            )
    lines += [
        "",
        f"Epoch crossing of main/1, workers=0 (resumed {CROSS_BEFORE} draws before the end of its epoch 2)",
        "| mixture | main/1 blocks | main/1 chunks | crossing batch (ms) | median batch (ms) "
        "| new epoch order + first window (ms) | first batch after resume (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scale, per_scale in results["scales"].items():
        row = per_scale["crossing"]
        lines.append(
            f"| {scale} | {row['blocks']:,} | {row['chunks']:,} | {row['crossing_batch_ms']:.2f} "
            f"| {row['median_batch_ms']:.3f} | {row['new_epoch_order_ms']:.2f} "
            f"| {row['first_batch_after_resume_ms']:.1f} |"
        )
    small, large = list(results["scales"])[0], list(results["scales"])[-1]
    lines += ["", "Targets", "| measure | value | target | result |", "|---|---:|---:|---|"]
    for workers in results["scales"][large]["fresh"]:
        base, top = results["scales"][small]["fresh"][workers], results["scales"][large]["fresh"][workers]
        first = top["first_batch_s"]
        ratio = first / base["first_batch_s"]
        lines.append(
            f"| first batch at {large}, workers={workers} | {first:.3f} s | <= {TARGET_FIRST_BATCH_S:g} s "
            f"| {verdict(first <= TARGET_FIRST_BATCH_S)} |"
        )
        lines.append(
            f"| first batch {large} / {small}, workers={workers} | {ratio:.2f}x | <= {TARGET_FIRST_BATCH_RATIO:g}x "
            f"| {verdict(ratio <= TARGET_FIRST_BATCH_RATIO)} |"
        )
        for label, key in (("main", "rss_main_mib"), ("workers (max)", "rss_workers_mib")):
            before, after = base[key], top[key]
            if isinstance(before, list):
                if not before:
                    continue
                before, after = max(before), max(after)
            delta = after - before
            lines.append(
                f"| peak RSS {label} {large} - {small}, workers={workers} | {delta:+.0f} MiB "
                f"| <= {TARGET_RSS_DELTA_MIB:g} MiB | "
                f"{verdict(delta <= TARGET_RSS_DELTA_MIB)} |"
            )
    crossing = (
        results["scales"][large]["crossing"]["crossing_batch_ms"]
        - results["scales"][large]["crossing"]["median_batch_ms"]
    )
    lines.append(
        f"| epoch crossing at {large} (crossing batch - median batch) | {crossing:.2f} ms "
        f"| <= {TARGET_CROSSING_MS:g} ms | {verdict(crossing <= TARGET_CROSSING_MS)} |"
    )
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", default=["1B", "100B", "1T"], choices=list(SCALES))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--batches", type=int, default=200, help="batches timed after the first")
    parser.add_argument("--data-dir", type=Path, help="keep the sparse shards here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="fresh processes per row; the one with the median first batch is reported",
    )
    parser.add_argument("--quick", action="store_true", help="1B and 10B, 20 batches, one fresh process per row")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.scales, args.batches, args.repeats = ["1B", "10B"], 20, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        kind, base, *rest = args.child
        logging.getLogger("sharded_mix").setLevel(logging.WARNING)
        result = (
            measure_fresh(Path(base), int(rest[0]), int(rest[1]))
            if kind == "fresh"
            else measure_crossing(Path(base), int(rest[0]))
        )
        print(json.dumps(result))
        return result
    started = time.perf_counter()
    results = {"machine": machine_info(), "scales": {}}
    with data_root(args.data_dir, "bench_scale_") as root:
        for scale in args.scales:
            base = root / scale
            log(f"{scale}: writing sparse shards in {base}")
            per_scale = {"data": build(base, SCALES[scale]), "fresh": {}}
            for workers in args.workers:
                log(f"{scale}: fresh start, workers={workers}")
                runs = [run_child(["fresh", str(base), str(workers), str(args.batches)]) for _ in range(args.repeats)]
                median = sorted(runs, key=lambda run: run["first_batch_s"])[len(runs) // 2]
                per_scale["fresh"][str(workers)] = {
                    **median,
                    "first_batch_runs_s": [run["first_batch_s"] for run in runs],
                }
            log(f"{scale}: epoch crossing")
            per_scale["crossing"] = run_child(["crossing", str(base), "30"])
            results["scales"][scale] = per_scale
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    return report(results, result_lines(results, args), args.json)


if __name__ == "__main__":
    main()
