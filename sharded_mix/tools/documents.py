"""A token shard's documents: where each starts in the shard's token stream and which input record it came from.

`sharded-mix prepare` writes two files beside ``index.json`` (plain litdata ignores them): ``documents.json``, the
inputs (path, and whether a record is a line, a row or the whole file), and ``documents.bin``, one fixed-size
`RECORD` per document in shard order: its first token in the shard's concatenated token stream, its input and its
record there. 20 bytes a document; readers probe it by binary search (a memory map, or ranged reads of a remote
shard), never load it whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUTS_FILE = "documents.json"
RECORDS_FILE = "documents.bin"
FORMAT = 1
RECORD = np.dtype([("start", "<u8"), ("input", "<u4"), ("record", "<u8")])
"""One document: its first token (in a worker's part file: its length), its input, its record number there."""
MERGE_RECORDS = 1 << 20
UNITS = ("line", "row", "file")
"""What a record number counts: JSONL lines and parquet/dataset rows from 1; a whole text file is record 0."""


def part_file(directory: str | Path, item: int) -> Path:
    """Where a `prepare` worker leaves the records of work item ``item``'s documents (lengths, not starts yet)."""
    return Path(directory) / f".documents-{item}.bin"


@dataclass(frozen=True)
class DocumentInput:
    """An input documents came from: a file path or dataset label (``shard``: the dataset's shard) and what its record
    numbers count (one of `UNITS`)."""

    path: str
    unit: str
    shard: int | None = None

    def as_dict(self) -> dict:
        return {"path": self.path, "unit": self.unit, **({"shard": self.shard} if self.shard is not None else {})}


def write_documents(directory: Path, parts: Iterable[tuple[Path, Sequence[tuple[DocumentInput, int]]]]) -> int:
    """Join the part files of ``directory``'s work items, in item order, into its ``documents.bin`` and
    ``documents.json``; each part comes with, per piece slot, its input and the records before the piece. Removes the
    parts; returns the documents written."""
    inputs: dict[DocumentInput, int] = {}
    start = documents = 0
    with open(directory / RECORDS_FILE, "wb") as out:
        for path, slots in parts:
            if not path.exists():
                continue
            records = np.fromfile(path, dtype=RECORD)
            path.unlink()
            if not len(records):
                continue
            lengths = records["start"].copy()
            slot_inputs = np.array([inputs.setdefault(source, len(inputs)) for source, _ in slots], dtype=np.uint32)
            bases = np.array([base for _, base in slots], dtype=np.uint64)
            records["start"] = start + np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.uint64)])
            records["record"] += bases[records["input"]]
            records["input"] = slot_inputs[records["input"]]
            out.write(records.tobytes())
            start += int(lengths.sum())
            documents += len(records)
    write_listing(directory, list(inputs), documents, start)
    return documents


def write_listing(directory: Path, inputs: Sequence[DocumentInput], documents: int, tokens: int) -> None:
    """``documents.json``: the inputs, and the documents and tokens ``documents.bin`` covers."""
    listing = {
        "format": FORMAT,
        "record": [[name, RECORD.fields[name][0].str] for name in RECORD.names],
        "documents": documents,
        "tokens": tokens,
        "inputs": [source.as_dict() for source in inputs],
    }
    (directory / INPUTS_FILE).write_text(json.dumps(listing, indent=1), encoding="utf-8")


def merge_documents(shards: Sequence[Path], output: Path) -> bool:
    """``output``'s document files for the concatenation of ``shards`` (in order); False, writing nothing, when one
    of them has none."""
    opened = [ShardDocuments.open(str(shard)) for shard in shards]
    if any(documents is None for documents in opened):
        return False
    inputs: dict[DocumentInput, int] = {}
    start = count = 0
    with open(output / RECORDS_FILE, "wb") as out:
        for documents in opened:
            mapping = np.array([inputs.setdefault(source, len(inputs)) for source in documents.inputs], np.uint32)
            for first in range(0, documents.documents, MERGE_RECORDS):
                records = np.array(documents.read(first, MERGE_RECORDS), dtype=RECORD)
                records["start"] += np.uint64(start)
                records["input"] = mapping[records["input"]]
                out.write(records.tobytes())
            start += documents.tokens
            count += documents.documents
    write_listing(output, list(inputs), count, start)
    return True


class ShardDocuments:
    """The documents of one shard, read lazily: which holds a token, where each spans, what input it came from."""

    def __init__(self, inputs: Sequence[DocumentInput], documents: int, tokens: int, read, starts=None) -> None:
        self.inputs = list(inputs)
        self.documents = documents
        self.tokens = tokens
        self._starts = starts  # a local shard's first tokens: a strided view of the memory map, read an item at a time
        self.read = read
        """``read(first, count)``: records ``first .. first + count - 1`` (fewer at the end), a `RECORD` array."""

    @classmethod
    def open(cls, shard: str, storage_options: dict | None = None) -> ShardDocuments | None:
        """The documents of the shard at ``shard`` (a path or URL); None when it has no document files."""
        from sharded_mix.streaming.storage import RemoteDir, is_url

        if is_url(shard):
            remote = RemoteDir(shard, storage_options)
            try:
                listing = json.loads(remote.read_bytes(INPUTS_FILE))
            except ValueError:
                return None

            def read(first: int, count: int) -> np.ndarray:
                data = remote.read_range(RECORDS_FILE, first * RECORD.itemsize, count * RECORD.itemsize)
                return np.frombuffer(data, dtype=RECORD)

            starts = None  # probed by ranged reads
        else:
            path = Path(shard)
            if not (path / INPUTS_FILE).is_file():
                return None
            listing = json.loads((path / INPUTS_FILE).read_text(encoding="utf-8"))
            records = path / RECORDS_FILE
            size = os.path.getsize(records)
            if size != listing["documents"] * RECORD.itemsize:
                raise ValueError(
                    f"{str(records)!r} holds {size:,} bytes, not {listing['documents']:,} documents of "
                    f"{RECORD.itemsize} bytes; rerun `sharded-mix prepare` for this shard."
                )
            mapped = np.memmap(records, dtype=RECORD, mode="r") if size else np.empty(0, dtype=RECORD)

            def read(first: int, count: int) -> np.ndarray:
                return mapped[first : first + count]

            starts = mapped["start"]

        if listing.get("format") != FORMAT:
            raise ValueError(f"{shard}/{INPUTS_FILE} is format {listing.get('format')!r}; this version reads {FORMAT}.")
        inputs = [DocumentInput(entry["path"], entry["unit"], entry.get("shard")) for entry in listing["inputs"]]
        return cls(inputs, listing["documents"], listing["tokens"], read, starts)

    def start(self, document: int) -> int:
        """The document's first token in the shard's token stream (the shard's total for ``documents``)."""
        if document == self.documents:
            return self.tokens
        if self._starts is not None:
            return int(self._starts[document])
        return int(self.read(document, 1)["start"][0])

    def holding(self, position: int) -> int:
        """The document holding token ``position`` of the shard's stream (binary search, O(log documents) reads)."""
        if not 0 <= position < self.tokens:
            raise ValueError(f"token {position:,} is past the shard's {self.tokens:,} tokens")
        low, high = 0, self.documents - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.start(middle) <= position:
                low = middle
            else:
                high = middle - 1
        return low

    def span(self, document: int) -> tuple[int, int]:
        """``[first, stop)`` tokens of ``document`` in the shard's stream."""
        if not 0 <= document < self.documents:
            raise ValueError(f"--document {document:,} is not a document of the shard; give 0..{self.documents - 1:,}.")
        records = self.read(document, 2)
        stop = int(records["start"][1]) if len(records) > 1 else self.tokens
        return int(records["start"][0]), stop

    def origin(self, document: int) -> dict:
        """``{"document", "input", <unit>}`` of one document: its ordinal in the shard, and the input record (a
        JSONL line, a parquet or dataset row counted from 1; a whole text file has no record number)."""
        record = self.read(document, 1)[0]
        source = self.inputs[int(record["input"])]
        origin: dict = {"document": document, "input": source.path}
        if source.shard is not None:
            origin["dataset_shard"] = source.shard
        if source.unit != "file":
            origin[source.unit] = int(record["record"])
        return origin

    def in_range(self, first: int, stop: int) -> list[dict]:
        """The origins of the documents holding any of tokens ``[first, stop)``, in order."""
        last = self.holding(min(stop, self.tokens) - 1)
        return [self.origin(document) for document in range(self.holding(first), last + 1)]


def describe_origin(origin: dict) -> str:
    """``#12 data/a.jsonl:40`` (a line), ``#3 data/b.parquet row 7``, ``#0 notes.txt``."""
    where = origin["input"]
    if "line" in origin:
        where += f":{origin['line']}"
    elif "row" in origin:
        shard = f" shard {origin['dataset_shard']}" if "dataset_shard" in origin else ""
        where += f"{shard} row {origin['row']}"
    return f"#{origin['document']} {where}"
