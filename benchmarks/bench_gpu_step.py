#!/usr/bin/env python
"""Data wait inside real ``litgpt pretrain`` steps: the fraction of step time spent waiting for batches and the
p50 / p99 / p99.9 batch latency, through an epoch boundary, a stage switch and a resume.

Run from the repository root, on a machine with a GPU (pythia-70m, 2,048-token rows, a few hundred steps):

    .venv/bin/python benchmarks/bench_gpu_step.py                        # pythia-70m, 300 steps
    .venv/bin/python benchmarks/bench_gpu_step.py --model pythia-410m    # when memory allows
    .venv/bin/python benchmarks/bench_gpu_step.py --quick                # CPU smoke: pythia-14m, 64 tokens, 12 steps

The data are sparse fake shards (``sharded_mix.tools.fake_shards``): main/1 large, c1 small enough that its epoch
ends mid-run. Two stages (``main:0.7,code:0.3``, then ``c1`` heavier from the middle third) and two processes: the
first stops at the half (``stop_at_step``, a checkpoint there), the second resumes it to the end. Each process runs
``litgpt.pretrain.setup`` itself with the loader's iterator timed: a batch's latency is the time ``next()`` on the
loader takes, the wait fraction is their sum over the loop's wall time (each process's first batch, the workers'
start-up, is reported apart).

Targets (issue "Observability", on one H100): data wait < 0.5 % of step time, p99.9 batch latency < 5 ms.
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

TARGET_WAIT_FRACTION = 0.005
TARGET_P999_MS = 5.0


def child(spec: dict) -> None:
    """One ``litgpt pretrain`` process with the loader's ``next()`` timed; the times go to ``spec['out']``."""
    import torch
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.pretrain import setup

    from sharded_mix import ShardedMixedDataset
    from sharded_mix.streaming.stream import MixtureLoader

    latencies, stamps = [], []
    original = MixtureLoader.__iter__

    def timed_iter(self):
        batches = original(self)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            end = time.perf_counter()
            latencies.append(end - start)
            stamps.append(end)
            yield batch

    MixtureLoader.__iter__ = timed_iter
    sys.argv = [sys.argv[0], spec["model"]]  # LitGPT re-parses the command line to save hyperparameters.yaml
    data = ShardedMixedDataset(**spec["data"])
    cuda = torch.cuda.is_available()
    setup(
        model_name=spec["model"],
        out_dir=Path(spec["out_dir"]),
        precision="bf16-true" if cuda else "32-true",
        resume=Path(spec["resume"]) if spec["resume"] else False,
        data=data,
        train=TrainArgs(**spec["train"]),
        eval=EvalArgs(interval=10**9, max_iters=1, initial_validation=False, final_validation=False),
        devices=1,
        logger_name="csv",
        optimizer="AdamW",
    )
    Path(spec["out"]).write_text(json.dumps({"latencies": latencies, "stamps": stamps, "cuda": cuda}))


def write_shards(base: Path, main_tokens: int, code_tokens: int, chunk_tokens: int) -> None:
    from sharded_mix.tools.fake_shards import write_sparse_token_shard

    write_sparse_token_shard(base / "main" / "1", main_tokens, chunk_tokens)
    write_sparse_token_shard(base / "c1", code_tokens, chunk_tokens)


def run_child(spec: dict, root: Path, name: str) -> dict:
    spec = {**spec, "out": str(root / f"{name}.json")}
    spec_path = root / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(spec_path)], capture_output=True, text=True, timeout=3600
    )
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    (root / f"{name}.log").write_text(result.stdout + result.stderr)
    return json.loads(Path(spec["out"]).read_text()) | {"log": result.stdout + result.stderr}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pythia-70m")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="CPU smoke: pythia-14m, 64 tokens, 12 steps, 1 worker")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child.read_text()))
        return {}
    if args.quick:
        args.model, args.steps, args.micro_batch, args.seq_len, args.workers = "pythia-14m", 12, 4, 64, 1
    started = time.perf_counter()
    block = args.seq_len + 1
    rows = args.steps * args.micro_batch
    half, third = args.steps // 2, args.steps // 3
    results = {"machine": machine_info(), "model": args.model, "steps": args.steps}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # c1 takes 30 % then 60 % of the rows: an epoch of it is a sixth of that, so it wraps mid-run
        write_shards(root / "data", 4 * rows * block, max(rows // 6, 8) * block, 16 * block)
        stages = [
            {"name": "mix", "start_step": 0, "mix_weights_str": "main:0.7,code:0.3"},
            {"name": "code", "start_step": third, "mix_weights_str": "main:0.4,code:0.6"},
        ]
        data = {
            "data_path": str(root / "data"),
            "val_data_path": str(root / "data" / "c1"),
            "stages": stages,
            "num_workers": args.workers,
        }
        train = {
            "global_batch_size": args.micro_batch,
            "micro_batch_size": args.micro_batch,
            "max_tokens": args.steps * args.micro_batch * args.seq_len,
            "max_seq_length": args.seq_len,
            "save_interval": half,
            "log_interval": 10**9,
            "lr_warmup_steps": 1,
            "max_norm": 1.0,
            "min_lr": 6e-5,
            "tie_embeddings": False,
        }
        spec = {"model": args.model, "out_dir": str(root / "out"), "train": train, "resume": None}
        log(f"[1/2] {args.model}: steps 1..{half} (stop_at_step {half}) ...")
        first = run_child(spec | {"data": data | {"stop_at_step": half}}, root, "first")
        checkpoint = root / "out" / f"step-{half:08d}" / "lit_model.pth"
        log(f"[2/2] resumed from step {half} to {args.steps} ...")
        second = run_child(spec | {"data": data, "resume": str(checkpoint)}, root, "second")
    runs = [first, second]
    steady = [latency for run in runs for latency in run["latencies"][1:]]
    loop_s = sum(run["stamps"][-1] - run["stamps"][0] for run in runs)
    step_s = statistics.median(
        later - earlier for run in runs for earlier, later in zip(run["stamps"], run["stamps"][1:])
    )
    results.update(
        cuda=first["cuda"],
        first_batch_s=[run["latencies"][0] for run in runs],
        wait_fraction=sum(steady) / loop_s,
        p50_ms=percentile(steady, 0.5) * 1e3,
        p99_ms=percentile(steady, 0.99) * 1e3,
        p999_ms=percentile(steady, 0.999) * 1e3,
        max_ms=max(steady) * 1e3,
        step_ms=step_s * 1e3,
        transitions=[line for run in runs for line in run["log"].splitlines() if "DATA STAGE TRANSITION" in line],
        epoch_ends=[line for run in runs for line in run["log"].splitlines() if "finished epoch" in line],
        seconds=time.perf_counter() - started,
    )
    device = "GPU" if results["cuda"] else "CPU (smoke run; the targets are for a GPU)"
    lines = machine_lines(results["machine"]) + [
        f"{args.model} on {device}: {args.steps} steps of {args.micro_batch} x {args.seq_len} tokens, "
        f"{args.workers} workers; resumed at step {half}; stage switch at step {third}; c1 wraps its epoch",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| median step (time between batches) | {results['step_ms']:.1f} ms |",
        f"| data wait / loop time | {results['wait_fraction']:.3%} |",
        f"| batch latency p50 / p99 / p99.9 / max | {results['p50_ms']:.2f} / {results['p99_ms']:.2f} / "
        f"{results['p999_ms']:.2f} / {results['max_ms']:.2f} ms |",
        f"| first batch of each process (start-up) | "
        f"{' / '.join(f'{seconds:.2f}' for seconds in results['first_batch_s'])} s |",
        f"| stage transitions / epoch ends logged | {len(results['transitions'])} / {len(results['epoch_ends'])} |",
        "",
        "| target (one H100) | value | target | result |",
        "|---|---:|---:|---|",
        f"| data wait | {results['wait_fraction']:.3%} | < {TARGET_WAIT_FRACTION:.1%} | "
        f"{verdict(results['wait_fraction'] < TARGET_WAIT_FRACTION) if results['cuda'] else 'n/a on CPU'} |",
        f"| p99.9 batch latency | {results['p999_ms']:.2f} ms | < {TARGET_P999_MS} ms | "
        f"{verdict(results['p999_ms'] < TARGET_P999_MS) if results['cuda'] else 'n/a on CPU'} |",
    ]
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
