"""demo.py: collecting stdlib text, splitting it, the demo tokenizer, and one real build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from litgpt.tokenizer import Tokenizer

from sharded_mix import ShardedMixedDataset
from sharded_mix.streaming.discovery import read_index
from sharded_mix.tools.demo import (
    EOS_TOKEN,
    KINDS,
    MIN_CHUNK_TOKENS,
    Document,
    build_demo,
    cap_documents,
    collect_code,
    collect_docstrings,
    collect_documents,
    collect_licences,
    split_train_val,
    train_tokenizer,
    walk_stdlib,
    write_jsonl,
)

LONG_DOC = "Explain the module in detail. " * 10


@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    """A stdlib-shaped tree: sources, docstrings, licences and the directories the demo must skip."""
    root = tmp_path / "lib"
    files = {
        "zeta.py": f'"""{LONG_DOC}"""\n\ndef f():\n    """short"""\n',
        "alpha.py": (
            f'class A:\n    """{LONG_DOC}Class."""\n\n    async def g(self):\n        """{LONG_DOC}Method."""\n'
        ),
        "pkg/beta.py": f'"""{LONG_DOC}"""\n',  # same docstring as zeta.py: kept once
        "pkg/broken.py": "def (:\n",
        "LICENSE.txt": "PSF licence text",
        "pkg/COPYING": "another licence",
        "test/test_x.py": "skip = 1\n",
        "pkg/tests/t.py": "skip = 2\n",
        "idlelib/editor.py": "skip = 3\n",
        "site-packages/thirdparty/mod.py": "skip = 4\n",
        "site-packages/thirdparty/LICENSE": "skip licence",
        "pydoc_data/topics.py": "topics = {}\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_walk_stdlib_skips_tests_idlelib_site_packages_and_pydoc_data(fake_stdlib: Path) -> None:
    sources, licences = walk_stdlib(fake_stdlib)
    rel = lambda paths: [p.relative_to(fake_stdlib).as_posix() for p in paths]  # noqa: E731
    assert rel(sources) == ["alpha.py", "pkg/beta.py", "pkg/broken.py", "zeta.py"]
    assert rel(licences) == ["LICENSE.txt", "pkg/COPYING"]


def test_code_docstrings_and_licences_from_a_tree(fake_stdlib: Path) -> None:
    sources, licences = walk_stdlib(fake_stdlib)
    code = collect_code(fake_stdlib, sources)
    assert [d.source for d in code] == ["alpha.py", "pkg/beta.py", "pkg/broken.py", "zeta.py"]
    assert all(d.kind == "code" for d in code)

    docstrings = collect_docstrings(fake_stdlib, sources)
    assert [d.source for d in docstrings] == [
        "alpha.py:000001:ClassDef",
        "alpha.py:000004:AsyncFunctionDef",
        "pkg/beta.py:000000:Module",  # zeta.py's module docstring is the same text: dropped
    ]
    assert all(len(d.text) >= 200 and d.kind == "web" for d in docstrings)

    assert [d.text for d in collect_licences(fake_stdlib, licences)] == ["PSF licence text", "another licence"]


@pytest.fixture(scope="module")
def stdlib_docs() -> dict[str, list[Document]]:
    return collect_documents(max_chars=400_000)


def test_real_stdlib_collection_is_deterministic_and_typed(stdlib_docs: dict[str, list[Document]]) -> None:
    assert set(stdlib_docs) == set(KINDS)
    for kind, docs in stdlib_docs.items():
        assert len(docs) >= 20, kind
        assert all(doc.kind == kind and doc.text.strip() for doc in docs)
        assert sum(len(doc.text) for doc in docs) <= 400_000
        assert [doc.source for doc in docs] == sorted(doc.source for doc in docs)
        assert len({doc.source for doc in docs}) == len(docs)
    assert any(doc.source.startswith("topic:") for doc in stdlib_docs["main"])
    assert all(doc.source.endswith(".py") for doc in stdlib_docs["code"])
    assert collect_documents(max_chars=400_000) == stdlib_docs


def test_cap_documents_is_a_deterministic_spread_subset() -> None:
    docs = [Document("code", f"m{i:03d}.py", "x" * 100) for i in range(100)]
    kept = cap_documents(docs, 1_000)
    assert len(kept) == 10
    assert kept == cap_documents(list(reversed(docs)), 1_000)
    assert [d.source for d in kept] == sorted(d.source for d in kept)
    assert [d.source for d in kept] != [d.source for d in docs[:10]]  # not just the alphabetical head


def test_validation_split_is_disjoint_deterministic_and_about_five_percent(stdlib_docs) -> None:
    for kind, docs in stdlib_docs.items():
        train, val = split_train_val(docs)
        assert val and train, kind
        assert {d.source for d in train}.isdisjoint(d.source for d in val)
        assert sorted(train + val, key=lambda d: d.source) == docs
        assert (train, val) == split_train_val(list(docs))
        share = sum(len(d.text) for d in val) / sum(len(d.text) for d in docs)
        assert 0.04 <= share <= 0.12, (kind, share)


def test_validation_split_of_tiny_lists() -> None:
    two = [Document("main", "a", "x" * 10), Document("main", "b", "y" * 10)]
    train, val = split_train_val(two)
    assert len(train) == len(val) == 1
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_train_val(two[:1])


def test_write_jsonl_puts_the_longest_document_last(tmp_path: Path) -> None:
    docs = [Document("web", "a", "long " * 50), Document("web", "b", "short"), Document("web", "c", "mid " * 5)]
    write_jsonl(docs, tmp_path / "x.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == ["b", "c", "a"]


def test_trained_tokenizer_loads_in_litgpt_with_eos(tmp_path: Path) -> None:
    texts = [f"def f{i}(x):\n    return x * {i}\n" for i in range(200)]
    train_tokenizer(texts, 300, tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["eos_token"] == EOS_TOKEN
    tokenizer = Tokenizer(tmp_path / "tok")
    assert tokenizer.eos_id == tokenizer.token_to_id(EOS_TOKEN) and tokenizer.bos_id is None
    ids = tokenizer.encode("def f7(x):", eos=True)
    assert ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids[:-1]) == "def f7(x):"
    with pytest.raises(ValueError, match="--vocab-size 100 is too small"):
        train_tokenizer(texts, 100, tmp_path / "tiny")


def test_build_demo_writes_six_shards_and_reuses_them(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = build_demo(workdir, vocab_size=512)
    expected = ["train/main/1", "train/c1", "train/w1", "val/main/1", "val/c1", "val/w1"]
    assert list(result.token_counts()) == expected
    for name in expected:
        chunks = read_index(workdir / "data" / name)["chunks"]
        assert all(chunk["dim"] >= MIN_CHUNK_TOKENS for chunk in chunks), name
    assert all(shard.chunks >= 3 for shard in result.shards if shard.split == "train")
    tokenizer = Tokenizer(result.tokenizer_dir)
    assert tokenizer.eos_id is not None and tokenizer.vocab_size == 512
    assert "train/c1" in result.describe()
    data = ShardedMixedDataset(data_path=workdir / "data", num_workers=0, cache_dir=str(tmp_path / "cache"))
    data.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=63)  # the run's tokenizer against the manifests
    data.setup()  # train and val shards from separate prepare runs: no held-out pairing
    assert next(iter(data.train_dataloader())).shape == (2, 64)

    start = time.perf_counter()
    again = build_demo(workdir, vocab_size=512)
    assert again.reused and time.perf_counter() - start < 2
    assert again.token_counts() == result.token_counts()
    with pytest.raises(FileExistsError, match="--vocab-size 512, not 1024; pass --overwrite"):
        build_demo(workdir, vocab_size=1024)
