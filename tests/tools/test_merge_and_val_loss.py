"""Merging litdata shards into one, and the per-source validation-loss report on a tiny checkpoint."""

import json

import numpy as np
import pytest
import torch
from conftest import SOURCE_STRIDE, write_source, write_token_shard
from litdata.streaming import StreamingDataset, TokensLoader

from sharded_mix.cli import main
from sharded_mix.streaming.discovery import discover_shards
from sharded_mix.tools.merge import merge_shards


def all_tokens(path, block=100):
    dataset = StreamingDataset(str(path), item_loader=TokensLoader(block_size=block))
    return np.concatenate([np.asarray(dataset[i]) for i in range(len(dataset))])


def test_merge_two_shards_into_one(tmp_path, capsys):
    a = write_source(tmp_path / "in", "a", 1, 1000)
    b = write_source(tmp_path / "in", "b", 2, 600)
    assert main(["merge", "--inputs", str(a), str(b), "--output", str(tmp_path / "mix" / "m1")]) == 0
    assert "merged 2 shards into" in capsys.readouterr().out
    (merged,) = discover_shards(tmp_path / "mix")
    assert (merged.id, merged.tokens, merged.documents) == ("m1", 1600, 16)
    tokens = all_tokens(merged.path)
    assert sorted(tokens.tolist()) == sorted(
        [1 * SOURCE_STRIDE + i for i in range(1000)] + [2 * SOURCE_STRIDE + i for i in range(600)]
    )


def test_merge_refusals(tmp_path):
    a = write_source(tmp_path / "in", "a", 1, 1000)
    b16 = write_token_shard(tmp_path / "in" / "b16", [np.arange(500) % 60000], dtype=torch.uint16)
    with pytest.raises(ValueError, match="give at least two litdata directories"):
        merge_shards([a], tmp_path / "out")
    with pytest.raises(ValueError, match="are not in one format .*int32.*uint16"):
        merge_shards([a, b16], tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(ValueError, match="exists and is not empty; refusing"):
        merge_shards([a, a], tmp_path / "busy")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A 1-layer GPT whose output ignores its input and puts 20 logits on token 0: loss ~0 on zeros, ~20 elsewhere."""
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    config = Config(
        name="tiny",
        block_size=16,
        vocab_size=64,
        padded_vocab_size=64,
        n_layer=1,
        n_head=2,
        n_embd=16,
        bias=True,
        lm_head_bias=True,
    )
    model = GPT(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[0] = 20.0
    step = tmp_path / "run" / "step-00000001"
    step.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "iter_num": 1, "step_count": 1}, step / "lit_model.pth")
    save_config(config, step)
    return step


def test_per_source_validation_loss(tiny_checkpoint, tmp_path, capsys):
    val = tmp_path / "val"
    write_token_shard(val / "1", [np.zeros(400, dtype=np.int64)])
    write_token_shard(val / "m1", [np.random.default_rng(0).integers(1, 64, 400)])
    assert main(["val-loss", str(tiny_checkpoint.parent), str(val), "--max-blocks", "10", "--json"]) == 0
    losses = {row["source"]: row for row in json.loads(capsys.readouterr().out)}
    assert losses["main/1"]["loss"] < 1e-3 and losses["main/1"]["blocks"] == 10 and losses["main/1"]["tokens"] == 160
    assert losses["m1"]["loss"] == pytest.approx(20.0, abs=0.01) and losses["m1"]["type"] == "math"
    assert main(["val-loss", str(tiny_checkpoint), str(val), "--max-blocks", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("===== PER-SOURCE VALIDATION LOSS:") and "m1 " in out


def test_val_loss_under_document_attention_leaves_out_each_eos_prediction(tiny_checkpoint, tmp_path, capsys):
    val = tmp_path / "val"
    write_token_shard(val / "c1", [np.array([3, 0] * 200)])  # two-token documents "3 EOS"; the model says 0 always
    args = ["val-loss", str(tiny_checkpoint), str(val), "--max-blocks", "4", "--json"]
    assert main(args) == 0
    (causal,) = json.loads(capsys.readouterr().out)
    assert main([*args, "--attention", "document", "--eos-id", "0"]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert causal["loss"] == pytest.approx(10.0, abs=0.01) and causal["tokens"] == 64  # half the targets are 3
    assert document["loss"] < 1e-3 and document["tokens"] == 32  # EOS → next document's 3: left out


def test_val_loss_refuses_a_directory_without_a_model_config(tiny_checkpoint, tmp_path):
    (tiny_checkpoint / "model_config.yaml").unlink()
    assert main(["val-loss", str(tiny_checkpoint), str(tmp_path)]) == 2
