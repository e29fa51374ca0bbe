#!/usr/bin/env python
"""Training-stream throughput with shards on S3 (moto on 127.0.0.1) against the same shards on local disk.

Run from the repository root:

    .venv/bin/python benchmarks/bench_remote.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_remote.py --quick    # a smoke test

Four token shards (main/1, main/2 40% of the tokens each, c1 15%, m1 5%; random uint16 tokens in
8 MB chunks) are written locally and uploaded to a moto S3 server in this process (loopback only).
For each ``--workers`` value the same ``ShardedMixedDataset`` (blend main:0.8,code:0.15,math:0.05,
blocks of 2,049, batches of 8, shuffle window 4, prefetch 8 chunks) reads ``--batches`` batches:

- local: ``data_path`` on disk;
- remote, cold: ``data_path: s3://...`` with an empty ``cache_dir``;
- remote, warm: the same again, every chunk it needs already in the cache.

Tokens/s is measured after the first batch, which is reported apart. The moto server shares this
process's interpreter (and GIL) with the loader in the workers=0 case, so cold figures are a lower
bound of what a real object store gives. Target (issue "Remote shards"): warm >= 0.5x local.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import data_root, log, machine_info, machine_lines, quiet, report, time_batches, verdict  # noqa: E402

from sharded_mix import ShardedMixedDataset  # noqa: E402
from sharded_mix.tools.prepare import write_token_shard  # noqa: E402

MIX = "main:0.8,code:0.15,math:0.05"
SHARES = {"main/1": 0.4, "main/2": 0.4, "c1": 0.15, "m1": 0.05}
BLOCK = 2049
BATCH = 8
CHUNK_BYTES = 8 << 20
TARGET_WARM_RATIO = 0.5
CREDENTIALS = {"access_key_id": "bench", "secret_access_key": "bench", "region": "us-east-1"}


def write_shards(base: Path, tokens: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The four shards under ``base``; their bytes on disk."""
    rng = np.random.default_rng(0)
    for name, share in SHARES.items():
        count = int(tokens * share)
        documents = [rng.integers(0, 50_000, 4096, dtype=np.int64) for _ in range(count // 4096)]
        write_token_shard(base / name, documents, chunk_bytes=chunk_bytes, dtype=torch.uint16)
    return sum(path.stat().st_size for path in base.rglob("*") if path.is_file())


def start_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def upload(base: Path, endpoint: str, bucket: str) -> str:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    )
    client.create_bucket(Bucket=bucket)
    for path in sorted(base.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"mix/{path.relative_to(base).as_posix()}")
    return f"s3://{bucket}/mix"


def measure(data_path, workers: int, batches: int, **fields) -> dict:
    data = ShardedMixedDataset(
        data_path=data_path, val_data_path=f"{data_path}/main/1", mix_weights_str=MIX, num_workers=workers, **fields
    )
    data.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
    data.setup()
    iterator, first, seconds = time_batches(data.train_dataloader(), batches)
    del iterator
    return {"first_batch_s": first, "tokens_per_s": batches * BATCH * BLOCK / seconds}


def cached_bytes(cache: Path) -> int:
    return sum(path.stat().st_size for path in cache.rglob("chunk-*.bin")) if cache.exists() else 0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=200_000_000, help="tokens in the four shards together")
    parser.add_argument("--batches", type=int, default=4000, help="batches timed after the first")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--data-dir", type=Path, help="keep the local shards here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="20M tokens, 40 batches, workers 0")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.batches, args.workers = 20_000_000, 40, [0]
    quiet()
    started = time.perf_counter()
    results = {"machine": machine_info(), "rows": {}}
    server, endpoint = start_server()
    options = {"endpoint": endpoint, "allow_http": True, **CREDENTIALS}
    try:
        with data_root(args.data_dir, "bench_remote_") as root:
            base = root / "mix"
            if not base.exists():
                log(f"writing {args.tokens:,} tokens of shards in {base}")
                write_shards(base, args.tokens)
            total = sum(path.stat().st_size for path in base.rglob("chunk-*.bin"))
            log(f"uploading {total / 2**20:,.0f} MiB to {endpoint}")
            url = upload(base, endpoint, "bench-remote")
            for workers in args.workers:
                cache = root / f"cache-{workers}"
                shutil.rmtree(cache, ignore_errors=True)
                log(f"workers={workers}: local")
                local = measure(str(base), workers, args.batches)
                log(f"workers={workers}: remote, cold cache")
                cold = measure(url, workers, args.batches, storage_options=options, cache_dir=str(cache))
                cold["downloaded_bytes"] = cached_bytes(cache)
                log(f"workers={workers}: remote, warm cache")
                warm = measure(url, workers, args.batches, storage_options=options, cache_dir=str(cache))
                results["rows"][workers] = {"local": local, "cold": cold, "warm": warm, "total_bytes": total}
    finally:
        server.stop()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    lines = machine_lines(results["machine"]) + [
        f"data: blend {MIX} over main/1, main/2, c1, m1 (40/40/15/5%), {args.tokens:,} uint16 tokens "
        f"in {CHUNK_BYTES >> 20} MB chunks; blocks of {BLOCK}, batch {BATCH}, {args.batches} batches timed "
        "after the first; shuffle window 4, prefetch 8 chunks",
        "",
        "| workers | local tokens/s | remote cold tokens/s | remote warm tokens/s | warm / local "
        "| cold first batch (s) | downloaded (cold) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, row in results["rows"].items():
        ratio = row["warm"]["tokens_per_s"] / row["local"]["tokens_per_s"]
        rates = " | ".join(f"{row[run]['tokens_per_s']:,.0f}" for run in ("local", "cold", "warm"))
        downloaded = f"{row['cold']['downloaded_bytes'] / 2**20:,.0f} of {row['total_bytes'] / 2**20:,.0f} MiB"
        lines.append(f"| {workers} | {rates} | {ratio:.2f}x | {row['cold']['first_batch_s']:.2f} | {downloaded} |")
    lines += ["", "| measure | value | target | result |", "|---|---:|---:|---|"]
    for workers, row in results["rows"].items():
        ratio = row["warm"]["tokens_per_s"] / row["local"]["tokens_per_s"]
        lines.append(
            f"| warm remote / local, workers={workers} | {ratio:.2f}x | >= {TARGET_WARM_RATIO}x "
            f"| {verdict(ratio >= TARGET_WARM_RATIO)} |"
        )
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
