"""Linking a pretraining run's checkpoints into a midtraining run, and reading the data position of a checkpoint."""

import json

import pytest
import torch
from conftest import make, take
from litgpt.utils import find_resume_path

from sharded_mix.cli import main
from sharded_mix.tools.checkpoints import (
    checkpoint_file_problem,
    format_data_position,
    link_checkpoints,
    newest_loadable_checkpoint,
    read_data_position,
)


@pytest.fixture
def pretrain_run(tmp_path):
    out = tmp_path / "out" / "pretrain"
    for step in (1000, 2000, 3000):
        (out / f"step-{step:08d}").mkdir(parents=True)
        torch.save({"iter_num": step}, out / f"step-{step:08d}" / "lit_model.pth")
    (out / "final").mkdir()
    (out / "logs").mkdir()
    return out


def test_links_checkpoints_up_to_the_step_and_litgpt_resumes_from_it(pretrain_run, tmp_path):
    midtrain = tmp_path / "out" / "midtrain"
    links = link_checkpoints(pretrain_run, midtrain, 2000)
    assert sorted(path.name for path in midtrain.iterdir()) == ["step-00001000", "step-00002000"]
    assert all(link.link.is_symlink() and link.link.resolve() == link.target for link in links)
    assert find_resume_path("auto", midtrain) == midtrain / "step-00002000" / "lit_model.pth"
    assert all(link.exists for link in link_checkpoints(pretrain_run, midtrain, 2000))  # idempotent


def test_dry_run_changes_nothing(pretrain_run, tmp_path, capsys):
    midtrain = tmp_path / "midtrain"
    assert (
        main(
            [
                "link-checkpoints",
                "--pretrain-dir",
                str(pretrain_run),
                "--midtrain-dir",
                str(midtrain),
                "--step",
                "3000",
                "--dry-run",
            ]
        )
        == 0
    )
    assert not midtrain.exists()
    out = capsys.readouterr().out
    assert out.count("would link:") == 3 and "dry run: nothing changed" in out


def test_link_refusals(pretrain_run, tmp_path, capsys):
    midtrain = tmp_path / "midtrain"
    with pytest.raises(ValueError, match=r"--step 2500: .* has steps 1000, 2000, 3000"):
        link_checkpoints(pretrain_run, midtrain, 2500)
    with pytest.raises(ValueError, match="is not a directory"):
        link_checkpoints(tmp_path / "nope", midtrain, 1000)
    with pytest.raises(ValueError, match="no step-\\*/lit_model.pth checkpoints"):
        link_checkpoints(pretrain_run / "logs", midtrain, 1000)
    with pytest.raises(ValueError, match="is the pretraining run's"):
        link_checkpoints(pretrain_run, pretrain_run, 1000)
    (midtrain / "step-00001000").mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists and is not a link to .*refusing to replace it"):
        link_checkpoints(pretrain_run, midtrain, 2000)
    assert not (midtrain / "step-00002000").exists()  # nothing is linked when any link is refused
    assert (
        main(
            ["link-checkpoints", "--pretrain-dir", str(pretrain_run), "--midtrain-dir", str(midtrain), "--step", "2000"]
        )
        == 2
    )
    assert "refusing to replace it" in capsys.readouterr().err


def test_data_position_of_a_checkpoint(scenario, tmp_path, capsys):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 25)
    step_dir = tmp_path / "run" / "final"  # LitGPT's final/: the batch fetched after the last step is in it
    step_dir.mkdir(parents=True)
    torch.save(
        {"model": {"w": torch.zeros(3)}, "train_dataloader": loader.state_dict(), "iter_num": 24, "step_count": 24},
        step_dir / "lit_model.pth",
    )
    position = read_data_position(step_dir)
    assert position["iter_num"] == 24 and position["data"]["sources"]["m1"]["draws"] == 100
    assert main(["data-position", str(step_dir)]) == 0
    out = capsys.readouterr().out
    assert "250 samples per rank on 1 rank(s) on 1 node(s), blocks of 16 tokens, seed 42" in out
    assert "10 of these samples per rank were fetched but not trained on" in out  # 25 batches, 24 steps
    rows = {line.split()[0]: line.split()[1:8] for line in out.splitlines() if line.startswith(("m1 ", "main/1 "))}
    assert rows == {  # weight, epoch, position / blocks, samples and trained tokens (15 a block) of the run
        "m1": ["0.4000", "0", "100", "/", "181", "100", "1,500"],
        "main/1": ["0.6000", "0", "150", "/", "1,206", "150", "2,250"],
    }
    assert main(["data-position", str(step_dir / "lit_model.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["taken"] == {"m1": 100, "main/1": 150}


def data_position_notes(tmp_path, name, state, iter_num):
    directory = tmp_path / name
    directory.mkdir(parents=True)
    torch.save({"train_dataloader": state, "iter_num": iter_num, "step_count": 0}, directory / "lit_model.pth")
    return [line for line in format_data_position(read_data_position(directory)).splitlines() if "note:" in line]


def test_data_position_notes_only_what_is_true(scenario, tmp_path):
    """A step-* checkpoint is saved right after its step (no batch fetched past it); a run resumed with another
    micro_batch_size counts iter_num in the old micro-batches: neither holds samples fetched but not trained on."""
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 24)
    state = loader.state_dict()  # 240 samples per rank in micro-batches of 10
    assert data_position_notes(tmp_path, "run/step-00000024", state, 24) == []
    assert data_position_notes(tmp_path, "run/final", state, 24) == []  # a run the data stream ended
    assert data_position_notes(tmp_path, "run/step-00000023", state, 23) == [  # 240 = 12 iters of 20, then 1 of 10
        "note: iter_num 23 is not these samples in micro-batches of 10 (230 samples per rank): the run was resumed "
        "with another micro_batch_size or rank count, and LitGPT kept counting iter_num in the old micro-batches; the "
        "samples are the data position"
    ]


def test_data_position_refuses_a_checkpoint_without_our_state(tmp_path):
    torch.save({"model": {}, "iter_num": 3}, tmp_path / "lit_model.pth")
    with pytest.raises(ValueError, match="holds no sharded_mix data state"):
        read_data_position(tmp_path / "lit_model.pth")
    with pytest.raises(ValueError, match="no checkpoint at"):
        read_data_position(tmp_path / "missing")


def save_steps(out_dir, *steps):
    """Complete ``torch.save`` checkpoints at ``out_dir/step-N/lit_model.pth``, by step."""
    paths = {}
    for step in steps:
        paths[step] = out_dir / f"step-{step:08d}" / "lit_model.pth"
        paths[step].parent.mkdir(parents=True)
        torch.save({"model": {"w": torch.zeros(1000)}, "iter_num": step}, paths[step])
    return paths


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])


@pytest.mark.parametrize(
    "keep", [lambda size: 0, lambda size: size // 2, lambda size: size - 10], ids=["empty", "half", "all-but-10-bytes"]
)
def test_a_half_written_newest_checkpoint_is_skipped(tmp_path, keep):
    paths = save_steps(tmp_path / "run", 10, 20)
    truncate(paths[20], keep)
    checkpoint, skipped = newest_loadable_checkpoint(tmp_path / "run")
    assert checkpoint == paths[10]
    assert [path for path, _ in skipped] == [paths[20]]
    assert skipped[0][1] in ("empty (0 bytes)", "truncated (not a complete zip file)")
    torch.load(checkpoint, weights_only=True)


def test_every_truncation_is_caught_and_torch_cannot_load_it(tmp_path):
    (path,) = save_steps(tmp_path, 1).values()
    data = path.read_bytes()
    assert checkpoint_file_problem(path) is None
    for size in [*range(0, len(data), 97), len(data) - 1]:
        path.write_bytes(data[:size])
        assert checkpoint_file_problem(path) is not None, size
        # empty: EOFError; no zip central directory: RuntimeError; a cut central directory: OSError (Errno 22)
        with pytest.raises((EOFError, RuntimeError, OSError)):
            torch.load(path, weights_only=True)


def test_no_complete_checkpoint_gives_none_with_every_reason(tmp_path):
    run = tmp_path / "run"
    paths = save_steps(run, 5, 10, 20, 30)
    truncate(paths[30], lambda size: size // 3)
    paths[20].write_bytes(b"not a checkpoint at all")
    paths[10].unlink()
    torch.save({"w": torch.zeros(3)}, paths[5], _use_new_zipfile_serialization=False)
    (run / "step-00000040").mkdir()
    (run / "step-00000040" / "lit_model.pth").write_bytes(b"")
    checkpoint, skipped = newest_loadable_checkpoint(run)
    assert checkpoint is None
    assert skipped == [
        (run / "step-00000040" / "lit_model.pth", "empty (0 bytes)"),
        (paths[30], "truncated (not a complete zip file)"),
        (paths[20], "not a zip-format torch checkpoint (a legacy torch.save file, or not a checkpoint at all)"),
        (paths[10], "missing"),
        (paths[5], "not a zip-format torch checkpoint (a legacy torch.save file, or not a checkpoint at all)"),
    ]


def test_a_zip_that_is_not_a_torch_checkpoint_is_skipped(tmp_path):
    import zipfile

    path = tmp_path / "lit_model.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert checkpoint_file_problem(path) == "a zip file without a */data.pkl entry, so not a torch checkpoint"


def test_no_step_directories_gives_none(tmp_path):
    assert newest_loadable_checkpoint(tmp_path / "missing") == (None, [])
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "step-notanumber").mkdir()
    assert newest_loadable_checkpoint(tmp_path / "run") == (None, [])


def test_resume_checkpoint_cli(tmp_path, capsys):
    run = tmp_path / "run"
    paths = save_steps(run, 10, 20)
    truncate(paths[20], lambda size: size // 2)
    assert main(["resume-checkpoint", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{paths[10]}\n"
    assert (
        captured.err == f"skipping {paths[20]}: truncated (not a complete zip file); falling back to an earlier step\n"
    )
    truncate(paths[10], lambda size: 0)
    assert main(["resume-checkpoint", str(run)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"skipping {paths[20]}: truncated (not a complete zip file)",
        f"skipping {paths[10]}: empty (0 bytes)",
        f"no complete checkpoint in {run}",
    ]
    assert main(["resume-checkpoint", str(tmp_path / "fresh")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"no step-* checkpoints in {tmp_path / 'fresh'}\n"
