"""Helpers for end-to-end runs of the real `litgpt pretrain` and `litgpt finetune_*` commands (tiny model, CPU)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from conftest import write_token_shard

from sharded_mix.tools.demo import train_tokenizer

LITGPT = str(Path(sys.executable).parent / "litgpt")


def write_shards(base: Path) -> None:
    rng = np.random.default_rng(0)
    for split, tokens in (("train", 12_000), ("val", 2_000)):
        for shard_dir in ("1", "2", "c1", "m1"):
            documents = [rng.integers(0, 1000, 400) for _ in range(tokens // 400)]
            write_token_shard(base / split / shard_dir, documents, chunk_bytes=8000)


def pretrain_config(tmp_path: Path, init_args: dict, **train) -> Path:
    """A tiny pythia-14m config on CPU: 6 steps of 4 blocks of 64 tokens, checkpoints every 3 steps.

    ``train`` overrides the train settings.
    """
    config = {
        "model_name": "pythia-14m",
        "out_dir": str(tmp_path / "out"),
        "precision": "32-true",
        "data": {"class_path": "sharded_mix.ShardedMixedDataset", "init_args": {"num_workers": 0, **init_args}},
        "train": {
            "save_interval": 3,
            "log_interval": 1,
            "global_batch_size": 4,
            "micro_batch_size": 4,
            "max_tokens": 6 * 4 * 64,
            "max_seq_length": 64,
            "lr_warmup_steps": 2,
            "max_norm": 1.0,
            "min_lr": 1e-4,
            **train,
        },
        "eval": {"interval": 3, "max_iters": 2, "initial_validation": False, "final_validation": False},
        "logger_name": "csv",
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_pretrain(config: Path, cwd: Path, *extra: str) -> str:
    result = subprocess.run(
        [LITGPT, "pretrain", "--config", str(config), *extra], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def train_losses(out_dir: Path) -> dict[int, float]:
    (metrics,) = out_dir.glob("logs/csv/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    return {int(row["iter"]): float(row["loss"]) for row in rows if row.get("loss")}


def write_checkpoint(directory, texts) -> None:
    """A random pythia-14m with a tiny byte-level BPE tokenizer: what finetune_full starts from, no hub needed."""
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    train_tokenizer(texts, 300, directory)
    config = Config.from_name("pythia-14m")
    torch.manual_seed(0)
    torch.save(GPT(config).state_dict(), directory / "lit_model.pth")
    save_config(config, directory)


def task(path, tag: str, count: int):
    path.write_text(
        json.dumps([{"instruction": f"{tag} {i} plus {i}?", "output": f"it is {2 * i}"} for i in range(count)])
    )
    return str(path)
