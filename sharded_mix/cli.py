"""The `sharded-mix` command line: the only place in the package that prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _quiet_litdata(args: argparse.Namespace) -> None:
    if not args.verbose:  # litdata logs cache sizing and the like at INFO
        logging.getLogger("litdata").setLevel(logging.WARNING)


def _print_links(links, dry_run: bool) -> None:
    verb = "would link" if dry_run else "linked"
    for link in links:
        print(f"{'already linked' if link.exists else verb}: {link.link} -> {link.target}")


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
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

    _quiet_litdata(args)
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


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
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

    _quiet_litdata(args)
    result = build_demo(workdir=args.workdir, vocab_size=args.vocab_size, overwrite=args.overwrite)
    print(result.describe())
    return 0


def _add_link_checkpoints(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "link-checkpoints",
        help="make a midtraining out_dir that resumes from step K of a pretraining run",
        description="Symlink the pretraining run's step-* checkpoint directories up to --step into the midtraining "
        "run's out_dir, so `resume: auto` (or `--resume true`) in the midtraining config starts from step K. "
        "Existing entries are never replaced.",
    )
    p.add_argument("--pretrain-dir", required=True, type=Path, help="the pretraining run's out_dir")
    p.add_argument(
        "--midtrain-dir", required=True, type=Path, help="the midtraining run's out_dir (created if missing)"
    )
    p.add_argument("--step", required=True, type=int, help="the pretraining step to continue from")
    p.add_argument("--dry-run", action="store_true", help="show the links without making them")
    p.set_defaults(func=_run_link_checkpoints)


def _run_link_checkpoints(args: argparse.Namespace) -> int:
    from sharded_mix.tools.checkpoints import link_checkpoints

    _print_links(link_checkpoints(args.pretrain_dir, args.midtrain_dir, args.step, dry_run=args.dry_run), args.dry_run)
    print(
        f"{args.midtrain_dir} resumes from step {args.step} with `resume: auto`"
        + (" (dry run: nothing changed)" if args.dry_run else "")
    )
    return 0


def _add_data_position(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data-position",
        help="show where a checkpoint's data stream is: per source epoch, samples and tokens consumed",
        description="Read the data state a sharded_mix run saved in a LitGPT checkpoint.",
    )
    p.add_argument(
        "checkpoint", type=Path, help="a lit_model.pth, a step-* directory, or a run's out_dir (newest step)"
    )
    p.add_argument("--json", action="store_true", help="print the raw state as JSON")
    p.set_defaults(func=_run_data_position)


def _run_data_position(args: argparse.Namespace) -> int:
    import json

    from sharded_mix.tools.checkpoints import format_data_position, read_data_position

    position = read_data_position(args.checkpoint)
    print(json.dumps(position, indent=2) if args.json else format_data_position(position))
    return 0


def _add_resume_checkpoint(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "resume-checkpoint",
        help="print the newest complete step-*/lit_model.pth of a run, skipping half-written ones",
        description="Print the newest step-*/lit_model.pth in OUT_DIR that is a complete checkpoint (a save cut short "
        "by a kill is skipped, with the reason on stderr). Exit code 1, printing nothing, when none is.",
    )
    p.add_argument("out_dir", type=Path, help="the out_dir of a litgpt pretrain run")
    p.set_defaults(func=_run_resume_checkpoint)


def _run_resume_checkpoint(args: argparse.Namespace) -> int:
    from sharded_mix.tools.checkpoints import newest_loadable_checkpoint

    checkpoint, skipped = newest_loadable_checkpoint(args.out_dir)
    for path, reason in skipped:
        print(
            f"skipping {path}: {reason}" + ("; falling back to an earlier step" if checkpoint else ""), file=sys.stderr
        )
    if checkpoint is None:
        print(
            f"no complete checkpoint in {args.out_dir}" if skipped else f"no step-* checkpoints in {args.out_dir}",
            file=sys.stderr,
        )
        return 1
    print(checkpoint)
    return 0


def _add_plan(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="show the data stage plan of a config without training",
        description="Discover the shards, resolve every stage's weights and print the DATA STAGE TRAINING PLAN: per stage "
        "its steps and tokens, per source its weight, tokens and epochs, and each source's epochs over the run. CONFIG is a "
        "LitGPT config (its data: section; train.max_tokens bounds the run) or a YAML of ShardedMixedDataset init args.",
    )
    p.add_argument("config", type=Path, help="the YAML to plan")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="the run's length in tokens (default: train.max_tokens)"
    )
    p.add_argument(
        "--resume-step",
        type=int,
        default=None,
        help="the step the run resumes at (default: the step-N of the config's resume path, else 0)",
    )
    p.add_argument("--json", action="store_true", help="print the plan rows as JSON")
    p.add_argument(
        "--plot", type=Path, default=None, help="also save a plot of weight per source over steps (needs matplotlib)"
    )
    p.set_defaults(func=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from sharded_mix.config import load_run_config
    from sharded_mix.datamodule import ShardedMixedDataset
    from sharded_mix.mixing.plan import format_mixture_plan, format_stage_plan, plot_stage_plan

    init_args, sizes = load_run_config(args.config)
    quiet = [] if args.verbose else [logging.getLogger(name) for name in ("sharded_mix", "litdata")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # the plan below says it all; setup's own log lines would repeat it
        logger.setLevel(logging.WARNING)
    try:
        if sizes.global_batch_size is not None:
            init_args.setdefault("global_batch_size", sizes.global_batch_size)  # LitGPT would pass train's
        data = ShardedMixedDataset(**init_args)
        data.connect(batch_size=sizes.micro_batch_size, max_seq_length=sizes.max_seq_length)
        data.setup()
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    resume_step = args.resume_step if args.resume_step is not None else sizes.resume_step
    rows = data.plan(args.max_tokens if args.max_tokens is not None else sizes.max_tokens, resume_step)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(format_mixture_plan(data.plan_rows(), f"train {data.train_mixture.base}"))
        print(format_stage_plan(rows, f"{args.config}"))
    if args.plot is not None:
        ax = plot_stage_plan(rows)
        ax.figure.savefig(args.plot, bbox_inches="tight")
        print(f"plot written to {args.plot}")
    return 0


def _add_inspect(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="list the shards under a data directory: sizes, dtypes, totals per type and problems",
        description="Discover the shards under DATA_PATH (or its train/ and val/ splits) and show per shard its id, type, "
        "tokens, documents, chunks, token dtype and size on disk, the totals per type, and the problems found: "
        "unreadable index.json, chunk files missing, unreadable or of the wrong size (one stat each), shards that are "
        "not token shards, mixed dtypes. --verify also reads every chunk's header and 3 windows of 4,096 tokens per chunk "
        "and checks the token ids against --vocab-size or --tokenizer-dir. Exit code 1 when there are problems.",
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


def _add_link(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "link",
        help="assemble a typed base directory from existing litdata directories, by symlink",
        description="Make BASE a base directory discovery understands: each --main DIR becomes main/1, main/2, ... and each "
        "--as NAME=DIR becomes BASE/NAME (e.g. m1, c2, main/3). Every DIR must be a litdata directory; existing entries "
        "are never replaced.",
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
    _print_links(link_data(args.base, args.main, named, dry_run=args.dry_run), args.dry_run)
    if args.dry_run:
        print("dry run: nothing changed")
    return 0


def _add_merge(subparsers: argparse._SubParsersAction) -> None:
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

    _quiet_litdata(args)
    result = merge_shards(args.inputs, args.output, args.max_workers)
    print(
        f"merged {result['inputs']} shards into {result['output']}: {result['tokens']:,} tokens, "
        f"{result['documents']:,} documents, {result['chunks']} chunks"
    )
    return 0


def _add_eval_results(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-results",
        help="collect the litgpt evaluate results of every checkpoint of a run into one CSV",
        description="Read EVAL_DIR/<checkpoint>/results.json for every step-N and final directory (as "
        "training_scripts/eval_checkpoints.sh lays them out) and write one CSV row per checkpoint, task and metric. "
        "Exit code 1 when some results.json are missing or broken (the CSV then holds the others).",
    )
    p.add_argument("eval_dir", type=Path, help="the --eval-dir of eval_checkpoints.sh (default RUN_DIR/eval)")
    p.add_argument("--csv", type=Path, help="the CSV to write (default: EVAL_DIR/results.csv)")
    p.set_defaults(func=_run_eval_results)


def _run_eval_results(args: argparse.Namespace) -> int:
    from sharded_mix.tools.eval_results import collect, write_csv

    rows, problems = collect(args.eval_dir)
    csv_path = args.csv or args.eval_dir / "results.csv"
    write_csv(rows, csv_path)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    checkpoints = len({row.checkpoint for row in rows})
    print(
        f"wrote {len(rows)} rows for {checkpoints} checkpoint(s) to {csv_path}"
        + (f"; {len(problems)} checkpoint(s) left out (see above)" if problems else "")
    )
    return 1 if problems else 0


def _add_val_loss(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "val-loss",
        help="validation loss of a checkpoint on each validation shard and each SFT task file separately",
        description="Load a LitGPT checkpoint (lit_model.pth + model_config.yaml) and report the mean next-token loss "
        "and perplexity on each VAL_PATH: on the first --max-blocks blocks of every shard under a directory of token "
        "shards, and on the examples of a .json/.jsonl task file, encoded as SFTMixture encodes them (the checkpoint's "
        "prompt_style.yaml or --prompt-style, --mask-prompt) and averaged over their target tokens. So one command "
        "gives a fine-tuned checkpoint's loss on each task and on the pretraining validation shards (forgetting).",
    )
    p.add_argument("checkpoint", type=Path, help="a step-* or final/ directory, a lit_model.pth, or a run's out_dir")
    p.add_argument(
        "val_path",
        type=Path,
        nargs="+",
        help="typed base directories of validation shards (or litdata directories) and/or .json/.jsonl task files",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="tokens per sample (default: the model's block size); task examples are cut to it",
    )
    p.add_argument("--max-blocks", type=int, default=64, help="blocks per shard")
    p.add_argument("--max-examples", type=int, default=None, help="examples per task file (default: all)")
    p.add_argument(
        "--prompt-style",
        default=None,
        help="task files: a LitGPT prompt style (default: the checkpoint's, else alpaca)",
    )
    p.add_argument(
        "--mask-prompt", action="store_true", help="task files: score the response tokens only (as mask_prompt)"
    )
    p.add_argument("--ignore-index", type=int, default=-100, help="task files: the label of masked tokens")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="e.g. cuda")
    p.add_argument("--json", action="store_true", help="print the losses as JSON")
    p.set_defaults(func=_run_val_loss)


def _run_val_loss(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from sharded_mix.streaming.sft_files import is_task_file
    from sharded_mix.tools.evaluate import (
        checkpoint_prompt_style,
        format_source_losses,
        load_model,
        load_tokenizer,
        source_losses,
        task_loss,
    )

    _quiet_litdata(args)
    task_files = [path for path in args.val_path if is_task_file(path)]
    names = [path.stem for path in task_files]
    if len(set(names)) < len(names):
        names = [str(path) for path in task_files]  # same stems in different folders: name them by path
    model = load_model(args.checkpoint, args.device)
    losses = []
    if task_files:
        from sharded_mix.sft import prompt_style_named

        tokenizer = load_tokenizer(args.checkpoint)
        style = prompt_style_named(args.prompt_style) if args.prompt_style else checkpoint_prompt_style(args.checkpoint)
    for path in args.val_path:
        if is_task_file(path):
            name = names[task_files.index(path)]
            losses.append(
                task_loss(
                    model,
                    name,
                    path,
                    tokenizer,
                    style,
                    args.mask_prompt,
                    args.ignore_index,
                    args.seq_len,
                    args.max_examples,
                    args.batch_size,
                    args.device,
                )
            )
        else:
            losses += source_losses(model, path, args.seq_len, args.max_blocks, args.batch_size, args.device)
    print(
        json.dumps([asdict(loss) for loss in losses], indent=2)
        if args.json
        else format_source_losses(losses, str(args.checkpoint))
    )
    return 0


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="generate LitGPT configs and per-phase config lists from a grid spec",
        description="Expand SPEC (a sweep YAML: defaults, models, experiments; see sharded_mix/tools/sweep.py) into one "
        "`litgpt pretrain` config per model and run, <model>/<run>.yaml, and one config list per phase (pretrain.txt, "
        "midtrain.txt, decay.txt) for training_scripts/submit.sh. Generated files the spec no longer has are removed.",
    )
    p.add_argument("spec", type=Path, help="the sweep spec, e.g. midtrain_configs/paper/sweep.yaml")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the spec's folder)")
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing the files that differ from what SPEC generates",
    )
    p.set_defaults(func=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from sharded_mix.tools.sweep import compare_sweep, expand_sweep, format_counts, load_spec, sweep_files, write_sweep

    out = args.out if args.out is not None else args.spec.parent
    runs = expand_sweep(load_spec(args.spec), spec_name=args.spec.name)
    files = sweep_files(runs)
    if args.check:
        problems = compare_sweep(files, out)
        for problem in problems:
            print(problem)
        if problems:
            print(
                f"{len(problems)} file(s) under {out} differ from what {args.spec} generates; run `sharded-mix sweep {args.spec}`."
            )
            return 1
        print(f"up to date: {format_counts(runs)} under {out}")
        return 0
    counts = write_sweep(files, out)
    lists = ", ".join(str(out / file) for file in files if file.endswith(".txt"))
    print(
        f"{format_counts(runs)}; under {out}: {counts['written']} written, {counts['unchanged']} unchanged, {counts['removed']} removed"
    )
    print(f"config lists: {lists}")
    return 0


def _add_convert_config(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert-config",
        help="rewrite a reference-fork litgpt pretrain config for upstream litgpt and sharded_mix",
        description="Rewrite REF, a `litgpt pretrain` config of the reference litgpt fork, for upstream litgpt: its "
        "ShardedMixedDataset becomes sharded_mix.ShardedMixedDataset, train.max_additional_steps / max_iters become the "
        "data's stop_after_steps / stop_at_step, train.lr_scheduler becomes sharded_mix.training.ScheduledAdamW's "
        "schedule, and keys upstream does not take are removed. Prints the converted YAML (or writes it to -o), then "
        "what changed, one line a change.",
    )
    p.add_argument("ref", type=Path, metavar="REF.yaml", help="the reference config")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="OUT.yaml",
        help="write the converted config here (default: stdout)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT.yaml")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="GPUs per node of the reference run, when REF does not set devices "
        "(the fork's train.max_iters counts micro-batches per GPU)",
    )
    p.set_defaults(func=_run_convert_config)


def _run_convert_config(args: argparse.Namespace) -> int:
    from sharded_mix.tools.convert_config import convert_config_file, write_converted_config

    if args.output is None:
        text, notes = convert_config_file(args.ref, devices=args.devices)
        print(text, end="", flush=True)
        stream = sys.stderr
    else:
        notes = write_converted_config(args.ref, args.output, force=args.force, devices=args.devices)
        stream = sys.stdout
        print(f"wrote {args.output}")
    print(f"what changed ({len(notes)}):" if notes else "what changed: nothing", file=stream)
    for note in notes:
        print(f"  - {note}", file=stream)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sharded-mix", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_prepare(subparsers)
    _add_demo(subparsers)
    _add_link_checkpoints(subparsers)
    _add_data_position(subparsers)
    _add_resume_checkpoint(subparsers)
    _add_plan(subparsers)
    _add_convert_config(subparsers)
    _add_inspect(subparsers)
    _add_link(subparsers)
    _add_merge(subparsers)
    _add_sweep(subparsers)
    _add_eval_results(subparsers)
    _add_val_loss(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
