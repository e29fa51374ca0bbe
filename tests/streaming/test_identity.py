"""The run's tokenizer and model against each shard's manifest, and the id range of shards without one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import BLOCK, take, write_token_shard
from litgpt.tokenizer import Tokenizer

from sharded_mix import ShardedMixedDataset
from sharded_mix.mixing.run_plan import RunContext
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.streaming.identity import RunTokenizer, check_tokenizer, vocab_fingerprint
from sharded_mix.tools.demo import train_tokenizer
from sharded_mix.tools.prepare import prepare_shard

TEXTS = [f"line {i}: the quick brown fox {i * 7 % 13} jumps over {i % 5} lazy dogs" for i in range(200)]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[Path, Path]:
    """Two tokenizers of the same vocabulary size trained on different text: same ids, other tokens."""
    root = tmp_path_factory.mktemp("tokenizers")
    first = train_tokenizer(TEXTS, 300, root / "first")
    second = train_tokenizer([text.upper()[::-1] for text in TEXTS], 300, root / "second")
    return first, second


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizers) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    (root / "a.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    prepare_shard([root / "a.jsonl"], tokenizers[0], root / "data" / "main" / "1", progress=False)
    return root / "data"


def data_module(base: Path, tokenizer: Tokenizer | None, context: RunContext | None = None, **fields):
    data = ShardedMixedDataset(data_path=base, val_data_path=base / "main" / "1", num_workers=0, **fields)
    data.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=BLOCK - 1)
    if context is not None:
        data._state.context = context
    data.setup()
    return data


def test_the_tokenizer_that_prepared_the_shards_is_accepted(prepared: Path, tokenizers, caplog) -> None:
    first = Tokenizer(tokenizers[0])
    assert len(take(data_module(prepared, first).train_dataloader(), 3)) == 3
    assert not [r for r in caplog.records if "cannot be checked" in r.getMessage()]
    manifest = json.loads((prepared / "main" / "1" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_fingerprint"] == vocab_fingerprint(first)


def test_another_tokenizer_of_the_same_size_is_refused_at_setup(prepared: Path, tokenizers) -> None:
    first, second = Tokenizer(tokenizers[0]), Tokenizer(tokenizers[1])
    assert first.vocab_size == second.vocab_size and vocab_fingerprint(first) != vocab_fingerprint(second)
    with pytest.raises(
        ValueError, match=r"source 'main/1' .* was tokenized with 'first' \(token -> id map [0-9a-f]+…\), but"
    ):
        data_module(prepared, second)


def test_the_vocabulary_file_hash_is_compared_when_only_it_is_known(prepared: Path, tokenizers) -> None:
    shards = discover_shards(prepared)
    theirs = shards[0].tokenizer.vocab_sha256
    check_tokenizer(shards, RunTokenizer("first", None, theirs, None))
    with pytest.raises(ValueError, match="vocabulary file sha256"):
        check_tokenizer(shards, RunTokenizer("other", None, "0" * 64, None))
    with pytest.raises(ValueError, match=r"past the model's 200: a device-side assert"):
        check_tokenizer(shards, RunTokenizer("first", None, theirs, 200))


def test_ids_of_a_shard_without_manifest_are_range_checked_as_it_is_first_read(tmp_path: Path, tokenizers) -> None:
    base = tmp_path / "data"
    ids = np.arange(2000, dtype=np.int32) % 290
    ids[900] = 5000  # one id past the run's vocabulary of 300
    write_token_shard(base / "main" / "1", [ids[i : i + 100] for i in range(0, 2000, 100)])
    tokenizer = Tokenizer(tokenizers[0])
    context = RunContext(model_vocab_size=320)
    with pytest.raises(ValueError, match=r"holds token id 5,000 at token \d+, outside the run's vocabulary of 320"):
        take(data_module(base, tokenizer, context, cache_dir=str(tmp_path / "cache")).train_dataloader(), 200)
    off = data_module(base, tokenizer, context, cache_dir=str(tmp_path / "cache"), verify_chunks="off")
    assert len(take(off.train_dataloader(), 200)) == 200
