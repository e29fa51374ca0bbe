#!/usr/bin/env python
"""Tokens per second of real ``litgpt pretrain`` steps with ``attention: document`` against ``causal`` (LitGPT's
SDPA with ``is_causal``), on the same EOS-delimited documents.

Run from the repository root:

    .venv/bin/python benchmarks/bench_document_attention.py                    # CPU: pythia-14m, 512-token rows
    .venv/bin/python benchmarks/bench_document_attention.py --model pythia-160m --seq-len 2048 --micro-batch 8
    .venv/bin/python benchmarks/bench_document_attention.py --model pythia-160m --seq-len 8192 --micro-batch 2
    .venv/bin/python benchmarks/bench_document_attention.py --quick            # CI smoke: 64 tokens, 6 steps

Each measurement is one process running ``litgpt.pretrain.setup`` (its ``torch.compile`` included) with the
loader's ``next()`` stamped: a step is the time between two batches, the first ``--warmup`` steps (compilation)
are left out, and tokens/s is the micro-batch's tokens over the median step. Causal and document processes
alternate ``--pairs`` times; the ratio is the median of the pairs' ratios. Documents: lognormal lengths (median
``--doc-median`` tokens, the mean of web text's order), random ids, each ended by EOS (id 0). On CUDA the document
mask is a FlexAttention ``BlockMask`` (flex attention compiled), elsewhere a dense SDPA mask.

Target (issue "Document-aware training", on one H100 at 2k and 8k context): document ≥ 95 % of causal tokens/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import log, machine_info, machine_lines, report, verdict  # noqa: E402

TARGET_RATIO = 0.95
EOS = 0


def child(spec: dict) -> None:
    """One ``litgpt pretrain`` process; the batch stamps go to ``spec['out']``."""
    import torch
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.pretrain import setup

    from sharded_mix import ShardedMixedDataset
    from sharded_mix.streaming.stream import MixtureLoader

    stamps = []
    original = MixtureLoader.__iter__

    def stamped(self):
        for batch in original(self):
            stamps.append(time.perf_counter())
            yield batch

    MixtureLoader.__iter__ = stamped
    sys.argv = [sys.argv[0], spec["model"]]  # LitGPT re-parses the command line to save hyperparameters.yaml
    cuda = torch.cuda.is_available()
    setup(
        model_name=spec["model"],
        out_dir=Path(spec["out_dir"]),
        precision="bf16-true" if cuda else "32-true",
        data=ShardedMixedDataset(**spec["data"]),
        train=TrainArgs(**spec["train"]),
        eval=EvalArgs(interval=10**9, max_iters=1, initial_validation=False, final_validation=False),
        devices=1,
        logger_name="csv",
    )
    Path(spec["out"]).write_text(json.dumps({"stamps": stamps, "cuda": cuda}))


def write_documents(base: Path, tokens: int, median: int, longest: int) -> float:
    """Shards ``1`` and ``val`` of EOS-ended documents; returns their mean length."""
    import numpy as np

    from sharded_mix.tools.prepare_output import write_token_shard

    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(median), 1.0, size=tokens // median * 3), 2, longest).astype(int)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), tokens)) + 1]
    documents = [np.append(rng.integers(1, 50_000, length - 1), EOS) for length in lengths]
    write_token_shard(base / "train" / "1", documents, chunk_bytes="16MB")
    write_token_shard(base / "val" / "1", documents[:50], chunk_bytes="16MB")
    return float(lengths.mean())


def run_child(spec: dict, root: Path, name: str) -> dict:
    spec = {**spec, "out": str(root / f"{name}.json"), "out_dir": str(root / name)}
    spec_path = root / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(spec_path)], capture_output=True, text=True, timeout=3600
    )
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return json.loads(Path(spec["out"]).read_text())


def tokens_per_second(run: dict, warmup: int, tokens_per_step: int) -> float:
    steps = [later - earlier for earlier, later in zip(run["stamps"], run["stamps"][1:])][warmup:]
    return tokens_per_step / statistics.median(steps)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pythia-14m")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the median (compilation)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--doc-median", type=int, default=300, help="median document length, tokens")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="CPU smoke: 64-token rows, 6 steps, one pair")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child.read_text()))
        return {}
    if args.quick:
        args.model, args.seq_len, args.steps, args.warmup, args.pairs, args.doc_median = "pythia-14m", 64, 6, 2, 1, 20
    started = time.perf_counter()
    tokens_per_step = args.micro_batch * args.seq_len
    results = {"machine": machine_info(), "model": args.model, "seq_len": args.seq_len, "pairs": []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        mean_length = write_documents(
            root / "data", (args.steps + 2) * args.micro_batch * (args.seq_len + 1), args.doc_median, 4 * args.seq_len
        )
        train = {
            "global_batch_size": args.micro_batch,
            "micro_batch_size": args.micro_batch,
            "max_tokens": args.steps * tokens_per_step,
            "max_seq_length": args.seq_len,
            "save_interval": 10**9,
            "log_interval": 10**9,
            "lr_warmup_steps": 1,
            "max_norm": 1.0,
            "min_lr": 6e-5,
        }
        data = {"data_path": str(root / "data"), "num_workers": 1}
        for pair in range(args.pairs):
            rates = {}
            for attention in ("causal", "document"):
                log(f"[{pair + 1}/{args.pairs}] {attention}: {args.steps} steps of {tokens_per_step:,} tokens ...")
                spec = {"model": args.model, "train": train, "data": {**data, "attention": attention, "eos_id": EOS}}
                run = run_child(spec, root, f"{attention}-{pair}")
                rates[attention] = tokens_per_second(run, args.warmup, tokens_per_step)
                results["cuda"] = run["cuda"]
            results["pairs"].append(rates)
    ratios = [rates["document"] / rates["causal"] for rates in results["pairs"]]
    results.update(
        ratio=statistics.median(ratios),
        causal_tokens_s=statistics.median(rates["causal"] for rates in results["pairs"]),
        document_tokens_s=statistics.median(rates["document"] for rates in results["pairs"]),
        mean_document_tokens=mean_length,
        seconds=time.perf_counter() - started,
    )
    device = "CUDA, flex attention" if results["cuda"] else "CPU, dense SDPA masks"
    lines = machine_lines(results["machine"]) + [
        f"{args.model} on {device}: {args.steps} steps of {args.micro_batch} x {args.seq_len} tokens, "
        f"documents of {mean_length:.0f} tokens on average ({args.seq_len / mean_length:.1f} a row); "
        f"{args.pairs} causal/document pairs",
        "",
        "| attention | tokens/s (median) |",
        "|---|---:|",
        f"| causal (LitGPT's SDPA) | {results['causal_tokens_s']:,.0f} |",
        f"| document | {results['document_tokens_s']:,.0f} |",
        "",
        "| target | value | target | result |",
        "|---|---:|---:|---|",
        f"| document / causal tokens/s | {results['ratio']:.3f}x (pairs {', '.join(f'{r:.3f}' for r in ratios)}) | "
        f"≥ {TARGET_RATIO:.2f}x on a GPU | "
        f"{verdict(results['ratio'] >= TARGET_RATIO) if results['cuda'] else 'n/a on CPU'} |",
    ]
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
