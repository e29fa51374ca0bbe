"""SFT task files (``streaming/sft_files.py``): what a broken file's error names (the file, the line, the field)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sharded_mix.streaming.sft_files import apply_template, read_records


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_broken_jsonl_line_is_named_by_its_line_number(tmp_path):
    good = json.dumps({"instruction": "i", "output": "o"})
    path = write_lines(tmp_path / "task.jsonl", [good, "", good, '{"instruction": "i", "output": }', good])
    with pytest.raises(ValueError, match=rf"^task file '{path}' is not valid JSONL: line 4: Expecting value \(column"):
        read_records(path)


def test_a_file_that_is_not_utf8_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_bytes(json.dumps({"instruction": "i", "output": "o"}).encode() + b'\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"^task file '{path}' is not UTF-8 text: byte 0xe9 at line 2 .*as UTF-8"):
        read_records(path)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"instruction": "i", "output": 7}, r"field 'output' of record 1 is a number \(7\), not text"),
        ({"instruction": 3.5, "output": "o"}, r"field 'instruction' of record 1 is a number \(3\.5\), not text"),
        ({"instruction": "i", "input": 12, "output": "o"}, r"field 'input' of record 1 is a number \(12\), not text"),
        ({"instruction": "i", "output": None}, r"field 'output' of record 1 is null \(None\), not text"),
        ({"instruction": "i", "output": ["o"]}, r"field 'output' of record 1 is a list \(\['o'\]\), not text"),
    ],
)
def test_a_field_that_is_not_text_says_what_it_is(record, message):
    records = [{"instruction": "i", "input": None, "output": "o"}, record]
    with pytest.raises(ValueError, match=rf"^task 't' \(t\.json\): {message}; write it as a string in the file, or"):
        apply_template(records, None, "task 't' (t.json)")


def test_the_suggested_template_turns_a_number_into_text_and_a_missing_field_is_still_named():
    assert apply_template([{"instruction": "i", "output": 7}], {"output": "{output}"}, "t")[0]["output"] == "7"
    with pytest.raises(ValueError, match="record 0 has no text field 'output'"):
        apply_template([{"instruction": "i"}], None, "t")
