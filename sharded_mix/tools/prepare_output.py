"""The output side of `sharded-mix prepare`: where shards go, their ``index.json``, and what they hold.

``val_output_for`` places the held-out shard; ``clear_output_dir`` guards (or, with ``--overwrite``, empties)
an output directory; ``stale_val_shards`` finds the held-out shards an earlier prepare of it left;
``write_index`` lists the workers' chunk files in litdata's ``index.json``;
``document_parts`` lists the workers' document records for ``documents.write_documents``;
``summarize_shard`` counts a written shard into a `PrepareSummary`. ``write_token_shard`` writes token ids you
already have, in this process, with litdata's own writer.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.documents import DocumentInput, part_file
from sharded_mix.tools.manifest import read_manifest
from sharded_mix.tools.prepare_inputs import lines_before, record_unit
from sharded_mix.tools.prepare_workers import ItemResult, ItemTask

logger = logging.getLogger(__name__)

_SHARD_ENTRY = re.compile(
    r"^(index\.json|manifest\.json|\d+\.index\.json|chunk-.*\.bin|\.checkpoints|documents\.(json|bin)|checksums\.json|\.documents-\d+\.bin)$"
)
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

    def counts(self) -> dict[str, int]:
        """Documents, tokens and chunks, as the manifest records them."""
        return {"documents": self.documents, "tokens": self.tokens, "chunks": self.chunks}


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


def clear_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Make sure `output_dir` is absent or empty, deleting an old shard only when `overwrite`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output {str(output_dir)!r} is a file; pass a directory path")
    if not output_dir.exists():
        return
    entries = sorted(output_dir.iterdir())
    if not entries:
        return
    what = "a shard (index.json)" if (output_dir / "index.json").exists() else f"{len(entries)} entries"
    shard_files = all(_SHARD_ENTRY.match(entry.name) for entry in entries)
    if not overwrite and shard_files and not (output_dir / "index.json").exists():
        raise FileExistsError(
            f"--output {str(output_dir)!r} holds {len(entries)} shard file(s) (chunk files, document records) but no "
            "index.json: it looks like an interrupted `sharded-mix prepare`; pass --overwrite to replace it, or pick "
            "another --output"
        )
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


def stale_val_shards(output_dir: Path, val_dir: Path | None) -> list[Path]:
    """Held-out shards of an earlier prepare of ``output_dir`` that this run does not rewrite: the val shard its old
    manifest names, and the one at ``val_output_for(output_dir)``, when their manifest says they are its val shard."""
    old = read_manifest(output_dir) or {}
    candidates = [Path(old["val_shard"])] if isinstance(old.get("val_shard"), str) else []
    stale: list[Path] = []
    for path in [*candidates, val_output_for(output_dir)]:
        if path in stale or not (path / "index.json").is_file():
            continue
        if val_dir is not None and path.resolve() == val_dir.resolve():
            continue  # rewritten from this run's selection
        manifest = read_manifest(path) or {}
        train_shard = manifest.get("train_shard")
        if manifest.get("split") == "val" and isinstance(train_shard, str):
            if Path(train_shard).resolve() == output_dir.resolve():
                stale.append(path)
    return stale


def drop_stale_val_shards(stale: Sequence[Path], output_dir: Path, overwrite: bool) -> None:
    """Remove (``overwrite``) or warn about held-out shards an earlier prepare of ``output_dir`` left: their documents
    are in the training shard this run writes."""
    for path in stale:
        if not overwrite:
            logger.warning(
                "%s is the held-out val shard of an earlier prepare of %s, which this run replaces: its documents may "
                "be in the new training shard, and training refuses it as validation data; remove it",
                path,
                output_dir,
            )
            continue
        logger.warning(
            "removing %s, the held-out val shard of the old %s (--overwrite): this run does not rewrite it, and its "
            "documents may be in the new training shard",
            path,
            output_dir,
        )
        clear_output_dir(path, overwrite=True)


def write_index(directory: Path, results: Sequence[ItemResult], split: str, dtype: str, chunk_bytes: int) -> None:
    """``index.json`` listing the chunk files of `split` (``train``/``val``) of every item, in item order."""
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


def document_parts(directory: Path, tasks: Sequence[ItemTask]) -> list[tuple[Path, list[tuple[DocumentInput, int]]]]:
    """Per task, in order, its part file of document records in ``directory`` and, per piece slot, the piece's input
    and the records before it (the lines of a JSONL file before a range that starts inside it)."""
    starts: dict[str, list[int]] = {}
    for task in tasks:
        for piece in task.pieces:
            if piece.kind == ".jsonl" and piece.start > 0:
                starts.setdefault(piece.source, []).append(piece.start)
    before = {source: lines_before(source, offsets) for source, offsets in starts.items()}
    parts = []
    for task in tasks:
        slots = []
        for piece in task.pieces:
            shard = piece.start if piece.dataset is not None else None
            base = before[piece.source][piece.start] if piece.source in before and piece.start > 0 else 0
            slots.append((DocumentInput(piece.source, record_unit(piece), shard), base))
        parts.append((part_file(directory, task.index), slots))
    return parts


def summarize_shard(output_dir: Path, seconds: float, val: PrepareSummary | None = None) -> PrepareSummary:
    """The `PrepareSummary` of the shard written at `output_dir`, counted from its ``index.json``."""
    shard = shard_from_index(output_dir.name, "", output_dir, read_index(output_dir))
    return PrepareSummary(output_dir, shard.documents, shard.tokens, shard.chunks, shard.dtype, seconds, val)


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
