#!/usr/bin/env python
"""How long "what did step N read" takes at 1T tokens, and what the data/ metrics cost a training step.

Run from the repository root:

    .venv/bin/python benchmarks/bench_provenance.py            # 1T tokens (about a minute on 2 cores)
    .venv/bin/python benchmarks/bench_provenance.py --quick    # 1B tokens, smoke test

1. ``sharded-mix batch`` (``tools.batch.step_rows_of``) over the sparse fake 1T mixture of ``bench_scale.py``
   (global batch 1,024 blocks of 2,049 tokens on 64 ranks): (a) the run as it happened, an ``out_dir`` with a
   checkpoint every ``--save-interval`` steps, at the last step of the run (the newest checkpoint is
   ``--save-interval`` steps before it); (b) the run as configured, from its first step, at several steps. Each
   is a whole query: discovery, plan, the checkpoint's state, the cursor's draws, every row of every rank. And
   ``sharded-mix find`` (``reads_of``) of one c1 block over a tenth of the run and over all of it, and of one c1
   document (c1 given prepare's document files for this: documents of 1,024..7,168 tokens).
2. The ``data/`` metrics' cost per optimizer step on CPU, against a pythia-14m step (micro-batch 4 x 64 tokens):
   the loss call with per-row losses handed over against LitGPT's own ``chunked_cross_entropy``, plus
   ``add_row_losses`` and the metrics of a log step.

Targets (issue "Observability"): a query < 1 s at 1T; metrics < 0.1 % of the step.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from bench_scale import BLOCK, MIX, SCALES, build  # noqa: E402
from common import log, machine_info, machine_lines, quiet, report, verdict  # noqa: E402

from sharded_mix.mixing.cursor import Cursor  # noqa: E402
from sharded_mix.tools.batch import reads_of, step_rows_of  # noqa: E402

WORLD, MICRO, GLOBAL = 64, 8, 1024
TARGET_QUERY_S = 1.0
TARGET_METRICS_FRACTION = 0.001


def write_config(path: Path, base: Path) -> Path:
    init_args = {"data_path": str(base / "train"), "val_data_path": str(base / "train"), "mix_weights_str": MIX}
    config = {
        "data": {"class_path": "sharded_mix.ShardedMixedDataset", "init_args": init_args},
        "train": {"micro_batch_size": MICRO, "global_batch_size": GLOBAL, "max_seq_length": BLOCK - 1},
        "devices": 8,
        "num_nodes": 8,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_checkpoint(out_dir: Path, config: Path, step: int) -> None:
    """``out_dir/step-N`` with the data state a run on 64 ranks saves after step N (the cursor moved there)."""
    from sharded_mix.streaming.stream import MixtureLoader, MixtureStream
    from sharded_mix.tools.offline import offline_data_module

    plan = offline_data_module(config)[0].run_plan()
    stream = MixtureStream(plan.shards, plan.stream_stages(WORLD), MICRO, world_size=WORLD, nodes=8)
    loader = MixtureLoader(stream, plan=plan)
    cursor = Cursor(stream.stages, WORLD)
    for _ in range(step * GLOBAL // WORLD):  # the counts ``take`` leaves in the main process
        cursor.next_source()
    loader.cursor = cursor
    directory = out_dir / f"step-{step:08d}"
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"train_dataloader": loader.state_dict()}, directory / "lit_model.pth")
    (directory / "hyperparameters.yaml").write_text(config.read_text())


def write_fake_documents(shard: Path, mean_tokens: int = 4096) -> int:
    """prepare's document files for the sparse shard at ``shard``: documents of 1,024..7,168 tokens (mean about
    ``mean_tokens``) covering its tokens, all from one input; the documents written."""
    from sharded_mix.streaming.discovery import read_index
    from sharded_mix.tools.documents import RECORD, RECORDS_FILE, DocumentInput, write_listing

    tokens = sum(chunk["dim"] for chunk in read_index(shard)["chunks"])
    start, written, block = 0, 0, 1 << 22
    with open(shard / RECORDS_FILE, "wb") as out:
        while start < tokens:
            numbers = np.arange(written, written + block, dtype=np.uint64)
            lengths = 1024 + (numbers * 7919) % (2 * mean_tokens - 2047)
            starts = start + np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.uint64)
            starts = starts[starts < tokens]
            records = np.zeros(len(starts), dtype=RECORD)
            records["start"], records["record"] = starts, numbers[: len(starts)] + 1
            out.write(records.tobytes())
            written += len(starts)
            start = int(starts[-1] + lengths[len(starts) - 1])
    write_listing(shard, [DocumentInput("corpus/code.jsonl", "line")], written, tokens)
    return written


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def measure_queries(base: Path, root: Path, total_tokens: int, save_interval: int) -> dict:
    config = write_config(root / "run.yaml", base)
    last = total_tokens // (GLOBAL * (BLOCK - 1))
    out_dir = root / "out"
    checkpoint = last - save_interval
    log(f"[2/3] writing the checkpoint at step {checkpoint:,} (the cursor moved there; untimed) ...")
    write_checkpoint(out_dir, config, checkpoint)
    write_checkpoint(out_dir, config, last)  # the run reached its last step
    log("[3/3] timing the queries ...")
    as_happened = [timed(lambda: step_rows_of(out_dir, last))[0] for _ in range(3)]
    rows = step_rows_of(out_dir, last)[0]
    as_configured = {}
    for step in sorted({1, min(1_000, last), last // 10, last}):
        seconds, _ = timed(lambda step=step: step_rows_of(config, step, ranks=[0]))
        as_configured[step] = seconds
    documents = write_fake_documents(base / "train" / "c1")
    with_documents = [timed(lambda: step_rows_of(out_dir, last))[0] for _ in range(3)]
    find = {}
    for until in sorted({last // 10, last}):
        seconds, (reads, _, _, _) = timed(lambda until=until: reads_of(config, "c1", 12_345 * BLOCK, until_step=until))
        find[until] = {"seconds": seconds, "reads": len(reads)}
    document = documents // 2 + 12_345
    find_document_s, (reads, *_) = timed(lambda: reads_of(config, "c1", until_step=last, document=document))
    (base / "train" / "c1" / "documents.bin").unlink()  # the shards stay as bench_scale builds them
    (base / "train" / "c1" / "documents.json").unlink()
    return {
        "last_step": last,
        "rows_per_step": len(rows),
        "find": find,
        "out_dir_query_s": statistics.median(as_happened),
        "c1_documents": documents,
        "out_dir_query_with_documents_s": statistics.median(with_documents),
        "find_document": {"document": document, "seconds": find_document_s, "reads": len(reads)},
        "save_interval": save_interval,
        "config_query_s": as_configured,
    }


def measure_metrics(steps: int) -> dict:
    """Per optimizer step, seconds of the data/ metrics and of the whole step, on a pythia-14m micro-batch."""
    from litgpt import GPT, Config
    from litgpt.utils import chunked_cross_entropy

    from sharded_mix.mixing.cursor import StreamStage
    from sharded_mix.training.data_metrics import DataMetrics
    from sharded_mix.training.row_losses import chunked_loss

    torch.manual_seed(0)
    model = GPT(Config.from_name("pythia-14m"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, 50_000, (4, 65))
    weights = {"c1": 0.15, "m1": 0.05, "main/1": 0.4, "main/2": 0.4}
    cursor = Cursor([StreamStage("default", 0, weights, 42, 65, dict.fromkeys(weights, 10**6))], WORLD)
    stream = SimpleNamespace(cursor=cursor, last_rows=(cursor.ids, (0, 1, 2, 3)))
    metrics = DataMetrics()
    metrics.watch(stream, weights)
    with_rows = functools.partial(chunked_loss, chunked_cross_entropy, on_tokens=metrics.add_token_losses)

    def step(loss_call) -> tuple[float, float]:
        start = time.perf_counter()
        logits = model(batch[:, :-1])
        loss_start = time.perf_counter()
        loss = loss_call(logits, batch[:, 1:])
        loss_s = time.perf_counter() - loss_start
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start, loss_s

    for _ in range(3):
        step(chunked_cross_entropy), step(with_rows)
    plain, extra, whole = [], [], []
    for index in range(steps):  # alternating, first one then the other first, so that drift hits both
        if index % 2:
            whole_s, plain_loss = step(chunked_cross_entropy)
            _, rows_loss = step(with_rows)
        else:
            _, rows_loss = step(with_rows)
            whole_s, plain_loss = step(chunked_cross_entropy)
        plain.append(plain_loss)
        extra.append(rows_loss - plain_loss)
        whole.append(whole_s)
    start = time.perf_counter()
    for _ in range(100):
        metrics.values(lambda tensor: tensor)  # one rank: the all-reduce is the identity
    log_s = (time.perf_counter() - start) / 100
    # the work the loss call adds to LitGPT's own operations (which it repeats exactly): per-row sums and the
    # per-source window, timed alone because it is far below the loss call's run-to-run noise
    losses, targets = torch.rand(batch.shape[0] * (batch.shape[1] - 1)), batch[:, 1:]
    start = time.perf_counter()
    for _ in range(1000):
        metrics.add_token_losses(losses.view(targets.shape), targets != -100)
    added_s = (time.perf_counter() - start) / 1000
    step_s = statistics.median(whole)
    return {
        "step_s": step_s,
        "loss_s": statistics.median(plain),
        "loss_call_difference_s": statistics.median(extra),
        "metrics_per_step_s": added_s,
        "log_s": log_s,
        "fraction": added_s / step_s,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="1T", choices=list(SCALES))
    parser.add_argument("--save-interval", type=int, default=1000, help="steps between the run's checkpoints")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed for the metrics' cost")
    parser.add_argument("--data-dir", type=Path, help="keep the sparse shards here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="1B tokens, 5 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.steps, args.save_interval = "1B", 5, 100
    quiet()
    started = time.perf_counter()
    results = {"machine": machine_info(), "scale": args.scale}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base = (args.data_dir or root / "shards") / args.scale
        log(f"[1/3] sparse {args.scale} mixture in {base} ...")
        build(base, SCALES[args.scale])
        results["queries"] = measure_queries(base, root, SCALES[args.scale], args.save_interval)
    results["metrics"] = measure_metrics(args.steps)
    results["seconds"] = time.perf_counter() - started
    queries, metrics = results["queries"], results["metrics"]
    lines = machine_lines(results["machine"]) + [
        f"data: {args.scale} tokens, blend {MIX}, blocks of {BLOCK}, global batch {GLOBAL} on {WORLD} ranks "
        f"(micro-batch {MICRO}): {queries['last_step']:,} steps of {queries['rows_per_step']:,} rows",
        "",
        "| query | step | seconds |",
        "|---|---:|---:|",
        f"| out_dir, newest checkpoint {queries['save_interval']:,} steps before | {queries['last_step']:,} | "
        f"{queries['out_dir_query_s']:.2f} |",
    ]
    lines.append(
        f"| out_dir, the same, c1 with document files ({queries['c1_documents']:,} documents) | "
        f"{queries['last_step']:,} | {queries['out_dir_query_with_documents_s']:.2f} |"
    )
    for step, seconds in queries["config_query_s"].items():
        lines.append(f"| config, from step 0, rank 0 | {step:,} | {seconds:.2f} |")
    for until, found in queries["find"].items():
        lines.append(
            f"| find c1 block 12,345 (read {found['reads']} times), config, steps 1..{until:,} | - | "
            f"{found['seconds']:.2f} |"
        )
    found = queries["find_document"]
    lines.append(
        f"| find --document {found['document']:,} of c1 (read {found['reads']} times), config, steps "
        f"1..{queries['last_step']:,} | - | {found['seconds']:.2f} |"
    )
    lines += [
        "",
        f"metrics: {metrics['metrics_per_step_s'] * 1e6:.0f} us a micro-batch (per-row sums and the per-source "
        f"window, on top of LitGPT's own loss operations) of a {metrics['step_s'] * 1e3:.1f} ms pythia-14m step; "
        f"a log step's metrics {metrics['log_s'] * 1e6:.0f} us (every log_interval steps); the whole loss call "
        f"with them minus LitGPT's: {metrics['loss_call_difference_s'] * 1e3:+.2f} ms (median of paired steps, "
        "within the noise)",
        "",
        "| measure | value | target | result |",
        "|---|---:|---:|---|",
        f"| out_dir query at the last step, {args.scale} | {queries['out_dir_query_s']:.2f} s "
        f"| <= {TARGET_QUERY_S} s | {verdict(queries['out_dir_query_s'] <= TARGET_QUERY_S)} |",
        f"| data/ metrics / step time | {metrics['fraction']:.4%} | <= {TARGET_METRICS_FRACTION:.1%} | "
        f"{verdict(metrics['fraction'] <= TARGET_METRICS_FRACTION)} |",
    ]
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
