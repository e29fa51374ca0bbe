"""Tokenize text into one litdata token shard (EOS appended to every document), with a held-out val shard if asked.

The shard is what `litdata.StreamingDataset(..., item_loader=TokensLoader(block_size))` reads: one
token array per document, in chunk files of litdata's TokensLoader layout, listed in ``index.json``, plus a
``manifest.json`` recording what it was built from. Inputs are cut into work items
(``prepare_inputs``) that worker processes tokenize in parallel (``prepare_workers``), so N workers are busy
however many files there are. Documents are numbered in the global input order: ``skip_docs``/``max_docs``
select a range of them, exactly, and the validation split is decided per document (a hash of its text for
``val_fraction``; ``val_docs`` evenly spread document numbers). This module logs and never prints (the
progress bar aside).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sharded_mix.config import parse_size
from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.discovery import read_index
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
from sharded_mix.tools.prepare_workers import (
    ItemResult,
    ItemTask,
    JobSpec,
    TokenizerSpec,
    count_item,
    run_items,
    tokenize_item,
)
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

UINT16_VOCAB_LIMIT = 2**16
FIRST_ROW_CHECKS = 16
_SHARD_ENTRY = re.compile(r"^(index\.json|manifest\.json|\d+\.index\.json|chunk-.*\.bin|\.checkpoints)$")
_TOKENS_DTYPE_CODE = {"uint16": 20, "int32": 16}
"""litdata's ``no_header_tensor:<code>`` for the token dtypes we write (``litdata.constants._TORCH_DTYPES_MAPPING``)."""


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_shard` wrote, counted from the shard's `index.json`; ``val`` is the held-out shard, if any."""

    output_dir: Path
    documents: int
    tokens: int
    chunks: int
    dtype: str
    seconds: float
    val: PrepareSummary | None = None

    def describe(self) -> str:
        """Human text: one line per shard written."""
        line = (
            f"wrote {self.output_dir}: {self.documents:,} documents, {self.tokens:,} tokens "
            f"({self.dtype}) in {self.chunks} chunk(s), {self.seconds:.1f}s"
        )
        if self.val is not None:
            line += f"\nwrote {self.val.output_dir} (val): {self.val.documents:,} documents, {self.val.tokens:,} tokens"
            line += f" in {self.val.chunks} chunk(s)"
        return line


def val_output_for(output_dir: Path) -> Path:
    """Where the val shard of ``output_dir`` goes: ``BASE/val/<id>`` (``data/val/main/1`` for ``data/main/1``).

    A train base named ``train`` (``data/train/c1``) puts it in the sibling ``data/val/c1`` instead.
    """
    output_dir = Path(output_dir)
    if output_dir.parent.name == "main" and output_dir.name.isdigit():
        base, shard_id = output_dir.parent.parent, Path("main") / output_dir.name
    else:
        base, shard_id = output_dir.parent, Path(output_dir.name)
    val_base = base.parent / "val" if base.name == "train" else base / "val"
    return val_base / shard_id


# ----------------------------------------------------------------------------- tokenizer


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """litgpt's Tokenizer for `tokenizer_dir`; raises ValueError when it is missing or has no EOS token."""
    from litgpt.tokenizer import Tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ValueError(f"--tokenizer-dir {str(tokenizer_dir)!r} is not a directory; pass a litgpt checkpoint dir")
    try:
        tokenizer = Tokenizer(tokenizer_dir)
    except NotImplementedError as err:
        raise ValueError(
            f"--tokenizer-dir {str(tokenizer_dir)!r} holds neither tokenizer.json nor tokenizer.model; "
            "pass a directory with one of them"
        ) from err
    if tokenizer.eos_id is None:
        raise ValueError(
            f"the tokenizer in {tokenizer_dir} has no EOS token; set 'eos_token' in its tokenizer_config.json "
            "(or 'eos_token_id' in generation_config.json)"
        )
    return tokenizer


def vocab_size_with_added(tokenizer: Any) -> int:
    """Largest token id + 1, added/special tokens included."""
    if tokenizer.backend == "huggingface":
        vocab = tokenizer.processor.get_vocab(with_added_tokens=True)
        size = max(max(vocab.values(), default=-1) + 1, tokenizer.processor.get_vocab_size(with_added_tokens=True))
    else:
        size = tokenizer.processor.vocab_size()
    special = [i for i in (tokenizer.bos_id, tokenizer.eos_id) if i is not None]
    return max([size] + [i + 1 for i in special])


def token_dtype(vocab_size: int) -> torch.dtype:
    """uint16 when every id fits in 16 bits, else int32."""
    return torch.uint16 if vocab_size <= UINT16_VOCAB_LIMIT else torch.int32


def tokenizer_spec(tokenizer: Any, tokenizer_dir: Path, dtype: torch.dtype) -> TokenizerSpec:
    """What worker processes need to tokenize like ``tokenizer.encode(text, eos=True)``."""
    name = "tokenizer.json" if tokenizer.backend == "huggingface" else "tokenizer.model"
    return TokenizerSpec(
        tokenizer.backend,
        str((Path(tokenizer_dir) / name).resolve()),
        int(tokenizer.eos_id),
        None if tokenizer.bos_id is None else int(tokenizer.bos_id),
        bool(tokenizer.use_bos),
        str(dtype).removeprefix("torch."),
    )


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
            fmt.render(first[1], first[0])


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


def _write_index(directory: Path, results: Sequence[ItemResult], split: str, dtype: str, chunk_bytes: int) -> None:
    chunks = [chunk for result in results for chunk in getattr(result, split).chunks]
    config = {
        "chunk_bytes": chunk_bytes,
        "chunk_size": None,
        "compression": None,
        "compression_batch_size": None,
        "compression_level": None,
        "data_format": [f"no_header_tensor:{_TOKENS_DTYPE_CODE[dtype]}"],
        "data_spec": json.dumps([1, {"type": None, "context": None, "children_spec": []}]),
        "encryption": None,
        "ipc_compression": None,
        "item_loader": "TokensLoader",
        "types": "tensor",
    }
    index = {"chunks": chunks, "config": config, "updated_at": str(time.time())}
    (directory / "index.json").write_text(json.dumps(index, sort_keys=True), encoding="utf-8")


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
    _clear_output_dir(output_dir, overwrite)
    if val_dir is not None:
        _clear_output_dir(val_dir, overwrite)
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
        _write_index(output_dir, results, "train", dtype_name, size)
        if val_dir is not None:
            if not any(result.val.documents for result in results):
                raise ValueError("the validation split is empty; raise --val-fraction or pass --val-docs")
            _write_index(val_dir, results, "val", dtype_name, size)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        if val_dir is not None:
            shutil.rmtree(val_dir, ignore_errors=True)
        raise
    hasher.join()
    seconds = time.perf_counter() - start
    common = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
        "tokenizer": _tokenizer_record(tokenizer, Path(tokenizer_dir)),
        "dtype": dtype_name,
        "work_items": len(items),
    }
    val_summary = None
    if val_dir is not None:
        val_summary = _summarize(val_dir, seconds)
        write_manifest(val_dir, {**common, "split": "val", **_counts(val_summary), "train_shard": str(output_dir)})
    summary = _summarize(output_dir, seconds, val_summary)
    write_manifest(
        output_dir,
        {**common, "split": "train", **_counts(summary), "val_shard": str(val_dir) if val_dir is not None else None},
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


def _tokenizer_record(tokenizer: Any, tokenizer_dir: Path) -> dict[str, Any]:
    name = "tokenizer.json" if tokenizer.backend == "huggingface" else "tokenizer.model"
    return {
        "name": tokenizer_dir.resolve().name,
        "dir": str(tokenizer_dir.resolve()),
        "backend": tokenizer.backend,
        "vocab_file": name,
        "vocab_sha256": hashlib.sha256((tokenizer_dir / name).read_bytes()).hexdigest(),
        "vocab_size": vocab_size_with_added(tokenizer),
        "eos_id": tokenizer.eos_id,
        "bos_id": tokenizer.bos_id,
        "use_bos": bool(tokenizer.use_bos),
    }


def _counts(summary: PrepareSummary) -> dict[str, int]:
    return {"documents": summary.documents, "tokens": summary.tokens, "chunks": summary.chunks}


def _clear_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Make sure `output_dir` is absent or empty, deleting an old shard only when `overwrite`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output {str(output_dir)!r} is a file; pass a directory path")
    if not output_dir.exists():
        return
    entries = sorted(output_dir.iterdir())
    if not entries:
        return
    what = "a shard (index.json)" if (output_dir / "index.json").exists() else f"{len(entries)} entries"
    if not overwrite:
        raise FileExistsError(
            f"--output {str(output_dir)!r} already holds {what}; "
            "pass --overwrite to replace it or pick another --output"
        )
    foreign = [entry.name for entry in entries if not _SHARD_ENTRY.match(entry.name)]
    if foreign:
        raise FileExistsError(
            f"--overwrite refuses to delete {str(output_dir)!r}: it holds {foreign[:3]}, which are not litdata shard "
            "files; remove them yourself or pick another --output"
        )
    logger.info("removing the old shard in %s (--overwrite)", output_dir)
    shutil.rmtree(output_dir)


def write_token_shard(
    path: str | Path,
    documents: Sequence,
    chunk_bytes: int | str = "64MB",
    dtype: torch.dtype = torch.int32,
    compression: str | None = None,
) -> Path:
    """Write ``documents`` (arrays of token ids; one array = one document) as a litdata token shard at ``path``.

    Runs in this process. For token ids you already have (tests, benchmarks, converted corpora); text goes
    through ``prepare_shard``. ``compression="zstd"`` compresses whole chunk files (needs the ``zstd`` package).
    """
    import numpy as np
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    if isinstance(documents, np.ndarray) and documents.ndim == 1:
        documents = [documents]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(
        str(path),
        chunk_bytes=chunk_bytes,
        item_loader=TokensLoader(),
        compression=compression,
        compression_level="chunk" if compression else None,
    )
    for index, document in enumerate(documents):
        writer[index] = torch.as_tensor(np.asarray(document), dtype=dtype)
    writer.done()
    writer.merge()
    return path


def _summarize(output_dir: Path, seconds: float, val: PrepareSummary | None = None) -> PrepareSummary:
    shard = shard_from_index(output_dir.name, "", output_dir, read_index(output_dir))
    return PrepareSummary(output_dir, shard.documents, shard.tokens, shard.chunks, shard.dtype, seconds, val)
