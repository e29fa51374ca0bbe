"""The engine of `sharded-mix prepare`: work items → TokensLoader chunk files, in worker processes.

Each item is read, filtered, split train/val by document, tokenized in batches (``streaming.encoding``: HF
``encode_batch``) and written as chunk files ``chunk-<item>-<n>.bin`` in litdata's TokensLoader layout; the caller
lists them in ``index.json`` in item order. Workers are spawned processes that import neither torch nor litdata,
and report progress (documents, tokens) through a queue.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sharded_mix.streaming.checksums import new_hasher
from sharded_mix.streaming.encoding import TokenizerSpec, encoder_for
from sharded_mix.tools.documents import RECORD, part_file
from sharded_mix.tools.prepare_inputs import Piece, iter_piece_records
from sharded_mix.tools.records import RecordFormat

BATCH_CHARS = 1_000_000
BATCH_DOCS = 1024
HEADER_ITEM_BYTES = 4


@dataclass(frozen=True)
class JobSpec:
    """Settings every item shares."""

    fmt: RecordFormat
    tokenizer: TokenizerSpec
    train_dir: str
    val_dir: str | None
    chunk_bytes: int
    val_fraction: float | None = None


@dataclass(frozen=True)
class ItemTask:
    """One work item and which of its documents to keep: local indices ``[first, stop)``.

    With ``val_docs``, the kept documents are numbered ``selected_base, selected_base + 1, ...`` among all
    ``selected_total`` kept documents, and exactly ``val_docs`` of those numbers, evenly spread, go to val.
    """

    index: int
    pieces: tuple[Piece, ...]
    first: int = 0
    stop: int | None = None
    selected_base: int = 0
    selected_total: int = 0
    val_docs: int = 0


@dataclass
class SplitResult:
    chunks: list[dict] = field(default_factory=list)
    documents: int = 0
    tokens: int = 0
    hashes: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Per chunk file: bytes and xxh3-128, for ``checksums.json``."""


@dataclass
class ItemResult:
    index: int
    train: SplitResult
    val: SplitResult


def is_val_by_hash(text: str, fraction: float) -> bool:
    """Whether a document belongs to the validation split: a hash of its text below ``fraction``."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def is_val_by_index(selected: int, total: int, val_docs: int) -> bool:
    """Whether kept document number ``selected`` (of ``total``) is one of ``val_docs`` evenly spread ones."""
    return (selected + 1) * val_docs // total > selected * val_docs // total


def item_documents(task: ItemTask, fmt: RecordFormat) -> Iterator[tuple[int, int, str]]:
    """``(piece slot, record, text)`` of the documents the task keeps, in order (`iter_piece_records`)."""
    documents = itertools.chain.from_iterable(
        ((slot, record, text) for record, text in iter_piece_records(piece, fmt))
        for slot, piece in enumerate(task.pieces)
    )
    return itertools.islice(documents, task.first, task.stop)


def count_item(task: ItemTask, job: JobSpec, report: Callable[[int, int], None]) -> int:
    """The number of documents of an item (filters applied), without tokenizing."""
    count = 0
    for count, _ in enumerate(item_documents(task, job.fmt), start=1):
        if count % 10_000 == 0:
            report(10_000, 0)
    report(count % 10_000, 0)
    return count


class ChunkWriter:
    """Documents → chunk files ``chunk-<item>-<n>.bin`` (TokensLoader layout), each about ``chunk_bytes``, and the
    item's document records (length, piece slot, record: `documents.part_file`)."""

    def __init__(self, directory: str, item: int, dtype: str, chunk_bytes: int) -> None:
        self.directory = Path(directory)
        self.item = item
        self.dtype = np.dtype(dtype)
        self.limit = chunk_bytes
        self.pending: list[np.ndarray] = []
        self.pending_bytes = 0
        self.result = SplitResult()
        self.origins: list[tuple[int, int, int]] = []

    def add(self, tokens: np.ndarray, slot: int, record: int) -> None:
        size = tokens.nbytes
        if self.pending and self.pending_bytes + size > self.limit:
            self.flush()
        self.pending.append(tokens)
        self.pending_bytes += size
        self.result.documents += 1
        self.result.tokens += len(tokens)
        self.origins.append((len(tokens), slot, record))

    def finish(self) -> SplitResult:
        """Write the last chunk and the item's document records; what was written."""
        self.flush()
        if self.origins:
            np.array(self.origins, dtype=RECORD).tofile(part_file(self.directory, self.item))
        return self.result

    def flush(self) -> None:
        if not self.pending:
            return
        count = len(self.pending)
        sizes = np.fromiter((doc.nbytes for doc in self.pending), dtype=np.int64, count=count)
        header_bytes = (count + 2) * HEADER_ITEM_BYTES
        offsets = header_bytes + np.concatenate([[0], np.cumsum(sizes)])
        if offsets[-1] >= 2**32:
            raise ValueError(
                f"a chunk of {offsets[-1]:,} bytes does not fit TokensLoader's uint32 offsets; lower --chunk-bytes"
            )
        header = np.concatenate([[count], offsets]).astype(np.uint32)
        name = f"chunk-{self.item}-{len(self.result.chunks)}.bin"
        hasher = new_hasher()
        with open(self.directory / name, "wb") as out:
            for data in (header, *self.pending):
                data = data.tobytes()
                out.write(data)
                hasher.update(data)
        self.result.hashes[name] = (int(offsets[-1]), hasher.hexdigest())
        tokens = int(sizes.sum()) // self.dtype.itemsize
        self.result.chunks.append(
            {"chunk_bytes": int(offsets[-1]), "chunk_size": count, "dim": tokens, "filename": name}
        )
        self.pending, self.pending_bytes = [], 0


def tokenize_item(task: ItemTask, job: JobSpec, report: Callable[[int, int], None]) -> ItemResult:
    """Write one item's documents as chunk files; returns what was written, per split."""
    encoder = encoder_for(job.tokenizer)
    train = ChunkWriter(job.train_dir, task.index, job.tokenizer.dtype, job.chunk_bytes)
    val = ChunkWriter(job.val_dir, task.index, job.tokenizer.dtype, job.chunk_bytes) if job.val_dir else None
    batch: list[str] = []
    routes: list[tuple[ChunkWriter, int, int]] = []
    chars = 0

    def flush() -> None:
        nonlocal chars
        tokens = 0
        for (writer, slot, record), ids in zip(routes, encoder.encode(batch, eos=True, keep_final_eos=True)):
            writer.add(ids, slot, record)
            tokens += len(ids)
        report(len(batch), tokens)
        batch.clear()
        routes.clear()
        chars = 0

    for number, (slot, record, text) in enumerate(item_documents(task, job.fmt)):
        writer = train
        if val is not None:
            if task.val_docs:
                held_out = is_val_by_index(task.selected_base + number, task.selected_total, task.val_docs)
            else:
                held_out = job.val_fraction is not None and is_val_by_hash(text, job.val_fraction)
            writer = val if held_out else train
        batch.append(text)
        routes.append((writer, slot, record))
        chars += len(text)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            flush()
    if batch:
        flush()
    return ItemResult(task.index, train.finish(), val.finish() if val is not None else SplitResult())


# ----------------------------------------------------------------------------- running items


_QUEUE: Any = None
_JOB: JobSpec | None = None


def _init_worker(progress_queue: Any, job: JobSpec) -> None:
    global _QUEUE, _JOB
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _QUEUE, _JOB = progress_queue, job


def _queue_report(documents: int, tokens: int) -> None:
    if _QUEUE is not None and (documents or tokens):
        _QUEUE.put((documents, tokens))


def _run_in_worker(fn: Callable[[ItemTask, JobSpec, Callable[[int, int], None]], Any], task: ItemTask) -> Any:
    assert _JOB is not None
    return fn(task, _JOB, _queue_report)


def run_items(
    fn: Callable[[ItemTask, JobSpec, Callable[[int, int], None]], Any],
    tasks: Sequence[ItemTask],
    job: JobSpec,
    workers: int,
    on_progress: Callable[[int, int], None],
    enough: Callable[[dict[int, Any]], bool] = lambda done: False,
) -> dict[int, Any]:
    """``fn`` over ``tasks`` on ``workers`` processes (in this process for one): results by task index.

    Tasks start in order with at most ``2 * workers`` in flight; once ``enough(results)`` holds, no new task starts.
    """
    results: dict[int, Any] = {}
    if workers <= 1:
        for task in tasks:
            if enough(results):
                break
            results[task.index] = fn(task, job, on_progress)
        return results
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    pending = iter(tasks)
    running: dict[Future, ItemTask] = {}
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(progress_queue, job)
    ) as pool:
        try:
            while True:
                while len(running) < 2 * workers and not enough(results):
                    task = next(pending, None)
                    if task is None:
                        break
                    running[pool.submit(_run_in_worker, fn, task)] = task
                if not running:
                    break
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, on_progress)
                for future in done:
                    task = running.pop(future)
                    results[task.index] = future.result()
        except BaseException:
            for future in running:
                future.cancel()
            raise
        finally:
            _drain(progress_queue, on_progress, wait_s=0.05)
    return results


def _drain(progress_queue: Any, on_progress: Callable[[int, int], None], wait_s: float = 0.0) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            documents, tokens = progress_queue.get(timeout=max(0.0, deadline - time.monotonic()) or 0.001)
        except queue.Empty:
            return
        on_progress(documents, tokens)
