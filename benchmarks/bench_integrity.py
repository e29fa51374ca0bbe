#!/usr/bin/env python
"""What verifying every chunk once per node costs the loader: first epoch, later epochs, remote cold.

Run from the repository root:

    .venv/bin/python benchmarks/bench_integrity.py            # default run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_integrity.py --quick    # smoke test

The bytes are the four uint16 shards of ``bench_throughput.py`` (``common.MIX``), given content hashes by
``sharded-mix hash``. Through ``ShardedMixedDataset`` (``verify_chunks: first_read`` against ``off``), tokens/s of
one pass over the mixture's tokens:
(a) local, first epoch: a fresh cache directory (so an empty ledger) for every run: every chunk is hashed;
(b) local, later epochs: the ledger already holds every chunk: nothing is hashed;
(c) remote cold (moto's S3 on 127.0.0.1): a fresh cache every run: every chunk is downloaded, and hashed as it
    streams.
Runs go in back-to-back pairs (on, off, then off, on, ...); the ratio is the median of the pairs' ratios, so drift
between pairs cancels; for each ``--workers``.

Targets (issue "Integrity"): (a) and (c) >= 0.97x, (b) 1.00x (within noise).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import MIX, build_mix, log, machine_info, machine_lines, quiet, report, verdict  # noqa: E402

TARGET_FIRST = 0.97
TARGET_LATER = 0.99


def data_module(base: str, cache_dir: Path, verify: str, workers: int, block: int, batch: int, **fields):
    from sharded_mix import ShardedMixedDataset

    literal = ",".join(f"{shard_id}:{weight}" for shard_id, weight in MIX.values())
    data = ShardedMixedDataset(
        data_path=base,
        val_data_path=f"{base}/1",
        literal_weights_str=literal,
        num_workers=workers,
        cache_dir=str(cache_dir),
        verify_chunks=verify,
        **fields,
    )
    from sharded_mix.tools.offline import quiet_logs

    with quiet_logs():
        data.connect(batch_size=batch, max_seq_length=block - 1)
        data.setup()
    return data


def one_pass(data, batches: int) -> float:
    """Seconds to read ``batches`` batches (the first included: a cold start is part of a first epoch)."""
    from sharded_mix.tools.offline import quiet_logs

    with quiet_logs():
        start = time.perf_counter()
        iterator = iter(data.train_dataloader())
        for _ in range(batches):
            next(iterator)
        del iterator
        return time.perf_counter() - start


def paired(run, repeats: int) -> dict:
    """``run(verify)`` seconds in back-to-back pairs, alternating on/off, off/on; the medians, and the throughput
    ratio on / off as the median of the pairs' ratios (so drift between pairs cancels)."""
    times = {"first_read": [], "off": []}
    for index in range(repeats):
        order = ("first_read", "off") if index % 2 == 0 else ("off", "first_read")
        for verify in order:
            times[verify].append(run(verify))
    on, off = statistics.median(times["first_read"]), statistics.median(times["off"])
    ratio = statistics.median(b / a for a, b in zip(times["first_read"], times["off"]))
    return {"on_s": on, "off_s": off, "ratio": ratio, "runs": times}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens-per-source", type=int, default=25_000_000)
    parser.add_argument("--chunk-mb", type=float, default=32.0)
    parser.add_argument("--block-size", type=int, default=2049)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0,2", help="comma-separated num_workers values")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="small shards, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens_per_source, args.chunk_mb, args.repeats = 1_000_000, 1.0, 2
    args.workers = [int(value) for value in str(args.workers).split(",") if value.strip()]
    quiet()
    import s3_server  # the tests' moto server: 127.0.0.1 only

    from sharded_mix.tools.hash_shards import hash_path

    started = time.perf_counter()
    results = {"machine": machine_info(), "workers": {}}
    batches = 4 * args.tokens_per_source // (args.block_size * args.batch_size)
    counter = iter(range(10**6))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base = root / "mix"
        log(f"[1/2] four sources x {args.tokens_per_source:,} uint16 tokens, hashed ...")
        build_mix(base, args.tokens_per_source, int(args.chunk_mb * (1 << 20)), 42)
        hash_path(base, workers=2, progress=False)
        server = s3_server.s3.__wrapped__()
        s3 = next(server)
        try:
            url = f"s3://{s3.new_bucket()}/mix"
            s3.upload(base, url)
            for workers in args.workers:
                log(f"[2/2] num_workers {workers}: {args.repeats} x 2 passes of {batches:,} batches each ...")

                def run(path: str, verify: str, cache: Path | None = None, workers=workers) -> float:
                    fresh = cache is None
                    cache = cache or root / f"cache-{next(counter)}"
                    options = {"storage_options": s3.options} if path.startswith("s3://") else {}
                    data = data_module(path, cache, verify, workers, args.block_size, args.batch_size, **options)
                    seconds = one_pass(data, batches)
                    if fresh:
                        shutil.rmtree(cache, ignore_errors=True)
                    return seconds

                warm = root / f"warm-{workers}"
                run(str(base), "first_read", warm)
                results["workers"][workers] = {
                    "local_first": paired(lambda verify: run(str(base), verify), args.repeats),
                    "local_later": paired(lambda verify, warm=warm: run(str(base), verify, warm), args.repeats),
                    "remote_cold": paired(lambda verify: run(url, verify), args.repeats),
                }
        finally:
            next(server, None)
    results["seconds"] = time.perf_counter() - started
    tokens = batches * args.batch_size * args.block_size
    lines = machine_lines(results["machine"]) + [
        f"data: 4 sources x {args.tokens_per_source:,} uint16 tokens in chunks of {args.chunk_mb:g} MB, hashed; "
        f"{batches:,} batches of {args.batch_size} x {args.block_size} per pass",
        "",
        "| pass | workers | verify on, M tokens/s | off, M tokens/s | on / off | target | result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for workers, found_by_pass in results["workers"].items():
        for key, label, target in (
            ("local_first", "local, first epoch (every chunk hashed)", TARGET_FIRST),
            ("local_later", "local, later epochs (ledger)", TARGET_LATER),
            ("remote_cold", "remote cold (hashed as downloaded)", TARGET_FIRST),
        ):
            found = found_by_pass[key]
            lines.append(
                f"| {label} | {workers} | {tokens / found['on_s'] / 1e6:.1f} | {tokens / found['off_s'] / 1e6:.1f} | "
                f"{found['ratio']:.3f}x | >= {target}x | {verdict(found['ratio'] >= target)} |"
            )
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
