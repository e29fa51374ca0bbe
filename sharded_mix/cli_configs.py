"""`sharded-mix` commands that write LitGPT configs: convert-config, sweep."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

SWEEP_DESCRIPTION = (
    "Expand SPEC (a sweep YAML; its keys are below) into one `litgpt pretrain` config per model and run, "
    "<model>/<run>.yaml, and one config list per phase (pretrain.txt, midtrain.txt, decay.txt) for "
    "training_scripts/submit.sh. Generated files the spec no longer has are removed."
)
RESUME_FROM_HELP = (
    "the checkpoint a `resume: true` REF continues from (the fork's resume: true took the newest step-* checkpoint "
    "in out_dir): a step number N, meaning out_dir/step-<N as 8 digits>/lit_model.pth; a checkpoint path in a "
    "step-N directory (e.g. out/pretrain/step-00040000/lit_model.pth); or auto for a run that starts fresh (the stop "
    "and the LR schedule count from step 0; relaunches continue from the newest checkpoint). The converted config's "
    "resume is that path (or auto); needed when REF's train.max_additional_steps sets the end of its LR schedule."
)


def add_sweep(subparsers: argparse._SubParsersAction) -> None:
    from sharded_mix.tools.sweep_spec import SPEC_FORMAT

    p = subparsers.add_parser(
        "sweep",
        help="generate LitGPT configs and per-phase config lists from a grid spec",
        description=textwrap.fill(SWEEP_DESCRIPTION, 100),
        epilog=SPEC_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", type=Path, help="the sweep spec, e.g. midtrain_configs/paper/sweep.yaml")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write to DIR instead of the spec's folder; the config lists and headers then name the files in DIR, "
        "as given (relative to where you run it)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing the files that differ from what SPEC generates",
    )
    p.set_defaults(func=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from sharded_mix.tools.sweep import compare_sweep, expand_sweep, format_counts, load_spec, sweep_files, write_sweep

    elsewhere = args.out is not None and args.out.resolve() != args.spec.parent.resolve()
    out = args.out if args.out is not None else args.spec.parent
    runs = expand_sweep(
        load_spec(args.spec),
        spec_name=args.spec.name,
        out=args.out if elsewhere else None,
        spec_path=args.spec,
    )
    files = sweep_files(runs)
    again = f"sharded-mix sweep {args.spec}" + (f" --out {args.out}" if elsewhere else "")
    if args.check:
        problems = compare_sweep(files, out)
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} file(s) under {out} differ from what {args.spec} generates; run `{again}`.")
            return 1
        print(f"up to date: {format_counts(runs)} under {out}")
        return 0
    counts = write_sweep(files, out)
    lists = ", ".join(str(out / file) for file in files if file.endswith(".txt"))
    print(
        f"{format_counts(runs)}; under {out}: {counts['written']} written, {counts['unchanged']} unchanged, "
        f"{counts['removed']} removed"
    )
    print(f"config lists: {lists}")
    return 0


def add_convert_config(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert-config",
        help="rewrite a reference-fork litgpt pretrain config for upstream litgpt and sharded_mix",
        description="Rewrite REF, a `litgpt pretrain` config of the reference litgpt fork, for upstream litgpt: its "
        "ShardedMixedDataset becomes sharded_mix.ShardedMixedDataset, train.max_additional_steps / max_iters become "
        "the data's stop_after_steps / stop_at_step, train.lr_scheduler becomes "
        "sharded_mix.training.ScheduledAdamW's schedule, and keys upstream does not take are removed. Prints the "
        "converted YAML (or writes it to -o), then what changed, one line a change, then WARNING lines for what "
        "runs but not as REF meant (e.g. a blend the fork never read: a single-source run).",
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
    p.add_argument("--resume-from", default=None, metavar="STEP|PATH|auto", help=RESUME_FROM_HELP)
    p.set_defaults(func=_run_convert_config)


def _run_convert_config(args: argparse.Namespace) -> int:
    from sharded_mix.tools.convert_config import WARNING, convert_config_file, write_converted_config

    options = {"devices": args.devices, "resume_from": args.resume_from}
    if args.output is None:
        text, notes = convert_config_file(args.ref, **options)
        print(text, end="", flush=True)
        stream = sys.stderr
    else:
        notes = write_converted_config(args.ref, args.output, force=args.force, **options)
        stream = sys.stdout
        print(f"wrote {args.output}")
    changes = [note for note in notes if not note.startswith(WARNING)]
    print(f"what changed ({len(changes)}):" if changes else "what changed: nothing", file=stream)
    for note in changes:
        print(f"  - {note}", file=stream)
    for note in notes:
        if note.startswith(WARNING):
            print(note, file=stream)
    return 0
