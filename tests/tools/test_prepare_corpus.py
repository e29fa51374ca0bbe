"""prepare at corpus scale: work items inside files, templates and filters, document selection, val split, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from litdata import StreamingDataset, TokensLoader
from litgpt.tokenizer import Tokenizer
from test_prepare import expected_tokens, write_jsonl, write_tokenizer

from sharded_mix.cli import main
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.inventory import format_inventory, inspect_base
from sharded_mix.tools.prepare import DatasetSpec, prepare_shard, val_output_for
from sharded_mix.tools.prepare_inputs import file_pieces, iter_piece_documents, jsonl_line_bounds
from sharded_mix.tools.prepare_workers import is_val_by_index
from sharded_mix.tools.records import RecordFormat, RowFilter, unescape

DOCS = [f"document {i}: the quick brown fox {i * 7 % 13} jumps" + " more" * (i % 4) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


def shard_tokens(shard: Path) -> list[int]:
    dataset = StreamingDataset(str(shard), item_loader=TokensLoader(block_size=1), shuffle=False)
    return [int(dataset[i]) for i in range(len(dataset))]


# ----------------------------------------------------------------------------- work items


def test_jsonl_ranges_start_at_lines_and_cover_every_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": doc} for doc in DOCS])
    bounds = jsonl_line_bounds(path, 200)
    data = path.read_bytes()
    assert bounds[0] == 0 and bounds[-1] == len(data) and len(bounds) > 10
    assert all(data[b - 1 : b] == b"\n" for b in bounds[1:])
    fmt = RecordFormat()
    pieces = file_pieces(path, fmt, 200)
    assert [doc for piece in pieces for doc in iter_piece_documents(piece, fmt)] == DOCS


@pytest.mark.parametrize("workers", [1, 2])
def test_one_big_jsonl_in_many_items_gives_the_same_stream(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, workers: int
) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": doc} for doc in DOCS])
    shard = tmp_path / f"w{workers}"
    summary = prepare_shard([path], tokenizer_dir, shard, num_workers=workers, item_bytes=300, progress=False)
    chunks = read_index(shard)["chunks"]
    assert len({chunk["filename"].split("-")[1] for chunk in chunks}) > 5  # many work items wrote
    assert summary.documents == len(DOCS)
    assert shard_tokens(shard) == expected_tokens(tokenizer, DOCS)


def test_parquet_row_groups_and_zst_jsonl(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    pq.write_table(pa.table({"text": DOCS[:30]}), tmp_path / "a.parquet", row_group_size=4)
    raw = "".join(json.dumps({"text": doc}) + "\n" for doc in DOCS[30:]).encode()
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    summary = prepare_shard([tmp_path], tokenizer_dir, tmp_path / "out", num_workers=2, item_bytes=1, progress=False)
    assert summary.documents == len(DOCS)
    assert shard_tokens(tmp_path / "out") == expected_tokens(tokenizer, DOCS)


# ----------------------------------------------------------------------------- templates and filters


def test_template_aliases_optional_fields_and_filters() -> None:
    fmt = RecordFormat(
        template=unescape(r"{question}\n\n{context?}\n\n{answer}"),
        aliases={"question": ["question", "instruction"], "answer": ["answer", "output"], "path": ["repo_path"]},
        where=(RowFilter.parse("path endswith .py"), RowFilter.parse("stars >= 2")),
    )
    row = {"instruction": "Q", "output": "A", "repo_path": "x.py", "stars": 3}
    assert fmt.render(row, "row 1") == "Q\n\nA"
    assert fmt.render({**row, "context": "C"}, "row 1") == "Q\n\nC\n\nA"
    assert fmt.render({**row, "repo_path": "x.c"}, "row 1") is None
    assert fmt.render({**row, "stars": 1}, "row 1") is None
    with pytest.raises(ValueError, match=r"--template 'answer' \(tried answer, output\) not found in row 7"):
        fmt.render({"question": "Q", "repo_path": "x.py", "stars": 3}, "row 7")
    assert RowFilter.parse("lang not-in c,cpp").keeps("python") and not RowFilter.parse("lang in c,cpp").keeps("go")
    assert RowFilter.parse("path matches '^src/'").keeps("src/a.py")
    with pytest.raises(ValueError, match="is not 'FIELD OP VALUE'"):
        RowFilter.parse("path ends .py")
    with pytest.raises(ValueError, match="write fields as"):
        RecordFormat(template="{a!r}")


def test_prepare_with_template_and_where(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "path": f"f{i}.{'py' if i % 3 else 'c'}"} for i in range(30)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    shard = tmp_path / "m1"
    prepare_shard(
        [path],
        tokenizer_dir,
        shard,
        template="{question}\n\n{answer}",
        where=["path endswith .py"],
        item_bytes=100,
        num_workers=2,
        progress=False,
    )
    expected = [f"q{i}\n\na{i}" for i in range(30) if i % 3]
    assert shard_tokens(shard) == expected_tokens(tokenizer, expected)


# ----------------------------------------------------------------------------- selecting documents and the val split


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_and_max_docs_are_exact_over_the_global_order(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, workers: int
) -> None:
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": doc} for doc in DOCS[:25]])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": doc} for doc in DOCS[25:]])
    shard = tmp_path / "sel"
    summary = prepare_shard(
        [tmp_path / "in"],
        tokenizer_dir,
        shard,
        skip_docs=13,
        max_docs=30,
        item_bytes=250,
        num_workers=workers,
        progress=False,
    )
    assert summary.documents == 30
    assert shard_tokens(shard) == expected_tokens(tokenizer, DOCS[13:43])


def test_val_docs_hold_out_exactly_n_evenly_spread_documents(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer
) -> None:
    assert sum(is_val_by_index(i, 57, 5) for i in range(57)) == 5
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": doc} for doc in DOCS])
    shard = tmp_path / "data" / "main" / "1"
    summary = prepare_shard([path], tokenizer_dir, shard, val_docs=6, item_bytes=300, num_workers=2, progress=False)
    assert val_output_for(shard) == tmp_path / "data" / "val" / "main" / "1"
    assert (summary.documents, summary.val.documents) == (54, 6)
    val_ids = [i for i in range(60) if is_val_by_index(i, 60, 6)]
    assert val_ids == [9, 19, 29, 39, 49, 59]
    assert shard_tokens(summary.val.output_dir) == expected_tokens(tokenizer, [DOCS[i] for i in val_ids])
    assert shard_tokens(shard) == expected_tokens(tokenizer, [d for i, d in enumerate(DOCS) if i not in val_ids])


def test_val_fraction_splits_by_document_text_whatever_the_items(tmp_path: Path, tokenizer_dir: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": doc} for doc in DOCS])
    first = prepare_shard([path], tokenizer_dir, tmp_path / "train" / "c1", val_fraction=0.25, progress=False)
    second = prepare_shard(
        [path], tokenizer_dir, tmp_path / "b" / "c1", val_fraction=0.25, item_bytes=200, num_workers=2, progress=False
    )
    assert first.val.output_dir == tmp_path / "val" / "c1"
    assert 5 < first.val.documents < 25 and first.documents + first.val.documents == len(DOCS)
    assert shard_tokens(first.val.output_dir) == shard_tokens(second.val.output_dir)
    assert shard_tokens(first.output_dir) == shard_tokens(second.output_dir)


def test_bad_selection_options_name_the_option(tmp_path: Path, tokenizer_dir: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": doc} for doc in DOCS[:5]])
    with pytest.raises(ValueError, match="--val-docs and --val-fraction both given"):
        prepare_shard([path], tokenizer_dir, tmp_path / "x", val_docs=1, val_fraction=0.1, progress=False)
    with pytest.raises(ValueError, match="--val-docs 5 leaves no training documents"):
        prepare_shard([path], tokenizer_dir, tmp_path / "x", val_docs=5, progress=False)
    with pytest.raises(ValueError, match="--max-docs 0 must be at least 1"):
        prepare_shard([path], tokenizer_dir, tmp_path / "x", max_docs=0, progress=False)
    with pytest.raises(ValueError, match="no non-empty documents"):
        prepare_shard([path], tokenizer_dir, tmp_path / "x", where=["text contains zebra"], progress=False)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- datasets, manifest and the command line


def test_datasets_input_streams_local_files_through_the_json_builder(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer
) -> None:
    files = [
        write_jsonl(tmp_path / f"part{i}.jsonl", [{"text": doc} for doc in DOCS[i * 20 : i * 20 + 20]])
        for i in range(3)
    ]
    spec = DatasetSpec("json", data_files=tuple(map(str, files)))
    summary = prepare_shard(
        tokenizer_dir=tokenizer_dir,
        output_dir=tmp_path / "w1",
        datasets=[spec],
        num_workers=2,
        max_docs=50,
        progress=False,
    )
    assert summary.documents == 50
    assert shard_tokens(tmp_path / "w1") == expected_tokens(tokenizer, DOCS[:50])
    manifest = json.loads((tmp_path / "w1" / "manifest.json").read_text())
    assert manifest["datasets"][0]["name"] == "json" and manifest["selection"]["max_docs"] == 50


def test_manifest_records_inputs_and_inspect_shows_it(tmp_path: Path, tokenizer_dir: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"q": f"q{i}", "a": f"a{i}"} for i in range(20)])
    out = tmp_path / "data" / "m1"
    argv = [
        "prepare",
        "--input",
        str(path),
        "--tokenizer-dir",
        str(tokenizer_dir),
        "--output",
        str(out),
        "--template",
        r"{question}\n\n{answer}",
        "--field",
        "question=q",
        "--field",
        "answer=a",
        "--val-docs",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "(val): 2 documents" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["bytes"] == path.stat().st_size
    assert len(manifest["inputs"][0]["sha256"]) == 64 and len(manifest["tokenizer"]["vocab_sha256"]) == 64
    assert manifest["template"] == "{question}\n\n{answer}" and manifest["aliases"] == {
        "question": ["q"],
        "answer": ["a"],
    }
    assert (manifest["split"], manifest["documents"], manifest["val_shard"]) == (
        "train",
        18,
        str(tmp_path / "data" / "val" / "m1"),
    )
    text = format_inventory(inspect_base(tmp_path / "data"))
    assert "built from (manifest.json):" in text and "m1: train split of rows.jsonl" in text
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv[:-1] + ["--field", "oops"]) == 2
    assert "--field 'oops' is not NAME=KEY" in capsys.readouterr().err
