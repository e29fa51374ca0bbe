"""`sharded-mix` commands that build and check data: prepare, demo-data, inspect, link, merge."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def quiet_litdata(args: argparse.Namespace) -> None:
    if not args.verbose:  # litdata logs cache sizing and the like at INFO
        logging.getLogger("litdata").setLevel(logging.WARNING)


def print_links(links, dry_run: bool) -> None:
    verb = "would link" if dry_run else "linked"
    for link in links:
        print(f"{'already linked' if link.exists else verb}: {link.link} -> {link.target}")


def add_prepare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="tokenize text files or datasets into one litdata token shard",
        description="Tokenize .txt, .jsonl(.gz|.zst) and .parquet files, or a streamed Hugging Face dataset, "
        "(EOS appended to every document) into a litdata token shard at BASE/SHARD_ID, e.g. data/main/1 or "
        "data/c3, with a manifest.json of what it was built from. Workers split files by byte ranges and "
        "row groups. --val-docs/--val-fraction also write a held-out shard at BASE/val/SHARD_ID.",
    )
    p.add_argument("--input", nargs="+", default=[], type=Path, help="files or directories to read")
    p.add_argument("--dataset", help="a Hugging Face dataset to stream (needs sharded_mix[datasets]), e.g. allenai/c4")
    p.add_argument("--dataset-config", help="the dataset's config, e.g. en")
    p.add_argument("--dataset-split", default="train", help="the dataset's split (default train)")
    p.add_argument("--dataset-data-dir", help="the dataset's data_dir, e.g. python for bigcode/starcoderdata")
    p.add_argument("--dataset-data-files", nargs="+", default=[], help="data_files for load_dataset (local builders)")
    p.add_argument(
        "--recipe", help="fields, template and filters of a paper source: main, web, code, math, instruct, qa"
    )
    p.add_argument("--tokenizer-dir", required=True, type=Path, help="a directory litgpt's Tokenizer loads")
    p.add_argument("--output", required=True, type=Path, help="the shard directory to write, BASE/SHARD_ID")
    p.add_argument("--text-field", help="the field holding the text in .jsonl/.parquet rows (default text)")
    p.add_argument("--template", help=r"a document from several fields, e.g. '{question}\n\n{answer}'; {f?}: optional")
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=KEY[,KEY...]",
        help="where a template/filter field may come from, first present wins, e.g. question=question,instruction",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="'FIELD OP VALUE'",
        help="keep rows where this holds (repeatable, all must hold), e.g. 'path endswith .py'",
    )
    p.add_argument("--skip-docs", type=int, default=0, help="skip the first N documents (global input order)")
    p.add_argument("--max-docs", type=int, help="keep at most N documents after --skip-docs")
    p.add_argument("--val-docs", type=int, help="hold out exactly N documents, evenly spread, into the val shard")
    p.add_argument("--val-fraction", type=float, help="hold out this fraction of documents (by a hash of the text)")
    p.add_argument("--val-output", type=Path, help="the val shard directory (default BASE/val/SHARD_ID)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=1,
        help="worker processes; each tokenizes its own part of the inputs (1: in this process)",
    )
    p.add_argument("--chunk-bytes", default="64MB", help="target size of each chunk file")
    p.add_argument("--item-bytes", help="size of a work item (default: inputs / 64, within 1MB..128MB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard at --output (and its val shard)")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    import shlex

    from sharded_mix.tools.prepare import DatasetSpec, prepare_shard
    from sharded_mix.tools.records import unescape

    quiet_litdata(args)
    fields = {}
    for text in args.field:
        name, _, keys = text.partition("=")
        if not name or not keys:
            raise ValueError(f"--field {text!r} is not NAME=KEY[,KEY...]; e.g. --field question=question,instruction")
        fields[name.strip()] = [key.strip() for key in keys.split(",") if key.strip()]
    datasets = []
    if args.dataset:
        datasets.append(
            DatasetSpec(
                args.dataset,
                args.dataset_config,
                args.dataset_split,
                tuple(args.dataset_data_files),
                args.dataset_data_dir,
            )
        )
    summary = prepare_shard(
        inputs=args.input,
        tokenizer_dir=args.tokenizer_dir,
        output_dir=args.output,
        text_field=args.text_field,
        num_workers=args.num_workers,
        chunk_bytes=args.chunk_bytes,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        template=None if args.template is None else unescape(args.template),
        fields=fields,
        where=args.where,
        recipe=args.recipe,
        datasets=datasets,
        skip_docs=args.skip_docs,
        max_docs=args.max_docs,
        val_docs=args.val_docs,
        val_fraction=args.val_fraction,
        val_output=args.val_output,
        item_bytes=args.item_bytes,
        command=shlex.join(["sharded-mix", *sys.argv[1:]]),
    )
    print(summary.describe())
    return 0


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo-data",
        help="build the embedded demo: a BPE tokenizer and typed shards from the Python standard library",
        description="Collect real text every Python install has (stdlib sources as code, the Python reference "
        "docs, docstrings and licence texts as prose), train a small byte-level BPE tokenizer and write the "
        "typed shards main/1, c1 and w1, with validation shards, under WORKDIR.",
    )
    p.add_argument("--workdir", type=Path, default=Path("out/demo"), help="where to write tokenizer/ and data/")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--overwrite", action="store_true", help="rebuild even if the demo data exists")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from sharded_mix.tools.demo import build_demo

    quiet_litdata(args)
    result = build_demo(workdir=args.workdir, vocab_size=args.vocab_size, overwrite=args.overwrite)
    print(result.describe())
    return 0


def add_inspect(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="list the shards under a data directory: sizes, dtypes, totals per type and problems",
        description="Discover the shards under DATA_PATH (or its train/ and val/ splits) and show per shard its id, "
        "type, tokens, documents, chunks, token dtype and size on disk, the totals per type, and the problems found: "
        "unreadable index.json, chunk files missing, unreadable or of the wrong size (one stat each), shards that "
        "are not token shards, mixed dtypes. --verify also reads every chunk's header and 3 windows of 4,096 tokens "
        "per chunk and checks the token ids against --vocab-size or --tokenizer-dir. Exit code 1 when there are "
        "problems.",
    )
    p.add_argument("data_path", type=Path, help="a base directory of shards, or one with train/ and val/")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--verify", action="store_true", help="read chunk headers and sample token ids (a few KB per chunk)")
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--vocab-size", type=int, default=None, help="token ids must be below this (implies --verify)")
    bound.add_argument(
        "--tokenizer-dir",
        type=Path,
        default=None,
        help="bound token ids by this litgpt tokenizer's vocabulary (implies --verify)",
    )
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    import json

    from sharded_mix.tools.inventory import format_inventory, inspect_data_path
    from sharded_mix.tools.verify import tokenizer_vocab_size

    if args.vocab_size is not None and args.vocab_size < 1:
        raise ValueError(f"--vocab-size {args.vocab_size}: give the tokenizer's vocabulary size, a positive number.")
    vocab_size = tokenizer_vocab_size(args.tokenizer_dir) if args.tokenizer_dir is not None else args.vocab_size
    verify = args.verify or vocab_size is not None
    inventories = inspect_data_path(args.data_path, verify=verify, vocab_size=vocab_size)
    if args.json:
        print(json.dumps([inventory.as_dict() for inventory in inventories], indent=2))
    else:
        print("\n\n".join(format_inventory(inventory) for inventory in inventories))
    return 1 if any(inventory.all_problems() for inventory in inventories) else 0


def _name_and_dir(text: str) -> tuple[str, str]:
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR, e.g. m1=/data/proofpile")
    return name, target


def add_link(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "link",
        help="assemble a typed base directory from existing litdata directories, by symlink",
        description="Make BASE a base directory discovery understands: each --main DIR becomes main/1, main/2, ... and "
        "each --as NAME=DIR becomes BASE/NAME (e.g. m1, c2, main/3). Every DIR must be a litdata directory; existing "
        "entries are never replaced.",
    )
    p.add_argument("base", type=Path, help="the base directory to fill (created if missing)")
    p.add_argument(
        "--main", action="append", default=[], type=Path, metavar="DIR", help="a main (web) shard; repeat for more"
    )
    p.add_argument(
        "--as",
        dest="named",
        action="append",
        default=[],
        type=_name_and_dir,
        metavar="NAME=DIR",
        help="a typed shard, e.g. m1=/data/proofpile",
    )
    p.add_argument("--dry-run", action="store_true", help="show the links without making them")
    p.set_defaults(func=_run_link)


def _run_link(args: argparse.Namespace) -> int:
    from sharded_mix.tools.link import link_data

    named = {}
    for name, target in args.named:
        if name in named:
            raise ValueError(f"--as {name}=... is given twice; give each name once.")
        named[name] = target
    print_links(link_data(args.base, args.main, named, dry_run=args.dry_run), args.dry_run)
    if args.dry_run:
        print("dry run: nothing changed")
    return 0


def add_hash(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "hash",
        help="add content hashes (checksums.json) to shards, for verification while training",
        description="Hash every chunk file of every shard at or under PATH (xxh3-128, in worker processes) into a "
        "checksums.json beside its index.json, so training verifies each chunk once per node (verify_chunks: "
        "first_read). Shards written by `sharded-mix prepare` have one already. An interrupted run resumes where it "
        "stopped; index.json and the chunks are not changed.",
    )
    p.add_argument("path", type=Path, help="a shard directory, or a base directory of shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="hashing processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="hash again even where checksums.json covers the shard")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_hash)


def _run_hash(args: argparse.Namespace) -> int:
    from sharded_mix.tools.hash_shards import hash_path

    if args.workers < 1:
        raise ValueError(f"--workers is {args.workers}; give 1 or more.")
    for report in hash_path(args.path, args.workers, args.force, progress=not args.no_progress):
        print(report.describe())
    return 0


def add_merge(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge several litdata token directories into one shard",
        description="Check that the inputs are token shards in one format (same dtype, item loader, compression), then "
        "merge them with litdata's merge_datasets into --output, which must be new or empty.",
    )
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="the litdata directories to merge")
    p.add_argument("--output", required=True, type=Path, help="the merged shard's directory, e.g. data/mix/m1")
    p.add_argument("--max-workers", type=int, default=2, help="litdata copy threads")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from sharded_mix.tools.merge import merge_shards

    quiet_litdata(args)
    result = merge_shards(args.inputs, args.output, args.max_workers)
    print(
        f"merged {result['inputs']} shards into {result['output']}: {result['tokens']:,} tokens, "
        f"{result['documents']:,} documents, {result['chunks']} chunks"
    )
    return 0
