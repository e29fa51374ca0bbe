"""Tokenize text files into one litdata token shard (EOS appended to every document).

The shard is what `litdata.StreamingDataset(..., item_loader=TokensLoader(block_size))` reads: one
tensor per document, written by `litdata.optimize`. This module only reads files and writes the shard;
it logs through `logging` and never prints (litdata's own progress bar aside).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sharded_mix.config import parse_size
from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.discovery import read_index

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
UINT16_VOCAB_LIMIT = 2**16
_SHARD_ENTRY = re.compile(r"^(index\.json|\d+\.index\.json|chunk-.*\.bin|\.checkpoints)$")


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_shard` wrote, counted from the shard's `index.json`."""

    output_dir: Path
    documents: int
    tokens: int
    chunks: int
    dtype: str
    seconds: float

    def describe(self) -> str:
        """One line of human text."""
        return (
            f"wrote {self.output_dir}: {self.documents:,} documents, {self.tokens:,} tokens "
            f"({self.dtype}) in {self.chunks} chunk(s), {self.seconds:.1f}s"
        )


# ----------------------------------------------------------------------------- reading documents


def file_kind(path: Path) -> str | None:
    """The supported suffix of `path` (`.jsonl.gz` counts as one), or None."""
    name = path.name.lower()
    return next((suffix for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True) if name.endswith(suffix)), None)


def list_input_files(inputs: Sequence[Path]) -> list[Path]:
    """Expand files and directories (walked recursively, sorted) into the supported files, in order."""
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files.extend(_walk_dir(path))
        elif path.is_file():
            if file_kind(path) is None:
                raise ValueError(
                    f"--input {str(path)!r} has an unsupported extension; supported: {', '.join(SUPPORTED_SUFFIXES)}"
                )
            files.append(path)
        else:
            raise ValueError(f"--input {str(path)!r} does not exist; pass existing files or directories")
    return _dedupe(files)


def _walk_dir(root: Path) -> list[Path]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if file_kind(path) is None:
            logger.debug("skipping %s: unsupported extension", path)
        else:
            found.append(path)
    if not found:
        logger.warning("no %s files under %s", "/".join(SUPPORTED_SUFFIXES), root)
    return found


def _dedupe(files: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key in seen:
            logger.debug("skipping %s: already listed", path)
            continue
        seen.add(key)
        unique.append(path)
    return unique


def iter_documents(inputs: list[Path], text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of the given files and directories, in a deterministic order."""
    for path in list_input_files(inputs):
        yield from iter_file_documents(path, text_field)


def iter_file_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of one supported file."""
    kind = file_kind(path)
    if kind == ".txt":
        texts: Iterator[str | None] = iter([_read_text(path)])
    elif kind in (".jsonl", ".jsonl.gz"):
        texts = _iter_jsonl(path, text_field)
    elif kind == ".parquet":
        texts = _iter_parquet(path, text_field)
    else:
        raise ValueError(f"{str(path)!r} has an unsupported extension; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    for text in texts:
        if text and not text.isspace():
            yield text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not UTF-8 text ({err}); convert it to UTF-8") from err


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str | None]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if line.strip():
                yield _text_of_row(_parse_json_line(line, line_no, path), text_field, line_no, path)


def _parse_json_line(line: str, line_no: int, path: Path) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"row {line_no} of {path} is not valid JSON ({err}); write one JSON object per line") from err
    if not isinstance(row, dict):
        raise ValueError(
            f"row {line_no} of {path} is a JSON {type(row).__name__}, not an object; write one JSON object per line"
        )
    return row


def _text_of_row(row: dict[str, Any], text_field: str, line_no: int, path: Path) -> str | None:
    if text_field not in row:
        keys = ", ".join(sorted(map(str, row))[:20]) or "none"
        raise ValueError(
            f"--text-field {text_field!r} not found in row {line_no} of {path} (keys: {keys}); "
            "pass --text-field with the key that holds the text"
        )
    text = row[text_field]
    if text is not None and not isinstance(text, str):
        raise ValueError(
            f"--text-field {text_field!r} in row {line_no} of {path} holds a {type(text).__name__}, not a string; "
            "pass --text-field with the key that holds the text"
        )
    return text


def _iter_parquet(path: Path, text_field: str) -> Iterator[str | None]:
    parquet_file = _open_parquet(path, text_field)
    for batch in parquet_file.iter_batches(columns=[text_field], batch_size=1024):
        yield from batch.column(0).to_pylist()


def _open_parquet(path: Path, text_field: str) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ValueError(f"reading {path} needs pyarrow; pip install 'sharded_mix[parquet]'") from err
    parquet_file = pq.ParquetFile(path)
    schema = parquet_file.schema_arrow
    if text_field not in schema.names:
        raise ValueError(
            f"--text-field {text_field!r} not found in the columns of {path} (columns: {', '.join(schema.names)}); "
            "pass --text-field with the column that holds the text"
        )
    column_type = schema.field(text_field).type
    string_types = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
    if not any(is_type(column_type) for is_type in string_types if is_type is not None):
        raise ValueError(
            f"--text-field {text_field!r} of {path} is a {column_type} column, not a string one; "
            "pass --text-field with the column that holds the text"
        )
    return parquet_file


def _precheck(files: list[Path], text_field: str) -> None:
    """Fail fast, in this process, on a wrong text field and on inputs without any document."""
    for path in files:
        kind = file_kind(path)
        if kind == ".parquet":
            _open_parquet(path, text_field)
        elif kind in (".jsonl", ".jsonl.gz"):
            next(_iter_jsonl(path, text_field), None)
    if next((doc for path in files for doc in iter_file_documents(path, text_field)), None) is None:
        raise ValueError(f"no non-empty documents in {', '.join(map(str, files)) or 'the inputs'}; check --input")


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


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(tokenizer_dir: str) -> Any:
    return load_tokenizer(Path(tokenizer_dir))


def tokenize_file(path: str, tokenizer_dir: str, text_field: str, dtype: str) -> Iterator[torch.Tensor]:
    """litdata `optimize` fn: one token tensor (EOS-terminated) per document of `path`."""
    tokenizer = _cached_tokenizer(tokenizer_dir)
    torch_dtype = getattr(torch, dtype)
    for text in iter_file_documents(Path(path), text_field):
        yield tokenizer.encode(text, eos=True).to(torch_dtype)


# ----------------------------------------------------------------------------- writing the shard


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


@contextlib.contextmanager
def _litdata_sandbox() -> Iterator[None]:
    """Give `optimize` a private cache dir and undo its process-wide side effects afterwards.

    litdata wipes `$DATA_OPTIMIZER_CACHE_FOLDER` (default /tmp/chunks) on every run, forces the
    multiprocessing start method to spawn and installs its own SIGINT handler.
    """
    env_keys = ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER", "DATA_OPTIMIZER_NUM_WORKERS")
    saved_env = {key: os.environ.get(key) for key in env_keys}
    start_method = multiprocessing.get_start_method(allow_none=True)
    in_main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if in_main_thread else None
    with tempfile.TemporaryDirectory(prefix="sharded_mix_litdata_") as cache:
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = os.path.join(cache, "chunks")
        os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = os.path.join(cache, "data")
        try:
            yield
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            multiprocessing.set_start_method(start_method, force=True)
            if in_main_thread and sigint is not None:
                signal.signal(signal.SIGINT, sigint)


def _worker_value_error(err: RuntimeError) -> ValueError | None:
    """Our ValueError raised inside a litdata worker arrives as text inside a RuntimeError; recover it."""
    lines = [line[len("ValueError: ") :] for line in str(err).splitlines() if line.startswith("ValueError: ")]
    return ValueError(lines[-1]) if lines else None


def _run_optimize(
    files: list[Path],
    tokenizer_dir: Path,
    output_dir: Path,
    text_field: str,
    dtype: torch.dtype,
    num_workers: int,
    chunk_bytes: int,
    progress: bool,
) -> None:
    """One `litdata.optimize` call: the files are the work items, each worker yields one tensor per document."""
    from litdata import TokensLoader, optimize

    dtype_name = str(dtype).removeprefix("torch.")
    fn = functools.partial(
        tokenize_file, tokenizer_dir=str(tokenizer_dir.resolve()), text_field=text_field, dtype=dtype_name
    )
    with _litdata_sandbox():
        optimize(
            fn=fn,
            inputs=[str(path.resolve()) for path in files],
            output_dir=str(output_dir.resolve()),
            chunk_bytes=chunk_bytes,
            item_loader=TokensLoader(),
            num_workers=num_workers,
            reorder_files=False,  # keep the input order: the shard is deterministic
            # One worker reads the shared queue in order anyway, and this path spawns no remover process
            # (~2s saved); several workers get fixed, ordered slices of the files instead of stealing work.
            keep_data_ordered=num_workers > 1,
            start_method="spawn",
            verbose=progress,
        )


def prepare_shard(
    inputs: Sequence[Path],
    tokenizer_dir: Path,
    output_dir: Path,
    text_field: str = "text",
    num_workers: int = 1,
    chunk_bytes: int | str = "64MB",
    overwrite: bool = False,
    *,
    progress: bool = True,
) -> PrepareSummary:
    """Tokenize every document of `inputs` (EOS appended) into a litdata token shard at `output_dir`."""
    start = time.perf_counter()
    output_dir = Path(output_dir)
    if num_workers < 1:
        raise ValueError(f"--num-workers {num_workers} must be at least 1")
    size = parse_size(chunk_bytes, "--chunk-bytes")
    files = list_input_files([Path(p) for p in inputs])
    if not files:
        raise ValueError(f"no {'/'.join(SUPPORTED_SUFFIXES)} files in --input {[str(p) for p in inputs]}")
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    dtype = token_dtype(vocab_size_with_added(tokenizer))
    _precheck(files, text_field)
    _clear_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    workers = min(num_workers, len(files))
    dtype_name = str(dtype).removeprefix("torch.")
    logger.info("tokenizing %d file(s) into %s (%d worker(s), %s tokens)", len(files), output_dir, workers, dtype_name)
    try:
        _run_optimize(files, Path(tokenizer_dir), output_dir, text_field, dtype, workers, size, progress)
    except RuntimeError as err:
        shutil.rmtree(output_dir, ignore_errors=True)
        value_error = _worker_value_error(err)
        if value_error is not None:
            raise value_error from err
        raise
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    return _summarize(output_dir, time.perf_counter() - start)


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


def _summarize(output_dir: Path, seconds: float) -> PrepareSummary:
    shard = shard_from_index(output_dir.name, "", output_dir, read_index(output_dir))
    return PrepareSummary(output_dir, shard.documents, shard.tokens, shard.chunks, shard.dtype, seconds)
