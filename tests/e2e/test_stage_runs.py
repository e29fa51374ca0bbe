"""Data stages through the real `litgpt pretrain` command (tiny model, CPU)."""

import re
from pathlib import Path

import pytest
from litgpt_runs import pretrain_config, run_pretrain, train_losses, write_shards

from sharded_mix.cli import main
from sharded_mix.tools.checkpoints import read_data_position

STAGES = [
    {"name": "warmup", "start_step": 0, "literal_weights_str": "main/1:1"},
    {"name": "mix", "start_step": 5, "literal_weights_str": "main/1:0.5,c1:0.3,m1:0.2"},
    {"name": "anneal", "start_step": 10, "literal_weights_str": "main/1:0.5,m1:0.5", "seed": 7},
]
TWELVE_STEPS = {"max_tokens": 12 * 4 * 64, "save_interval": 7}


@pytest.fixture(scope="module")
def three_stage_run(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("stages")
    write_shards(root / "data")
    config = pretrain_config(root, {"data_path": "data", "stages": STAGES, "global_batch_size": 4}, **TWELVE_STEPS)
    return root, run_pretrain(config, cwd=root)


def test_no_stages_is_one_default_stage(tmp_path):
    write_shards(tmp_path / "data")
    output = run_pretrain(
        pretrain_config(tmp_path, {"data_path": "data", "mix_weights_str": "main:0.8,code:0.2"}), cwd=tmp_path
    )
    assert "===== DATA STAGE TRAINING PLAN: 1 stage(s)" in output
    assert "global_batch_size 4, from train.global_batch_size" in output  # the data args have none: LitGPT's is used
    # the plan spans the run train.max_tokens gives it (6 steps), not "-> end"
    assert re.search(
        r"stage default: steps 0 -> 6, tokens 0 -> 1,536, seq_len 64, seed 42; inherited from the top level: blend",
        output,
    )
    assert "set its end_step" not in output
    assert "DATA STAGE TRANSITION" not in output and "iter 6 step 6" in output


def test_three_stages_switch_at_steps_5_and_10(three_stage_run):
    root, output = three_stage_run
    assert "stage mix: steps 5 -> 10, tokens 1,280 -> 2,560, seq_len 64, seed 42" in output
    assert "===== DATA STAGE TRANSITION: step 5 (20 samples per rank): warmup -> mix =====" in output
    assert "===== DATA STAGE TRANSITION: step 10 (40 samples per rank): mix -> anneal =====" in output
    assert "changed: weights, seed 42 -> 7" in output
    at_step_7 = read_data_position(root / "out" / "step-00000007")["data"]
    assert at_step_7["stage"] == "mix" and at_step_7["samples"] == 28
    assert at_step_7["taken"] == {"c1": 2, "m1": 2, "main/1": 4}  # steps 6-7 follow the mix blend: 8 samples
    assert at_step_7["sources"]["main/1"]["draws"] == 20 + 4  # warmup's 20 main blocks, then the mix's


def test_resume_from_step_7_restores_the_stage_and_gives_the_same_losses(three_stage_run):
    root, _ = three_stage_run
    resumed_dir = root / "resumed"
    output = run_pretrain(
        root / "pretrain.yaml",
        root,
        "--out_dir",
        str(resumed_dir),
        "--resume",
        str(root / "out" / "step-00000007" / "lit_model.pth"),
    )
    assert "DATA MIX TRANSITION" not in output  # the same stage continues exactly
    assert "DATA STAGE TRANSITION: step 5" not in output
    assert "===== DATA STAGE TRANSITION: step 10 (40 samples per rank): mix -> anneal =====" in output
    resumed, full = train_losses(resumed_dir), train_losses(root / "out")
    assert sorted(resumed) == [8, 9, 10, 11, 12]
    assert {step: full[step] for step in resumed} == resumed  # bit-for-bit, CPU 32-true
    assert read_data_position(resumed_dir / "final")["data"]["stage"] == "anneal"


def test_a_first_stage_at_step_5_gets_an_automatic_default_stage(tmp_path):
    write_shards(tmp_path / "data")
    init_args = {
        "data_path": "data",
        "literal_weights_str": "main/1:1",
        "global_batch_size": 4,
        "stages": [{"name": "math", "start_step": 5, "literal_weights_str": "m1:1"}],
    }
    output = run_pretrain(pretrain_config(tmp_path, init_args, max_tokens=8 * 4 * 64), cwd=tmp_path)
    assert "stage default (added automatically: the first stage starts later): steps 0 -> 5" in output
    assert "===== DATA STAGE TRANSITION: step 5 (20 samples per rank): default -> math =====" in output
    state = read_data_position(tmp_path / "out" / "step-00000006")["data"]
    assert state["stage"] == "math" and state["taken"] == {"m1": 4}


def test_plan_command_prints_the_plan_of_a_litgpt_config(three_stage_run, capsys, monkeypatch):
    root, _ = three_stage_run
    monkeypatch.chdir(root)
    assert main(["plan", str(root / "pretrain.yaml")]) == 0
    out = capsys.readouterr().out
    assert "===== DATA STAGE TRAINING PLAN" in out
    assert (
        "stage anneal: steps 10 -> 12, tokens 2,560 -> 3,072, seq_len 64, seed 7" in out
    )  # train.max_tokens ends the run
    assert re.search(r"expected epochs per source over the run: c1 0\.\d+, m1 0\.\d+, main/1 0\.\d+", out)


def test_plan_command_plots_weights_over_steps(three_stage_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    root, _ = three_stage_run
    monkeypatch.chdir(root)
    assert main(["plan", str(root / "pretrain.yaml"), "--plot", str(tmp_path / "plan.png")]) == 0
    assert (tmp_path / "plan.png").stat().st_size > 1000 and "plot written to" in capsys.readouterr().out
