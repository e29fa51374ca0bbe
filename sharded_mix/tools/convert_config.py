"""``sharded-mix convert-config``: a reference-fork ``litgpt pretrain`` config rewritten for upstream LitGPT.

The run's sizes and stop step are read in ``convert_run``, its LR schedule in ``convert_schedule``; this module
converts the sections, the fork's ``resume: true`` (with ``--resume-from``) and reads and writes the files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from sharded_mix.config import DATA_CLASS, STEP_DIR, checkpoint_step
from sharded_mix.data_config import REFERENCE_ONLY_ARGS
from sharded_mix.tools.convert_run import (
    ReferenceRun,
    known_only,
    run_of,
    stop_args,
    upstream,
    whole,
)
from sharded_mix.tools.convert_schedule import peak_lr_only, scheduled_optimizer

WARNING = "WARNING: "
"""The start of a note that needs action: the converted config runs, but not as REF meant."""
STALE_DATA_ARGS = ("mix_weight",)
"""Data init args of older fork configs that nothing read any more (``mix_weight``: an older blend key)."""
BLEND_ARGS = ("mix_weights_str", "literal_weights_str", "mix_config_path", "proportional_sampling", "stages")
"""Data init args that give the blend; without any of them the run reads ``main`` only."""
FORK_TRAIN_KEYS = ("max_iters", "max_additional_steps", "lr_scheduler", "stable_steps", "max_lr")
"""Fork train keys that move elsewhere (data stop args, the optimizer's schedule)."""
LITGPT_LR_KEYS = ("lr_warmup_steps", "min_lr")
"""Train keys that only shape LitGPT's own LR, which ``ScheduledAdamW`` overrides: harmless to keep."""
RELAUNCH = (
    "relaunch an interrupted run with `litgpt pretrain --config OUT.yaml --resume auto` once it has written a "
    "checkpoint: it continues from the newest one in out_dir, as the fork's resume: true did, and stops at the "
    "same step"
)


def resume_of(config: dict, resume_from, notes: list[str]) -> tuple[object, int | None]:
    """The ``resume`` of the converted config and the step the run starts from (None: REF does not say).

    ``resume_from``: None (keep REF's), ``auto`` (a fresh run, relaunches continue: step 0), a step number N
    (``<out_dir>/step-<8 digits>/lit_model.pth``, the checkpoint the fork's ``resume: true`` found) or a checkpoint
    path in a ``step-N`` directory.
    """
    given = config.get("resume", False)
    if resume_from is None:
        return given, 0 if given in (False, None) else checkpoint_step(given)
    if config.get("initial_checkpoint_dir"):
        raise ValueError(
            f"--resume-from {resume_from!r} with REF's initial_checkpoint_dir {config['initial_checkpoint_dir']!r}: "
            "litgpt pretrain takes one of them; drop --resume-from to warm-start, or initial_checkpoint_dir from REF."
        )
    text = str(resume_from).strip()
    if text == "auto":
        notes.append(
            f"resume: {given!r} -> 'auto' (--resume-from auto: the run starts fresh, so its stop and LR schedule count "
            "from step 0, and a relaunch continues from the newest checkpoint in out_dir; if REF is a relaunch "
            "config, its max_additional_steps counting from a checkpoint, pass --resume-from with that step instead)."
        )
        return "auto", 0
    if text.isdigit():
        step = int(text)
        out_dir = config.get("out_dir")
        if step < 1:
            raise ValueError(
                f"--resume-from {text}: no checkpoint is written at step 0; for a run that starts fresh pass "
                "--resume-from auto."
            )
        if not isinstance(out_dir, str) or not out_dir.strip():
            raise ValueError(
                f"--resume-from {step}: REF's out_dir is {out_dir!r}, so step-{step:08d}/ cannot be found in it; give "
                f"the checkpoint's path instead, e.g. --resume-from out/run/step-{step:08d}/lit_model.pth."
            )
        value = f"{out_dir.rstrip('/')}/step-{step:08d}/lit_model.pth"
        how = f"the step-* checkpoint in out_dir the fork's resume: true found, step {step:,}"
    else:
        path = Path(text)
        step = checkpoint_step(path)
        if step is None:
            raise ValueError(
                f"--resume-from {text!r} is in no step-NNNNNNNN directory; give a checkpoint like "
                "out/run/step-00040000/lit_model.pth, a step number (out_dir/step-<8 digits>/lit_model.pth) or auto."
            )
        value = str(path / "lit_model.pth") if STEP_DIR.fullmatch(path.name) else text
        how = f"step {step:,}"
    notes.append(
        f"resume: {given!r} -> {value!r} (--resume-from {text}: {how}; the stop and the LR schedule count from it; "
        f"{RELAUNCH})."
    )
    return value, step


def _convert_data(data, stop: dict, notes: list[str]) -> dict:
    if isinstance(data, str):
        data = {"class_path": data}
    class_path = data.get("class_path", "") if isinstance(data, dict) else ""
    if not isinstance(class_path, str) or class_path.rsplit(".", 1)[-1] != "ShardedMixedDataset":
        raise ValueError(
            f"data.class_path is {class_path!r}; convert-config converts configs of the reference fork's "
            f"litgpt.data.ShardedMixedDataset, whose data section becomes {DATA_CLASS}."
        )
    if class_path != DATA_CLASS:
        notes.append(f"data.class_path: {class_path!r} -> {DATA_CLASS!r} (upstream litgpt has no ShardedMixedDataset).")
    known = upstream().data_args
    given = dict(data.get("init_args") or {})
    for key in data:
        if key not in ("class_path", "init_args"):
            given[key] = data[key]
            notes.append(f"data.{key}: {data[key]!r} -> data.init_args.{key}: {data[key]!r}.")
    init_args = {}
    for key, value in given.items():
        if key in REFERENCE_ONLY_ARGS:
            notes.append(
                f"data.init_args.{key}: {value!r} -> removed (reference-only: the fork's download helper read it)."
            )
        elif key in STALE_DATA_ARGS:
            notes.append(
                f"data.init_args.{key}: {value!r} -> removed (a stale key: the fork's data module did not read it)."
            )
        elif key not in known:
            notes.append(f"data.init_args.{key}: {value!r} -> removed ({DATA_CLASS} has no such init arg).")
        else:
            init_args[key] = value
    notes += _blend_warnings(given, init_args)
    return {"class_path": DATA_CLASS, "init_args": {**init_args, **stop}}


def _blend_warnings(given: dict, init_args: dict) -> list[str]:
    """WARNINGs for a blend REF meant but the fork did not read, and for a mix file missing here."""
    warnings = []
    path = init_args.get("mix_config_path")
    if isinstance(path, str) and not Path(os.path.expandvars(os.path.expanduser(path))).exists():
        warnings.append(
            f"{WARNING}data.init_args.mix_config_path {path!r} does not exist here, and litgpt pretrain reads it "
            "when it parses the config: copy the fork's mix file (its {weights: {...}} JSON reads as is) and point "
            "data.init_args.mix_config_path at the copy."
        )
    stale = [key for key in STALE_DATA_ARGS if key in given]
    if stale and not any(init_args.get(key) for key in BLEND_ARGS):
        value = given[stale[0]]
        example = "main:0.88,math:0.12"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            example = f"main:{round(1 - value, 6):g},TYPE:{value:g}"
        warnings.append(
            f"{WARNING}the converted config is a single-source run (main only): REF's blend key "
            f"data.init_args.{stale[0]}: {value!r} was never read by the fork's data module, and REF sets none of "
            f"{', '.join(BLEND_ARGS[:3])}. To train on a blend, set data.init_args.mix_weights_str, e.g. "
            f"{example!r} (TYPE: code, math, instruct, qa, web, ...)."
        )
    return warnings


def _convert_train(train: dict, run: ReferenceRun, stop: dict, schedule_moved: bool, notes: list[str]) -> dict:
    known = upstream().train_fields
    converted = {}
    for key, value in train.items():
        if key in FORK_TRAIN_KEYS:
            continue  # converted with their own notes
        if key == "max_seq_len":
            if "max_seq_length" in train:
                notes.append(f"train.max_seq_len: {value!r} -> removed (train.max_seq_length is set).")
            else:
                converted["max_seq_length"] = value
                notes.append(f"train.max_seq_len: {value!r} -> train.max_seq_length: {value!r} (upstream's name).")
        elif key == "lr_warmup_fraction" and schedule_moved:
            continue  # moved to the optimizer, with its note
        elif key not in known:
            notes.append(f"train.{key}: {value!r} -> removed (litgpt's TrainArgs has no such field).")
        else:
            converted[key] = value
            if schedule_moved and key in LITGPT_LR_KEYS:
                notes.append(
                    f"train.{key}: {value!r} -> kept, harmless: the optimizer's schedule sets the LR of every step, "
                    "not litgpt."
                )
    if not schedule_moved and converted.get("lr_warmup_fraction") and "lr_warmup_steps" not in converted:
        converted["lr_warmup_steps"] = None
        notes.append(
            "train.lr_warmup_steps: unset -> None (else litgpt pretrain's default 2000 clashes with "
            "lr_warmup_fraction)."
        )
    if "stop_at_step" in stop:
        needed = stop["stop_at_step"] * run.tokens_per_step
        if run.max_tokens < needed:
            converted["max_tokens"] = needed
            old = run.max_tokens if run.max_tokens_given else f"unset (litgpt's default {run.max_tokens:,})"
            notes.append(
                f"train.max_tokens: {old} -> {needed!r} (the fork stopped at max_iters whatever max_tokens said; "
                f"upstream litgpt ends the run at max_tokens, which must reach step {stop['stop_at_step']:,})."
            )
    return converted


def convert_reference_config(
    config: dict, devices: int | None = None, resume_from: str | int | Path | None = None
) -> tuple[dict, list[str]]:
    """REF (a reference-fork ``litgpt pretrain`` config) for upstream LitGPT, and one sentence per change; notes
    that need action start with ``WARNING: ``.

    ``devices``: GPUs per node of the reference run, when REF leaves them to the launcher (``train.max_iters``
    counts micro-batches per GPU). ``resume_from``: the checkpoint a ``resume: true`` config continues from (see
    ``resume_of``).
    """
    if not isinstance(config, dict):
        raise ValueError(f"REF is {type(config).__name__}, not a mapping; give a litgpt pretrain YAML config.")
    if "data" not in config:
        raise ValueError(
            "REF has no data: section; convert-config converts configs of the reference fork's "
            "litgpt.data.ShardedMixedDataset."
        )
    parameters = upstream().pretrain_args
    notes: list[str] = []
    train = dict(config.get("train") or {})
    for key in ("max_seq_length", "max_seq_len", "global_batch_size", "micro_batch_size", "max_tokens"):
        if train.get(key) is not None:
            whole(train[key], f"train.{key}")
    resume_notes: list[str] = []
    resume, start_step = resume_of(config, resume_from, resume_notes)
    run = run_of(config, train, devices, start_step)
    schedule_moved = train.get("lr_scheduler") is not None
    stop_notes: list[str] = []
    stop = stop_args(train, run, stop_notes)
    sections = {"data": _convert_data(config["data"], stop, notes)}
    notes += resume_notes + stop_notes
    sections["train"] = _convert_train(train, run, stop, schedule_moved, notes)
    if "eval" in config:
        sections["eval"] = known_only(
            dict(config["eval"] or {}), upstream().eval_fields, "eval", "litgpt's EvalArgs has no such field", notes
        )
    if schedule_moved:
        sections["optimizer"] = scheduled_optimizer(config.get("optimizer"), train, run, notes)
    elif train.get("max_lr") is not None:
        sections["optimizer"] = peak_lr_only(config.get("optimizer"), train["max_lr"], notes)
    if train.get("stable_steps") is not None and train.get("lr_scheduler") != "wsd":
        notes.append(f"train.stable_steps: {train['stable_steps']!r} -> removed (only lr_scheduler wsd used it).")
    if resume_from is not None:
        sections["resume"] = resume
    converted = {}
    for key, value in config.items():
        if key not in parameters:
            notes.append(f"{key}: {value!r} -> removed (litgpt pretrain takes no {key}).")
        else:
            converted[key] = sections.pop(key, value)
        if key == "out_dir" and "resume" in sections and "resume" not in config:
            converted["resume"] = sections.pop("resume")
    converted.update(sections)  # e.g. an optimizer REF left to the default
    warnings = [note for note in notes if note.startswith(WARNING)]
    return converted, [note for note in notes if not note.startswith(WARNING)] + warnings


class _Loader(yaml.SafeLoader):
    """YAML as jsonargparse reads it: ``1e-6`` is a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class _Dumper(yaml.SafeDumper):
    """Block mappings, lists on one line (``betas: [0.9, 0.95]``), as the shipped configs."""


_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def convert_config_file(
    ref: str | Path, devices: int | None = None, resume_from: str | None = None
) -> tuple[str, list[str]]:
    """The converted YAML of the config file ``ref`` (a comment line first), and the change notes."""
    try:
        config = yaml.load(Path(ref).read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the config {str(ref)!r}: {err}") from err
    converted, notes = convert_reference_config(config, devices, resume_from)
    header = f"# Converted from {ref} by sharded-mix convert-config.\n"
    return header + yaml.dump(converted, Dumper=_Dumper, sort_keys=False), notes


def write_converted_config(
    ref: str | Path, out: str | Path, force: bool = False, devices: int | None = None, resume_from: str | None = None
) -> list[str]:
    """Write REF converted to ``out`` (never over REF; over an existing file only with ``force``); the notes."""
    ref, out = Path(ref), Path(out)
    if out.resolve() == ref.resolve():
        raise FileExistsError(f"-o {out} is REF itself; write the converted config to a new file.")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it.")
    text, notes = convert_config_file(ref, devices, resume_from)
    out.write_text(text, encoding="utf-8")
    return notes
