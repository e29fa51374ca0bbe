"""The real `litgpt pretrain` command trains on ShardedMixedDataset (tiny model, CPU, a few steps)."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_token_shard

pytestmark = pytest.mark.e2e

LITGPT = str(Path(sys.executable).parent / "litgpt")


def write_shards(base: Path) -> None:
    rng = np.random.default_rng(0)
    for split, tokens in (("train", 12_000), ("val", 2_000)):
        for shard_dir in ("1", "2", "c1", "m1"):
            documents = [rng.integers(0, 1000, 400) for _ in range(tokens // 400)]
            write_token_shard(base / split / shard_dir, documents, chunk_bytes=8000)


def pretrain_config(tmp_path: Path, init_args: dict) -> Path:
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
        },
        "eval": {"interval": 3, "max_iters": 2, "initial_validation": False, "final_validation": False},
        "logger_name": "csv",
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_pretrain(config: Path, cwd: Path) -> str:
    result = subprocess.run(
        [LITGPT, "pretrain", "--config", str(config)], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_reference_shaped_config_trains_and_checkpoints(tmp_path):
    write_shards(tmp_path / "data")
    config = pretrain_config(tmp_path, {"data_path": "data", "mix_weights_str": "main:0.8,code:0.15,math:0.05"})
    output = run_pretrain(config, cwd=tmp_path)
    assert "DATA MIXTURE PLAN" in output
    assert "iter 6 step 6" in output and "val loss" in output
    for checkpoint in ("step-00000003", "step-00000006", "final"):
        assert (tmp_path / "out" / checkpoint / "lit_model.pth").is_file()
    saved = yaml.safe_load((tmp_path / "out" / "final" / "hyperparameters.yaml").read_text())
    assert saved["data"]["class_path"] == "sharded_mix.ShardedMixedDataset"


def test_json_mix_file_with_a_zero_weight(tmp_path):
    write_shards(tmp_path / "data")
    (tmp_path / "mix.json").write_text(
        json.dumps({"weights": {"main": 0.88, "math": 0.12, "code": 0}, "proportional_sampling": False, "literal_weights": {}})
    )
    config = pretrain_config(tmp_path, {"data_path": "data", "mix_config_path": "mix.json"})
    output = run_pretrain(config, cwd=tmp_path)
    plan = output[output.index("DATA MIXTURE PLAN") :]
    assert re.search(r"c1 +code +12,000 +180 +0\.0000", plan)
    assert re.search(r"m1 +math +12,000 +180 +0\.1200", plan)
    assert (tmp_path / "out" / "final" / "lit_model.pth").is_file()


def train_losses(out_dir: Path) -> dict[int, float]:
    (metrics,) = out_dir.glob("logs/csv/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    return {int(row["iter"]): float(row["loss"]) for row in rows if row.get("loss")}


def test_resume_gives_exactly_the_losses_of_the_uninterrupted_run(tmp_path):
    write_shards(tmp_path / "data")
    config = pretrain_config(tmp_path, {"data_path": "data", "literal_weights_str": "main/1:0.5,c1:0.3,m1:0.2"})
    run_pretrain(config, cwd=tmp_path)
    full = train_losses(tmp_path / "out")
    resumed_dir = tmp_path / "resumed"
    output = subprocess.run(
        [LITGPT, "pretrain", "--config", str(config), "--out_dir", str(resumed_dir),
         "--resume", str(tmp_path / "out" / "step-00000003" / "lit_model.pth")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert output.returncode == 0, (output.stdout + output.stderr)[-4000:]
    resumed = train_losses(resumed_dir)
    assert sorted(resumed) == [4, 5, 6]
    assert {step: full[step] for step in resumed} == resumed  # bit-for-bit, CPU 32-true
