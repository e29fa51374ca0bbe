"""Tiny litdata token shards built in-process, whose tokens say where they came from."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from sharded_mix import ShardedMixedDataset
from sharded_mix.tools import prepare

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items) -> None:
    """Everything under tests/e2e/ runs a real ``litgpt`` process: ``-m "not e2e"`` leaves it out."""
    for item in items:
        if E2E in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


SOURCE_STRIDE = 10**7
"""Token = source number × SOURCE_STRIDE + position, so every block names its source and offset."""


write_token_shard = functools.partial(prepare.write_token_shard, chunk_bytes=4096)
"""Tiny chunks by default, so that shards of a few thousand tokens have several."""


def encoded_tokens(source: int, count: int, start: int = 0) -> np.ndarray:
    return source * SOURCE_STRIDE + np.arange(start, start + count, dtype=np.int64)


def write_source(base: str | Path, shard_dir: str, source: int, tokens: int, doc_tokens: int = 100, **kwargs) -> Path:
    """A shard of ``tokens`` encoded tokens of ``source``, split into documents of ``doc_tokens``."""
    all_tokens = encoded_tokens(source, tokens)
    documents = [all_tokens[i : i + doc_tokens] for i in range(0, tokens, doc_tokens)]
    return write_token_shard(Path(base) / shard_dir, documents, **kwargs)


def source_of(block: torch.Tensor) -> int:
    return int(block[0]) // SOURCE_STRIDE


@pytest.fixture
def reference_layout(tmp_path: Path) -> Path:
    """The reference layout: numbered main shards directly under the base, plus c1, m1, q1, q2."""
    base = tmp_path / "data"
    for number, (shard_dir, tokens) in enumerate(
        [("1", 3000), ("2", 2000), ("c1", 1500), ("m1", 1200), ("q1", 800), ("q2", 600)], start=1
    ):
        write_source(base, shard_dir, number, tokens)
    return base


BLOCK = 16  # max_seq_length 15 + 1


def make(base: Path, batch_size=4, num_workers=0, **fields) -> ShardedMixedDataset:
    """A set-up data module over ``base`` with blocks of ``BLOCK`` tokens."""
    fields.setdefault("val_data_path", base / "main" / "1")
    data = ShardedMixedDataset(data_path=base, num_workers=num_workers, **fields)
    data.connect(batch_size=batch_size, max_seq_length=BLOCK - 1)
    data.setup()
    return data


def take(loader, batches: int) -> list[torch.Tensor]:
    return [batch.clone() for batch in itertools.islice(iter(loader), batches)]


def block_ids(batches) -> list[tuple[int, int]]:
    """``(source, token offset)`` of every block, in stream order."""
    return [(source_of(block), int(block[0]) % SOURCE_STRIDE) for batch in batches for block in batch]


@pytest.fixture
def scenario(tmp_path):
    """The issue's scenario: main/1 has 1,206 blocks at weight 0.6, m1 has 181 blocks at 0.4."""
    write_source(tmp_path, "main/1", 1, 1206 * BLOCK, doc_tokens=BLOCK)
    write_source(tmp_path, "m1", 2, 181 * BLOCK, doc_tokens=BLOCK)
    return tmp_path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tiny byte-level BPE that knows the alpaca prompt's words (the SFT tests'; modules may define their own)."""
    from litgpt.tokenizer import Tokenizer

    from sharded_mix.tools.demo import train_tokenizer

    texts = [
        "Below is an instruction that describes a task. Write a response. ### Instruction: ### Response:",
        "add two numbers and say the answer is four",
        "what is the capital of france paris",
    ] * 20
    return Tokenizer(train_tokenizer(texts, 300, tmp_path_factory.mktemp("tok")))
