"""Every shipped YAML parses through LitGPT's own CLI parser with our data class, strictly."""

import functools
from pathlib import Path

import pytest
import yaml
from jsonargparse import capture_parser

from sharded_mix import SFTMixture, ShardedMixedDataset

ROOT = Path(__file__).resolve().parents[2]
SFT_CONFIGS = sorted((ROOT / "midtrain_configs" / "sft").rglob("*.yaml"))  # litgpt finetune_full configs
CONFIGS = sorted(
    path
    for path in (ROOT / "midtrain_configs").rglob("*.yaml")
    if path.name != "sweep.yaml" and path not in SFT_CONFIGS
)  # litgpt pretrain configs: not the sweep spec


@functools.cache
def litgpt_parser():
    from jsonargparse import CLI
    from litgpt.__main__ import PARSER_DATA

    return capture_parser(lambda: CLI(PARSER_DATA))


def parse(config: Path, command: str = "pretrain"):
    """``litgpt COMMAND --config CONFIG`` up to the point where training would start: parsed and instantiated."""
    parser = litgpt_parser()
    cfg = parser.parse_args([command, "--config", str(config)])
    return parser.instantiate_classes(cfg)[command]


def test_configs_exist():
    names = {path.relative_to(ROOT / "midtrain_configs").as_posix() for path in CONFIGS}
    assert {
        "pretrain/pythia-160m.yaml",
        "midtrain/math.yaml",
        "midtrain/code.yaml",
        "midtrain/instruct.yaml",
        "midtrain/knowledge_qa.yaml",
        "midtrain/web_only.yaml",
    } <= names
    assert {f"ablations/code_share/code-{share}.yaml" for share in (10, 30, 50, 80)} <= names
    assert {f"ablations/start_step/code-from-{k}k.yaml" for k in (20, 30, 40, 50)} <= names
    assert "stages/pythia-160m-three-stages.yaml" in names
    assert "sft/gsm8k-sciq.yaml" in {path.relative_to(ROOT / "midtrain_configs").as_posix() for path in SFT_CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.relative_to(ROOT / "midtrain_configs").as_posix())
def test_config_parses_with_litgpt_and_our_data_class(config):
    args = parse(config)
    assert isinstance(args.data, ShardedMixedDataset)
    assert args.data.mix_spec.weights  # the blend string was parsed and checked
    text = config.read_text()
    assert "/home/" not in text and "/Users/" not in text and "/scratch/" not in text
    for key in ("out_dir", "tokenizer_dir", "resume", "initial_checkpoint_dir"):
        value = args.get(key) if hasattr(args, "get") else getattr(args, key, None)
        assert not str(value or "").startswith("/"), (key, value)  # relative: no personal paths
    assert not str(args.data.data_path).startswith("/")


@pytest.mark.parametrize("config", SFT_CONFIGS, ids=lambda path: path.relative_to(ROOT / "midtrain_configs").as_posix())
def test_sft_config_parses_with_litgpt_finetune_full_and_sft_mixture(config):
    args = parse(config, "finetune_full")
    data = args.data
    assert isinstance(data, SFTMixture)
    assert isinstance(data.train_data, dict) and isinstance(data.val_data, dict)  # task files by name
    assert set(data.templates or {}) <= set(data.train_data) | set(data.val_data)  # templates name real tasks
    text = config.read_text()
    assert "/home/" not in text and "/Users/" not in text and "/scratch/" not in text
    paths = [args.checkpoint_dir, args.out_dir, *data.train_data.values(), *data.val_data.values()]
    paths += [data.replay_data_path] if data.replay_data_path else []
    assert not [path for path in paths if str(path).startswith("/")]  # relative: no personal paths


def test_midtraining_configs_resume_the_pretraining_run_at_its_step():
    pretrain = yaml.safe_load((ROOT / "midtrain_configs/pretrain/pythia-160m.yaml").read_text())
    for config in CONFIGS:
        if not {"midtrain", "ablations"} & set(config.relative_to(ROOT / "midtrain_configs").parts):
            continue
        midtrain = yaml.safe_load(config.read_text())
        assert midtrain["resume"].startswith(pretrain["out_dir"] + "/step-"), config
        assert midtrain["out_dir"] != pretrain["out_dir"]
        for key in ("max_tokens", "global_batch_size", "max_seq_length", "lr_warmup_steps", "min_lr"):
            assert midtrain["train"][key] == pretrain["train"][key], (config, key)  # the same schedule continues
        assert midtrain["optimizer"] == pretrain["optimizer"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["data"]["init_args"].update(mix_weight_str="main:1"), "mix_weight_str"),
        (lambda c: c["data"]["init_args"].update(seed="forty-two"), "seed"),
    ],
    ids=["unknown field", "mistyped value"],
)
def test_a_wrong_field_fails_the_parse(tmp_path, edit, message, capsys):
    config = yaml.safe_load((ROOT / "midtrain_configs/midtrain/math.yaml").read_text())
    edit(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises((SystemExit, ValueError)) as raised:
        parse(path)
    assert message in str(raised.value) + capsys.readouterr().err


def test_a_bad_blend_parses_and_is_refused_at_connect_in_one_line(tmp_path):
    """A value only our checks catch is raised where LitGPT connects the data module (before any step), not inside
    the parser, whose report would bury it under union subtypes."""
    config = yaml.safe_load((ROOT / "midtrain_configs/midtrain/math.yaml").read_text())
    config["data"]["init_args"].update(mix_weights_str="main:0.8,maths:0.2")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    data = parse(path)["data"]
    with pytest.raises(ValueError, match=r"^mix_weights_str: unknown type\(s\) \['maths'\]; known types are main, "):
        data.connect(batch_size=4, max_seq_length=64)
