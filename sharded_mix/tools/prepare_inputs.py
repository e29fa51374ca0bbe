"""What `sharded-mix prepare` reads: input files and `datasets` datasets, cut into work items, and their documents.

A work item is a tuple of ``Piece``s (a whole file, a byte range of a JSONL file at line boundaries, a run of
parquet row groups, or one shard of a streamed `datasets` dataset); items are cut by size only, so the token
stream and the chunk layout do not depend on the number of workers. Reading is pure I/O: no tokenizer here.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharded_mix.tools.records import RecordFormat

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
DATASET_KIND = "dataset"
MIN_ITEM_BYTES = 1_000_000
MAX_ITEM_BYTES = 128_000_000
ITEMS_PER_INPUT = 64
"""Default item size: the inputs' bytes / ITEMS_PER_INPUT, within [MIN_ITEM_BYTES, MAX_ITEM_BYTES]."""


@dataclass(frozen=True)
class DatasetSpec:
    """A `datasets` dataset, streamed: ``load_dataset(name, config, split=..., data_files=..., data_dir=...)``."""

    name: str
    config: str | None = None
    split: str = "train"
    data_files: tuple[str, ...] = ()
    data_dir: str | None = None

    def label(self) -> str:
        parts = [self.name] + ([self.config] if self.config else []) + [self.split]
        return ":".join(parts)

    def load(self) -> Any:
        try:
            import datasets
        except ImportError as err:
            raise ValueError(
                f"--dataset {self.name!r} needs the datasets package; pip install 'sharded_mix[datasets]'"
            ) from err
        kwargs: dict[str, Any] = {"split": self.split, "streaming": True}
        if self.data_files:
            kwargs["data_files"] = list(self.data_files)
        if self.data_dir:
            kwargs["data_dir"] = self.data_dir
        try:
            return datasets.load_dataset(self.name, self.config, **kwargs)
        except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
            raise ValueError(
                f"--dataset {self.label()!r} cannot be loaded ({err}); check its name, config and split"
            ) from err


@dataclass(frozen=True)
class Piece:
    """A readable part of one input: ``[start, stop)`` in bytes (JSONL), row groups (parquet) or shards (dataset)."""

    source: str
    kind: str
    start: int = 0
    stop: int = -1
    size: int = 0
    dataset: DatasetSpec | None = field(default=None, compare=False)


# ----------------------------------------------------------------------------- listing files


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


# ----------------------------------------------------------------------------- planning work items


def default_item_bytes(total_bytes: int) -> int:
    return max(MIN_ITEM_BYTES, min(MAX_ITEM_BYTES, total_bytes // ITEMS_PER_INPUT))


def file_pieces(path: Path, fmt: RecordFormat, item_bytes: int) -> list[Piece]:
    """The pieces of one file; checks parquet columns here, before any worker starts."""
    kind = file_kind(path)
    source = str(path.resolve())
    size = path.stat().st_size
    if kind == ".jsonl" and size > item_bytes:
        bounds = jsonl_line_bounds(path, item_bytes)
        return [Piece(source, kind, start, stop, stop - start) for start, stop in zip(bounds, bounds[1:])]
    if kind == ".parquet":
        metadata = _open_parquet(path, fmt).metadata
        groups = [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]
        return [Piece(source, kind, i, i + 1, groups[i]) for i in range(len(groups))]
    return [Piece(source, kind, 0, -1, size)]


def jsonl_line_bounds(path: Path, item_bytes: int) -> list[int]:
    """Byte offsets ``0 = b0 < b1 < ... < bn = size``, each a line start, about ``item_bytes`` apart."""
    size = path.stat().st_size
    bounds = [0]
    with open(path, "rb") as f:
        target = item_bytes
        while target < size:
            f.seek(target - 1)
            f.readline()  # to the end of the line holding byte target - 1: the next line starts a range
            position = f.tell()
            if position >= size:
                break
            if position > bounds[-1]:
                bounds.append(position)
            target = max(position, target) + item_bytes
    bounds.append(size)
    return bounds


def dataset_pieces(spec: DatasetSpec) -> list[Piece]:
    """One piece per shard (data file) of the streamed dataset."""
    dataset = spec.load()
    shards = getattr(dataset, "num_shards", None) or getattr(dataset, "n_shards", 1)
    return [Piece(spec.label(), DATASET_KIND, i, i + 1, 0, spec) for i in range(shards)]


def group_items(pieces: Sequence[Piece], item_bytes: int) -> list[tuple[Piece, ...]]:
    """Consecutive pieces into items of about ``item_bytes``; a dataset shard is always an item of its own."""
    items: list[tuple[Piece, ...]] = []
    current: list[Piece] = []
    size = 0
    for piece in pieces:
        if piece.kind == DATASET_KIND:
            if current:
                items.append(tuple(current))
                current, size = [], 0
            items.append((piece,))
            continue
        if current and size + piece.size > item_bytes:
            items.append(tuple(current))
            current, size = [], 0
        if (
            current
            and current[-1].source == piece.source
            and current[-1].kind == ".parquet"
            and current[-1].stop == piece.start
        ):
            last = current.pop()
            piece = Piece(last.source, last.kind, last.start, piece.stop, last.size + piece.size)
        current.append(piece)
        size += piece.size
    if current:
        items.append(tuple(current))
    return items


# ----------------------------------------------------------------------------- reading documents


def iter_piece_documents(piece: Piece, fmt: RecordFormat) -> Iterator[str]:
    """The non-empty documents of one piece, filters applied, in order."""
    return (text for _, text in iter_piece_records(piece, fmt))


def iter_piece_records(piece: Piece, fmt: RecordFormat) -> Iterator[tuple[int, str]]:
    """``(record, text)`` of the non-empty documents of one piece, filters applied, in order. ``record`` numbers
    the document's row from 1: a JSONL line counted from the piece's first byte, a parquet row counted from the
    file's first, a dataset row in its shard; a whole text file is record 0."""
    if piece.kind == ".txt":
        records: Iterator[tuple[int, str | None]] = iter([(0, _read_text(Path(piece.source)))])
    else:
        records = ((number, fmt.render(row, where)) for number, where, row in iter_piece_rows(piece, fmt))
    for number, text in records:
        if text and not text.isspace():
            yield number, text


def record_unit(piece: Piece) -> str:
    """What `iter_piece_records` numbers in ``piece``: ``line``, ``row`` or ``file``."""
    return "file" if piece.kind == ".txt" else "row" if piece.kind in (".parquet", DATASET_KIND) else "line"


def lines_before(path: str, offsets: Sequence[int]) -> dict[int, int]:
    """The newlines of ``path`` before each byte offset (for JSONL ranges: the lines before a range's first)."""
    wanted = sorted(set(offsets))
    counts: dict[int, int] = {}
    lines = position = 0
    with open(path, "rb") as file:
        for offset in wanted:
            while position < offset:
                block = file.read(min(offset - position, 1 << 24))
                if not block:
                    break
                lines += block.count(b"\n")
                position += len(block)
            counts[offset] = lines
    return counts


def iter_piece_rows(piece: Piece, fmt: RecordFormat) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(number, where, row)`` of a JSONL, parquet or dataset piece: ``number`` as in `iter_piece_records`,
    ``where`` names the row in errors."""
    if piece.kind == DATASET_KIND:
        assert piece.dataset is not None
        dataset = piece.dataset.load()
        shards = getattr(dataset, "num_shards", None) or getattr(dataset, "n_shards", 1)
        if shards > 1:
            dataset = dataset.shard(num_shards=shards, index=piece.start)
        for number, row in enumerate(dataset, start=1):
            yield number, f"row {number} of shard {piece.start} of {piece.source}", row
    elif piece.kind == ".parquet":
        yield from _parquet_rows(piece, fmt)
    else:
        yield from _jsonl_rows(piece)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not UTF-8 text ({err}); convert it to UTF-8") from err


def _open_lines(piece: Piece) -> io.BufferedIOBase:
    path = piece.source
    if piece.kind == ".jsonl.gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if piece.kind == ".jsonl.zst":
        try:
            import zstandard
        except ImportError as err:
            raise ValueError(f"reading {path} needs zstandard; pip install 'sharded_mix[zstandard]'") from err
        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    handle = open(path, "rb")
    handle.seek(piece.start)
    return handle


def _jsonl_rows(piece: Piece) -> Iterator[tuple[int, str, dict[str, Any]]]:
    path = Path(piece.source)
    remaining = piece.stop - piece.start if piece.stop >= 0 else -1
    origin = f" (the range from byte {piece.start})" if piece.start else ""
    with _open_lines(piece) as lines:
        for line_no, line in enumerate(lines, start=1):
            if remaining >= 0:
                if remaining == 0:
                    break
                remaining -= len(line)
            if line.strip():
                where = f"row {line_no}{origin} of {path}"
                yield line_no, where, _parse_json_line(line, where)


def _parse_json_line(line: bytes, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not UTF-8 ({err}); convert the file to UTF-8") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err}); write one JSON object per line") from err
    if not isinstance(row, dict):
        raise ValueError(f"{where} is a JSON {type(row).__name__}, not an object; write one JSON object per line")
    return row


def _open_parquet(path: Path, fmt: RecordFormat) -> Any:
    """The ParquetFile, after checking that the fields the format needs are string columns (filters: any type)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ValueError(f"reading {path} needs pyarrow; pip install 'sharded_mix[parquet]'") from err
    parquet_file = pq.ParquetFile(path)
    schema = parquet_file.schema_arrow
    option = "--text-field" if fmt.template is None else "--template"
    optional = {name for _, name, is_optional in fmt.parts() if name and is_optional}
    text_fields = {name for _, name, _ in fmt.parts() if name}
    string_types = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
    for name, column in fmt.columns(schema.names).items():
        if column is None:
            if name in optional and name not in {f.field for f in fmt.where}:
                continue
            which = option if name in text_fields else "--where"
            tried = "" if fmt.candidates(name) == (name,) else f" (tried {', '.join(fmt.candidates(name))})"
            raise ValueError(
                f"{which} {name!r}{tried} not found in the columns of {path} (columns: {', '.join(schema.names)}); "
                f"pass {which} with the column that holds the text"
            )
        column_type = schema.field(column).type
        if name in text_fields and not any(is_type(column_type) for is_type in string_types if is_type is not None):
            raise ValueError(
                f"{option} {column!r} of {path} is a {column_type} column, not a string one; "
                f"pass {option} with the column that holds the text"
            )
    return parquet_file


def _parquet_rows(piece: Piece, fmt: RecordFormat) -> Iterator[tuple[int, str, dict[str, Any]]]:
    path = Path(piece.source)
    parquet_file = _open_parquet(path, fmt)
    columns = sorted({column for column in fmt.columns(parquet_file.schema_arrow.names).values() if column})
    stop = parquet_file.metadata.num_row_groups if piece.stop < 0 else piece.stop
    row = sum(parquet_file.metadata.row_group(i).num_rows for i in range(piece.start))
    for batch in parquet_file.iter_batches(row_groups=list(range(piece.start, stop)), columns=columns, batch_size=1024):
        values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for offset in range(batch.num_rows):
            row += 1
            yield row, f"row {row} of {path}", {name: column[offset] for name, column in zip(columns, values)}


def iter_documents(inputs: list[Path], text_field: str = "text", fmt: RecordFormat | None = None) -> Iterator[str]:
    """Yield the non-empty documents of the given files and directories, in a deterministic order."""
    fmt = fmt or RecordFormat(text_field=text_field)
    for path in list_input_files(inputs):
        yield from iter_file_documents(path, fmt=fmt)


def iter_file_documents(path: Path, text_field: str = "text", fmt: RecordFormat | None = None) -> Iterator[str]:
    """Yield the non-empty documents of one supported file."""
    fmt = fmt or RecordFormat(text_field=text_field)
    if file_kind(path) is None:
        raise ValueError(f"{str(path)!r} has an unsupported extension; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    for piece in file_pieces(path, fmt, MAX_ITEM_BYTES * 1000):
        yield from iter_piece_documents(piece, fmt)
