"""`sharded-mix convert-config`: reference-fork configs rewritten for upstream LitGPT, parsed by LitGPT's own CLI."""

import copy
from pathlib import Path

import pytest
import yaml
from jsonargparse import CLI, capture_parser

from sharded_mix import ShardedMixedDataset
from sharded_mix.cli import main
from sharded_mix.tools.convert_config import convert_reference_config
from sharded_mix.training.schedules import SCHEDULE_ARGS, lr_schedule

REFERENCE_DATA = {
    "class_path": "litgpt.data.ShardedMixedDataset",
    "init_args": {
        "data_path": "data/mix",
        "mix_weights_str": "main:0.8,code:0.2",
        "mix_weight": 0.2,
        "val_split_fraction": 0.01,
        "fast_dev_run": False,
        "data_split": "train",
        "dataset_name": "fineweb",
        "num_samples": 1000,
        "num_val_samples": 100,
        "seed": 42,
        "num_workers": 2,
        "initial_sampling_rates": [0.5, 0.5],
    },
}


def reference(lr_scheduler: str, resume: str | None = None, drop: tuple[str, ...] = (), **train) -> dict:
    """A reference-fork config with every fork key: max_iters (the fork's sentinel), max_additional_steps,
    lr_scheduler, stable_steps, max_lr, max_seq_len, a train key upstream lacks, and the fork's data section."""
    config = {"model_name": "pythia-14m", "out_dir": "out/ref", "logs_dir": "out/ref", "precision": "bf16-true"}
    if resume is not None:
        config["resume"] = resume
    config["data"] = copy.deepcopy(REFERENCE_DATA)
    config["train"] = {
        "save_interval": 500,
        "log_interval": 10,
        "global_batch_size": 64,
        "micro_batch_size": 8,
        "max_seq_len": 512,
        "max_tokens": 300_000_000,
        "lr_warmup_steps": 100,
        "min_lr": 1e-6,
        "max_iters": 10_000_000,
        "max_additional_steps": 3000,
        "lr_scheduler": lr_scheduler,
        "stable_steps": 2400,
        "max_lr": 3e-4,
        "episode_length": 100,
        "max_norm": 1.0,
        **train,
    }
    for key in drop:
        del config["train"][key]
    config["eval"] = {"interval": 1000, "max_iters": 100, "final_validation": True}
    config["optimizer"] = {
        "class_path": "torch.optim.AdamW",
        "init_args": {"lr": 6e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8},
    }
    config.update(devices=4, logger_name="wandb", seed=42)
    return config


def expected(stop: dict, schedule: dict, resume: str | None = None, **train) -> dict:
    """The converted config: what every case shares, with its stop arg, schedule and train changes."""
    config = {"model_name": "pythia-14m", "out_dir": "out/ref", "precision": "bf16-true"}
    if resume is not None:
        config["resume"] = resume
    config["data"] = {
        "class_path": "sharded_mix.ShardedMixedDataset",
        "init_args": {
            "data_path": "data/mix",
            "mix_weights_str": "main:0.8,code:0.2",
            "seed": 42,
            "num_workers": 2,
            **stop,
        },
    }
    config["train"] = {
        "save_interval": 500,
        "log_interval": 10,
        "global_batch_size": 64,
        "micro_batch_size": 8,
        "max_seq_length": 512,
        "max_tokens": 300_000_000,
        "lr_warmup_steps": 100,
        "min_lr": 1e-6,
        "max_norm": 1.0,
    }
    config["train"].update(train)
    config["train"] = {key: value for key, value in config["train"].items() if value is not DROPPED}
    config["eval"] = {"interval": 1000, "max_iters": 100, "final_validation": True}
    config["optimizer"] = {
        "class_path": "sharded_mix.training.ScheduledAdamW",
        "init_args": {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, **schedule},
    }
    config.update(devices=4, logger_name="wandb", seed=42)
    return config


DROPPED = object()

DATA_NOTES = [
    "data.class_path: 'litgpt.data.ShardedMixedDataset' -> 'sharded_mix.ShardedMixedDataset' (upstream litgpt has no "
    "ShardedMixedDataset).",
    "data.init_args.mix_weight: 0.2 -> removed (a stale key: the fork's data module did not read it).",
    "data.init_args.val_split_fraction: 0.01 -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.fast_dev_run: False -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.data_split: 'train' -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.dataset_name: 'fineweb' -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.num_samples: 1000 -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.num_val_samples: 100 -> removed (reference-only: the fork's download helper read it).",
    "data.init_args.initial_sampling_rates: [0.5, 0.5] -> removed (sharded_mix.ShardedMixedDataset has no such init "
    "arg).",
]
ADDITIONAL_STEPS_NOTES = [
    "train.max_additional_steps: 3000 -> data.init_args.stop_after_steps: 3000 (the run trains 3,000 optimizer steps "
    "past the step it first resumes at, step 0 for a fresh run; no config edit between relaunches).",
    "train.max_iters: 10000000 -> removed (the fork replaced it by the resumed step + max_additional_steps).",
]
RENAMED = "train.max_seq_len: 512 -> train.max_seq_length: 512 (upstream's name)."
KEPT = [
    "train.lr_warmup_steps: 100 -> kept, harmless: the optimizer's schedule sets the LR of every step, not litgpt.",
    "train.min_lr: 1e-06 -> kept, harmless: the optimizer's schedule sets the LR of every step, not litgpt.",
]
EPISODE = "train.episode_length: 100 -> removed (litgpt's TrainArgs has no such field)."
MAX_LR = "train.max_lr: 0.0003 -> optimizer.init_args.lr: 0.0003 (the peak LR; it was 0.0006)."
ADAMW = (
    "optimizer: 'torch.optim.AdamW' -> 'sharded_mix.training.ScheduledAdamW' (AdamW that applies the schedule; "
    "init_args lr, weight_decay, betas, eps kept)."
)
STABLE_DROPPED = "train.stable_steps: 2400 -> removed (only lr_scheduler wsd used it)."
LOGS_DIR = "logs_dir: 'out/ref' -> removed (litgpt pretrain takes no logs_dir)."
RESUME = "out/pretrain/step-00040000/lit_model.pth"

CASES = {
    "cosine": (
        reference("cosine"),
        expected(
            {"stop_after_steps": 3000}, {"schedule": "cosine", "total_steps": 3000, "warmup_steps": 100, "min_lr": 1e-6}
        ),
        [
            *DATA_NOTES,
            *ADDITIONAL_STEPS_NOTES,
            RENAMED,
            *KEPT,
            EPISODE,
            MAX_LR,
            "train.lr_scheduler: 'cosine' -> optimizer.init_args.schedule: 'cosine'; total_steps 3,000 = step 0 (the "
            "run starts fresh) + max_additional_steps 3,000; warmup_steps 100 = train.lr_warmup_steps; min_lr 1e-06 = "
            "train.min_lr.",
            ADAMW,
            STABLE_DROPPED,
            LOGS_DIR,
        ],
    ),
    "cosine resumed": (
        reference("cosine", resume=RESUME),
        expected(
            {"stop_after_steps": 3000},
            {"schedule": "cosine", "total_steps": 43000, "warmup_steps": 100, "min_lr": 1e-6},
            resume=RESUME,
        ),
        [
            *DATA_NOTES,
            *ADDITIONAL_STEPS_NOTES,
            RENAMED,
            *KEPT,
            EPISODE,
            MAX_LR,
            "train.lr_scheduler: 'cosine' -> optimizer.init_args.schedule: 'cosine'; total_steps 43,000 = the resumed "
            "step 40,000 + max_additional_steps 3,000; warmup_steps 100 = train.lr_warmup_steps; min_lr 1e-06 = "
            "train.min_lr.",
            ADAMW,
            STABLE_DROPPED,
            LOGS_DIR,
        ],
    ),
    "wsd": (
        reference("wsd"),
        expected(
            {"stop_after_steps": 3000},
            {
                "schedule": "wsd",
                "total_steps": 3000,
                "warmup_steps": 100,
                "decay_start_step": 2500,
                "decay_shape": "linear",
                "min_lr": 1e-6,
            },
        ),
        [
            *DATA_NOTES,
            *ADDITIONAL_STEPS_NOTES,
            RENAMED,
            *KEPT,
            EPISODE,
            MAX_LR,
            "train.stable_steps: 2400 -> optimizer.init_args.decay_start_step: 2500 (warmup 100 + stable 2,400), with "
            "decay_shape linear to min_lr at step 3,000: an assumption, the fork's wsd decay shape was not found.",
            "train.lr_scheduler: 'wsd' -> optimizer.init_args.schedule: 'wsd'; total_steps 3,000 = step 0 (the run "
            "starts fresh) + max_additional_steps 3,000; warmup_steps 100 = train.lr_warmup_steps; decay_start_step "
            "2,500, decay_shape linear (see train.stable_steps); min_lr 1e-06 = train.min_lr.",
            ADAMW,
            LOGS_DIR,
        ],
    ),
    "decay": (
        reference("decay", resume=RESUME),
        expected(
            {"stop_after_steps": 3000},
            {"schedule": "decay", "decay_steps": 3000, "decay_shape": "exponential", "final_lr_ratio": 0.1},
            resume=RESUME,
        ),
        [
            *DATA_NOTES,
            *ADDITIONAL_STEPS_NOTES,
            RENAMED,
            *KEPT,
            EPISODE,
            MAX_LR,
            "train.lr_scheduler: 'decay' -> optimizer.init_args.schedule: 'decay'; decay_steps 3,000 = "
            "train.max_additional_steps; decay_shape exponential, final_lr_ratio 0.1: from the LR of the resumed "
            "checkpoint (step 40,000) to 10% of it (the paper's anneal); no warmup, as the fork's decay.",
            ADAMW,
            STABLE_DROPPED,
            LOGS_DIR,
        ],
    ),
    "constant": (
        reference("constant"),
        expected({"stop_after_steps": 3000}, {"schedule": "constant", "warmup_steps": 100}),
        [
            *DATA_NOTES,
            *ADDITIONAL_STEPS_NOTES,
            RENAMED,
            *KEPT,
            EPISODE,
            MAX_LR,
            "train.lr_scheduler: 'constant' -> optimizer.init_args.schedule: 'constant'; warmup_steps 100 = "
            "train.lr_warmup_steps.",
            ADAMW,
            STABLE_DROPPED,
            LOGS_DIR,
        ],
    ),
    # max_iters alone: micro-batches per GPU (64 / (4 GPUs x 8) = 2 a step) -> stop_at_step; max_tokens raised to
    # reach it.
    "cosine to max_iters": (
        reference(
            "cosine",
            drop=("max_additional_steps", "lr_warmup_steps", "min_lr"),
            max_iters=8000,
            max_tokens=100_000_000,
            lr_warmup_fraction=0.01,
        ),
        expected(
            {"stop_at_step": 4000},
            {"schedule": "cosine", "total_steps": 4000, "warmup_fraction": 0.01, "min_lr": 4e-5},
            lr_warmup_steps=DROPPED,
            min_lr=DROPPED,
            max_tokens=4000 * 64 * 512,
        ),
        [
            *DATA_NOTES,
            "train.max_iters: 8000 -> data.init_args.stop_at_step: 4000 (the fork's max_iters counted micro-batch "
            "iterations per GPU: 8,000 / 2 iterations per optimizer step).",
            RENAMED,
            EPISODE,
            "train.max_tokens: 100000000 -> 131072000 (the fork stopped at max_iters whatever max_tokens said; "
            "upstream litgpt ends the run at max_tokens, which must reach step 4,000).",
            MAX_LR,
            "train.lr_warmup_fraction: 0.01 -> optimizer.init_args.warmup_fraction: 0.01 (of total_steps 4,000: 40 "
            "warmup steps; the fork's was a fraction of one epoch of the training loader), removed from train (there "
            "it clashes with litgpt pretrain's default lr_warmup_steps).",
            "train.lr_scheduler: 'cosine' -> optimizer.init_args.schedule: 'cosine'; total_steps 4,000 = "
            "train.max_iters 8,000 / 2 iterations per step; warmup_fraction 0.01 = train.lr_warmup_fraction; min_lr "
            "4e-05 = litgpt pretrain's default.",
            ADAMW,
            STABLE_DROPPED,
            LOGS_DIR,
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_reference_config_converts_to_the_exact_config_and_notes(case):
    config, want, notes = CASES[case]
    before = copy.deepcopy(config)
    converted, got_notes = convert_reference_config(config)
    assert converted == want
    assert got_notes == notes
    assert config == before  # REF's dict is not changed
    assert list(converted) == [key for key in before if key != "logs_dir"]  # REF's key order


def litgpt_parse(path: Path):
    """``litgpt pretrain --config PATH`` up to training: parsed by LitGPT's CLI parser and instantiated."""
    from litgpt.__main__ import PARSER_DATA

    parser = capture_parser(lambda: CLI(PARSER_DATA))
    return parser.instantiate_classes(parser.parse_args(["pretrain", "--config", str(path)])).pretrain


@pytest.mark.parametrize("case", CASES)
def test_the_converted_config_parses_with_litgpt_and_its_schedule_validates(case, tmp_path):
    converted, _ = convert_reference_config(CASES[case][0])
    converted["data"]["init_args"]["data_path"] = str(tmp_path)  # instantiation reads nothing
    path = tmp_path / "converted.yaml"
    path.write_text(yaml.safe_dump(converted, sort_keys=False))
    args = litgpt_parse(path)
    assert isinstance(args.data, ShardedMixedDataset)
    stop = converted["data"]["init_args"]
    assert (args.data.stop_at_step, args.data.stop_after_steps) == (
        stop.get("stop_at_step"),
        stop.get("stop_after_steps"),
    )
    assert args.data.val_split_fraction is None and args.data.num_samples is None  # the reference-only args are gone
    assert args.train.max_seq_length == 512 and args.train.lr_warmup_fraction is None
    init_args = args.optimizer["init_args"]
    assert args.optimizer["class_path"] == "sharded_mix.training.ScheduledAdamW"
    schedule = lr_schedule(
        lr=init_args["lr"], **{key: value for key, value in init_args.items() if key in SCHEDULE_ARGS}
    )
    assert schedule.kind == converted["optimizer"]["init_args"]["schedule"]
    if schedule.kind == "wsd":
        assert schedule.decay_window() == (2500, 500)
    if schedule.kind == "cosine" and "stop_at_step" in stop:
        assert schedule.total_steps == stop["stop_at_step"] and schedule.warmup_steps == 40


def test_max_iters_needs_the_gpus_when_ref_leaves_them_to_the_launcher():
    config = reference("cosine", drop=("max_additional_steps",), max_iters=8000)
    config["devices"] = "auto"
    with pytest.raises(ValueError, match=r"train.max_iters is 8,000 micro-batch iterations per GPU.*--devices N"):
        convert_reference_config(config)
    converted, _ = convert_reference_config(config, devices=2)  # 64 / (2 GPUs x 8) = 4 iterations a step
    assert converted["data"]["init_args"]["stop_at_step"] == 2000
    assert converted["optimizer"]["init_args"]["total_steps"] == 2000


def test_a_cosine_over_max_additional_steps_needs_the_resumed_step():
    with pytest.raises(ValueError, match=r"resume does not say the step; pass --resume-from STEP"):
        convert_reference_config(reference("cosine", resume="auto"))
    converted, _ = convert_reference_config(reference("decay", resume="auto"))  # a decay needs only its length
    assert converted["optimizer"]["init_args"]["decay_steps"] == 3000


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c.update(optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}),
            r"optimizer is 'torch.optim.SGD' and train.lr_scheduler is 'wsd'.*AdamW only",
        ),
        (lambda c: c["data"].update(class_path="litgpt.data.TinyLlama"), r"data.class_path is 'litgpt.data.TinyLlama'"),
        (
            lambda c: c["train"].update(stable_steps=2900),
            r"train.stable_steps is 2,900: warmup 100 \+ stable 2,900 = step 3,000 leaves no step",
        ),
        (lambda c: c["train"].update(lr_scheduler="linear"), r"train.lr_scheduler is 'linear'"),
        (lambda c: c["train"].update(max_additional_steps=0), r"train.max_additional_steps is 0"),
    ],
    ids=["not AdamW", "another data module", "wsd without a decay", "unknown scheduler", "zero steps"],
)
def test_bad_reference_configs_fail_with_the_key_and_the_fix(edit, message):
    config = reference("wsd")
    edit(config)
    with pytest.raises(ValueError, match=message):
        convert_reference_config(config)


def test_without_lr_scheduler_litgpts_schedule_stays_and_max_lr_becomes_its_peak():
    config = reference("cosine", drop=("lr_scheduler", "lr_warmup_steps"), lr_warmup_fraction=0.01)
    converted, notes = convert_reference_config(config)
    assert converted["optimizer"] == {
        "class_path": "torch.optim.AdamW",
        "init_args": {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8},
    }
    assert converted["train"]["lr_warmup_fraction"] == 0.01 and converted["train"]["lr_warmup_steps"] is None
    assert (
        "train.lr_warmup_steps: unset -> None (else litgpt pretrain's default 2000 clashes with lr_warmup_fraction)."
        in notes
    )


def test_a_decay_drops_the_warmup_fraction_with_a_note():
    config = reference("decay", resume=RESUME, drop=("lr_warmup_steps",), lr_warmup_fraction=0.01)
    converted, notes = convert_reference_config(config)
    assert (
        "lr_warmup_fraction" not in converted["train"] and "warmup_fraction" not in converted["optimizer"]["init_args"]
    )
    assert "train.lr_warmup_fraction: 0.01 -> removed (the decay has no warmup, as the fork's)." in notes


REF_TEXT = """\
model_name: pythia-14m
out_dir: out/ref
logs_dir: out/ref
data:
  class_path: litgpt.data.ShardedMixedDataset
  init_args:
    data_path: {data_path}
    mix_weights_str: main:0.8,code:0.2
    val_split_fraction: 0.01
    mix_weight: 0.2
train:
  global_batch_size: 64
  micro_batch_size: 8
  max_seq_len: 512
  max_tokens: 300000000
  lr_warmup_steps: 100
  min_lr: 1e-6
  max_additional_steps: 3000
  lr_scheduler: decay
  max_lr: 3e-4
  max_norm: 1.0
optimizer:
  class_path: torch.optim.AdamW
  init_args: {{lr: 6e-4, weight_decay: 0.1, betas: [0.9, 0.95]}}
"""


@pytest.fixture
def ref(tmp_path) -> Path:
    path = tmp_path / "ref.yaml"
    path.write_text(REF_TEXT.format(data_path=tmp_path))
    return path


def test_cli_prints_the_yaml_to_stdout_and_the_changes_to_stderr(ref, capsys):
    assert main(["convert-config", str(ref)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# Converted from {ref} by sharded-mix convert-config.\n")
    converted = yaml.safe_load(out)
    assert list(converted) == ["model_name", "out_dir", "data", "train", "optimizer"]
    assert converted["train"]["min_lr"] == 1e-6  # `1e-6` read as the float jsonargparse reads
    assert converted["optimizer"]["init_args"] == {
        "lr": 3e-4,
        "weight_decay": 0.1,
        "betas": [0.9, 0.95],
        "schedule": "decay",
        "decay_steps": 3000,
        "decay_shape": "exponential",
        "final_lr_ratio": 0.1,
    }
    assert "betas: [0.9, 0.95]" in out
    lines = err.splitlines()
    assert lines[0] == "what changed (11):" and len(lines) == 12
    assert "  - train.max_additional_steps: 3000 -> data.init_args.stop_after_steps: 3000" in err
    assert "  - logs_dir: 'out/ref' -> removed (litgpt pretrain takes no logs_dir)." in lines


def test_cli_writes_out_refuses_to_overwrite_without_force_and_never_overwrites_ref(ref, tmp_path, capsys):
    out = tmp_path / "converted.yaml"
    assert main(["convert-config", str(ref), "-o", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout.startswith(f"wrote {out}\nwhat changed (11):\n") and err == ""
    assert litgpt_parse(out).data.stop_after_steps == 3000  # the written file is a working litgpt config

    out.write_text("# mine\n")
    assert main(["convert-config", str(ref), "-o", str(out)]) == 2
    assert f"error: {out} exists; pass --force to overwrite it." in capsys.readouterr().err
    assert out.read_text() == "# mine\n"
    assert main(["convert-config", str(ref), "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("# Converted from")

    ref_text = ref.read_text()
    assert main(["convert-config", str(ref), "-o", str(ref), "--force"]) == 2
    assert "is REF itself" in capsys.readouterr().err
    assert ref.read_text() == ref_text


def test_cli_reports_a_bad_reference_config_as_an_error(tmp_path, capsys):
    path = tmp_path / "ref.yaml"
    path.write_text(
        REF_TEXT.format(data_path=tmp_path)
        .replace("max_additional_steps: 3000", "max_iters: 8000")
        .replace("decay", "cosine")
    )
    assert main(["convert-config", str(path)]) == 2
    assert "pass --devices N" in capsys.readouterr().err
    assert main(["convert-config", str(path), "--devices", "4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["stop_at_step"] == 4000


# The reference repository's own configs, in their layout: empty model_config / initial_checkpoint_dir, min_lr
# written 1e-6, no devices, max_iters as a sentinel, betas as a block list. Their key combinations: resume true
# (the relaunch pattern) or false; a blend in mix_weights_str, literal_weights_str, mix_config_path, the stale
# mix_weight, or none; lr_scheduler cosine, or decay with stable_steps; lr_warmup_fraction and no max_lr.
FORK_TEXT = """\
# config.yaml

model_name: pythia-14m

model_config:

out_dir: out/fork/run

precision: bf16-true

initial_checkpoint_dir:

resume: {resume}

tokenizer_dir: checkpoints/EleutherAI/pythia-14m/

data:
  class_path: litgpt.data.ShardedMixedDataset
  init_args:
    data_path: {data_path}
    val_data_path: {data_path}/val/
    num_workers: 8
{blend}

# 61035 - 40000
train:
  max_iters: 10000000
  max_additional_steps: {extra}
  micro_batch_size: 16
  global_batch_size: 1024
  log_interval: 10
  save_interval: 2000
  min_lr: 1e-6
  lr_scheduler: "{scheduler}"
  lr_warmup_fraction: 0.1
{stable}
eval:
  interval: 1000

optimizer:
  class_path: torch.optim.AdamW

  init_args:
    weight_decay: 0.1

    betas:
      - 0.9
      - 0.95

logger_name: wandb
"""
MIX_FILE = '{"weights": {"main": 0.88, "math": 0.12, "code": 0}}'  # the fork's mix file format
COSINE_61035 = {"schedule": "cosine", "total_steps": 61035, "warmup_fraction": 0.1, "min_lr": 1e-6}

# case -> (resume, blend line, lr_scheduler, max_additional_steps, stable_steps line, --resume-from,
#          the converted resume, its blend fields, its schedule args, whether a WARNING says it is single-source)
FORK_CASES = {
    "relaunch, mix_weights_str, --resume-from STEP": (
        "true",
        '    mix_weights_str: "main:0.8,code:0.2"',
        "cosine",
        21035,
        "",
        "40000",
        "out/fork/run/step-00040000/lit_model.pth",
        {"mix_weights_str": "main:0.8,code:0.2"},
        COSINE_61035,
        False,
    ),
    "relaunch, literal_weights_str, --resume-from PATH": (
        "true",
        '    literal_weights_str: "main/1:0.80,q4:0.15,q1:0.05"',
        "cosine",
        21035,
        "",
        "out/pretrain/step-00040000/lit_model.pth",
        "out/pretrain/step-00040000/lit_model.pth",
        {"literal_weights_str": "main/1:0.80,q4:0.15,q1:0.05"},
        COSINE_61035,
        False,
    ),
    "relaunch, mix_config_path, --resume-from a step directory": (
        "true",
        "    mix_config_path: {data_path}/mix.json",
        "cosine",
        11035,
        "",
        "out/pretrain/step-00050000",
        "out/pretrain/step-00050000/lit_model.pth",
        {"mix_config_path": "{data_path}/mix.json"},
        COSINE_61035,
        False,
    ),
    "relaunch, stale mix_weight: single-source": (
        "true",
        "    mix_weight: 0.12",
        "cosine",
        1035,
        "",
        "60000",
        "out/fork/run/step-00060000/lit_model.pth",
        {},
        COSINE_61035,
        True,
    ),
    "from scratch, no blend, --resume-from auto": (
        "true",
        "",
        "cosine",
        61035,
        "",
        "auto",
        "auto",
        {},
        COSINE_61035,
        False,
    ),
    "fresh, literal_weights_str, resume false": (
        "false",
        '    literal_weights_str: "main/1:0.80,q4:0.20"',
        "cosine",
        21035,
        "",
        None,
        False,
        {"literal_weights_str": "main/1:0.80,q4:0.20"},
        {**COSINE_61035, "total_steps": 21035},
        False,
    ),
    "fresh decay with stable_steps, no blend": (
        "false",
        "",
        "decay",
        61035,
        "  stable_steps: 10000000",
        None,
        False,
        {},
        {"schedule": "decay", "decay_steps": 61035, "decay_shape": "exponential", "final_lr_ratio": 0.1},
        False,
    ),
}
BLEND_FIELDS = ("mix_weights_str", "literal_weights_str", "mix_config_path")


@pytest.mark.parametrize("case", FORK_CASES)
def test_every_key_combination_of_the_reference_repo_converts_and_litgpt_parses_it(case, tmp_path, capsys):
    resume, blend, scheduler, extra, stable, resume_from, want_resume, want_blend, want_schedule, single = FORK_CASES[
        case
    ]
    (tmp_path / "mix.json").write_text(MIX_FILE)
    ref, out = tmp_path / "ref.yaml", tmp_path / "out.yaml"
    ref.write_text(
        FORK_TEXT.format(
            resume=resume,
            data_path=tmp_path,
            blend=blend.format(data_path=tmp_path),
            extra=extra,
            scheduler=scheduler,
            stable=stable,
        )
    )
    options = [] if resume_from is None else ["--resume-from", resume_from]
    assert main(["convert-config", str(ref), "-o", str(out), *options]) == 0
    printed = capsys.readouterr().out.splitlines()

    converted = yaml.safe_load(out.read_text())
    assert converted["resume"] == want_resume
    assert list(converted)[:7] == [
        "model_name",
        "model_config",
        "out_dir",
        "precision",
        "initial_checkpoint_dir",
        "resume",
        "tokenizer_dir",
    ]
    init_args = converted["data"]["init_args"]
    assert {key: init_args[key] for key in BLEND_FIELDS if key in init_args} == {
        key: value.format(data_path=tmp_path) for key, value in want_blend.items()
    }
    assert init_args["stop_after_steps"] == extra and "mix_weight" not in init_args
    optimizer = converted["optimizer"]["init_args"]
    assert {key: optimizer[key] for key in want_schedule} == want_schedule
    assert optimizer["lr"] == 3e-4 if scheduler == "cosine" else "lr" not in optimizer  # the fork's default max_lr

    args = litgpt_parse(out)  # LitGPT's own parser accepts it, and the data class and schedule validate
    assert str(args.resume) == str(want_resume) if want_resume is not False else args.resume is False
    assert args.data.stop_after_steps == extra
    assert {key: str(getattr(args.data, key)) for key in BLEND_FIELDS if getattr(args.data, key) is not None} == {
        key: value.format(data_path=tmp_path) for key, value in want_blend.items()
    }
    init = args.optimizer["init_args"]
    lr_schedule(lr=init.get("lr", 1e-3), **{key: value for key, value in init.items() if key in SCHEDULE_ARGS})

    warnings = [line for line in printed if line.startswith("WARNING: ")]
    assert printed[0] == f"wrote {out}" and printed[1] == f"what changed ({len(printed) - 2 - len(warnings)}):"
    if single:
        assert warnings == [
            "WARNING: the converted config is a single-source run (main only): REF's blend key "
            "data.init_args.mix_weight: 0.12 was never read by the fork's data module, and REF sets none of "
            "mix_weights_str, literal_weights_str, mix_config_path. To train on a blend, set "
            "data.init_args.mix_weights_str, e.g. 'main:0.88,TYPE:0.12' (TYPE: code, math, instruct, qa, web, ...)."
        ]
        assert printed[-1] == warnings[0]  # the last thing printed
    else:
        assert warnings == []


def test_resume_from_a_step_is_that_checkpoint_in_out_dir_and_the_notes_say_how_to_relaunch():
    config = reference("cosine", resume=True)
    with pytest.raises(
        ValueError, match=r"resume does not say the step; pass --resume-from STEP .* or --resume-from auto"
    ):
        convert_reference_config(config)
    converted, notes = convert_reference_config(config, resume_from=40000)
    assert converted["resume"] == "out/ref/step-00040000/lit_model.pth"
    assert converted["optimizer"]["init_args"]["total_steps"] == 43000
    assert converted["data"]["init_args"]["stop_after_steps"] == 3000
    assert (
        "resume: True -> 'out/ref/step-00040000/lit_model.pth' (--resume-from 40000: the step-* checkpoint in out_dir "
        "the fork's resume: true found, step 40,000; the stop and the LR schedule count from it; relaunch an "
        "interrupted run with `litgpt pretrain --config OUT.yaml --resume auto` once it has written a checkpoint: it "
        "continues from the newest one in out_dir, as the fork's resume: true did, and stops at the same step)."
        in notes
    )
    assert list(converted) == [key for key in config if key != "logs_dir"]  # resume where REF has it
    converted, _ = convert_reference_config(reference("cosine"), resume_from=40000)  # REF without resume
    assert list(converted)[:3] == ["model_name", "out_dir", "resume"]


def test_resume_from_auto_starts_the_schedule_at_step_0_and_says_when_to_give_a_step_instead():
    converted, notes = convert_reference_config(reference("cosine", resume=True), resume_from="auto")
    assert converted["resume"] == "auto" and converted["optimizer"]["init_args"]["total_steps"] == 3000
    note = next(note for note in notes if note.startswith("resume:"))
    assert note.startswith("resume: True -> 'auto' (--resume-from auto: the run starts fresh, so its stop and LR")
    assert "if REF is a relaunch config" in note and "pass --resume-from with that step instead" in note


@pytest.mark.parametrize(
    "edit, resume_from, message",
    [
        (lambda c: None, "0", r"--resume-from 0: no checkpoint is written at step 0; .* pass --resume-from auto"),
        (lambda c: None, "out/x/lit_model.pth", r"--resume-from 'out/x/lit_model.pth' is in no step-NNNNNNNN dir"),
        (lambda c: c.pop("out_dir"), "40000", r"--resume-from 40000: REF's out_dir is None.*--resume-from out/run/"),
        (
            lambda c: c.update(initial_checkpoint_dir="checkpoints/p"),
            "40000",
            r"with REF's initial_checkpoint_dir 'checkpoints/p': litgpt pretrain takes one of them",
        ),
    ],
    ids=["step 0", "no step directory", "no out_dir", "initial_checkpoint_dir too"],
)
def test_a_bad_resume_from_fails_with_the_value_and_the_fix(edit, resume_from, message):
    config = reference("cosine", resume=True)
    edit(config)
    with pytest.raises(ValueError, match=message):
        convert_reference_config(config, resume_from=resume_from)


def test_a_fresh_decay_starts_from_the_configured_lr_and_a_resumed_one_from_the_checkpoints():
    _, fresh = convert_reference_config(reference("decay"))
    schedule_note = next(note for note in fresh if note.startswith("train.lr_scheduler:"))
    assert "from the configured LR (the optimizer's lr, 0.0003; a fresh run) to 10% of it" in schedule_note
    assert "resumed" not in schedule_note
    _, resumed = convert_reference_config(reference("decay", resume=True), resume_from=RESUME)
    schedule_note = next(note for note in resumed if note.startswith("train.lr_scheduler:"))
    assert "from the LR of the resumed checkpoint (step 40,000) to 10% of it" in schedule_note


def test_a_cosine_without_max_lr_peaks_at_the_forks_default_max_lr():
    converted, notes = convert_reference_config(reference("cosine", drop=("max_lr",)))
    assert converted["optimizer"]["init_args"]["lr"] == 3e-4  # not REF's optimizer lr 6e-4: the fork ignored it
    assert (
        "train.max_lr: unset -> optimizer.init_args.lr: 0.0003 (the fork's cosine peaked at train.max_lr, default "
        "0.0003, whatever the optimizer's lr; it was 0.0006)." in notes
    )
    converted, _ = convert_reference_config(reference("constant", drop=("max_lr",)))
    assert converted["optimizer"]["init_args"]["lr"] == 6e-4


def test_a_stale_blend_beside_a_real_one_warns_nothing():
    _, notes = convert_reference_config(reference("cosine"))  # REFERENCE_DATA has mix_weight and mix_weights_str
    assert not [note for note in notes if note.startswith("WARNING")]


def test_a_mix_file_missing_here_is_a_warning(tmp_path):
    config = reference("cosine")
    config["data"]["init_args"] = {"data_path": "data/mix", "mix_config_path": str(tmp_path / "gone.json")}
    _, notes = convert_reference_config(config)
    assert notes[-1].startswith(f"WARNING: data.init_args.mix_config_path '{tmp_path / 'gone.json'}' does not exist")
