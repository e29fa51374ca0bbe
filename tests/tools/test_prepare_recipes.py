"""The packaged recipes on fixture rows in each source dataset's schema (local files, no hub)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litgpt.tokenizer import Tokenizer
from test_prepare import expected_tokens, write_jsonl, write_tokenizer
from test_prepare_corpus import shard_tokens

from sharded_mix.cli import main
from sharded_mix.tools.prepare import DatasetSpec, prepare_shard
from sharded_mix.tools.recipes import get_recipe, load_recipes

ROWS = {
    "main": [
        {"text": "C4 page one.", "timestamp": "2019-04-25T12:57:54Z", "url": "https://a.example"},
        {"text": "C4 page two.", "timestamp": "2019-04-25T12:57:55Z", "url": "https://b.example"},
    ],
    "web": [
        {
            "bff_contained_ngram_count_before_dedupe": 0,
            "language_id_whole_page_fasttext": {"en": 0.9},
            "metadata": {"Content-Length": "1"},
            "previous_word_count": 10,
            "text": "DCLM page.",
            "url": "https://c.example",
            "warcinfo": "w",
            "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": 0.5,
        }
    ],
    "code": [
        {
            "max_stars_repo_path": "src/a.py",
            "max_stars_repo_name": "o/r",
            "max_stars_count": 3,
            "id": "1",
            "content": "def f():\n    return 1\n",
        },
        {
            "max_stars_repo_path": "src/b.pyx",
            "max_stars_repo_name": "o/r",
            "max_stars_count": 3,
            "id": "2",
            "content": "cdef int x\n",
        },
        {
            "max_stars_repo_path": "setup.py",
            "max_stars_repo_name": "o/s",
            "max_stars_count": 0,
            "id": "3",
            "content": "import setuptools\n",
        },
    ],
    "instruct": [
        {
            "inputs": "Translate: bonjour",
            "targets": "hello",
            "_template_kwargs": "{}",
            "_task_source": "Flan2021",
            "_task_name": "wmt",
            "_template_type": "zs_opt",
        }
    ],
    "qa": [
        {"instruction": "Capital of France?", "input": "", "output": "Paris"},
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
    ],
}
EXPECTED = {
    "main": ["C4 page one.", "C4 page two."],
    "web": ["DCLM page."],
    "code": ["def f():\n    return 1\n", "import setuptools\n"],
    "instruct": ["Translate: bonjour\n\nhello"],
    "qa": ["Capital of France?\n\nParis", "Add\n\n2 and 3\n\n5"],
}
MATH = {  # the three datasets' schemas
    "gsm8k.jsonl": [{"question": "1+1?", "answer": "#### 2"}],
    "orca.jsonl": [{"question": "2+2?", "answer": "4"}],
    "mathinstruct.jsonl": [{"source": "data/CoT/gsm_rft.json", "instruction": "3+3?", "output": "6"}],
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_every_recipe_loads_and_names_its_datasets() -> None:
    recipes = load_recipes()
    assert set(recipes) == {"main", "web", "code", "math", "instruct", "qa"}
    assert [d.name for d in recipes["math"].datasets] == [
        "openai/gsm8k",
        "microsoft/orca-math-word-problems-200k",
        "TIGER-Lab/MathInstruct",
    ]
    assert recipes["main"].datasets[0].config == "en" and recipes["code"].datasets[0].data_dir == "python"
    assert all(recipe.description for recipe in recipes.values())
    with pytest.raises(ValueError, match="--recipe 'maths' is not a recipe; pick one of main, web"):
        get_recipe("maths")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_on_rows_in_its_datasets_schema(tmp_path: Path, tokenizer_dir: Path, name: str) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS[name])
    shard = tmp_path / "out"
    summary = prepare_shard([path], tokenizer_dir, shard, recipe=name, progress=False)
    assert summary.documents == len(EXPECTED[name])
    assert shard_tokens(shard) == expected_tokens(Tokenizer(tokenizer_dir), EXPECTED[name])


def test_code_recipe_reads_parquet_columns(tmp_path: Path, tokenizer_dir: Path) -> None:
    rows = ROWS["code"]
    pq.write_table(
        pa.table({key: [row[key] for row in rows] for key in rows[0]}), tmp_path / "code.parquet", row_group_size=1
    )
    shard = tmp_path / "c1"
    prepare_shard(
        [tmp_path / "code.parquet"], tokenizer_dir, shard, recipe="code", num_workers=2, item_bytes=1, progress=False
    )
    assert shard_tokens(shard) == expected_tokens(Tokenizer(tokenizer_dir), EXPECTED["code"])


def test_math_recipe_over_its_three_schemas_through_datasets(tmp_path: Path, tokenizer_dir: Path) -> None:
    specs = [DatasetSpec("json", data_files=(str(write_jsonl(tmp_path / name, rows)),)) for name, rows in MATH.items()]
    shard = tmp_path / "m1"
    summary = prepare_shard(
        tokenizer_dir=tokenizer_dir, output_dir=shard, recipe="math", datasets=specs, progress=False
    )
    assert summary.documents == 3
    expected = ["1+1?\n\n#### 2", "2+2?\n\n4", "3+3?\n\n6"]
    assert shard_tokens(shard) == expected_tokens(Tokenizer(tokenizer_dir), expected)


def test_cli_recipe_with_a_dataset_and_options_overriding_it(tmp_path: Path, tokenizer_dir: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "flan.jsonl", ROWS["instruct"] * 3)
    argv = [
        "prepare",
        "--recipe",
        "instruct",
        "--dataset",
        "json",
        "--dataset-data-files",
        str(path),
        "--tokenizer-dir",
        str(tokenizer_dir),
        "--output",
        str(tmp_path / "i1"),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert shard_tokens(tmp_path / "i1") == expected_tokens(Tokenizer(tokenizer_dir), EXPECTED["instruct"] * 3)
    assert main(argv[:-1] + ["--overwrite", "--template", "{targets}"]) == 0
    assert shard_tokens(tmp_path / "i1") == expected_tokens(Tokenizer(tokenizer_dir), ["hello"] * 3)
