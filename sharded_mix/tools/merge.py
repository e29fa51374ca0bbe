"""Merge several litdata token directories into one shard (litdata's ``merge_datasets``), after checking they fit;
prepare's document files are joined too when every input has them, and the merged chunks hashed."""

from __future__ import annotations

import logging
from pathlib import Path

from sharded_mix.shards import shard_from_index
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.documents import merge_documents
from sharded_mix.tools.hash_shards import hash_shard

logger = logging.getLogger(__name__)


def merge_shards(inputs: list[str | Path], output: str | Path, max_workers: int = 2) -> dict:
    """Write the merged shard to ``output``; every input must be a token shard of the same dtype and format."""
    from litdata import merge_datasets

    if len(inputs) < 2:
        raise ValueError(f"--inputs: give at least two litdata directories to merge, got {len(inputs)}.")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValueError(
            f"--output {str(output)!r} exists and is not empty; refusing to write into it. Pick a new directory."
        )
    shards, formats = [], set()
    for path in inputs:
        index = read_index(path)
        shards.append(shard_from_index(str(path), "", path, index))
        formats.add(
            (
                index["config"].get("item_loader"),
                tuple(index["config"].get("data_format") or ()),
                index["config"].get("compression"),
            )
        )
    if len(formats) > 1:
        listing = "; ".join(f"{shard.path}: {shard.dtype}" for shard in shards)
        raise ValueError(
            f"--inputs are not in one format (item loader, token dtype, compression): {listing}. "
            "Merge shards made with one tokenizer and settings."
        )
    merge_datasets([str(Path(path).resolve()) for path in inputs], str(output.resolve()), max_workers=max_workers)
    merged = shard_from_index(output.name, "", output, read_index(output))
    hash_shard(output, workers=max_workers)
    with_documents = merge_documents([Path(path) for path in inputs], output)
    if not with_documents:
        logger.info("not every input has prepare's document files: %s has none (batch shows no origins)", output)
    return {
        "output": str(output),
        "inputs": len(shards),
        "tokens": merged.tokens,
        "documents": merged.documents,
        "chunks": merged.chunks,
        "document_files": with_documents,
    }
