#!/usr/bin/env python
"""`SFTMixture` over its token cache against LitGPT's own `litgpt.data.JSON` module, on alpaca-like task files.

Run from the repository root:

    .venv/bin/python benchmarks/bench_sft.py            # 20k and 200k examples; about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_sft.py --quick    # 2k and 20k examples

The data: synthetic alpaca-style records (instruction ~12 words, an input on 40% of them ~15 words, output ~45
words, each length log-normal; words drawn Zipf-like from the Python standard library's), written as ``train.json``
(``--sizes`` examples) and ``val.json`` (1% of that, at least 200) in one directory per size; the smaller size's
files are the larger's first records. The tokenizer: a byte-level BPE of ``--vocab-size`` trained on 20,000 of them.

- **Warm start** (each run a fresh process; the median of ``--repeats``, in interleaved rounds): from the data
  module's construction to the first batch of ``train_dataloader()`` (``connect``, ``setup``, the loader), with
  the same batch size, ``num_workers`` and ``max_seq_length``: ours with its token cache already built, and
  ``JSON(json_path=<the directory>)``; and each process's peak RSS (``VmHWM``, the main process).
- **Cold build**: ``encode_task`` of ``train.json`` into an empty cache with ``--tokenize-workers`` processes
  (hashing, JSON, templates, prompts, tokens, the files), in tokens/s of the three texts each example is encoded
  from (the prompt, the response with its EOS, the instruction), against HF ``Tokenizer.encode_batch`` over the same
  texts already in memory, in batches of 1,000, in a fresh process with ``RAYON_NUM_THREADS`` = the same count.

- **Packed against padded**: ``litgpt finetune_full`` steps (a random pythia-14m with that tokenizer, CPU) over the
  smallest size's examples with ``packing: true`` and ``false`` (``long_examples: drop`` in both, so both train the
  same examples), in example tokens (padding left out) per second of steps; processes alternate, the median of the
  pairs' ratios.

Targets: warm start at the largest size <= 1.0x JSON's; cold >= 0.85x encode_batch's tokens/s; our peak RSS grows
<= 100 MiB from the smallest to the largest size; packed >= 1.5x padded example tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import data_root, log, machine_info, machine_lines, peak_rss_mib, quiet, report, verdict  # noqa: E402

WARM_TARGET, COLD_TARGET, RSS_TARGET_MIB, PACKED_TARGET = 1.0, 0.85, 100, 1.5
BASELINE_BATCH = 1000
TOKENIZER_EXAMPLES = 20_000


# ----------------------------------------------------------------------------- the data


def word_pool() -> list[str]:
    """The standard library's words, most frequent first."""
    counts: dict[str, int] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        for word in re.findall(r"[A-Za-z]{2,}", path.read_text(encoding="utf-8", errors="ignore")):
            counts[word.lower()] = counts.get(word.lower(), 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:20_000]


def alpaca_records(count: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(word_pool())
    weights = 1 / np.arange(1, len(words) + 1) ** 1.1

    def lengths(median: float, sigma: float, low: int, high: int):
        return np.clip(rng.lognormal(np.log(median), sigma, count).astype(int), low, high)

    instruction, extra, output = lengths(12, 0.5, 3, 60), lengths(15, 0.9, 1, 200), lengths(45, 0.9, 1, 600)
    extra[rng.random(count) >= 0.4] = 0
    drawn = words[rng.choice(len(words), int((instruction + extra + output).sum()), p=weights / weights.sum())]
    ends = (instruction + extra + output).cumsum()
    records = []
    for end, a, b, c in zip(ends.tolist(), instruction.tolist(), extra.tolist(), output.tolist()):
        start = end - a - b - c
        records.append(
            {
                "instruction": " ".join(drawn[start : start + a]).capitalize() + "?",
                "input": " ".join(drawn[start + a : start + a + b]),
                "output": " ".join(drawn[start + a + b : end]).capitalize() + ".",
            }
        )
    return records


def write_data(root: Path, sizes: list[int], vocab_size: int, seed: int) -> Path:
    """``root/n<size>/{train,val}.json`` and ``root/tokenizer`` (kept and reused when they match)."""
    from sharded_mix.tools.demo import train_tokenizer

    meta = {"sizes": sizes, "vocab_size": vocab_size, "seed": seed, "version": 1}
    meta_path = root / "bench_meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        log(f"  reusing the task files and tokenizer in {root}")
        return root / "tokenizer"
    largest = max(sizes)
    records = alpaca_records(largest + max(200, largest // 100), seed)
    for size in sizes:
        directory = root / f"n{size}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "train.json").write_text(json.dumps(records[:size]), encoding="utf-8")
        val = records[largest : largest + max(200, size // 100)]
        (directory / "val.json").write_text(json.dumps(val), encoding="utf-8")
    texts = [" ".join(record.values()) for record in records[:TOKENIZER_EXAMPLES]]
    train_tokenizer(texts, vocab_size, root / "tokenizer")
    meta_path.write_text(json.dumps(meta))
    return root / "tokenizer"


# ----------------------------------------------------------------------------- the measurements (child processes)


def child_warm(spec: dict) -> dict:
    """connect + setup + first batch of ours (``spec['module'] == 'ours'``) or LitGPT's JSON, in this process."""
    quiet()
    from litgpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(spec["tokenizer"])
    directory = Path(spec["dir"])
    if spec["module"] == "ours":
        from sharded_mix import SFTMixture

        start = time.perf_counter()
        data = SFTMixture(
            train_data=str(directory / "train.json"),
            val_data=str(directory / "val.json"),
            num_workers=spec["num_workers"],
            token_cache=spec["cache"],
        )
    else:
        from litgpt.data import JSON

        start = time.perf_counter()
        data = JSON(json_path=directory, num_workers=spec["num_workers"])
    data.connect(tokenizer, batch_size=spec["batch_size"], max_seq_length=spec["max_seq_length"])
    data.setup()
    setup_s = time.perf_counter() - start
    iterator = iter(data.train_dataloader())
    batch = next(iterator)
    total_s = time.perf_counter() - start
    assert batch["input_ids"].shape[0] == spec["batch_size"]
    return {"setup_s": setup_s, "total_s": total_s, "rss_mib": peak_rss_mib()}


def child_cold(spec: dict) -> dict:
    """The token cache of train.json (then val.json, untimed) built into ``spec['cache']``."""
    quiet()
    from litgpt.prompts import Alpaca
    from litgpt.tokenizer import Tokenizer

    from sharded_mix.streaming.sft_cache import TokenCache
    from sharded_mix.streaming.sft_examples import encode_task

    tokenizer = Tokenizer(spec["tokenizer"])
    directory = Path(spec["dir"])
    cache = TokenCache(spec["cache"], tokenizer, workers=spec["workers"])
    start = time.perf_counter()
    task = encode_task("train", directory / "train.json", tokenizer, Alpaca(), False, -100, cache=cache)
    seconds = time.perf_counter() - start
    assert cache.builds == 1, "the cold build found an entry"
    encode_task("val", directory / "val.json", tokenizer, Alpaca(), False, -100, cache=cache)
    examples = task.examples
    tokens = int(examples.prompt_lengths.sum() + examples.raw_counts.sum())  # prompt, response, instruction
    return {"seconds": seconds, "tokens": tokens, "examples": len(examples), "processes": cache.workers}


def child_baseline(spec: dict) -> dict:
    """HF ``encode_batch`` over each example's prompt, response and instruction, already in memory."""
    from litgpt.prompts import Alpaca
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(spec["tokenizer"]) / "tokenizer.json"))
    style, texts = Alpaca(), []
    for record in json.loads((Path(spec["dir"]) / "train.json").read_text(encoding="utf-8")):
        texts += [style.apply(prompt=record["instruction"], **record), record["output"], record["instruction"]]
    start = time.perf_counter()
    tokens = 0
    for at in range(0, len(texts), BASELINE_BATCH):
        tokens += sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts[at : at + BASELINE_BATCH]))
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


def run_child(kind: str, spec: dict, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        env={**os.environ, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- packed vs padded tokens/s


def write_checkpoint(directory: Path, tokenizer: Path) -> Path:
    """A random pythia-14m with the benchmark's tokenizer: what ``litgpt finetune_full`` starts from."""
    import torch
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, directory / name)
    config = Config.from_name("pythia-14m")
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), directory / "lit_model.pth")
    save_config(config, directory)
    return directory


def child_finetune(spec: dict) -> dict:
    """``litgpt finetune_full`` steps over ``spec['data']`` (an ``SFTMixture``'s fields) with the training loader's
    batches stamped as they are handed out, and each batch's example tokens (no padding) counted."""
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.finetune.full import setup

    from sharded_mix import SFTMixture
    from sharded_mix.streaming.sft_examples import SFTLoader

    stamps, tokens, slots = [], [], []
    original = SFTLoader.__iter__

    def stamped(self):
        for batch in original(self):
            stamps.append(time.perf_counter())
            tokens.append(int(batch["token_counts"]["raw_plus_prompt_template"].sum()))
            slots.append(batch["input_ids"].numel())
            yield batch

    SFTLoader.__iter__ = stamped
    sys.argv = [sys.argv[0], spec["checkpoint"]]  # LitGPT re-parses the command line to save hyperparameters.yaml
    setup(
        checkpoint_dir=Path(spec["checkpoint"]),
        out_dir=Path(spec["out_dir"]),
        precision="32-true",
        data=SFTMixture(**spec["data"]),
        train=TrainArgs(**spec["train"]),
        eval=EvalArgs(interval=10**9, max_new_tokens=1, max_iters=1, initial_validation=False, final_validation=False),
        optimizer="AdamW",
        logger_name="csv",
    )
    return {"stamps": stamps, "tokens": tokens, "slots": slots}


def packed_against_padded(args: argparse.Namespace, root: Path, tokenizer: Path) -> dict:
    """Example tokens per second of ``litgpt finetune_full`` steps with ``packing: true`` and ``false`` over the
    same examples and model; processes alternate, the ratio is the median of the pairs'."""
    directory = root / f"n{args.sizes[0]}"
    checkpoint = write_checkpoint(root / "checkpoint", tokenizer)
    train = {
        "global_batch_size": args.packed_batch,
        "micro_batch_size": args.packed_batch,
        "max_seq_length": args.packed_seq_length,
        "max_steps": args.packed_steps,
        "epochs": 1,
        "lr_warmup_steps": 1,
        "save_interval": 10**9,
        "log_interval": 10**9,
    }
    data = {
        "train_data": str(directory / "train.json"),
        "val_data": str(directory / "val.json"),
        "num_workers": 1,
        "token_cache": str(root / "cache"),
        "log_data_metrics": False,
        "long_examples": "drop",  # the same examples in both runs: packing refuses a prompt that fills a row
    }
    pairs, padding = [], {}
    for pair in range(args.packed_pairs):
        rates = {}
        for packing in (False, True):
            name = "packed" if packing else "padded"
            log(f"  [{pair + 1}/{args.packed_pairs}] {name}: {args.packed_steps} finetune_full steps ...")
            spec = {
                "checkpoint": str(checkpoint),
                "out_dir": str(root / f"finetune-{name}-{pair}"),
                "train": train,
                "data": {**data, "packing": packing},
            }
            run = run_child("finetune", spec)
            warm = args.packed_warmup
            seconds = run["stamps"][-1] - run["stamps"][warm]
            rates[name] = sum(run["tokens"][warm + 1 :]) / seconds
            padding[name] = 1 - sum(run["tokens"]) / sum(run["slots"])
        pairs.append(rates)
    ratios = [rates["packed"] / rates["padded"] for rates in pairs]
    return {
        "pairs": pairs,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "padded_tokens_s": statistics.median(rates["padded"] for rates in pairs),
        "packed_tokens_s": statistics.median(rates["packed"] for rates in pairs),
        "packed_padding": padding["packed"],
        "padded_padding": padding["padded"],
    }


# ----------------------------------------------------------------------------- the run

CHILDREN = {"warm": child_warm, "cold": child_cold, "baseline": child_baseline, "finetune": child_finetune}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-dir", type=Path, default=None, help="where to keep the files; default: a temp dir")
    p.add_argument("--sizes", default="20000,200000", help="comma-separated training examples per case")
    p.add_argument("--num-workers", default="0,2", help="comma-separated DataLoader num_workers values")
    p.add_argument("--tokenize-workers", type=int, default=2, help="processes of the cold build")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="warm-start processes per case and module")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--packed-steps", type=int, default=40, help="finetune_full steps of the packed/padded runs")
    p.add_argument("--packed-warmup", type=int, default=3, help="their first steps, left out of the rate")
    p.add_argument("--packed-batch", type=int, default=4, help="their micro-batch (= global batch)")
    p.add_argument("--packed-seq-length", type=int, default=512, help="their max_seq_length (the packed row)")
    p.add_argument("--packed-pairs", type=int, default=3, help="padded/packed process pairs")
    p.add_argument("--quick", action="store_true", help="2k and 20k examples, one repeat, 6 short finetune steps")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.packed_pairs, args.packed_warmup = "2000,20000", 1, 1, 2
        args.packed_steps, args.packed_seq_length = 6, 256
    args.sizes = sorted(int(size) for size in args.sizes.split(","))
    args.num_workers = [int(workers) for workers in str(args.num_workers).split(",")]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet()
    start = time.perf_counter()
    machine = machine_info()
    cold, warm = {}, {}
    with data_root(args.data_dir, "bench_sft_") as root:
        log(f"[1/4] writing {', '.join(f'{size:,}' for size in args.sizes)} alpaca-like examples to {root} ...")
        tokenizer = str(write_data(root, args.sizes, args.vocab_size, args.seed))
        cache = root / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        for size in args.sizes:
            log(f"[2/4] cold build and encode_batch, {size:,} examples ...")
            spec = {"dir": str(root / f"n{size}"), "tokenizer": tokenizer, "cache": str(cache)}
            ours = run_child("cold", {**spec, "workers": args.tokenize_workers})
            threads = {"RAYON_NUM_THREADS": str(args.tokenize_workers), "TOKENIZERS_PARALLELISM": "true"}
            base = run_child("baseline", spec, threads)
            assert ours["tokens"] == base["tokens"] + ours["examples"], "the cache and the baseline encoded other text"
            rate, base_rate = ours["tokens"] / ours["seconds"], base["tokens"] / base["seconds"]
            cold[size] = {**ours, "tokens_per_s": rate, "baseline": base, "baseline_tokens_per_s": base_rate}
            cold[size].update(ratio=rate / base_rate, ok=rate / base_rate >= COLD_TARGET)
        per_round = len(args.sizes) * len(args.num_workers) * 2
        log(f"[3/4] warm starts: {args.repeats} round(s) of {per_round} processes ...")
        runs: dict[tuple, list[dict]] = {}
        for _ in range(args.repeats):
            for size in args.sizes:
                for workers in args.num_workers:
                    for module in ("ours", "json"):
                        spec = {
                            "module": module,
                            "dir": str(root / f"n{size}"),
                            "tokenizer": tokenizer,
                            "cache": str(cache),
                            "num_workers": workers,
                            "batch_size": args.batch_size,
                            "max_seq_length": args.max_seq_length,
                        }
                        runs.setdefault((size, workers, module), []).append(run_child("warm", spec))
        for (size, workers, module), results in runs.items():
            median = {key: statistics.median(r[key] for r in results) for key in results[0]}
            warm.setdefault(f"{size}/{workers}", {})[module] = {**median, "runs": results}
        log(f"[4/4] packed against padded litgpt finetune_full steps, {args.sizes[0]:,} examples ...")
        packed = packed_against_padded(args, root, Path(tokenizer))
    machine["loadavg_end"] = os.getloadavg()
    return finish(args, machine, cold, warm, packed, time.perf_counter() - start)


def finish(args: argparse.Namespace, machine: dict, cold: dict, warm: dict, packed: dict, seconds: float) -> dict:
    small, large = args.sizes[0], args.sizes[-1]
    lines = machine_lines(machine) + [
        f"data: alpaca-like train.json of {', '.join(f'{s:,}' for s in args.sizes)} examples; byte-level BPE vocab "
        f"{args.vocab_size}; batch {args.batch_size}, max_seq_length {args.max_seq_length}",
        "",
        f"Cold build ({args.tokenize_workers} processes) against encode_batch (RAYON_NUM_THREADS "
        f"{args.tokenize_workers}); tokens of prompt + response + instruction",
        "| examples | tokens | build (s) | build M tokens/s | encode_batch (s) | encode_batch M tokens/s | ratio "
        f"| target >= {COLD_TARGET}x |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size, row in cold.items():
        lines.append(
            f"| {size:,} | {row['tokens']:,} | {row['seconds']:.1f} | {row['tokens_per_s'] / 1e6:.2f} | "
            f"{row['baseline']['seconds']:.1f} | {row['baseline_tokens_per_s'] / 1e6:.2f} | {row['ratio']:.2f}x | "
            f"{verdict(row['ok'])} |"
        )
    lines += [
        "",
        f"Warm start: construction to first batch (median of {args.repeats} fresh processes); peak RSS of the main "
        "process",
        "| examples | num_workers | ours setup (s) | ours total (s) | JSON setup (s) | JSON total (s) | ours / JSON "
        "| ours RSS (MiB) | JSON RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for key, row in warm.items():
        size, workers = map(int, key.split("/"))
        ours, theirs = row["ours"], row["json"]
        row["ratio"] = ours["total_s"] / theirs["total_s"]
        lines.append(
            f"| {size:,} | {workers} | {ours['setup_s']:.3f} | {ours['total_s']:.3f} | {theirs['setup_s']:.3f} | "
            f"{theirs['total_s']:.3f} | {row['ratio']:.2f}x | {ours['rss_mib']:.0f} | {theirs['rss_mib']:.0f} |"
        )
        if size == large:
            targets.append((f"warm start / JSON at {size:,}, num_workers {workers}", row["ratio"], WARM_TARGET))
    for workers in args.num_workers:
        growth = warm[f"{large}/{workers}"]["ours"]["rss_mib"] - warm[f"{small}/{workers}"]["ours"]["rss_mib"]
        targets.append((f"ours peak RSS {large:,} - {small:,}, num_workers {workers}", growth, RSS_TARGET_MIB))
    for size, row in cold.items():
        targets.append((f"cold build / encode_batch at {size:,}", row["ratio"], COLD_TARGET))
    lines += [
        "",
        f"litgpt finetune_full (pythia-14m, random weights, CPU, 32-true): {args.packed_steps} steps of "
        f"{args.packed_batch} rows of at most {args.packed_seq_length} tokens, first {args.packed_warmup} left out; "
        f"example tokens (no padding) per second, median of {args.packed_pairs} pair(s)",
        "| rows | example tokens/s |",
        "|---|---:|",
        f"| one example a row, padded to the batch's longest (packing: false; {packed['padded_padding']:.1%} padding) "
        f"| {packed['padded_tokens_s']:,.0f} |",
        f"| packed (packing: true; {packed['packed_padding']:.1%} padding) | {packed['packed_tokens_s']:,.0f} |",
    ]
    targets.append(("packed / padded example tokens/s", packed["ratio"], PACKED_TARGET))
    lines += ["", "Targets", "| measure | value | target | result |", "|---|---:|---:|---|"]
    for name, value, target in targets:
        below = "cold" not in name and "packed" not in name
        ok = value <= target if below else value >= target
        unit = " MiB" if "RSS" in name else "x"
        sign = "<=" if below else ">="
        lines.append(f"| {name} | {value:.2f}{unit} | {sign} {target}{unit} | {verdict(ok)} |")
    results = {
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "cold": {str(size): row for size, row in cold.items()},
        "warm": warm,
        "packed": packed,
        "seconds": seconds,
    }
    return report(results, lines, args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))))
    else:
        main()
