"""`sharded-mix plan` on the generated paper configs, over sparse shards of paper size: the right steps and tokens."""

from pathlib import Path

import pytest

from sharded_mix.cli import main
from sharded_mix.tools.fake_shards import write_sparse_token_shard

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "midtrain_configs" / "paper" / "pythia-160m"
STEP_TOKENS = 1024 * 2048
SHARDS = {
    "1": 60e9,
    "2": 60e9,
    "c1": 20e9,
    "m1": 8e9,
    "i1": 2e9,
    "w1": 20e9,
    "q1": 1e9,
    "q2": 1e9,
    "q3": 1e9,
    "q4": 1e9,
}


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper_run")
    for shard, tokens in SHARDS.items():
        write_sparse_token_shard(base / "data/paper/train" / shard, int(tokens), chunk_tokens=2**28)
        write_sparse_token_shard(base / "data/paper/val" / shard, 10**7, chunk_tokens=2**22)
    return base


def plan(config: str, base: Path, monkeypatch, capsys) -> str:
    monkeypatch.chdir(base)
    assert main(["plan", str(PAPER / config)]) == 0
    return capsys.readouterr().out


def test_pretraining_plans_61035_steps_of_128b_tokens(paper_data, monkeypatch, capsys):
    out = plan("pretrain.yaml", paper_data, monkeypatch, capsys)
    assert "steps 0 -> 61,035, tokens 0 -> 127,999,672,320" in out
    assert "main/1           0.5000   63,999,836,160    1.067" in out


def test_midtraining_plans_from_its_checkpoint_to_the_end(paper_data, monkeypatch, capsys):
    out = plan("code-20-from-40k.yaml", paper_data, monkeypatch, capsys)
    assert f"steps 40,000 -> 61,035, tokens {40000 * STEP_TOKENS:,} -> {61035 * STEP_TOKENS:,}" in out
    code_tokens = round(0.2 * 21035 * 1024) * 2048
    assert f"c1               0.2000 {code_tokens:>16,}" in out


def test_a_decay_run_plans_its_extra_steps_from_the_stable_checkpoint(paper_data, monkeypatch, capsys):
    out = plan("decay-4500-from-40k.yaml", paper_data, monkeypatch, capsys)
    assert f"steps 40,000 -> 44,500, tokens {40000 * STEP_TOKENS:,} -> {44500 * STEP_TOKENS:,}" in out
