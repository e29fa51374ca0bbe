#!/usr/bin/env python
"""Time to first batch of the sharded_mix mixture loader, fresh and resumed deep into a run.

Run from the repository root:

    .venv/bin/python benchmarks/bench_first_batch.py            # default run (about a minute on 2 cores)
    .venv/bin/python benchmarks/bench_first_batch.py --quick    # smoke test (< 1 minute)

Over the four uint16 token shards of ``bench_throughput.py`` (``common.MIX``), at each ``--workers``
count: ``next(iter(loader))`` of a fresh ``mixture_loader``, and of one that loaded a state at
``--resume-samples`` samples (the loader's own ``state_dict()`` with counts consistent with the blend,
checked against the ``Blender`` first); the median of ``--repeats`` each, then the target
(resumed <= 2x fresh) with pass/fail.

This is a script, not a test: it writes nothing outside ``--data-dir`` (a temporary directory
by default, removed at the end) and ``--json`` if given.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import (  # noqa: E402
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

from sharded_mix.mixing.blend import Blender  # noqa: E402
from sharded_mix.shards import Shard  # noqa: E402
from sharded_mix.streaming.stream import mixture_loader  # noqa: E402

TARGET_RESUME_RATIO = 2.0  # resumed / fresh first batch, at most


def consistent_counts(weights: dict[str, float], samples: int) -> dict[str, int]:
    """Per-source counts for ``samples`` samples within the blend's bound.

    floor(w_i·n) each, the remainder going to the largest fractions.
    """
    blender = Blender(weights)
    exact = [w * samples for w in blender.weights]
    counts = [math.floor(x) for x in exact]
    remainder = samples - sum(counts)
    for i in sorted(range(len(counts)), key=lambda i: counts[i] - exact[i])[:remainder]:
        counts[i] += 1
    return dict(zip(blender.ids, counts))


def check_blend_continues(weights: dict[str, float], samples: int, taken: dict[str, int], steps: int = 20_000) -> float:
    """Step the Blender on from the constructed state; the largest |taken_i − w_i·n| seen (must stay < 1)."""
    blender = Blender(weights, samples, taken)
    worst = max(abs(t - w * samples) for t, w in zip(blender.taken, blender.weights))
    for _ in range(steps):
        blender.next_index()
        n = blender.position
        worst = max(worst, max(abs(t - w * n) for t, w in zip(blender.taken, blender.weights)))
    return worst


def resumed_state(shards: list[Shard], weights: dict[str, float], args, samples: int) -> dict:
    """A ``MixtureLoader.state_dict()`` at ``samples`` samples, consistent with the blend (world size 1)."""
    loader = mixture_loader(shards, weights, args.block_size, args.batch_size, args.seed, True, 0)
    state = loader.state_dict()
    taken = consistent_counts(state["weights"], samples)
    state["samples"] = samples
    state["taken"] = taken
    for source, entry in state["sources"].items():
        draws = taken[source] * state["world_size"]
        entry.update(
            draws=draws,
            epoch=draws // entry["blocks"],
            position=draws % entry["blocks"],
            tokens=draws * state["block_size"],
        )
    return state


def time_first_batch(shards, weights, args, workers: int, state: dict | None) -> dict:
    loader = mixture_loader(shards, weights, args.block_size, args.batch_size, args.seed, True, workers)
    load_s = 0.0
    if state is not None:
        start = time.perf_counter()
        loader.load_state_dict(state)
        load_s = time.perf_counter() - start
    start = time.perf_counter()
    iterator = iter(loader)
    batch = next(iterator)
    elapsed = time.perf_counter() - start
    assert tuple(batch.shape) == (args.batch_size, args.block_size), batch.shape
    if state is not None:
        assert loader.cursor.samples == state["samples"] + args.batch_size, loader.cursor.samples
    del iterator, loader
    gc.collect()
    return {"first_batch_s": elapsed, "load_state_s": load_s}


def report(results: dict, args) -> list[str]:
    lines = machine_lines(results["machine"])
    lines.append(f"{mix_data_line(results['data'], args)}, {args.repeats} repeat(s) per timing")
    lines.append("")
    lines.append("Time to first batch, our loader (median of repeats)")
    lines.append(f"| workers | fresh (s) | resumed at {args.resume_samples:,} samples (s) | load_state_dict (ms) |")
    lines.append("|---:|---:|---:|---:|")
    for w, row in results["first_batch"].items():
        lines.append(f"| {w} | {row['fresh_s']:.3f} | {row['resumed_s']:.3f} | {row['load_state_ms']:.2f} |")
    lines.append("")
    lines.append("Target")
    lines.append("| measure | value | target | result |")
    lines.append("|---|---:|---:|---|")
    for w, row in results["first_batch"].items():
        r = row["resumed_s"] / row["fresh_s"]
        target = f"<= {TARGET_RESUME_RATIO:.1f}x | {verdict(r <= TARGET_RESUME_RATIO)}"
        lines.append(f"| resumed / fresh first batch, workers={w} | {r:.2f}x | {target} |")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_mix_arguments(p)
    p.add_argument("--resume-samples", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=5, help="repeats of the first-batch timings (median)")
    args = finish_mix_arguments(p.parse_args(argv))
    if args.quick:
        args.repeats = 3
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    began = time.perf_counter()
    quiet()
    machine = machine_info()
    log(
        f"bench_first_batch: {machine['cores']} cores, python {machine['python']}, torch {machine['torch']}, "
        f"litdata {machine['litdata']}"
    )
    results: dict = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with data_root(args.data_dir, "bench_first_batch_") as root:
        by_id, weights, results["data"] = mix_shards(root, args)
        shards = list(by_id.values())
        log(f"      done in {results['data']['write_s']:.1f} s")
        log(f"[2/3] first batch: fresh vs resumed at {args.resume_samples:,} samples, workers {args.workers}")
        state = resumed_state(shards, weights, args, args.resume_samples)
        drift = check_blend_continues(state["weights"], state["samples"], state["taken"])
        assert drift < 1.0, f"constructed state drifts {drift} from the blend"
        first: dict = {}
        for w in args.workers:
            fresh = [time_first_batch(shards, weights, args, w, None) for _ in range(args.repeats)]
            resumed = [time_first_batch(shards, weights, args, w, state) for _ in range(args.repeats)]
            first[str(w)] = {
                "fresh_s": statistics.median(r["first_batch_s"] for r in fresh),
                "resumed_s": statistics.median(r["first_batch_s"] for r in resumed),
                "load_state_ms": 1e3 * statistics.median(r["load_state_s"] for r in resumed),
                "fresh_all_s": [r["first_batch_s"] for r in fresh],
                "resumed_all_s": [r["first_batch_s"] for r in resumed],
            }
            log(f"      workers={w} fresh {first[str(w)]['fresh_all_s']} resumed {first[str(w)]['resumed_all_s']}")
        results["first_batch"] = first
        results["resumed_state"] = {"samples": state["samples"], "taken": state["taken"], "max_blend_drift": drift}

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
