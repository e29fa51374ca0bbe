#!/usr/bin/env python
"""`sharded-mix prepare` tokens/s against HF `tokenizers` `encode_batch` on the same text and cores.

Run from the repository root:

    .venv/bin/python benchmarks/bench_prepare.py            # 30M tokens per case; a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_prepare.py --quick    # 5M tokens per case

The text is the Python standard library's sources (one document per file, the corpus repeated until it
holds ``--tokens`` tokens) and the tokenizer a byte-level BPE of ``--vocab-size`` trained on it. Two inputs
hold the same documents: one big JSONL file, and ``--small-files`` JSONL files. Each case runs
``prepare_shard(..., num_workers=--workers)`` end to end (reading, JSON, tokenizing, writing chunks, the
manifest with its sha256 of the inputs), and the baseline, in a fresh process with ``RAYON_NUM_THREADS`` =
``--workers``, is ``Tokenizer.encode_batch`` over the documents already in memory, in batches of 1,000.
Target: prepare >= 0.85x the baseline's tokens/s in both cases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import data_root, log, machine_info, machine_lines, quiet, report, verdict  # noqa: E402

TARGET = 0.85
BASELINE_BATCH = 1000
_BASELINE = f"""
import json, sys, time
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
start = time.perf_counter()
tokens = 0
for i in range(0, len(texts), {BASELINE_BATCH}):
    tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[i : i + {BASELINE_BATCH}]))
print(json.dumps({{"tokens": tokens, "seconds": time.perf_counter() - start}}))
"""


def stdlib_documents() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(text)
    return docs


def write_inputs(
    root: Path, docs: list[str], tokens_per_char: float, tokens: int, small_files: int
) -> tuple[Path, Path, int]:
    """The big JSONL file and a directory of ``small_files`` JSONL files with the same documents."""
    chars = sum(map(len, docs))
    if tokens < chars * tokens_per_char:  # less than the corpus: its first documents
        budget, kept = tokens / tokens_per_char, []
        for doc in docs:
            if budget <= 0:
                break
            kept.append(doc)
            budget -= len(doc)
        docs, chars = kept, sum(map(len, kept))
    repeats = max(1, round(tokens / (chars * tokens_per_char)))
    lines = [json.dumps({"text": doc}) + "\n" for doc in docs] * repeats
    big = root / "big.jsonl"
    big.write_text("".join(lines), encoding="utf-8")
    small = root / "small"
    small.mkdir()
    per_file = -(-len(lines) // small_files)
    for index in range(small_files):
        part = lines[index * per_file : (index + 1) * per_file]
        if part:
            (small / f"part-{index:05d}.jsonl").write_text("".join(part), encoding="utf-8")
    return big, small, len(lines)


def baseline(tokenizer_json: Path, big: Path, workers: int) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers), "TOKENIZERS_PARALLELISM": "true"}
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(tokenizer_json), str(big)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_prepare(inputs: Path, tokenizer_dir: Path, output: Path, workers: int) -> dict:
    from sharded_mix.tools.prepare import prepare_shard

    start = time.perf_counter()
    summary = prepare_shard([inputs], tokenizer_dir, output, num_workers=workers, progress=False, command="bench")
    return {
        "tokens": summary.tokens,
        "documents": summary.documents,
        "chunks": summary.chunks,
        "seconds": time.perf_counter() - start,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="where to write inputs and shards; default: a temp dir, removed"
    )
    p.add_argument("--tokens", type=int, default=30_000_000, help="about this many tokens per case")
    p.add_argument("--small-files", type=int, default=2000, help="files in the many-small-files case")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="5M tokens per case")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens = 5_000_000
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet()
    from tokenizers import Tokenizer

    from sharded_mix.tools.demo import train_tokenizer

    start = time.perf_counter()
    machine = machine_info()
    docs = stdlib_documents()
    with data_root(args.data_dir, "bench_prepare_") as root:
        tokenizer_dir = train_tokenizer(docs[:2000], args.vocab_size, root / "tokenizer")
        sample = docs[::10]
        tokens_per_char = sum(
            len(e.ids) for e in Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode_batch(sample)
        ) / sum(map(len, sample))
        big, small, documents = write_inputs(root, docs, tokens_per_char, args.tokens, args.small_files)
        log(
            f"{documents:,} documents, {big.stat().st_size / 1e6:.0f} MB of JSONL; "
            f"tokenizer: BPE, vocab {args.vocab_size}"
        )
        base = baseline(tokenizer_dir / "tokenizer.json", big, args.workers)
        rows = []
        for case, inputs in (("one big JSONL", big), (f"{args.small_files:,} small JSONL files", small)):
            result = run_prepare(inputs, tokenizer_dir, root / "out" / case.split()[0], args.workers)
            assert result["tokens"] == base["tokens"] + result["documents"], (
                "prepare and the baseline tokenized different text"
            )
            rate, base_rate = result["tokens"] / result["seconds"], base["tokens"] / base["seconds"]
            rows.append(
                {
                    "case": case,
                    **result,
                    "tokens_per_s": rate,
                    "baseline_tokens_per_s": base_rate,
                    "ratio": rate / base_rate,
                    "ok": rate / base_rate >= TARGET,
                }
            )
    machine["loadavg_end"] = os.getloadavg()
    results = {
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "baseline": base,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    lines = machine_lines(machine) + [
        f"data: {documents:,} stdlib .py documents, ~{args.tokens / 1e6:.0f}M tokens per case; "
        f"byte-level BPE vocab {args.vocab_size}; {args.workers} workers",
        "",
        "| input | documents | tokens (EOS incl.) | chunks | prepare (s) | prepare M tokens/s "
        "| encode_batch M tokens/s | ratio | target >= 0.85x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['documents']:,} | {row['tokens']:,} | {row['chunks']} | {row['seconds']:.1f} | "
            f"{row['tokens_per_s'] / 1e6:.2f} | {row['baseline_tokens_per_s'] / 1e6:.2f} | {row['ratio']:.2f}x "
            f"| {verdict(row['ok'])} |"
        )
    return report(results, lines, args.json)


if __name__ == "__main__":
    main()
