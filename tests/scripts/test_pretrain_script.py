"""training_scripts/small_model_pretrain.sh run directly with bash (no SLURM).

A fake litgpt records its arguments.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training_scripts" / "small_model_pretrain.sh"


@pytest.fixture
def task(tmp_path):
    """Runs array task 1 of a one-config list in ``tmp_path``; returns (result, litgpt's arguments or None)."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"out_dir": "out/run", "train": {"max_tokens": 100}}))
    (tmp_path / "configs.txt").write_text("run.yaml\n")
    args_file = tmp_path / "litgpt_args.txt"
    fake_litgpt = tmp_path / "fake_litgpt"
    fake_litgpt.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {args_file}\n")
    fake_litgpt.chmod(0o755)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SHARDED_MIX_", "SLURM_"))}
    env.update(
        CONFIG_LIST=str(tmp_path / "configs.txt"),
        SLURM_ARRAY_TASK_ID="1",
        SHARDED_MIX_SRUN="",
        LITGPT=str(fake_litgpt),
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )

    def run():
        result = subprocess.run(
            ["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        return result, args_file.read_text().splitlines() if args_file.exists() else None

    return run


def save_step(tmp_path, step, keep=None):
    path = tmp_path / "out" / "run" / f"step-{step:08d}" / "lit_model.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(1000)}, "iter_num": step}, path)
    if keep is not None:
        path.write_bytes(path.read_bytes()[:keep])
    return path


def test_relaunch_resumes_from_the_newest_complete_checkpoint(task, tmp_path):
    save_step(tmp_path, 10)
    save_step(tmp_path, 20, keep=1000)
    result, litgpt_args = task()
    assert result.returncode == 0, result.stdout + result.stderr
    assert litgpt_args == ["pretrain", "--config", "run.yaml", "--resume", "out/run/step-00000010/lit_model.pth"]
    assert (
        "skipping out/run/step-00000020/lit_model.pth: truncated (not a complete zip file); "
        "falling back to an earlier step" in result.stderr
    )
    assert (
        "relaunch: resuming from out/run/step-00000010/lit_model.pth, the newest complete checkpoint in out_dir"
        in result.stdout
    )


def test_no_complete_checkpoint_fails_instead_of_starting_over(task, tmp_path):
    save_step(tmp_path, 10, keep=0)
    save_step(tmp_path, 20, keep=1000)
    result, litgpt_args = task()
    assert result.returncode == 2 and litgpt_args is None
    assert "skipping out/run/step-00000010/lit_model.pth: empty (0 bytes)\n" in result.stderr
    assert (
        "error: task 1: out/run has step-* directories (step-00000010 step-00000020) "
        "but no complete checkpoint in them "
        "(the lines above say why), so the run neither resumes nor restarts over them. Restore a checkpoint, or delete "
        "those step-* directories to start the run over from the config's own resume setting."
    ) in result.stderr


def test_first_launch_keeps_the_configs_resume(task):
    result, litgpt_args = task()
    assert result.returncode == 0, result.stdout + result.stderr
    assert litgpt_args == ["pretrain", "--config", "run.yaml"]
    assert "first launch: the config's own resume setting applies" in result.stdout
