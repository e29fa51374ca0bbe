"""prepare's document files: each document's first token and input record, read lazily, through merge and S3."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3_server
import test_prepare
from litgpt.tokenizer import Tokenizer
from test_batch import write_config
from test_prepare import expected_tokens
from test_prepare_corpus import shard_tokens

from sharded_mix.cli import main
from sharded_mix.tools.batch import reads_of, step_rows_of
from sharded_mix.tools.documents import INPUTS_FILE, RECORD, RECORDS_FILE, ShardDocuments, describe_origin
from sharded_mix.tools.merge import merge_shards
from sharded_mix.tools.prepare import prepare_shard

s3 = s3_server.s3  # the fixtures
tokenizer_dir, tokenizer = test_prepare.tokenizer_dir, test_prepare.tokenizer
KEEP = ["tag == yes"]
TEXTS = [f"row {i}: a fox {i * 7 % 13} jumps" + " far" * (i % 5) for i in range(80)]


def write_inputs(directory: Path) -> dict[tuple[str, str, int], str]:
    """A JSONL file with blank lines and rows a filter drops, a parquet file and a text file; the text of every
    record the shard should hold, by (input, unit, record number)."""
    directory.mkdir()
    lines, records = [], {}
    for i, text in enumerate(TEXTS[:60]):
        if i % 9 == 4:
            lines.append("")  # a blank line: no document, still a line
        lines.append(json.dumps({"text": text, "tag": "no" if i % 7 == 3 else "yes"}))
        if i % 7 != 3:
            records[(str((directory / "a.jsonl").resolve()), "line", len(lines))] = text
    (directory / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": TEXTS[60:75], "tag": ["yes"] * 15}), directory / "b.parquet", row_group_size=4)
    for row, text in enumerate(TEXTS[60:75], start=1):
        records[(str((directory / "b.parquet").resolve()), "row", row)] = text
    (directory / "c.txt").write_text(TEXTS[75], encoding="utf-8")
    records[(str((directory / "c.txt").resolve()), "file", 0)] = TEXTS[75]
    return records


def check_documents(shard: Path, tokenizer: Tokenizer, records: dict) -> list[dict]:
    """Every document's tokens are the encoding of the record its origin names; the origins, in shard order."""
    documents = ShardDocuments.open(str(shard))
    assert documents is not None
    stream = shard_tokens(shard)
    assert documents.tokens == len(stream)
    origins = []
    for document in range(documents.documents):
        first, stop = documents.span(document)
        origin = documents.origin(document)
        unit = next((unit for unit in ("line", "row") if unit in origin), "file")
        text = records[(origin["input"], unit, origin.get(unit, 0))]
        assert stream[first:stop] == expected_tokens(tokenizer, [text]), origin
        assert documents.holding(first) == documents.holding(stop - 1) == document
        origins.append(origin)
    assert (shard / RECORDS_FILE).stat().st_size == documents.documents * RECORD.itemsize
    return origins


@pytest.mark.parametrize("workers", [1, 2])
def test_every_document_names_its_input_record_across_many_work_items(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, workers: int
) -> None:
    records = write_inputs(tmp_path / "in")
    shard = tmp_path / "out"
    summary = prepare_shard(
        [tmp_path / "in"], tokenizer_dir, shard, where=KEEP, item_bytes=300, num_workers=workers, progress=False
    )
    origins = check_documents(shard, tokenizer, records)
    assert len(origins) == summary.documents == len(records)
    assert [origin["document"] for origin in origins] == list(range(len(records)))
    assert not list(shard.glob(".documents-*"))  # the workers' parts are joined and gone
    listing = json.loads((shard / INPUTS_FILE).read_text())
    assert [entry["unit"] for entry in listing["inputs"]] == ["line", "row", "file"]
    jsonl = str((tmp_path / "in" / "a.jsonl").resolve())
    assert describe_origin(origins[1]) == f"#1 {jsonl}:2"


def test_selection_and_val_split_keep_the_origins(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    records = write_inputs(tmp_path / "in")
    shard = tmp_path / "data" / "main" / "1"
    summary = prepare_shard(
        [tmp_path / "in"],
        tokenizer_dir,
        shard,
        skip_docs=5,
        max_docs=50,
        val_docs=7,
        item_bytes=300,
        where=KEEP,
        progress=False,
    )
    train, val = check_documents(shard, tokenizer, records), check_documents(summary.val.output_dir, tokenizer, records)
    assert (len(train), len(val)) == (43, 7)
    kept = sorted(records, key=lambda key: (key[0], key[2]))[5:55]
    seen = {(o["input"], "line" if "line" in o else "row", o.get("line", o.get("row"))) for o in train + val}
    assert seen == set(kept)


def test_merge_joins_the_document_files(tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer) -> None:
    records = write_inputs(tmp_path / "in")
    first = tmp_path / "first"
    prepare_shard([tmp_path / "in" / "a.jsonl"], tokenizer_dir, first, item_bytes=300, where=KEEP, progress=False)
    second = tmp_path / "second"
    prepare_shard([tmp_path / "in" / "b.parquet"], tokenizer_dir, second, progress=False)
    merge_shards([first, second], tmp_path / "merged")
    origins = check_documents(tmp_path / "merged", tokenizer, records)
    assert [origin["input"].rsplit("/", 1)[1] for origin in (origins[0], origins[-1])] == ["a.jsonl", "b.parquet"]


def test_a_shard_without_document_files_has_none(tmp_path: Path) -> None:
    assert ShardDocuments.open(str(tmp_path)) is None


def test_documents_of_a_remote_shard_are_read_by_ranges(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, s3
) -> None:
    records = write_inputs(tmp_path / "in")
    shard = tmp_path / "out"
    prepare_shard([tmp_path / "in"], tokenizer_dir, shard, item_bytes=300, where=KEEP, progress=False)
    local = ShardDocuments.open(str(shard))
    url = f"s3://{s3.new_bucket()}/c1"
    s3.upload(shard, url)
    remote = ShardDocuments.open(url, s3.options)
    assert remote is not None and remote.documents == local.documents == len(records)
    for document in (0, 17, local.documents - 1):
        assert remote.span(document) == local.span(document)
        assert remote.origin(document) == local.origin(document)
    assert remote.holding(local.tokens - 1) == local.documents - 1
    with pytest.raises(ValueError, match=r"--document 999 is not a document of the shard; give 0\.\."):
        remote.span(999)


def test_batch_shows_each_rows_documents_and_find_follows_a_document(
    tmp_path: Path, tokenizer_dir: Path, tokenizer: Tokenizer, capsys
) -> None:
    records = write_inputs(tmp_path / "in")
    base = tmp_path / "data"
    prepare_shard([tmp_path / "in"], tokenizer_dir, base / "main" / "1", where=KEEP, item_bytes=300, progress=False)
    config = write_config(tmp_path / "run.yaml", base, literal_weights_str="main/1:1")
    documents = ShardDocuments.open(str(base / "main" / "1"))
    held: dict[int, list[tuple[int, int, int, int]]] = {}
    steps = 12  # past the shard's first epoch
    for step in range(1, steps + 1):
        for row in step_rows_of(config, step)[0]:
            ordinals = [origin["document"] for origin in row.documents]
            assert ordinals == list(range(ordinals[0], ordinals[-1] + 1))
            assert documents.span(ordinals[0])[0] <= row.position < documents.span(ordinals[0])[1]
            assert documents.span(ordinals[-1])[0] < row.position + row.length <= documents.span(ordinals[-1])[1]
            for origin in row.documents:
                assert origin == documents.origin(origin["document"])
                held.setdefault(origin["document"], []).append((step, row.rank, row.micro_batch, row.row))
    assert max(len(reads) for reads in held.values()) > 1  # some documents are read in two epochs
    for document in (0, 9, documents.documents - 1):
        reads, first, until, tokens = reads_of(config, "main/1", until_step=steps, document=document)
        assert tokens == documents.span(document) and (first, until) == (1, steps)
        assert [(read.step, read.rank, read.micro_batch, read.row) for read in reads] == held.get(document, [])

    argv = ["find", str(config), "--source", "main/1", "--document", "9", "--until-step", str(steps)]
    assert main(argv) == 0
    assert f"main/1 document 9 (tokens {documents.span(9)[0]:,}.." in capsys.readouterr().out
    assert main(["batch", str(config), "--step", "1"]) == 0
    assert f"#0 {(tmp_path / 'in' / 'a.jsonl').resolve()}:1" in capsys.readouterr().out
    assert main([*argv[:5], str(documents.documents), "--until-step", "3"]) == 2
    assert f"--document {documents.documents} is not a document of the shard; give 0.." in capsys.readouterr().err
    assert len(records) == documents.documents


def test_find_document_needs_document_files(scenario, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "run.yaml", scenario, literal_weights_str="main/1:1")
    assert main(["find", str(config), "--source", "main/1", "--document", "0", "--until-step", "3"]) == 2
    assert "has no document files (`sharded-mix prepare` writes them); give --position" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["find", str(config), "--source", "main/1", "--until-step", "3"])
    assert exited.value.code == 2
    assert "one of the arguments --position --document is required" in capsys.readouterr().err


def test_inspect_verify_checks_the_document_files(tmp_path: Path, tokenizer_dir: Path) -> None:
    from sharded_mix.tools.inventory import inspect_shard

    write_inputs(tmp_path / "in")
    shard = tmp_path / "c1"
    prepare_shard([tmp_path / "in" / "a.jsonl"], tokenizer_dir, shard, progress=False)
    assert inspect_shard("c1", "code", str(shard), verify=True).problems == ()
    other = tmp_path / "other"
    prepare_shard([tmp_path / "in" / "b.parquet"], tokenizer_dir, other, progress=False)
    for name in (INPUTS_FILE, RECORDS_FILE):
        (shard / name).write_bytes((other / name).read_bytes())
    problems = inspect_shard("c1", "code", str(shard), verify=True).problems
    assert len(problems) == 1 and "documents.json covers 15 documents" in problems[0], problems
