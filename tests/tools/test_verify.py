"""Chunk file checks (`chunk_file_problems`, one stat per chunk) and `sharded-mix inspect --verify`, on damaged
shards."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_token_shard
from damage import (
    delete,
    edit_index,
    empty,
    header_count_wrong,
    index_dim_too_small,
    index_says_int32,
    patch_token,
    truncate,
    unreadable,
)

from sharded_mix.cli import main
from sharded_mix.shards import chunk_header_bytes, shard_from_index
from sharded_mix.streaming.chunk_checks import chunk_file_problems
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.verify import WINDOW_TOKENS, sample_windows

VOCAB = 1000


def healthy_shard(path: Path, tokens: int = 6000, dtype: torch.dtype = torch.uint16, **kwargs) -> Path:
    """A shard of ids below ``VOCAB`` in documents of 300 tokens (several 4 KB chunks by default)."""
    ids = np.arange(tokens) % VOCAB
    return write_token_shard(path, [ids[i : i + 300] for i in range(0, tokens, 300)], dtype=dtype, **kwargs)


def load_shard(path: Path, shard_id: str = "c1"):
    return shard_from_index(shard_id, "code", path, read_index(path))


def token_past_vocab(shard_dir: Path) -> None:
    patch_token(shard_dir, 5, VOCAB + 234)


def name_outside_the_shard(shard_dir: Path) -> None:
    healthy_shard(shard_dir.parent / "c2")
    edit_index(shard_dir, lambda index: index["chunks"][0].update(filename="../c2/chunk-0-0.bin"))


@pytest.mark.parametrize(
    "damage, expected, found_by_stat",
    [
        (truncate, r"holds [\d,]+ bytes, expected [\d,]+ .*truncated", True),
        (empty, r"holds 0 bytes, expected [\d,]+ .*the file is empty", True),
        (delete, "is missing", True),
        (unreadable, r"cannot be read \(permission denied\)", True),
        (index_says_int32, r"tokens of 2 bytes, not 4 \(int32\): index.json's dtype", True),
        (index_dim_too_small, r"holds [\d,]+ bytes, expected [\d,]+ .*the file is larger", True),
        (header_count_wrong, r"header counts \d+ documents, index.json's chunk_size says \d+", False),
        (
            token_past_vocab,
            r"token id 1,234 at token 5 is >= vocab size 1,000 \(index dtype or tokenizer mismatch\?\)",
            False,
        ),
        (name_outside_the_shard, r"'\.\./c2/chunk-0-0\.bin'.* is not a file name inside the shard", True),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_inspect_verify_reports_each_damage_naming_the_chunk(tmp_path, capsys, damage, expected, found_by_stat):
    base = tmp_path / "data"
    healthy_shard(base / "c1")
    damage(base / "c1")
    assert main(["inspect", str(base), "--verify", "--vocab-size", str(VOCAB)]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("  - c1: ")]
    damaged_chunks = len(read_index(base / "c1")["chunks"]) if damage is index_says_int32 else 1
    assert len(problems) == damaged_chunks and "chunk-0-0.bin" in problems[0], out
    assert re.search(expected, problems[0]), out
    assert main(["inspect", str(base)]) == (1 if found_by_stat else 0)  # without --verify: stat only
    capsys.readouterr()


def test_inspect_verify_passes_healthy_shards(tmp_path, capsys):
    base = tmp_path / "data"
    healthy_shard(base / "train" / "c1")
    healthy_shard(base / "val" / "c1", dtype=torch.int32)
    assert main(["inspect", str(base), "--verify", "--vocab-size", str(VOCAB)]) == 0
    out = capsys.readouterr().out
    assert "problems: none" in out and "token ids in [0, 1,000)" in out
    assert main(["inspect", str(base), "--verify", "--json"]) == 0
    train, val = json.loads(capsys.readouterr().out)
    assert train["problems"] == val["problems"] == [] and "not checked against a vocabulary" in val["notes"][0]


def test_verify_without_a_vocabulary_still_flags_negative_ids(tmp_path, capsys):
    base = tmp_path / "data"
    healthy_shard(base / "c1", dtype=torch.int32)
    patch_token(base / "c1", 9, -3)
    assert main(["inspect", str(base), "--verify"]) == 1
    assert "c1: chunk-0-0.bin: token id -3 at token 9 is negative" in capsys.readouterr().out


def test_verify_samples_the_middle_of_a_big_chunk(tmp_path, capsys):
    base = tmp_path / "data"
    healthy_shard(base / "c1", tokens=20_000, chunk_bytes="1MB")
    assert len(read_index(base / "c1")["chunks"]) == 1
    start, _ = sample_windows(20_000)[1]
    patch_token(base / "c1", start + 17, VOCAB)
    assert main(["inspect", str(base), "--verify", "--vocab-size", str(VOCAB)]) == 1
    assert f"token id 1,000 at token {start + 17:,} is >= vocab size 1,000" in capsys.readouterr().out


def test_sample_windows_read_a_few_windows_never_a_whole_chunk():
    assert sample_windows(0) == [] and sample_windows(100) == [(0, 100)]
    windows = sample_windows(10**9)
    assert [stop - start for start, stop in windows] == [WINDOW_TOKENS] * 3
    assert windows[0][0] == 0 and windows[-1][1] == 10**9


def test_verify_leaves_compressed_shards_unverified(tmp_path, capsys):
    pytest.importorskip("zstd")
    base = tmp_path / "data"
    healthy_shard(base / "c1", compression="zstd")
    assert main(["inspect", str(base), "--verify", "--vocab-size", str(VOCAB)]) == 0
    assert "c1: not verified (compressed/other layout)" in capsys.readouterr().out


def test_verify_bounds_ids_by_a_tokenizer(tmp_path, capsys):
    from test_prepare import write_tokenizer

    tokenizer_dir = write_tokenizer(tmp_path / "tokenizer", vocab_size=320)
    base = tmp_path / "data"
    write_token_shard(base / "c1", [np.arange(600) % 320], dtype=torch.uint16)
    assert main(["inspect", str(base), "--tokenizer-dir", str(tokenizer_dir)]) == 0
    patch_token(base / "c1", 0, 320)
    assert main(["inspect", str(base), "--tokenizer-dir", str(tokenizer_dir)]) == 1
    assert "token id 320 at token 0 is >= vocab size 320" in capsys.readouterr().out
    assert main(["inspect", str(base), "--tokenizer-dir", str(tmp_path / "nope")]) == 2


def test_chunk_file_problems_name_the_shard_file_and_sizes(tmp_path):
    shard_dir = healthy_shard(tmp_path / "c1")
    shard = load_shard(shard_dir)
    assert shard.chunks > 2 and chunk_file_problems(shard) == []
    first, second = (shard_dir / name for name in shard.chunk_files[:2])
    expected = shard.chunk_bytes(0)
    os.truncate(first, 100)
    second.unlink()
    assert chunk_file_problems(shard) == [
        f"shard 'c1': chunk file {str(first)!r} holds 100 bytes, expected {expected:,} (index.json: "
        f"{shard.chunk_tokens[0]:,} uint16 tokens after a {chunk_header_bytes(shard.chunk_items[0])}-byte header): "
        "the file is truncated, or index.json's dim or dtype disagrees with the file; restore the file, or re-run "
        "`sharded-mix prepare` for this shard.",
        f"shard 'c1': chunk file {str(second)!r} is missing; "
        "restore the file, or re-run `sharded-mix prepare` for this shard.",
    ]
    assert chunk_file_problems(shard, limit=1)[1] == "shard 'c1': ... and 1 more chunk files with problems"


def test_chunk_file_problems_never_follow_names_outside_the_shard(tmp_path):
    healthy_shard(tmp_path / "c2")
    shard = load_shard(healthy_shard(tmp_path / "c1"))
    for name in ("../c2/chunk-0-0.bin", str(tmp_path / "c2" / "chunk-0-0.bin"), "..", "sub/chunk-0-0.bin"):
        escaped = dataclasses.replace(shard, chunk_files=(name, *shard.chunk_files[1:]))
        (problem,) = chunk_file_problems(escaped)
        assert problem.startswith(f"shard 'c1': chunk 0: file name {name!r} is not a file name inside the shard")


def test_chunk_file_problems_report_an_unreadable_chunk(tmp_path, monkeypatch):
    shard = load_shard(healthy_shard(tmp_path / "c1"))
    unreadable_file = os.path.join(shard.path, shard.chunk_files[1])
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != unreadable_file and real_access(path, mode))
    assert chunk_file_problems(shard) == [
        f"shard 'c1': chunk file {unreadable_file!r} cannot be read (permission denied); fix its permissions."
    ]
