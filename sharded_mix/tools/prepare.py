"""Tokenize text into one litdata token shard (EOS appended to every document), with a held-out val shard if asked.

The shard is what `litdata.StreamingDataset(..., item_loader=TokensLoader(block_size))` reads: one
token array per document, in chunk files of litdata's TokensLoader layout, listed in ``index.json``, plus a
``manifest.json`` recording what it was built from. Inputs are cut into work items
(``prepare_inputs``) that worker processes tokenize in parallel (``prepare_workers``), so N workers are busy
however many files there are. Documents are numbered in the global input order: ``skip_docs``/``max_docs``
select a range of them, exactly, and the validation split is decided per document (a hash of its text for
``val_fraction``; ``val_docs`` evenly spread document numbers). The tokenizer checks live in
``prepare_tokenizer``; output directories, ``index.json`` and `write_token_shard` in ``prepare_output``.
This module logs and never prints (the progress bar aside).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sharded_mix.config import parse_size
from sharded_mix.streaming.checksums import write_checksums
from sharded_mix.tools.documents import write_documents
from sharded_mix.tools.manifest import file_sha256, write_manifest
from sharded_mix.tools.prepare_inputs import (
    SUPPORTED_SUFFIXES,
    DatasetSpec,
    Piece,
    dataset_pieces,
    default_item_bytes,
    file_kind,
    file_pieces,
    group_items,
    iter_documents,
    iter_file_documents,
    iter_piece_rows,
    list_input_files,
)
from sharded_mix.tools.prepare_output import (
    PrepareSummary,
    clear_output_dir,
    document_parts,
    drop_stale_val_shards,
    stale_val_shards,
    summarize_shard,
    val_output_for,
    write_index,
    write_token_shard,
)
from sharded_mix.tools.prepare_tokenizer import (
    load_tokenizer,
    token_dtype,
    tokenizer_record,
    tokenizer_spec,
    vocab_size_with_added,
)
from sharded_mix.tools.prepare_workers import ItemTask, JobSpec, count_item, run_items, tokenize_item
from sharded_mix.tools.recipes import get_recipe
from sharded_mix.tools.records import RecordFormat, RowFilter

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DatasetSpec",
    "PrepareSummary",
    "file_kind",
    "iter_documents",
    "iter_file_documents",
    "list_input_files",
    "load_tokenizer",
    "prepare_shard",
    "token_dtype",
    "val_output_for",
    "vocab_size_with_added",
    "write_token_shard",
]

logger = logging.getLogger(__name__)

FIRST_ROW_CHECKS = 16


# ----------------------------------------------------------------------------- the record format and inputs


def record_format(
    recipe: str | None,
    text_field: str | None,
    template: str | None,
    fields: Mapping[str, Sequence[str]] | None,
    where: Sequence[str],
) -> tuple[RecordFormat, tuple[DatasetSpec, ...]]:
    """The format from the options, a recipe filling in what they leave out; and the recipe's datasets."""
    chosen = get_recipe(recipe) if recipe else None
    aliases = dict(chosen.aliases) if chosen else {}
    aliases.update({key: tuple(values) for key, values in (fields or {}).items()})
    filters = tuple(RowFilter.parse(text) for text in where) or (chosen.where if chosen else ())
    if template is None and text_field is None and chosen is not None:
        template, text_field = chosen.template, chosen.text_field
    fmt = RecordFormat(text_field=text_field or "text", template=template, aliases=aliases, where=filters)
    return fmt, (chosen.datasets if chosen else ())


def plan_pieces(
    files: Sequence[Path], datasets: Sequence[DatasetSpec], fmt: RecordFormat, item_bytes: int | None
) -> list[tuple[Piece, ...]]:
    total = sum(path.stat().st_size for path in files)
    size = item_bytes or default_item_bytes(total)
    pieces = [piece for path in files for piece in file_pieces(path, fmt, size)]
    pieces += [piece for spec in datasets for piece in dataset_pieces(spec)]
    return group_items(pieces, size)


def _check_first_rows(items: Sequence[tuple[Piece, ...]], fmt: RecordFormat) -> None:
    """Fail fast, in this process, on fields the first row of the first JSONL inputs lacks (workers check the rest)."""
    firsts = {
        piece.source: piece for item in items for piece in item if piece.kind.startswith(".jsonl") and piece.start == 0
    }
    for piece in list(firsts.values())[:FIRST_ROW_CHECKS]:
        first = next(iter_piece_rows(piece, fmt), None)
        if first is not None:
            fmt.render(first[2], first[1])


# ----------------------------------------------------------------------------- selecting documents


def select_documents(
    items: Sequence[tuple[Piece, ...]],
    job: JobSpec,
    workers: int,
    skip_docs: int,
    max_docs: int | None,
    val_docs: int | None,
    on_progress: Any,
) -> list[ItemTask]:
    """The tasks keeping global documents ``[skip_docs, skip_docs + max_docs)``: counts each item's documents first."""
    tasks = [ItemTask(index, item) for index, item in enumerate(items)]
    wanted = None if max_docs is None else skip_docs + max_docs
    if not skip_docs and wanted is None and not val_docs:
        return tasks

    def enough(done: dict[int, int]) -> bool:
        if wanted is None:
            return False
        total = 0
        for index in range(len(tasks)):  # only a prefix of finished items counts
            if index not in done:
                return False
            total += done[index]
            if total >= wanted:
                return True
        return False

    counts = run_items(count_item, tasks, job, workers, on_progress, enough)
    selected: list[ItemTask] = []
    offset = 0
    for task in tasks:
        if task.index not in counts:
            break
        count = counts[task.index]
        first = max(0, skip_docs - offset)
        stop = count if wanted is None else min(count, wanted - offset)
        if stop > first:
            selected.append(ItemTask(task.index, task.pieces, first, stop))
        offset += count
    total = sum(task.stop - task.first for task in selected)
    if val_docs:
        if val_docs >= total:
            raise ValueError(
                f"--val-docs {val_docs} leaves no training documents: the selection holds {total}; lower it"
            )
        base = 0
        for position, task in enumerate(selected):
            selected[position] = ItemTask(task.index, task.pieces, task.first, task.stop, base, total, val_docs)
            base += task.stop - task.first
    return selected


# ----------------------------------------------------------------------------- writing the shard


class _Progress:
    """A tqdm bar of documents with tokens and tokens/s, summed over workers."""

    def __init__(self, enabled: bool, what: str) -> None:
        self.bar = None
        self.tokens = 0
        self.start = time.perf_counter()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc=what, unit=" docs", unit_scale=True, dynamic_ncols=True)

    def __call__(self, documents: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(documents)
            if self.tokens:
                rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
                self.bar.set_postfix_str(f"{self.tokens:,} tokens, {rate / 1e6:.2f} M tokens/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hash_inputs(files: Sequence[Path], into: list[dict]) -> threading.Thread:
    """Hash the input files in a background thread (the workers are busy tokenizing meanwhile)."""

    def run() -> None:
        for path in files:
            into.append({"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def prepare_shard(
    inputs: Sequence[Path] = (),
    tokenizer_dir: Path | None = None,
    output_dir: Path | None = None,
    text_field: str | None = None,
    num_workers: int = 1,
    chunk_bytes: int | str = "64MB",
    overwrite: bool = False,
    *,
    progress: bool = True,
    template: str | None = None,
    fields: Mapping[str, Sequence[str]] | None = None,
    where: Sequence[str] = (),
    recipe: str | None = None,
    datasets: Sequence[DatasetSpec] = (),
    skip_docs: int = 0,
    max_docs: int | None = None,
    val_docs: int | None = None,
    val_fraction: float | None = None,
    val_output: Path | None = None,
    item_bytes: int | str | None = None,
    command: str | None = None,
) -> PrepareSummary:
    """Tokenize every selected document (EOS appended) into a litdata token shard at ``output_dir``.

    Inputs are files and directories (``inputs``) and streamed `datasets` datasets (``datasets``; a ``recipe``'s
    own when neither is given). ``val_docs``/``val_fraction`` hold documents out into ``val_output``
    (default ``val_output_for(output_dir)``). ``item_bytes`` sizes the work items (default: the inputs / 64,
    1 MB to 128 MB).
    """
    start = time.perf_counter()
    if tokenizer_dir is None or output_dir is None:
        raise ValueError("prepare needs --tokenizer-dir and --output")
    output_dir = Path(output_dir)
    _check_counts(num_workers, skip_docs, max_docs, val_docs, val_fraction)
    size = parse_size(chunk_bytes, "--chunk-bytes")
    work_bytes = None if item_bytes is None else parse_size(item_bytes, "--item-bytes")
    fmt, recipe_datasets = record_format(recipe, text_field, template, fields, where)
    files = list_input_files([Path(p) for p in inputs])
    datasets = tuple(datasets) or (recipe_datasets if not inputs else ())
    if not files and not datasets:
        raise ValueError(
            f"no {'/'.join(SUPPORTED_SUFFIXES)} files in --input {[str(p) for p in inputs]} and no --dataset"
        )
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    dtype = token_dtype(vocab_size_with_added(tokenizer))
    dtype_name = str(dtype).removeprefix("torch.")
    items = plan_pieces(files, datasets, fmt, work_bytes)
    _check_first_rows(items, fmt)
    held_out = val_docs is not None or val_fraction is not None
    val_dir = Path(val_output) if val_output is not None else val_output_for(output_dir) if held_out else None
    stale = stale_val_shards(output_dir, val_dir)  # read before the old manifest goes
    clear_output_dir(output_dir, overwrite)
    if val_dir is not None:
        clear_output_dir(val_dir, overwrite)
    drop_stale_val_shards(stale, output_dir, overwrite)
    workers = max(1, min(num_workers, len(items)))
    job = JobSpec(
        fmt,
        tokenizer_spec(tokenizer, Path(tokenizer_dir), dtype),
        str(output_dir.resolve()),
        str(val_dir.resolve()) if val_dir else None,
        size,
        val_fraction,
    )
    logger.info(
        "tokenizing %d work item(s) from %d file(s) and %d dataset(s) into %s (%d worker(s), %s tokens)",
        len(items),
        len(files),
        len(datasets),
        output_dir,
        workers,
        dtype_name,
    )
    hashed: list[dict] = []
    hasher = _hash_inputs(files, hashed)
    try:
        for directory in (output_dir, val_dir):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
        counting = _Progress(progress and bool(skip_docs or max_docs or val_docs), "counting documents")
        try:
            tasks = select_documents(items, job, workers, skip_docs, max_docs, val_docs, counting)
        finally:
            counting.close()
        bar = _Progress(progress, "tokenizing")
        try:
            by_index = run_items(tokenize_item, tasks, job, workers, bar)
        finally:
            bar.close()
        results = [by_index[task.index] for task in tasks]
        if sum(result.train.documents + result.val.documents for result in results) == 0:
            raise ValueError(
                f"no non-empty documents in {', '.join(map(str, files)) or 'the datasets'}; check --input, --where"
            )
        write_index(output_dir, results, "train", dtype_name, size)
        write_documents(output_dir, document_parts(output_dir, tasks))
        write_checksums(output_dir, {name: h for result in results for name, h in result.train.hashes.items()})
        if val_dir is not None:
            if not any(result.val.documents for result in results):
                raise ValueError("the validation split is empty; raise --val-fraction or pass --val-docs")
            write_index(val_dir, results, "val", dtype_name, size)
            write_documents(val_dir, document_parts(val_dir, tasks))
            write_checksums(val_dir, {name: h for result in results for name, h in result.val.hashes.items()})
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        if val_dir is not None:
            shutil.rmtree(val_dir, ignore_errors=True)
        raise
    hasher.join()
    seconds = time.perf_counter() - start
    common = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_run": uuid.uuid4().hex,  # the same in the train and val manifests: training checks the pair
        "command": command if command is not None else shlex.join(sys.argv),
        "inputs": hashed,  # in input order: one thread hashed them one after the other
        "datasets": [
            {
                "label": spec.label(),
                "name": spec.name,
                "config": spec.config,
                "split": spec.split,
                "data_files": list(spec.data_files),
                "data_dir": spec.data_dir,
            }
            for spec in datasets
        ],
        "record": fmt.describe(),
        "text_field": fmt.text_field if fmt.template is None else None,
        "template": fmt.template,
        "aliases": {key: list(values) for key, values in fmt.aliases.items()},
        "where": [str(f) for f in fmt.where],
        "recipe": recipe,
        "selection": {"skip_docs": skip_docs, "max_docs": max_docs, "val_docs": val_docs, "val_fraction": val_fraction},
        "tokenizer": tokenizer_record(tokenizer, Path(tokenizer_dir)),
        "dtype": dtype_name,
        "work_items": len(items),
    }
    val_summary = None
    if val_dir is not None:
        val_summary = summarize_shard(val_dir, seconds)
        write_manifest(val_dir, {**common, "split": "val", **val_summary.counts(), "train_shard": str(output_dir)})
    summary = summarize_shard(output_dir, seconds, val_summary)
    write_manifest(
        output_dir,
        {**common, "split": "train", **summary.counts(), "val_shard": str(val_dir) if val_dir is not None else None},
    )
    return summary


def _check_counts(
    num_workers: int, skip_docs: int, max_docs: int | None, val_docs: int | None, val_fraction: float | None
) -> None:
    if num_workers < 1:
        raise ValueError(f"--num-workers {num_workers} must be at least 1")
    if skip_docs < 0:
        raise ValueError(f"--skip-docs {skip_docs} must be at least 0")
    if max_docs is not None and max_docs < 1:
        raise ValueError(f"--max-docs {max_docs} must be at least 1; leave it out to keep every document")
    if val_docs is not None and val_fraction is not None:
        raise ValueError("--val-docs and --val-fraction both given; pass one of them")
    if val_docs is not None and val_docs < 1:
        raise ValueError(f"--val-docs {val_docs} must be at least 1")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive), e.g. 0.01")
