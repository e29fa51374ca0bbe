"""`sharded-mix` commands about runs and their checkpoints: link-checkpoints, data-position,
resume-checkpoint, plan, eval-results, val-loss."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sharded_mix.cli_data import print_links, quiet_litdata


def add_link_checkpoints(subparsers: argparse._SubParsersAction) -> None:
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

    print_links(link_checkpoints(args.pretrain_dir, args.midtrain_dir, args.step, dry_run=args.dry_run), args.dry_run)
    print(
        f"{args.midtrain_dir} resumes from step {args.step} with `resume: auto`"
        + (" (dry run: nothing changed)" if args.dry_run else "")
    )
    return 0


def add_data_position(subparsers: argparse._SubParsersAction) -> None:
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


def add_batch(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="show the rows of any optimizer step: sample, rank, source, shard, chunk, token position, epoch",
        description="Reconstruct the rows of optimizer step N (1-based: global samples (N-1)*G .. N*G-1 for global "
        "batch size G) without training. RUN is a LitGPT config YAML (the run as configured, from its resume "
        "checkpoint if it has one) or a run's out_dir (the run as it happened: from its newest checkpoint before the "
        "step, with the config saved there; earlier steps follow the checkpoint it resumed). Relative paths in the "
        "config are read from the current directory, as litgpt pretrain reads them.",
    )
    p.add_argument("run", type=Path, help="a LitGPT config YAML, or a run's out_dir")
    p.add_argument("--step", type=int, required=True, help="the optimizer step (1 = the first)")
    p.add_argument("--rank", type=int, action="append", default=None, help="only this rank (repeatable)")
    p.add_argument("--world-size", type=int, default=None, help="ranks of the run (default: from RUN)")
    p.add_argument("--json", action="store_true", help='print {"step": N, "rows": [...]}')
    p.add_argument("--text", action="store_true", help="decode each row with the run's tokenizer")
    p.add_argument("--tokenizer-dir", type=Path, default=None, help="the tokenizer (default: the config's)")
    p.set_defaults(func=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    import json

    from sharded_mix.tools.batch import step_rows_of

    rows, world, tokenizer_dir = step_rows_of(args.run, args.step, args.rank, args.world_size, read_tokens=args.text)
    texts = [None] * len(rows)
    if args.text:
        import torch
        from litgpt.tokenizer import Tokenizer

        directory = args.tokenizer_dir or tokenizer_dir
        if directory is None:
            raise ValueError("--text needs a tokenizer: the config names none; give --tokenizer-dir.")
        tokenizer = Tokenizer(directory)
        texts = [tokenizer.decode(torch.tensor(row.tokens)) for row in rows]
    if args.json:
        listed = []
        for row, text in zip(rows, texts):
            entry = row.as_dict()
            entry.pop("tokens", None)
            if text is not None:
                entry["text"] = text
            listed.append(entry)
        print(json.dumps({"step": args.step, "world_size": world, "rows": listed}, indent=2))
        return 0
    from sharded_mix.tools.documents import describe_origin

    header = f"{'sample':>12} {'rank':>4} {'micro':>5} {'row':>4} {'source':<12} {'epoch':>5} {'position':>14}  chunk"
    if any(row.documents is not None for row in rows):
        header += "  documents (first: ordinal input:line)"
    print(f"step {args.step}: {len(rows)} rows on {world} rank(s)")
    print(header)
    print("-" * len(header))
    for row, text in zip(rows, texts):
        documents = ""
        if row.documents:
            more = f" +{len(row.documents) - 1} more" if len(row.documents) > 1 else ""
            documents = f"  {describe_origin(row.documents[0])}{more}"
        print(
            f"{row.sample:>12,} {row.rank:>4} {row.micro_batch:>5} {row.row:>4} {row.source:<12} {row.epoch:>5} "
            f"{row.position:>14,}  {row.chunk}{documents}"
        )
        if text is not None:
            print(f"    {text!r}")
    return 0


def add_find(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "find",
        help="list every step, rank and row at which a block of a source is read",
        description="The reverse of `batch`: every step (and rank, micro-batch, row) of RUN at which the block holding "
        "token POSITION of SOURCE's shard (or any block of its DOCUMENT, for shards written by `sharded-mix prepare`) "
        "is read, across its epochs and stages, from the run's first step (after "
        "the checkpoint it resumes, if any) to --until-step (default: where train.max_tokens ends the run; for an "
        "out_dir, its last checkpoint). RUN is a LitGPT config YAML or a run's out_dir, as for `batch`.",
    )
    p.add_argument("run", type=Path, help="a LitGPT config YAML, or a run's out_dir")
    p.add_argument("--source", required=True, help="the source id (shard id), e.g. main/1 or c1")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--position", type=int, default=None, help="a token offset in the shard's token stream (as `batch` prints)"
    )
    which.add_argument(
        "--document", type=int, default=None, help="a document of the shard, by its ordinal (as `batch` prints it)"
    )
    p.add_argument("--until-step", type=int, default=None, help="the last step to search")
    p.add_argument("--world-size", type=int, default=None, help="ranks of the run (default: from RUN)")
    p.add_argument("--json", action="store_true", help="print the reads as JSON")
    p.set_defaults(func=_run_find)


def _run_find(args: argparse.Namespace) -> int:
    import json

    from sharded_mix.tools.batch import reads_of

    reads, first, until, tokens = reads_of(
        args.run, args.source, args.position, args.until_step, args.world_size, args.document
    )
    asked = {"position": args.position} if args.document is None else {"document": args.document, "tokens": tokens}
    if args.json:
        listed = [read.as_dict() for read in reads]
        printed = {"source": args.source, **asked, "steps": [first, until], "reads": listed}
        print(json.dumps(printed, indent=2))
        return 0
    if args.document is None:
        what = f"token {args.position:,}"
    else:
        what = f"document {args.document:,} (tokens {tokens[0]:,}..{tokens[1] - 1:,})"
    print(f"{args.source} {what}: read {len(reads)} time(s) in steps {first:,}..{until:,}")
    header = f"{'step':>10} {'rank':>4} {'micro':>5} {'row':>4} {'sample':>14} {'epoch':>5} {'position':>14}  stage"
    print(header)
    print("-" * len(header))
    for read in reads:
        print(
            f"{read.step:>10,} {read.rank:>4} {read.micro_batch:>5} {read.row:>4} {read.sample:>14,} "
            f"{read.epoch:>5} {read.position:>14,}  {read.stage}"
        )
    return 0


def add_resume_checkpoint(subparsers: argparse._SubParsersAction) -> None:
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


def add_plan(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="show the data stage plan of a config without training",
        description="Discover the shards, resolve every stage's weights and print the DATA STAGE TRAINING PLAN: per "
        "stage its steps and tokens, per source its weight, tokens and epochs, and each source's epochs over the run. "
        "CONFIG is a LitGPT config (its data: section; train.max_tokens bounds the run) or a YAML of "
        "ShardedMixedDataset init args.",
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

    from sharded_mix.mixing.plan import format_mixture_plan, format_stage_plan, plot_stage_plan
    from sharded_mix.tools.offline import offline_data_module

    # quiet: the plan below says it all; setup's own log lines would repeat it
    data, sizes = offline_data_module(args.config, quiet=not args.verbose)
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


def add_eval_results(subparsers: argparse._SubParsersAction) -> None:
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


def add_val_loss(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--attention",
        choices=("causal", "document"),
        default="causal",
        help="shards: document scores as attention: document trains (within documents, --eos-id or the tokenizer's)",
    )
    p.add_argument("--eos-id", type=int, default=None, help="with --attention document: the token ending documents")
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

    quiet_litdata(args)
    task_files = [path for path in args.val_path if is_task_file(path)]
    names = [path.stem for path in task_files]
    if len(set(names)) < len(names):
        names = [str(path) for path in task_files]  # same stems in different folders: name them by path
    model = load_model(args.checkpoint, args.device)
    losses = []
    if task_files:
        from sharded_mix.data_config import prompt_style_named

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
            eos = None if args.attention == "causal" else args.eos_id
            if args.attention == "document" and eos is None:
                eos = load_tokenizer(args.checkpoint).eos_id
            losses += source_losses(model, path, args.seq_len, args.max_blocks, args.batch_size, args.device, eos)
    print(
        json.dumps([asdict(loss) for loss in losses], indent=2)
        if args.json
        else format_source_losses(losses, str(args.checkpoint))
    )
    return 0
