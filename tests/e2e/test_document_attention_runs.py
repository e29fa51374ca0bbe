"""`litgpt pretrain` with ``attention: document``: it trains, its losses are not the causal run's, and it resumes
exactly (tiny model, CPU)."""

from pathlib import Path

import numpy as np
import pytest
from conftest import write_token_shard
from litgpt_runs import pretrain_config, run_pretrain, train_losses

EOS = 0


def write_document_shards(base: Path) -> None:
    """Two sources of short EOS-ended documents (4–40 tokens), so most 64-token blocks hold several."""
    rng = np.random.default_rng(0)
    for split, tokens in (("train", 12_000), ("val", 2_000)):
        for shard in ("1", "c1"):
            documents, total = [], 0
            while total < tokens:
                length = int(rng.integers(4, 41))
                documents.append(np.append(rng.integers(1, 1000, length - 1), EOS))
                total += length
            write_token_shard(base / split / shard, documents, chunk_bytes=8000)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("document-attention")
    write_document_shards(root / "data")
    data = {"data_path": str(root / "data"), "mix_weights_str": "main:0.7,code:0.3"}
    for name, extra in (("causal", {}), ("document", {"attention": "document", "eos_id": EOS})):
        (root / name).mkdir()
        run_pretrain(pretrain_config(root / name, {**data, **extra}), cwd=root / name)
    resumed = root / "resumed"
    resumed.mkdir()
    checkpoint = root / "document" / "out" / "step-00000003" / "lit_model.pth"
    config = pretrain_config(resumed, {**data, "attention": "document", "eos_id": EOS})
    run_pretrain(config, resumed, "--resume", str(checkpoint))
    return root


def test_document_attention_trains_otherwise_than_causal(runs):
    causal, document = train_losses(runs / "causal" / "out"), train_losses(runs / "document" / "out")
    assert sorted(causal) == sorted(document) == [1, 2, 3, 4, 5, 6]
    assert all(causal[step] != document[step] for step in causal)
    assert (runs / "document" / "out" / "final" / "lit_model.pth").is_file()


def test_a_resumed_document_attention_run_gives_the_straight_runs_losses(runs):
    straight, resumed = train_losses(runs / "document" / "out"), train_losses(runs / "resumed" / "out")
    assert sorted(resumed) == [4, 5, 6]
    assert {step: straight[step] for step in resumed} == resumed  # bit-for-bit, CPU 32-true
