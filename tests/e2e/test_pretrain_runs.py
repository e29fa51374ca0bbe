"""The real `litgpt pretrain` command trains on ShardedMixedDataset (tiny model, CPU, a few steps)."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from litgpt_runs import LITGPT, pretrain_config, run_pretrain, train_losses, write_shards

from sharded_mix.tools.checkpoints import read_data_position


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
        json.dumps(
            {"weights": {"main": 0.88, "math": 0.12, "code": 0}, "proportional_sampling": False, "literal_weights": {}}
        )
    )
    config = pretrain_config(tmp_path, {"data_path": "data", "mix_config_path": "mix.json"})
    output = run_pretrain(config, cwd=tmp_path)
    plan = output[output.index("DATA MIXTURE PLAN") :]
    assert re.search(r"c1 +code +12,000 +180 +0\.0000", plan)
    assert re.search(r"m1 +math +12,000 +180 +0\.1200", plan)
    assert (tmp_path / "out" / "final" / "lit_model.pth").is_file()


PRETRAIN_BLEND = "main/1:0.5,c1:0.3,m1:0.2"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """One 6-step pretraining run (checkpoints at steps 3 and 6) shared by the resume tests; cwd for them."""
    root = tmp_path_factory.mktemp("pretrained")
    write_shards(root / "data")
    run_pretrain(pretrain_config(root, {"data_path": "data", "literal_weights_str": PRETRAIN_BLEND}), cwd=root)
    return root


def resume_run(pretrained: Path, name: str, init_args: dict, *extra: str) -> tuple[Path, str]:
    """``litgpt pretrain`` from step 3 of the shared run with a new ``data`` section, into its own out_dir."""
    run_dir = pretrained / name
    run_dir.mkdir()
    config = pretrain_config(run_dir, {"data_path": "data", **init_args})
    checkpoint = pretrained / "out" / "step-00000003" / "lit_model.pth"
    output = run_pretrain(config, pretrained, "--resume", str(checkpoint), *extra)
    return run_dir / "out", output


def test_resume_gives_exactly_the_losses_of_the_uninterrupted_run(pretrained):
    full = train_losses(pretrained / "out")
    resumed_dir, output = resume_run(pretrained, "same-blend", {"literal_weights_str": PRETRAIN_BLEND})
    assert "DATA MIX TRANSITION" not in output
    resumed = train_losses(resumed_dir)
    assert sorted(resumed) == [4, 5, 6]
    assert {step: full[step] for step in resumed} == resumed  # bit-for-bit, CPU 32-true


@pytest.mark.parametrize(
    "init_args",
    [
        {"literal_weights_str": "main/1:0.4,c1:0.3,m1:0.2,main/2:0.1"},
        {"literal_weights_str": "main/1:0.3,c1:0.5,m1:0.2"},
        {"literal_weights_str": "main/1:0.6,c1:0.4"},
        {"literal_weights_str": PRETRAIN_BLEND, "seed": 7},
    ],
    ids=["source-added", "weights-changed", "source-removed", "seed-changed"],
)
def test_midtraining_resumes_a_checkpoint_with_a_changed_blend(pretrained, init_args, request):
    out_dir, output = resume_run(pretrained, request.node.callspec.id, init_args)
    assert (
        "Resuming training from" in output and "===== DATA MIX TRANSITION: resuming after 12 samples per rank" in output
    )
    assert sorted(train_losses(out_dir)) == [4, 5, 6]
    before = read_data_position(pretrained / "out" / "step-00000003")["data"]
    after = read_data_position(out_dir / "step-00000006")
    assert (after["iter_num"], after["step_count"]) == (6, 6)
    state = after["data"]
    weights = dict(item.split(":") for item in init_args["literal_weights_str"].split(","))
    assert state["samples"] == 24 and sorted(state["taken"]) == sorted(weights)
    for source, weight in weights.items():  # the new blend, exactly, over the 12 samples since the switch
        assert abs(state["taken"][source] - float(weight) * 12) < 1
    for source, entry in state["sources"].items():  # persisting sources continue, new ones start at 0
        carried = before["sources"].get(source, {"draws": 0})["draws"]
        assert entry["draws"] == carried + state["taken"][source], source
    for source in set(before["sources"]) - set(weights):
        assert state["dropped"][source]["draws"] == before["sources"][source]["draws"]
    if init_args.get("seed") == 7:
        assert all(
            entry["pinned_order"] == {"epoch": 0, "seed": 42, "shuffle_window": 4}
            for entry in state["sources"].values()
        )


def test_warm_start_from_weights_only_starts_the_data_fresh(pretrained):
    weights_dir = pretrained / "warm-weights"
    subprocess.run(
        [LITGPT, "convert_pretrained_checkpoint", str(pretrained / "out" / "final"), str(weights_dir)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    run_dir = pretrained / "warm"
    run_dir.mkdir()
    config = pretrain_config(run_dir, {"data_path": "data", "literal_weights_str": "main/1:0.5,c1:0.5"})
    output = run_pretrain(config, pretrained, "--initial_checkpoint_dir", str(weights_dir))
    assert "DATA MIX TRANSITION" not in output
    state = read_data_position(run_dir / "out" / "step-00000006")["data"]
    assert state["samples"] == 24 and {source: entry["draws"] for source, entry in state["sources"].items()} == {
        "c1": 12,
        "main/1": 12,
    }


def test_a_shard_rewritten_since_the_checkpoint_stops_the_resume_unless_told_how(pretrained):
    import shutil

    import numpy as np
    from litgpt_runs import write_token_shard

    run_dir = pretrained / "rewritten"
    shutil.copytree(pretrained / "data", run_dir / "data")
    shutil.rmtree(run_dir / "data" / "train" / "c1")
    documents = [np.random.default_rng(1).integers(0, 1000, 400) for _ in range(30)]  # same size, new tokens
    write_token_shard(run_dir / "data" / "train" / "c1", documents, chunk_bytes=8000)
    config = pretrain_config(run_dir, {"data_path": str(run_dir / "data"), "literal_weights_str": PRETRAIN_BLEND})
    checkpoint = pretrained / "out" / "step-00000003" / "lit_model.pth"
    command = [LITGPT, "pretrain", "--config", str(config), "--resume", str(checkpoint)]
    refused = subprocess.run(command, cwd=pretrained, capture_output=True, text=True, timeout=600)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "on_data_change=error: 1 source(s) changed since the checkpoint" in output
    assert re.search(r"c1 \(.*rewritten/data/train/c1\): content [0-9a-f]{16} in the checkpoint", output)
    assert "iter 4 " not in output and not (run_dir / "out" / "step-00000006").exists()

    output = run_pretrain(config, pretrained, "--resume", str(checkpoint), "--data.on_data_change", "restart")
    assert "on_data_change=restart: 1 source(s) changed" in output and "starts over from its first block" in output
    state = read_data_position(run_dir / "out" / "step-00000006")["data"]
    before = read_data_position(checkpoint)["data"]
    assert state["sources"]["c1"]["draws"] == state["taken"]["c1"] - before["taken"]["c1"]  # from draw 0 at the resume
    assert state["sources"]["main/1"]["draws"] == state["taken"]["main/1"]  # untouched sources continue
