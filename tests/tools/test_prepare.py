"""prepare.py: reading .txt/.jsonl/.jsonl.gz/.parquet, tokenizing with EOS, writing and guarding litdata shards."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from litdata import StreamingDataset, TokensLoader
from litgpt.tokenizer import Tokenizer

from sharded_mix.cli import main
from sharded_mix.config import parse_size
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.demo import train_tokenizer
from sharded_mix.tools.prepare import (
    iter_documents,
    list_input_files,
    load_tokenizer,
    prepare_shard,
    token_dtype,
    vocab_size_with_added,
)

EOS = "<|endoftext|>"
DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "  Leading and trailing spaces stay part of the document.  ",
    "Unicode: naïve café, 東京, emoji 🙂 and tabs\tinside.",
    "A longer document. " * 40,
]


def write_tokenizer(directory: Path, vocab_size: int = 320, eos: bool = True) -> Path:
    """A tiny byte-level BPE (the demo's trainer) on a few hundred short strings, saved as litgpt loads it."""
    corpus = [f"sample {i}: the quick brown fox {i * 7 % 13} jumps; return a + b" for i in range(300)]
    train_tokenizer(corpus + DOCS, vocab_size, directory)
    if not eos:
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        del config["eos_token"]
        config_path.write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


def expected_tokens(tokenizer: Tokenizer, docs: list[str]) -> list[int]:
    """Every document encoded with EOS appended, concatenated."""
    tokens: list[int] = []
    for doc in docs:
        tokens.extend(tokenizer.encode(doc, eos=True).tolist())
    return tokens


def read_blocks(shard: Path, block_size: int) -> list[int]:
    """All tokens litdata's TokensLoader yields from `shard`, block after block, in order."""
    dataset = StreamingDataset(str(shard), item_loader=TokensLoader(block_size=block_size), shuffle=False)
    return [int(token) for index in range(len(dataset)) for token in dataset[index].tolist()]


def assert_shard_holds(shard: Path, tokenizer: Tokenizer, docs: list[str], block_size: int = 7) -> None:
    expected = expected_tokens(tokenizer, docs)
    chunks = read_index(shard)["chunks"]
    assert sum(chunk["dim"] for chunk in chunks) == len(expected)
    assert sum(chunk["chunk_size"] for chunk in chunks) == len(docs)
    assert len(chunks) == 1  # one chunk: blocks never span chunks, so the whole stream reads back
    usable = len(expected) // block_size * block_size
    assert read_blocks(shard, block_size) == expected[:usable]


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_parquet(path: Path, docs: list[str | None], field: str = "text") -> Path:
    table = pa.table({"id": list(range(len(docs))), field: docs})
    pq.write_table(table, path, row_group_size=2)
    return path


def write_inputs(tmp_path: Path, kind: str) -> list[Path]:
    """DOCS (plus empty documents that must be skipped) in one input format."""
    if kind == "txt":
        paths = []
        for i, doc in enumerate(DOCS):
            paths.append(tmp_path / f"doc{i}.txt")
            paths[-1].write_text(doc, encoding="utf-8")
        (tmp_path / "blank.txt").write_text("  \n\t\n")
        return paths + [tmp_path / "blank.txt"]
    rows = [{"text": doc, "meta": i} for i, doc in enumerate(DOCS)]
    rows[2:2] = [{"text": ""}, {"text": "   \n"}, {"text": None}]
    if kind == "jsonl":
        return [write_jsonl(tmp_path / "docs.jsonl", rows)]
    if kind == "jsonl.gz":
        return [write_jsonl(tmp_path / "docs.jsonl.gz", rows, compress=True)]
    if kind == "parquet":
        return [write_parquet(tmp_path / "docs.parquet", [DOCS[0], DOCS[1], "", None, *DOCS[2:]])]
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("kind", ["txt", "jsonl", "jsonl.gz", "parquet"])
def test_iter_documents_reads_each_format_and_skips_empty(tmp_path: Path, kind: str) -> None:
    assert list(iter_documents(write_inputs(tmp_path, kind))) == DOCS


def make_mixed_dir(root: Path) -> list[str]:
    """A directory mixing every format, plus files to skip; returns the documents in walk order."""
    (root / "e").mkdir(parents=True)
    (root / "a.txt").write_text(DOCS[0])
    write_jsonl(root / "b.jsonl", [{"text": DOCS[1]}, {"text": DOCS[2]}])
    write_parquet(root / "c.parquet", [DOCS[3]])
    write_jsonl(root / "d.jsonl.gz", [{"text": DOCS[4]}], compress=True)
    (root / "e" / "f.txt").write_text("nested text file")
    (root / "README.md").write_text("not an input")
    (root / "e" / "data.csv").write_text("a,b\n1,2\n")
    return DOCS + ["nested text file"]


def test_directories_are_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    expected = make_mixed_dir(tmp_path / "mixed")
    names = [path.relative_to(tmp_path / "mixed").as_posix() for path in list_input_files([tmp_path / "mixed"])]
    assert names == ["a.txt", "b.jsonl", "c.parquet", "d.jsonl.gz", "e/f.txt"]
    assert list(iter_documents([tmp_path / "mixed"])) == expected


def test_explicit_unsupported_or_missing_input_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.md.*unsupported extension.*\.jsonl\.gz"):
        list(iter_documents([tmp_path / "notes.md"]))
    with pytest.raises(ValueError, match=r"missing\.jsonl.*does not exist"):
        list(iter_documents([tmp_path / "missing.jsonl"]))


def test_jsonl_row_without_text_field_names_field_row_and_fix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok"}, {"text": "fine"}, {"body": "no text here", "id": 3}])
    with pytest.raises(ValueError, match=r"--text-field 'text' not found in row 3 of .*x\.jsonl \(keys: body, id\)"):
        list(iter_documents([path]))


def test_jsonl_field_missing_in_first_row_and_non_string_values(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "y.jsonl", [{"body": "text"}, {"body": 7}])
    with pytest.raises(ValueError, match=r"--text-field 'text' not found in row 1.*pass --text-field"):
        list(iter_documents([path]))
    with pytest.raises(ValueError, match=r"'body' in row 2 of .*holds a int, not a string"):
        list(iter_documents([path], text_field="body"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"row 2 of .*bad\.jsonl is not valid JSON"):
        list(iter_documents([bad]))


def test_parquet_without_text_column_lists_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "p.parquet", ["a", "b"], field="content")
    message = r"--text-field 'text' not found in the columns of .*p\.parquet \(columns: id, content\)"
    with pytest.raises(ValueError, match=message):
        list(iter_documents([path]))
    assert list(iter_documents([path], text_field="content")) == ["a", "b"]
    with pytest.raises(ValueError, match=r"'id' of .*is a int64 column, not a string one"):
        list(iter_documents([path], text_field="id"))


# ----------------------------------------------------------------------------- tokenizer and sizes


def test_token_dtype_and_vocab(tokenizer: Tokenizer) -> None:
    assert token_dtype(65536) == torch.uint16
    assert token_dtype(65537) == torch.int32
    assert vocab_size_with_added(tokenizer) == 320
    assert tokenizer.eos_id is not None and tokenizer.bos_id is None


def test_tokenizer_without_eos_is_refused(tmp_path: Path) -> None:
    no_eos = write_tokenizer(tmp_path / "no_eos", eos=False)
    with pytest.raises(ValueError, match="has no EOS token; set 'eos_token'"):
        load_tokenizer(no_eos)
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(tmp_path / "nowhere")


def test_parse_size() -> None:
    assert parse_size("64MB", "--chunk-bytes") == 64_000_000
    assert parse_size("512kb", "--chunk-bytes") == 512_000
    assert parse_size("1MiB", "--chunk-bytes") == 1024**2
    assert parse_size(4096, "--chunk-bytes") == 4096
    with pytest.raises(ValueError, match="--chunk-bytes 'lots' is not a size"):
        parse_size("lots", "--chunk-bytes")


# ----------------------------------------------------------------------------- writing shards


@pytest.mark.parametrize("kind", ["txt", "jsonl", "jsonl.gz", "parquet"])
def test_prepare_shard_each_format_round_trips(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, kind: str
) -> None:
    shard = tmp_path / "data" / "main" / "1"  # parents are created
    summary = prepare_shard(write_inputs(tmp_path, kind), tokenizer_dir, shard, chunk_bytes="1MB", progress=False)
    assert (summary.documents, summary.tokens, summary.chunks) == (len(DOCS), len(expected_tokens(tokenizer, DOCS)), 1)
    assert summary.dtype == "uint16"
    assert_shard_holds(shard, tokenizer, DOCS)
    assert "documents" in summary.describe() and str(shard) in summary.describe()


def test_prepare_shard_from_mixed_directory(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    expected = make_mixed_dir(tmp_path / "mixed")
    prepare_shard([tmp_path / "mixed"], tokenizer_dir, tmp_path / "c1", chunk_bytes="1MB", progress=False)
    assert_shard_holds(tmp_path / "c1", tokenizer, expected, block_size=5)


def test_every_document_ends_in_eos(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    """Small chunks: documents stay whole, each chunk's tokens end with EOS."""
    path = write_jsonl(tmp_path / "many.jsonl", [{"text": f"document number {i} " * (i % 5 + 1)} for i in range(200)])
    summary = prepare_shard([path], tokenizer_dir, tmp_path / "w1", chunk_bytes="2KB", progress=False)
    chunks = read_index(tmp_path / "w1")["chunks"]
    assert summary.chunks == len(chunks) > 2
    assert summary.documents == 200
    dataset = StreamingDataset(str(tmp_path / "w1"), item_loader=TokensLoader(block_size=1), shuffle=False)
    end = 0
    for chunk in chunks:
        end += chunk["dim"]
        assert int(dataset[end - 1]) == tokenizer.eos_id


def test_two_workers_split_the_files(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    """One work item per file (--item-bytes 1): both workers write, the shard keeps the input order."""
    inputs = write_inputs(tmp_path, "txt")
    summary = prepare_shard(
        inputs, tokenizer_dir, tmp_path / "two", num_workers=2, chunk_bytes="1MB", progress=False, item_bytes=1
    )
    assert summary.documents == len(DOCS)
    assert summary.tokens == len(expected_tokens(tokenizer, DOCS))
    filenames = [chunk["filename"] for chunk in read_index(tmp_path / "two")["chunks"]]
    assert filenames == [f"chunk-{item}-0.bin" for item in range(len(DOCS))]  # the blank file wrote nothing
    dataset = StreamingDataset(str(tmp_path / "two"), item_loader=TokensLoader(block_size=1), shuffle=False)
    assert [int(token) for index in range(len(dataset)) for token in dataset[index].tolist()] == expected_tokens(
        tokenizer, DOCS
    )


def test_refuses_to_overwrite_unless_asked(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    shard = tmp_path / "c1"
    first = write_jsonl(tmp_path / "first.jsonl", [{"text": DOCS[0]}])
    second = write_jsonl(tmp_path / "second.jsonl", [{"text": DOCS[1]}, {"text": DOCS[3]}])
    prepare_shard([first], tokenizer_dir, shard, progress=False)
    with pytest.raises(FileExistsError, match=r"already holds a shard \(index\.json\); pass --overwrite"):
        prepare_shard([second], tokenizer_dir, shard, progress=False)
    assert read_index(shard)["chunks"][0]["chunk_size"] == 1  # untouched

    summary = prepare_shard([second], tokenizer_dir, shard, overwrite=True, progress=False)
    assert summary.documents == 2
    assert_shard_holds(shard, tokenizer, [DOCS[1], DOCS[3]])


def test_non_empty_directory_is_not_a_place_for_a_shard(tmp_path: Path, tokenizer_dir: Path) -> None:
    inputs = write_inputs(tmp_path, "jsonl")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already holds 1 entries; pass --overwrite"):
        prepare_shard(inputs, tokenizer_dir, busy, progress=False)
    with pytest.raises(FileExistsError, match=r"--overwrite refuses to delete .*\['notes\.txt'\]"):
        prepare_shard(inputs, tokenizer_dir, busy, overwrite=True, progress=False)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_wrong_text_field_fails_before_writing(tmp_path: Path, tokenizer_dir: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"content": "hello"}])
    with pytest.raises(ValueError, match="--text-field 'text' not found in row 1"):
        prepare_shard([path], tokenizer_dir, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_error_inside_a_worker_is_a_value_error(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Row 2 lacks the field: only the worker sees it; the shard is not left half-written."""
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "hello"}, {"body": "oops"}])
    with pytest.raises(ValueError, match=r"--text-field 'text' not found in row 2 of .*rows\.jsonl"):
        prepare_shard([path], tokenizer_dir, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- command line


def test_cli_prepare_writes_the_shard(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, capsys) -> None:
    inputs = write_inputs(tmp_path, "jsonl")
    out = tmp_path / "data" / "c3"
    argv = ["prepare", "--input", *map(str, inputs), "--tokenizer-dir", str(tokenizer_dir), "--output", str(out)]
    assert main(argv + ["--chunk-bytes", "1MB"]) == 0
    assert f"{len(DOCS)} documents" in capsys.readouterr().out
    assert_shard_holds(out, tokenizer, DOCS)
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--text-field", "body", "--overwrite"]) == 2
    assert "--text-field 'body' not found in row 1" in capsys.readouterr().err
