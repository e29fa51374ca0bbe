"""``sharded-mix sweep``: the paper's spec expands to exactly the paper's runs, the shipped tree is what it generates,
bad specs are refused, and every shipped config is one ``litgpt pretrain`` accepts."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml

from sharded_mix.cli import main
from sharded_mix.tools.sweep import expand_sweep, load_spec, sweep_files
from sharded_mix.tools.sweep_spec import EXPERIMENT_KEYS, PHASES, PLACEHOLDERS, SPEC_KEYS

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "midtrain_configs" / "paper"
SPEC = PAPER / "sweep.yaml"
STEPS = 61035
MODELS = {"pythia-70m": 16, "pythia-160m": 16, "pythia-410m": 8, "pythia-1b": 4}

# run name -> (phase, blend, parent, start step, stop step)
PAPER_RUNS = {
    "pretrain": ("pretrain", "main:1", None, None, STEPS),
    "pretrain-stable": ("pretrain", "main:1", None, None, 50000),
    "math-12-from-20k": ("midtrain", "main:0.88,math:0.12", "pretrain", 20000, STEPS),
    **{
        f"code-20-from-{k}k": ("midtrain", "main:0.8,code:0.2", "pretrain", k * 1000, STEPS)
        for k in (6, 10, 20, 30, 40, 50)
    },
    "code-10-from-40k": ("midtrain", "main:0.9,code:0.1", "pretrain", 40000, STEPS),
    "code-30-from-40k": ("midtrain", "main:0.7,code:0.3", "pretrain", 40000, STEPS),
    "code-50-from-40k": ("midtrain", "main:0.5,code:0.5", "pretrain", 40000, STEPS),
    "code-80-from-40k": ("midtrain", "main:0.2,code:0.8", "pretrain", 40000, STEPS),
    "instruct-5-from-40k": ("midtrain", "main:0.95,instruct:0.05", "pretrain", 40000, STEPS),
    "instruct-15-from-40k": ("midtrain", "main:0.85,instruct:0.15", "pretrain", 40000, STEPS),
    "knowledge-qa-from-40k": (
        "midtrain",
        "literal main/1:0.80,q4:0.15,q1:0.03,q2:0.015,q3:0.005",
        "pretrain",
        40000,
        STEPS,
    ),
    "web-20-from-40k": ("midtrain", "main:0.8,web:0.2", "pretrain", 40000, STEPS),
    "code-100-from-40k": ("midtrain", "code:1", "pretrain", 40000, STEPS),
    "math-100-from-56k": ("midtrain", "math:1", "pretrain", 56000, STEPS),
    **{f"decay-{n}-from-40k": ("decay", "main:1", "pretrain-stable", 40000, 40000 + n) for n in (200, 4500, 10000)},
}
ADAMW = {"lr": 3.0e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]}
COSINE = {**ADAMW, "schedule": "cosine", "total_steps": STEPS, "warmup_fraction": 0.1, "min_lr": 1.0e-6}


@pytest.fixture(scope="module")
def runs():
    return expand_sweep(load_spec(SPEC))


def blend_of(data_args: dict) -> str:
    return (
        data_args["mix_weights_str"]
        if "mix_weights_str" in data_args
        else f"literal {data_args['literal_weights_str']}"
    )


def described(run) -> tuple:
    """What the config itself says: phase, blend, the run it resumes, the step it resumes at, the step it stops at."""
    config, data_args = run.config, run.config["data"]["init_args"]
    parent = start = None
    if "resume" in config:
        match = re.fullmatch(rf"out/paper/{run.model}/([\w-]+)/step-(\d{{8}})/lit_model\.pth", config["resume"])
        parent, start = match[1], int(match[2])
    stop = data_args["stop_at_step"] if "stop_at_step" in data_args else start + data_args["stop_after_steps"]
    return run.phase, blend_of(data_args), parent, start, stop


def test_the_paper_spec_expands_to_exactly_the_paper_runs(runs):
    assert [run.model for run in runs][:: len(PAPER_RUNS)] == list(MODELS)
    for model in MODELS:
        mine = {run.name: described(run) for run in runs if run.model == model}
        assert mine == PAPER_RUNS, model
    counts = {phase: sum(run.phase == phase for run in runs) for phase in ("pretrain", "midtrain", "decay")}
    assert counts == {"pretrain": 8, "midtrain": 68, "decay": 12}
    assert len(SPEC.read_text().splitlines()) <= 100  # the spec stays small enough to read


def test_every_run_has_the_paper_settings(runs):
    assert STEPS * 1024 * 2048 == 127_999_672_320
    for run in runs:
        config = run.config
        assert config["model_name"] == run.model
        assert config["out_dir"] == f"out/paper/{run.model}/{run.name}"
        assert config["tokenizer_dir"] == f"checkpoints/EleutherAI/{run.model}"
        assert run.path == f"midtrain_configs/paper/{run.model}/{run.name}.yaml"
        assert (config["devices"], config["num_nodes"], config["precision"], config["seed"], config["logger_name"]) == (
            8,
            1,
            "bf16-true",
            42,
            "csv",
        )
        assert config["train"] == {
            "save_interval": 2000,
            "log_interval": 10,
            "global_batch_size": 1024,
            "micro_batch_size": MODELS[run.model],
            "max_tokens": 127_999_672_320,
            "max_seq_length": 2048,
            "max_norm": 1.0,
            "tie_embeddings": False,
        }
        assert config["eval"] == {
            "interval": 1000,
            "max_iters": 100,
            "initial_validation": False,
            "final_validation": True,
        }
        data = config["data"]
        assert data["class_path"] == "sharded_mix.ShardedMixedDataset"
        assert {key: data["init_args"][key] for key in ("data_path", "seed", "num_workers")} == {
            "data_path": "data/paper",
            "seed": 42,
            "num_workers": 8,
        }
        assert ("stop_at_step" in data["init_args"]) != ("stop_after_steps" in data["init_args"])
        assert config["optimizer"]["class_path"] == "sharded_mix.training.ScheduledAdamW"


def test_optimizer_schedules(runs):
    for run in runs:
        init_args = run.config["optimizer"]["init_args"]
        if run.phase == "decay":
            n = run.config["data"]["init_args"]["stop_after_steps"]
            assert init_args == {
                **ADAMW,
                "schedule": "decay",
                "decay_steps": n,
                "decay_shape": "exponential",
                "final_lr_ratio": 0.1,
            }
        elif run.name == "pretrain-stable":
            assert init_args == {**COSINE, "schedule": "constant"}
        else:
            assert init_args == COSINE  # midtraining continues the pretraining cosine


def test_a_start_step_always_has_a_checkpoint_of_its_parent(runs):
    by_name = {(run.model, run.name): run for run in runs}
    for run in runs:
        if run.parent is not None:
            parent = by_name[run.model, run.parent]
            assert run.start_step % parent.config["train"]["save_interval"] == 0
            assert run.start_step < parent.stop_step and run.start_step < run.stop_step
            assert run.config["resume"].startswith(parent.config["out_dir"] + "/")


def test_headers_say_how_to_regenerate_what_the_run_is_and_how_to_run_it(runs):
    files = sweep_files(runs)
    text = files["pythia-160m/code-20-from-6k.yaml"]
    header = text.splitlines()[:4]
    assert (
        header[0]
        == "# Generated by `sharded-mix sweep midtrain_configs/paper/sweep.yaml`: edit the spec, not this file."
    )
    assert "resumes pretrain at step 6,000 on main:0.8,code:0.2" in header[1] and "stops at step 61,035" in header[1]
    assert header[2] == "# Run: litgpt pretrain --config midtrain_configs/paper/pythia-160m/code-20-from-6k.yaml"
    assert "bash training_scripts/submit.sh midtrain_configs/paper/midtrain.txt" in header[3]
    assert "only feeds the decay runs" in files["pythia-1b/pretrain-stable.yaml"]
    assert yaml.safe_load(text) == next(run.config for run in runs if run.file == "pythia-160m/code-20-from-6k.yaml")


def test_config_lists_one_per_phase_in_a_stable_order(runs):
    files = sweep_files(runs)
    for phase, count in (("pretrain", 8), ("midtrain", 68), ("decay", 12)):
        lines = [line for line in files[f"{phase}.txt"].splitlines() if line and not line.startswith("#")]
        assert lines == [run.path for run in runs if run.phase == phase]
        assert len(lines) == count and all((ROOT / line).is_file() for line in lines)
    assert files["pretrain.txt"].splitlines()[2:4] == [
        "midtrain_configs/paper/pythia-70m/pretrain.yaml",
        "midtrain_configs/paper/pythia-70m/pretrain-stable.yaml",
    ]


def test_check_passes_on_the_shipped_tree_and_fails_after_an_edit(tmp_path, capsys):
    assert main(["sweep", str(SPEC), "--check"]) == 0
    assert "up to date: 88 configs for 4 models: pretrain 8, midtrain 68, decay 12" in capsys.readouterr().out

    copy_dir = tmp_path / "paper"
    shutil.copytree(PAPER, copy_dir)
    edited = copy_dir / "pythia-410m" / "math-12-from-20k.yaml"
    edited.write_text(edited.read_text().replace("micro_batch_size: 8", "micro_batch_size: 16"))
    (copy_dir / "decay.txt").unlink()
    stale = copy_dir / "pythia-70m" / "old-run.yaml"
    stale.write_text((copy_dir / "pythia-70m" / "pretrain.yaml").read_text())
    mine = copy_dir / "pythia-70m" / "my-notes.yaml"  # not generated: left alone
    mine.write_text("note: mine\n")
    before = {path: path.read_text() for path in copy_dir.rglob("*") if path.is_file()}

    assert main(["sweep", str(copy_dir / "sweep.yaml"), "--check"]) == 1
    out = capsys.readouterr().out
    assert (
        f"{edited}: differs" in out
        and f"{copy_dir / 'decay.txt'}: missing" in out
        and f"{stale}: generated, but the spec no longer has it" in out
    )
    assert "3 file(s)" in out and "my-notes" not in out
    assert {
        path: path.read_text() for path in copy_dir.rglob("*") if path.is_file()
    } == before  # --check writes nothing

    assert main(["sweep", str(copy_dir / "sweep.yaml")]) == 0
    assert "2 written, 89 unchanged, 1 removed" in capsys.readouterr().out
    assert not stale.exists() and mine.exists()
    assert main(["sweep", str(copy_dir / "sweep.yaml"), "--check"]) == 0


def test_out_writes_elsewhere_and_its_lists_and_headers_name_the_files_written_there(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(SPEC), "--out", "gen"]) == 0
    assert "91 written" in capsys.readouterr().out
    for phase, count in (("pretrain", 8), ("midtrain", 68), ("decay", 12)):
        text = (tmp_path / "gen" / f"{phase}.txt").read_text()
        listed = [line for line in text.splitlines() if not line.startswith("#")]
        assert len(listed) == count and all(line.startswith("gen/pythia-") for line in listed)
        assert all((tmp_path / line).is_file() for line in listed)  # each names a file the sweep wrote
        assert f"bash training_scripts/submit.sh gen/{phase}.txt" in text
    written = (tmp_path / "gen" / "pythia-1b" / "decay-200-from-40k.yaml").read_text()
    shipped = (PAPER / "pythia-1b" / "decay-200-from-40k.yaml").read_text()
    assert yaml.safe_load(written) == yaml.safe_load(shipped)  # the same config
    header = written.splitlines()[:4]
    assert header[0] == f"# Generated by `sharded-mix sweep {SPEC} --out gen`: edit the spec, not this file."
    assert header[2] == "# Run: litgpt pretrain --config gen/pythia-1b/decay-200-from-40k.yaml"
    assert header[3].endswith("bash training_scripts/submit.sh gen/decay.txt")

    assert main(["sweep", str(SPEC), "--out", "gen", "--check"]) == 0
    assert "up to date: 88 configs" in capsys.readouterr().out
    assert main(["sweep", str(SPEC), "--out", "gen"]) == 0
    assert "0 written, 91 unchanged, 0 removed" in capsys.readouterr().out


def test_out_naming_the_specs_own_folder_writes_what_the_spec_names(tmp_path, capsys):
    copy_dir = tmp_path / "paper"
    shutil.copytree(PAPER, copy_dir)
    assert main(["sweep", str(copy_dir / "sweep.yaml"), "--out", str(copy_dir), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_help_documents_every_spec_key_and_placeholder(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["sweep", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for key in SPEC_KEYS + EXPERIMENT_KEYS:
        assert re.search(rf"^ +{key} +\S", text, re.MULTILINE), key  # a line of its own that says what it is
    assert all("{" + placeholder + "}" in text for placeholder in PLACEHOLDERS)
    assert all(phase in text for phase in PHASES) and "stop_at_step" in text and "stop_after_steps" in text
    assert "sharded_mix/tools" not in text  # no source file to read


BAD_SPECS = {
    "unknown top-level key": (lambda s: s.update(model={}), "unknown key 'model'"),
    "unknown experiment key": (lambda s: s["experiments"][0].update(stages=[]), "experiments[0]: unknown key 'stages'"),
    "empty start steps": (lambda s: s["experiments"][2].update(start_steps=[]), "experiments[2].start_steps is []"),
    "empty blends": (lambda s: s["experiments"][2].update(blends={}), "experiments[2].blends is {}"),
    "empty models": (lambda s: s.update(models={}), "models is {}"),
    "empty experiments": (lambda s: s.update(experiments=[]), "experiments is []"),
    "duplicate names": (
        lambda s: s["experiments"][3].update(name="code-from-40k"),
        "gives 'code-from-40k' for pythia-70m, a name an earlier run has",
    ),
    "name clash across experiments": (
        lambda s: s["experiments"][4]["blends"].update({"code-20": "main:0.8,code:0.2"}),
        "'code-20-from-40k'",
    ),
    "start not at a checkpoint": (
        lambda s: s["experiments"][2].update(start_steps=[21000]),
        "start step 21,000 is not a multiple of pretrain's train.save_interval 2,000",
    ),
    "start at the stop step": (
        lambda s: s["experiments"][2].update(start_steps=[62000]),
        "start step 62,000 is not before pretrain's stop step 61,035",
    ),
    "start after the parent stops": (
        lambda s: s["experiments"][-1].update(start_steps=[50000]),
        "start step 50,000 is not before pretrain-stable's stop step 50,000",
    ),
    "stop before start": (
        lambda s: s["experiments"][2].update(data={"stop_at_step": 10000}),
        "start step 20,000 is not before the run's stop step 10,000",
    ),
    "stop past max_tokens": (
        lambda s: s["experiments"][0].update(data={"stop_at_step": 70000}),
        "train.max_tokens is 127,999,672,320",
    ),
    "no stop step": (lambda s: s["defaults"]["data"]["init_args"].pop("stop_at_step"), "give exactly one"),
    "stop step not a number": (
        lambda s: s["experiments"][1]["data"].update(stop_at_step="50k"),
        "data.init_args.stop_at_step is '50k'",
    ),
    "two stop steps": (
        lambda s: s["experiments"][-1]["data"].pop("stop_at_step"),
        "stop_at_step 61035 and stop_after_steps 200",
    ),
    "unknown parent": (
        lambda s: s["experiments"][2].update(parent="pretrain-long"),
        "parent 'pretrain-long' is not a run of an earlier experiment",
    ),
    "pretrain with a parent": (
        lambda s: s["experiments"][0].update(parent="pretrain"),
        "a pretrain run starts from scratch",
    ),
    "midtrain without start steps": (lambda s: s["experiments"][2].pop("start_steps"), "give start_steps"),
    "decay without lengths": (lambda s: s["experiments"][-1].pop("decay_steps"), "decay_steps is missing"),
    "unknown phase": (
        lambda s: s["experiments"][0].update(phase="anneal"),
        "experiments[0].phase is 'anneal'; use one of pretrain, midtrain, decay",
    ),
    "unknown placeholder": (lambda s: s["experiments"][2].update(name="{blend}-at-{step}"), "uses {step}"),
    "placeholder without a value": (
        lambda s: s["experiments"][0].update(name="pretrain-{start_k}k"),
        "uses {start_k}, which this run has no value for",
    ),
    "resume set by hand": (lambda s: s["defaults"].update(resume="auto"), "defaults.resume is set"),
    "bad schedule args": (
        lambda s: s["experiments"][-1]["optimizer"].pop("total_steps"),
        "(pythia-70m decay-200-from-40k): optimizer.init_args: ",
    ),
}


@pytest.mark.parametrize("edit, message", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_are_refused(edit, message):
    spec = load_spec(SPEC)
    edit(spec)
    with pytest.raises(ValueError) as raised:
        expand_sweep(spec)
    assert message in str(raised.value)


def test_the_command_reports_a_bad_spec(tmp_path, capsys):
    spec = load_spec(SPEC)
    spec["experiments"][2]["start_steps"] = [21000]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path)]) == 2
    assert (
        "error: experiments[2] (pythia-70m math-12-from-21k): start step 21,000 is not a multiple"
        in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == [path]


@pytest.fixture(scope="module")
def litgpt_parser():
    from jsonargparse import CLI, capture_parser
    from litgpt.__main__ import PARSER_DATA

    return capture_parser(lambda: CLI(PARSER_DATA))


SHIPPED = sorted(path for path in PAPER.glob("*/*.yaml"))


def test_every_generated_config_is_shipped(runs):
    assert [path.relative_to(PAPER).as_posix() for path in SHIPPED] == sorted(run.file for run in runs)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.relative_to(PAPER).as_posix())
def test_shipped_config_parses_with_litgpt_pretrain(path, litgpt_parser):
    from sharded_mix import ShardedMixedDataset
    from sharded_mix.training.schedules import SCHEDULE_ARGS, lr_schedule

    config = yaml.safe_load(path.read_text())
    args = litgpt_parser.instantiate_classes(litgpt_parser.parse_args(["pretrain", "--config", str(path)])).pretrain
    data = args.data
    assert isinstance(data, ShardedMixedDataset)
    assert (data.stop_at_step, data.stop_after_steps) == tuple(
        config["data"]["init_args"].get(key) for key in ("stop_at_step", "stop_after_steps")
    )
    assert str(args.resume) == config.get("resume", "False")
    assert args.train.micro_batch_size == MODELS[config["model_name"]]
    init_args = copy.deepcopy(config["optimizer"]["init_args"])
    schedule = lr_schedule(**{key: value for key, value in init_args.items() if key in SCHEDULE_ARGS})
    assert schedule.kind == init_args["schedule"]
