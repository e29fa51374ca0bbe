#!/usr/bin/env python
"""Bytes each node downloads from S3 (moto on 127.0.0.1) for one epoch of a mixture, on 1, 2 and 4 simulated nodes.

Run from the repository root:

    .venv/bin/python benchmarks/bench_node_share.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/bench_node_share.py --quick    # a smoke test

Four token shards (main/1, main/2 40% of the tokens each, c1 15%, m1 5%; uint16 tokens in 1 MB
chunks) are uploaded to a moto S3 server in this process. The blend is proportional to size, so
every source finishes one epoch together. For each node count N, 2·N ranks (2 per node) each
build the training loader of a ``ShardedMixedDataset`` with ``nodes: N`` and read their part of
one epoch of the mixture (the total blocks over the world size). The ranks of a node share one
``cache_dir``, as on a real node; the bytes in it after the epoch are the node's download.
``prefetch_chunks`` is 0, so nothing of the next epoch is fetched ahead and counted.

Target (issue "Remote shards"): each node downloads at most 1/N of the bytes plus, per source, the
chunks its slice shares with its neighbours (one at each inner cut).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_remote import CREDENTIALS, start_server, upload, write_shards  # noqa: E402
from common import data_root, log, machine_info, machine_lines, quiet, report, verdict  # noqa: E402

from sharded_mix import ShardedMixedDataset  # noqa: E402

BLOCK = 2049
BATCH = 8
RANKS_PER_NODE = 2


def rank_loader(url: str, rank: int, world: int, nodes: int, cache: Path, options: dict):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    data = ShardedMixedDataset(
        data_path=url,
        val_data_path=f"{url}/main/1",
        proportional_sampling=True,
        num_workers=0,
        nodes=nodes,
        storage_options=options,
        cache_dir=str(cache),
        prefetch_chunks=0,
    )
    data.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
    data.setup()
    return data, data.train_dataloader()


def one_epoch(url: str, nodes: int, root: Path, options: dict) -> dict:
    """Every rank of ``nodes`` nodes reads its part of one epoch; bytes in each node's cache and blocks read."""
    world = nodes * RANKS_PER_NODE
    per_node, blocks_read = [], Counter()
    for node in range(nodes):
        cache = root / f"cache-{nodes}-{node}"
        for rank in range(node * RANKS_PER_NODE, (node + 1) * RANKS_PER_NODE):
            data, loader = rank_loader(url, rank, world, nodes, cache, options)
            epoch_blocks = sum(shard.blocks(BLOCK) for shard in data.train_mixture.sources)
            batches = epoch_blocks // (world * BATCH)
            for _, batch in zip(range(batches), loader):
                blocks_read.update(tuple(row[:4].tolist()) for row in batch)
        per_node.append(sum(path.stat().st_size for path in cache.rglob("chunk-*.bin")))
    shards = data.train_mixture.sources
    largest = {shard.id: max(shard.chunk_bytes(chunk) for chunk in range(shard.chunks)) for shard in shards}
    return {
        "nodes": nodes,
        "per_node": per_node,
        "draws": batches * world * BATCH,
        "epoch_blocks": epoch_blocks,
        "distinct_blocks": len(blocks_read),
        "largest_chunks": sum(largest.values()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000_000, help="tokens in the four shards together")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20)
    parser.add_argument("--nodes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--data-dir", type=Path, help="keep the local shards here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="10M tokens, 1 and 2 nodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.nodes = 10_000_000, [1, 2]
    quiet()
    started = time.perf_counter()
    results = {"machine": machine_info(), "rows": []}
    server, endpoint = start_server()
    options = {"endpoint": endpoint, "allow_http": True, **CREDENTIALS}
    saved_env = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE")}
    try:
        with data_root(args.data_dir, "bench_node_share_") as root:
            base = root / "mix"
            if not base.exists():
                log(f"writing {args.tokens:,} tokens of shards in {base}")
                write_shards(base, args.tokens, chunk_bytes=args.chunk_bytes)
            total = sum(path.stat().st_size for path in base.rglob("chunk-*.bin"))
            chunks = len(list(base.rglob("chunk-*.bin")))
            log(f"uploading {total / 2**20:,.0f} MiB in {chunks} chunks to {endpoint}")
            url = upload(base, endpoint, "bench-node-share")
            for nodes in args.nodes:
                log(f"{nodes} node(s) of {RANKS_PER_NODE} ranks: one epoch")
                results["rows"].append({**one_epoch(url, nodes, root, options), "total_bytes": total})
    finally:
        server.stop()
        for name, value in saved_env.items():
            os.environ.pop(name, None) if value is None else os.environ.update({name: value})
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    lines = machine_lines(results["machine"]) + [
        f"data: main/1, main/2, c1, m1 (40/40/15/5%), {args.tokens:,} uint16 tokens "
        f"in {args.chunk_bytes >> 10} KiB chunks ({chunks} chunks, {total / 2**20:,.0f} MiB); "
        f"proportional blend, blocks of {BLOCK}, batch {BATCH}, "
        f"{RANKS_PER_NODE} ranks per node, shuffle window 4, prefetch 0; one epoch",
        "",
        "| nodes | draws (distinct blocks) | MiB per node | share of the bytes per node | 1/nodes "
        "| most above 1/nodes |",
        "|---:|---:|---|---|---:|---:|",
    ]
    checks = []
    for row in results["rows"]:
        shares = [size / row["total_bytes"] for size in row["per_node"]]
        excess = max(size - row["total_bytes"] / row["nodes"] for size in row["per_node"])
        sizes = ", ".join(f"{size / 2**20:,.1f}" for size in row["per_node"])
        lines.append(
            f"| {row['nodes']} | {row['draws']:,} ({row['distinct_blocks']:,}) | {sizes} | "
            f"{', '.join(f'{share:.1%}' for share in shares)} | {1 / row['nodes']:.1%} | {excess / 2**20:,.2f} MiB |"
        )
        cuts = 2 if row["nodes"] > 2 else (1 if row["nodes"] == 2 else 0)  # chunks a node's slice shares, per source
        bound = row["total_bytes"] / row["nodes"] + cuts * row["largest_chunks"]
        checks.append((row["nodes"], max(row["per_node"]), bound, row["distinct_blocks"] == row["draws"]))
    lines += ["", "| measure | value | target | result |", "|---|---:|---:|---|"]
    for nodes, most, bound, distinct in checks:
        lines.append(
            f"| most bytes on a node, {nodes} node(s) | {most / 2**20:,.1f} MiB | <= {bound / 2**20:,.1f} MiB "
            f"| {verdict(most <= bound)} |"
        )
        lines.append(
            f"| every block of the epoch read once, {nodes} node(s) | {'yes' if distinct else 'no'} | yes "
            f"| {verdict(distinct)} |"
        )
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
