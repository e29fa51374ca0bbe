"""Linking a pretraining run's checkpoints into a midtraining run, and reading the data position of a checkpoint."""

import json

import pytest
import torch
from litgpt.utils import find_resume_path

from conftest import make, take
from sharded_mix.cli import main
from sharded_mix.tools.checkpoints import link_checkpoints, read_data_position


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
    assert main(["link-checkpoints", "--pretrain-dir", str(pretrain_run), "--midtrain-dir", str(midtrain), "--step", "3000", "--dry-run"]) == 0
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
    assert main(["link-checkpoints", "--pretrain-dir", str(pretrain_run), "--midtrain-dir", str(midtrain), "--step", "2000"]) == 2
    assert "refusing to replace it" in capsys.readouterr().err


def test_data_position_of_a_checkpoint(scenario, tmp_path, capsys):
    loader = make(scenario, batch_size=10, literal_weights_str="main/1:0.6,m1:0.4").train_dataloader()
    take(loader, 25)
    step_dir = tmp_path / "run" / "step-00000024"
    step_dir.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(3)}, "train_dataloader": loader.state_dict(), "iter_num": 24, "step_count": 24}, step_dir / "lit_model.pth")
    position = read_data_position(tmp_path / "run")  # the out_dir: its newest step
    assert position["iter_num"] == 24 and position["data"]["sources"]["m1"]["draws"] == 100
    assert main(["data-position", str(step_dir)]) == 0
    out = capsys.readouterr().out
    assert "250 samples per rank on 1 rank(s), blocks of 16 tokens, seed 42" in out
    assert "10 of these samples per rank were fetched but not trained on" in out  # 25 batches, 24 steps
    rows = {line.split()[0]: line.split()[1:6] for line in out.splitlines() if line.startswith(("m1 ", "main/1 "))}
    assert rows == {"m1": ["0.4000", "0", "100", "/", "181"], "main/1": ["0.6000", "0", "150", "/", "1,206"]}
    assert main(["data-position", str(step_dir / "lit_model.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["taken"] == {"m1": 100, "main/1": 150}


def test_data_position_refuses_a_checkpoint_without_our_state(tmp_path):
    torch.save({"model": {}, "iter_num": 3}, tmp_path / "lit_model.pth")
    with pytest.raises(ValueError, match="holds no sharded_mix data state"):
        read_data_position(tmp_path / "lit_model.pth")
    with pytest.raises(ValueError, match="no checkpoint at"):
        read_data_position(tmp_path / "missing")
