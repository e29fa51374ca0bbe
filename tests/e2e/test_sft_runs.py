"""End to end: the real `litgpt finetune_full` (pythia-14m, CPU) on an SFTMixture of two task files, then
`sharded-mix val-loss` of the result on both task files and a token shard."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import yaml
from conftest import write_token_shard
from litgpt_runs import LITGPT, task, write_checkpoint

from sharded_mix.cli import main


def test_finetune_full_on_a_mixture_then_val_loss_per_task_and_on_a_shard(tmp_path, capsys):
    base = tmp_path / "base"
    write_checkpoint(
        base,
        ["Below is an instruction that describes a task. ### Instruction: ### Response:", "math plus it is chat"] * 10,
    )
    files = {name: task(tmp_path / f"{name}.json", name, 12) for name in ("math", "chat")}
    vals = {name: task(tmp_path / f"{name}_val.json", name, 4) for name in ("math", "chat")}
    write_token_shard(tmp_path / "c4" / "1", [np.random.default_rng(0).integers(0, 300, 400)])
    config = {
        "checkpoint_dir": str(base),
        "out_dir": str(tmp_path / "out"),
        "precision": "32-true",
        "data": {
            "class_path": "sharded_mix.SFTMixture",
            "init_args": {
                "train_data": files,
                "val_data": vals,
                "weights": "math:0.75,chat:0.25",
                "epoch_size": 8,
                "mask_prompt": True,
                "num_workers": 0,
            },
        },
        "train": {
            "global_batch_size": 2,
            "micro_batch_size": 2,
            "epochs": 2,
            "max_seq_length": 96,
            "lr_warmup_steps": 1,
            "save_interval": 1000,
            "log_interval": 1,
        },
        "eval": {
            "interval": 1000,
            "max_iters": 2,
            "initial_validation": False,
            "final_validation": True,
            "max_new_tokens": 4,
        },
        "logger_name": "csv",
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [LITGPT, "finetune_full", "--config", str(tmp_path / "sft.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "8 samples per epoch" in output and "Epoch 2 | iter 8 step 8" in output and "Final evaluation" in output
    final = tmp_path / "out" / "final"
    assert (final / "prompt_style.yaml").is_file()

    assert (
        main(
            [
                "val-loss",
                str(final),
                vals["math"],
                vals["chat"],
                str(tmp_path / "c4"),
                "--mask-prompt",
                "--seq-len",
                "96",
                "--max-blocks",
                "4",
                "--json",
            ]
        )
        == 0
    )
    report = capsys.readouterr().out
    losses = {row["source"]: row for row in json.loads(report)}
    assert set(losses) == {"math_val", "chat_val", "main/1"}
    assert losses["math_val"]["type"] == "sft" and losses["math_val"]["blocks"] == 4 and losses["main/1"]["blocks"] == 4
    assert all(0 < row["loss"] < 20 for row in losses.values())
    assert (
        main(
            [
                "val-loss",
                str(final),
                vals["math"],
                vals["chat"],
                str(tmp_path / "c4"),
                "--mask-prompt",
                "--seq-len",
                "96",
                "--max-blocks",
                "4",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert table.startswith("===== PER-SOURCE VALIDATION LOSS:") and "math_val       sft" in table
    with capsys.disabled():
        print(table)
    assert main(["val-loss", str(final), vals["math"], "--mask-prompt", "--seq-len", "8"]) == 2
    assert "no target token to score within 8 tokens" in capsys.readouterr().err
