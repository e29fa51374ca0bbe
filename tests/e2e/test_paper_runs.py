"""The paper's workflow through the real `litgpt pretrain`: exact stop steps, and the LR of each schedule as applied
and as logged, across a resume, a branch and a relaunch."""

import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from litgpt_runs import pretrain_config, run_pretrain, write_shards

from sharded_mix.training.schedules import lr_schedule

STEP = 4 * 64  # tokens per step: global batch 4 × 64


def logged(out_dir: Path) -> dict[int, tuple[float, float]]:
    """Optimizer step (from 0) → (learning_rate, loss) as litgpt logged them (log_interval 1, no accumulation)."""
    (metrics,) = out_dir.glob("logs/csv/version_*/metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("learning_rate")]
    return {int(row["iter"]) - 1: (float(row["learning_rate"]), float(row["loss"])) for row in rows}


def checkpoint(path: Path) -> dict:
    return torch.load(path / "lit_model.pth", map_location="cpu", weights_only=False)


def paper_config(tmp_path: Path, name: str, data: dict, optimizer: dict, **train) -> Path:
    init_args = {"data_path": "data", "mix_weights_str": "main:0.7,code:0.3", **data}
    path = pretrain_config(tmp_path, init_args, max_tokens=12 * STEP, save_interval=4, **train)
    config = yaml.safe_load(path.read_text())
    config["out_dir"] = str(tmp_path / name)
    config["optimizer"] = {"class_path": "sharded_mix.training.ScheduledAdamW", "init_args": {"lr": 1e-3, **optimizer}}
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("paper")
    write_shards(tmp_path / "data")
    cosine = {"schedule": "cosine", "total_steps": 10, "warmup_steps": 2, "min_lr": 1e-4}
    config = paper_config(tmp_path, "cosine", {"stop_at_step": 8}, cosine)
    outputs = {"cosine": run_pretrain(config, tmp_path)}
    outputs["relaunch"] = run_pretrain(config, tmp_path, "--resume", "auto")
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "cosine" / "step-00000004", tmp_path / "resumed" / "step-00000004")
    run_pretrain(paper_config(tmp_path, "resumed", {"stop_at_step": 8}, cosine), tmp_path, "--resume", "auto")
    wsd = {
        "schedule": "wsd",
        "decay_start_stage": "anneal",
        "decay_steps": 3,
        "decay_shape": "1-sqrt",
        "warmup_steps": 2,
    }
    anneal = {"anneal_start_step": 5, "anneal_weights": "main:0.2,code:0.8", "stop_at_step": 8}
    run_pretrain(paper_config(tmp_path, "wsd", anneal, wsd), tmp_path)
    run_pretrain(
        paper_config(tmp_path, "constant", {"stop_after_steps": 4}, {"schedule": "constant", "warmup_steps": 2}),
        tmp_path,
    )
    (tmp_path / "decay").mkdir()
    shutil.copytree(tmp_path / "constant" / "step-00000004", tmp_path / "decay" / "step-00000004")
    decay = {"schedule": "decay", "decay_steps": 3, "decay_shape": "exponential", "final_lr_ratio": 0.1}
    outputs["decay"] = run_pretrain(
        paper_config(tmp_path, "decay", {"stop_after_steps": 3}, decay), tmp_path, "--resume", "auto"
    )
    return tmp_path, outputs


def test_the_run_ends_exactly_at_stop_at_step_and_writes_final(runs):
    tmp_path, outputs = runs
    assert sorted(logged(tmp_path / "cosine")) == list(range(8))  # max_tokens allowed 12 steps
    assert checkpoint(tmp_path / "cosine" / "final")["step_count"] == 8
    assert "DATA STOP: stop_at_step 8 reached" in outputs["cosine"]


def test_a_relaunch_of_a_finished_run_does_nothing(runs):
    tmp_path, outputs = runs
    assert "final already holds step 8, where this run stops; nothing to do" in outputs["relaunch"]
    assert "Saving checkpoint" not in outputs["relaunch"]
    assert sorted(logged(tmp_path / "cosine")) == list(range(8))  # no new rows were logged


def test_cosine_lr_applied_and_logged_and_resumed(runs):
    tmp_path, _ = runs
    schedule = lr_schedule(1e-3, "cosine", total_steps=10, warmup_steps=2, min_lr=1e-4)
    expected = [schedule.lr_at(step) for step in range(8)]
    seen = logged(tmp_path / "cosine")
    assert [seen[step][0] for step in range(8)] == pytest.approx(expected, rel=1e-12)
    assert checkpoint(tmp_path / "cosine" / "step-00000004")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        expected[3]
    )
    resumed = logged(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5, 6, 7]
    assert [resumed[step][0] for step in range(4, 8)] == pytest.approx(expected[4:], rel=1e-12)
    assert [resumed[step][1] for step in range(4, 8)] == pytest.approx(
        [seen[step][1] for step in range(4, 8)], abs=1e-4
    )


def test_wsd_decay_starts_with_the_anneal_stage(runs):
    tmp_path, _ = runs
    schedule = lr_schedule(1e-3, "wsd", decay_start_stage="anneal", decay_steps=3, decay_shape="1-sqrt", warmup_steps=2)
    seen = logged(tmp_path / "wsd")
    assert [seen[step][0] for step in range(8)] == pytest.approx(
        [schedule.lr_at(step, stage_start=5) for step in range(8)], rel=1e-12
    )
    assert [round(seen[step][0], 6) for step in (4, 5, 6, 7)] == [
        1e-3,
        1e-3,
        round(1e-3 * (1 - (1 / 3) ** 0.5), 6),
        round(1e-3 * (1 - (2 / 3) ** 0.5), 6),
    ]


def test_a_decay_stage_anneals_from_the_checkpoints_lr_for_n_more_steps(runs):
    tmp_path, outputs = runs
    assert sorted(logged(tmp_path / "constant")) == [0, 1, 2, 3]  # stop_after_steps 4 from a fresh start
    seen = logged(tmp_path / "decay")
    assert sorted(seen) == [4, 5, 6]  # 3 more steps from step 4
    assert [seen[step][0] for step in (4, 5, 6)] == pytest.approx(
        [1e-3, 1e-3 * 0.1 ** (1 / 3), 1e-3 * 0.1 ** (2 / 3)], rel=1e-12
    )
    final = checkpoint(tmp_path / "decay" / "final")
    assert final["step_count"] == 7
    assert final["train_dataloader"]["stop"]["from_step"] == 4
    assert "LR decay starts at step 4 from the resumed LR 0.001" in outputs["decay"]
