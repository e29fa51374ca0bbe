"""Helpers for end-to-end runs of the real `litgpt pretrain` command (tiny model, CPU)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from conftest import write_token_shard

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
