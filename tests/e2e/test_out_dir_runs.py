"""Integrity of a run's out_dir under the real `litgpt pretrain`: one writer per out_dir, a half-written newest
checkpoint under `resume: auto`, and a resume with another micro_batch_size (tiny model, CPU)."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from litgpt_runs import LITGPT, pretrain_config, run_pretrain, train_losses, write_shards

from sharded_mix.streaming.checkpoint_files import checkpoint_state
from sharded_mix.streaming.run_lock import LOCK_NAME
from sharded_mix.tools.checkpoints import format_data_position, read_data_position

BLEND = {"data_path": "data", "literal_weights_str": "main/1:0.5,c1:0.3,m1:0.2"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One 6-step run (checkpoints at steps 3 and 6); cwd of the resumed runs, which copy its checkpoints."""
    root = tmp_path_factory.mktemp("base")
    write_shards(root / "data")
    run_pretrain(pretrain_config(root, BLEND), cwd=root)
    return root


def test_a_second_run_on_the_out_dir_is_refused_before_its_first_step(tmp_path):
    write_shards(tmp_path / "data")
    config = pretrain_config(tmp_path, BLEND, max_tokens=16 * 4 * 64, save_interval=8)
    out = tmp_path / "out"
    first = subprocess.Popen(
        [LITGPT, "pretrain", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / LOCK_NAME).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / LOCK_NAME).exists(), "the first run never took its lock"
        second = subprocess.run(
            [LITGPT, "pretrain", "--config", str(config), "--resume", "auto"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        refused = second.stdout + second.stderr
        assert first.poll() is None, "the first run ended before the second one was refused: nothing was tested"
        output, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode != 0
    assert (
        f"ValueError: out_dir {out} is in use by another run: pid {first.pid} on host {socket.gethostname()} has "
        f"held {out / LOCK_NAME} since 20"
    ) in refused
    assert "Give this run another out_dir, or stop the other run first" in refused
    assert "step 1 |" not in refused and "Saving checkpoint" not in refused
    assert first.returncode == 0, output[-3000:]
    assert "iter 16 step 16" in output
    assert checkpoint_state(out / "final" / "lit_model.pth")["step_count"] == 16
    assert not (out / LOCK_NAME).exists()  # released when the run ended


def copy_step(base: Path, out: Path, step: int) -> Path:
    name = f"step-{step:08d}"
    shutil.copytree(base / "out" / name, out / name)
    return out / name / "lit_model.pth"


def test_resume_auto_sets_a_half_written_newest_checkpoint_aside(base, tmp_path):
    out = tmp_path / "out"
    copy_step(base, out, 3)
    newest = copy_step(base, out, 6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed while saving
    output = run_pretrain(pretrain_config(tmp_path, BLEND), base, "--resume", "auto")
    (aside,) = out.glob("incomplete-step-00000006-*")
    assert (
        f"resume: auto would resume {newest}, which is truncated (not a complete zip file) (a save cut short: "
        f"killed, or a full disk); set it aside as {aside}, so LitGPT resumes {out / 'step-00000003' / 'lit_model.pth'}"
    ) in output
    assert f"Resuming training from {out / 'step-00000003' / 'lit_model.pth'}" in output
    assert checkpoint_state(out / "final" / "lit_model.pth")["step_count"] == 6
    full = train_losses(base / "out")
    assert train_losses(out) == {step: full[step] for step in (4, 5, 6)}  # exactly the uninterrupted run


def test_resume_with_another_micro_batch_size_stops_where_max_tokens_says(base, tmp_path):
    out = tmp_path / "out"
    checkpoint = copy_step(base, out, 3)  # micro_batch_size 4: iter_num 3
    output = run_pretrain(pretrain_config(tmp_path, BLEND, micro_batch_size=2), base, "--resume", "auto")
    assert (
        f"{checkpoint} was written with micro_batch_size 4 on 1 rank(s), this run has micro_batch_size 2 on 1 rank(s): "
        "LitGPT counts iter_num in micro-batches and restores it as saved (3), so it would end this run at step 8, "
        "not at step 6 where train.max_tokens ends it, with its LR schedule shifted. iter_num is set to 6"
    ) in output
    assert "iter 8 step 4" in output and "iter 12 step 6" in output and "step 7" not in output
    final = checkpoint_state(out / "final" / "lit_model.pth")
    assert (final["step_count"], final["iter_num"]) == (6, 12)
    assert "note:" not in format_data_position(read_data_position(out / "step-00000006"))
