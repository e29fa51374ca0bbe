"""Half-written newest checkpoints a resume would pick: set aside (resume: auto / true), or refused (named)."""

import logging
from functools import partial

import pytest
import torch
from litgpt.utils import find_resume_path

from sharded_mix.streaming.checkpoint_files import checkpoint_state, settle_resume


def save_steps(out_dir, *steps):
    paths = {}
    for step in steps:
        paths[step] = out_dir / f"step-{step:08d}" / "lit_model.pth"
        paths[step].parent.mkdir(parents=True)
        torch.save({"model": {"w": torch.zeros(1000)}, "iter_num": step, "step_count": step}, paths[step])
    return paths


def cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def litgpt_pick(resume, out_dir):
    """What ``litgpt pretrain`` resumes (None where it finds nothing or would raise its own error)."""
    try:
        return find_resume_path(resume, out_dir)
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("resume", ["auto", True])
def test_the_half_written_newest_ones_are_set_aside_with_a_warning(tmp_path, resume, caplog):
    run = tmp_path / "out"
    paths = save_steps(run, 10, 20, 30)
    cut(paths[30])
    paths[20].write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        moved = settle_resume(partial(litgpt_pick, resume, run), resume, run)
    assert [(old, why) for old, _, why in moved] == [
        (paths[30], "truncated (not a complete zip file)"),
        (paths[20], "empty (0 bytes)"),
    ]
    assert find_resume_path(resume, run) == paths[10]  # LitGPT's own choice, and its glob does not trip on them
    assert sorted(path.name for path in run.iterdir())[0] == "incomplete-step-00000020-" + moved[1][1].name[-16:]
    assert all(aside.parent == run and (aside / "lit_model.pth").is_file() for _, aside, _ in moved)
    assert len(caplog.records) == 2
    assert caplog.records[0].getMessage() == (
        f"resume: {resume} would resume {paths[30]}, which is truncated (not a complete zip file) (a save cut short: "
        f"killed, or a full disk); set it aside as {moved[0][1]}, so LitGPT resumes {paths[10]}. Delete "
        f"{moved[0][1]} once you do not need it."
    )
    assert checkpoint_state(paths[10])["step_count"] == 10


def test_no_complete_checkpoint_is_refused_and_nothing_renamed(tmp_path):
    run = tmp_path / "out"
    paths = save_steps(run, 10, 20)
    cut(paths[10])
    cut(paths[20])
    with pytest.raises(ValueError) as refused:
        settle_resume(partial(litgpt_pick, "auto", run), "auto", run)
    assert str(refused.value) == (
        f"resume: 'auto' finds no complete checkpoint in {run}: {paths[20]} is truncated (not a complete zip file); "
        f"{paths[10]} is truncated (not a complete zip file). Restore a complete one, or delete those step-* "
        f"directories to start the run over (`sharded-mix resume-checkpoint {run}` checks them)."
    )
    assert sorted(path.name for path in run.iterdir()) == ["step-00000010", "step-00000020"]


def test_a_half_written_checkpoint_named_explicitly_is_refused(tmp_path):
    run = tmp_path / "out"
    paths = save_steps(run, 10, 20)
    cut(paths[20])
    with pytest.raises(
        ValueError, match=r"resume checkpoint .*step-00000020/lit_model.pth is truncated .* Resume from"
    ):
        settle_resume(lambda: paths[20], paths[20], run)
    assert paths[20].exists()


def test_complete_checkpoints_and_fresh_runs_change_nothing(tmp_path):
    run = tmp_path / "out"
    save_steps(run, 10, 20)
    assert settle_resume(partial(litgpt_pick, "auto", run), "auto", run) == []
    assert settle_resume(partial(litgpt_pick, "auto", tmp_path / "fresh"), "auto", tmp_path / "fresh") == []
    assert sorted(path.name for path in run.iterdir()) == ["step-00000010", "step-00000020"]
