"""The `sharded-mix` command line: the only place in the package that prints.

This module holds the parser and ``main``; the commands live in ``cli_data`` (data), ``cli_runs`` (runs and
checkpoints) and ``cli_configs`` (configs), the only other modules that print.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sharded_mix import cli_configs, cli_data, cli_runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sharded-mix", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_data.add_prepare(subparsers)
    cli_data.add_demo(subparsers)
    cli_runs.add_link_checkpoints(subparsers)
    cli_runs.add_data_position(subparsers)
    cli_runs.add_batch(subparsers)
    cli_runs.add_find(subparsers)
    cli_runs.add_resume_checkpoint(subparsers)
    cli_runs.add_plan(subparsers)
    cli_configs.add_convert_config(subparsers)
    cli_data.add_inspect(subparsers)
    cli_data.add_link(subparsers)
    cli_data.add_merge(subparsers)
    cli_data.add_hash(subparsers)
    cli_configs.add_sweep(subparsers)
    cli_runs.add_eval_results(subparsers)
    cli_runs.add_val_loss(subparsers)
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
