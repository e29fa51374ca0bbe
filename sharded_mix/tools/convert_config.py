"""``sharded-mix convert-config``: a reference-fork ``litgpt pretrain`` config rewritten for upstream LitGPT.

The reference workflow ran on a LitGPT fork of v0.4.0. What its train keys meant, read from the fork's
``pretrain.py``: ``max_iters`` was compared with ``iter_num``, which counts micro-batches per GPU, so it is
``max_iters / gradient-accumulation iterations`` optimizer steps; ``max_additional_steps`` was compared with
``step_count`` (optimizer steps) counted from the resumed checkpoint's and, when ``max_iters`` was set too (it
always was: the fork derived it from ``max_tokens`` otherwise), replaced ``max_iters`` by the resumed iteration
+ ``max_additional_steps`` accumulations, the horizon its cosine decayed to; ``lr_warmup_fraction`` was LitGPT's
fraction of the training loader's length (one epoch), not of the run.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from sharded_mix.config import DATA_CLASS, checkpoint_step

OPTIMIZER_CLASS = "sharded_mix.training.ScheduledAdamW"
REFERENCE_ONLY_DATA_ARGS = (
    "val_split_fraction",
    "fast_dev_run",
    "data_split",
    "dataset_name",
    "num_samples",
    "num_val_samples",
)
"""Data init args only the fork's download helper read."""
STALE_DATA_ARGS = ("mix_weight",)
"""Data init args of older fork configs that nothing read any more."""
ADAMW_CLASSES = (
    "AdamW",
    "torch.optim.AdamW",
    "torch.optim.adamw.AdamW",
    OPTIMIZER_CLASS,
    "sharded_mix.training.optimizer.ScheduledAdamW",
)
LR_SCHEDULERS = ("cosine", "wsd", "decay", "constant")
FORK_TRAIN_KEYS = ("max_iters", "max_additional_steps", "lr_scheduler", "stable_steps", "max_lr")
"""Fork train keys that move elsewhere (data stop args, the optimizer's schedule)."""
LITGPT_LR_KEYS = ("lr_warmup_steps", "min_lr")
"""Train keys that only shape LitGPT's own LR, which ``ScheduledAdamW`` overrides: harmless to keep."""
ANNEAL = {"decay_shape": "exponential", "final_lr_ratio": 0.1}
"""The paper's decay stage: exponential, to 10% of the LR of the checkpoint it resumes."""


@dataclass(frozen=True)
class _Upstream:
    """What upstream LitGPT and our classes accept."""

    pretrain_args: frozenset
    train_defaults: object
    """``litgpt pretrain``'s default ``TrainArgs``: what a key REF leaves out means."""
    train_fields: frozenset
    eval_fields: frozenset
    data_args: frozenset
    optimizer_args: frozenset
    """``ScheduledAdamW``'s init args besides the schedule's."""


@lru_cache(maxsize=1)
def _upstream() -> _Upstream:
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.pretrain import setup

    from sharded_mix.datamodule import ShardedMixedDataset
    from sharded_mix.training import ScheduledAdamW
    from sharded_mix.training.schedules import SCHEDULE_ARGS

    def init_fields(cls) -> frozenset:
        return frozenset(field.name for field in dataclasses.fields(cls) if field.init)

    parameters = inspect.signature(setup).parameters
    return _Upstream(
        pretrain_args=frozenset(parameters),
        train_defaults=parameters["train"].default,
        train_fields=init_fields(TrainArgs),
        eval_fields=init_fields(EvalArgs),
        data_args=init_fields(ShardedMixedDataset),
        optimizer_args=frozenset(inspect.signature(ScheduledAdamW.__init__).parameters)
        - {"self", "params", *SCHEDULE_ARGS},
    )


@dataclass(frozen=True)
class _Run:
    """The sizes of the reference run that turn its iterations and tokens into optimizer steps."""

    global_batch_size: int
    micro_batch_size: int
    seq_length: int
    max_tokens: int
    max_tokens_given: bool
    gpus: int | None
    """devices × num_nodes, or None when REF leaves the devices to the launcher."""
    start_step: int | None
    """The step the run starts from: 0 fresh, N when resuming a step-N checkpoint, None when REF does not say."""

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    def steps_of_iters(self, iters: int) -> tuple[int, int]:
        """Optimizer steps of ``iters`` fork iterations (micro-batches per GPU), and the accumulation used."""
        if self.gpus is None and self.global_batch_size != self.micro_batch_size:
            raise ValueError(
                f"train.max_iters is {iters:,} micro-batch iterations per GPU (the fork's iter_num); turning it into optimizer "
                f"steps needs the GPUs of the run (global_batch_size {self.global_batch_size} / (GPUs × micro_batch_size "
                f"{self.micro_batch_size})), and REF leaves them to the launcher: set devices: N (and num_nodes) in REF, or pass --devices N."
            )
        accumulation = 1 if self.gpus is None else self.global_batch_size // self.gpus // self.micro_batch_size
        if accumulation < 1:
            raise ValueError(
                f"train.global_batch_size {self.global_batch_size} is less than {self.gpus} GPUs × micro_batch_size "
                f"{self.micro_batch_size}; raise global_batch_size or lower micro_batch_size."
            )
        if iters // accumulation < 1:
            raise ValueError(
                f"train.max_iters is {iters!r}, less than one optimizer step of {accumulation} iterations; raise it."
            )
        return iters // accumulation, accumulation


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} is {value!r}; use a whole number of steps >= 1.")
    return value


def _run_of(config: dict, train: dict, devices: int | None) -> _Run:
    train_defaults = _upstream().train_defaults
    seq_length = train.get("max_seq_length") or train.get("max_seq_len") or _block_size(config)
    devices = config.get("devices") if devices is None else devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    gpus = (
        devices * int(config.get("num_nodes") or 1)
        if isinstance(devices, int) and not isinstance(devices, bool)
        else None
    )
    return _Run(
        global_batch_size=train.get("global_batch_size", train_defaults.global_batch_size),
        micro_batch_size=train.get("micro_batch_size", train_defaults.micro_batch_size),
        seq_length=seq_length,
        max_tokens=train.get("max_tokens") or train_defaults.max_tokens,
        max_tokens_given=train.get("max_tokens") is not None,
        gpus=gpus,
        start_step=_start_step(config),
    )


def _block_size(config: dict) -> int:
    model_config = config.get("model_config")
    if isinstance(model_config, dict) and model_config.get("block_size"):
        return model_config["block_size"]
    from litgpt import Config

    try:
        return Config.from_name(str(config.get("model_name"))).block_size
    except ValueError:
        raise ValueError(
            f"model_name is {config.get('model_name')!r}, not a LitGPT model, and train.max_seq_length is not set; "
            "set train.max_seq_length in REF (tokens per sequence) or use a model name `litgpt pretrain list` shows."
        ) from None


def _start_step(config: dict) -> int | None:
    resume = config.get("resume", False)
    return 0 if resume in (False, None) else checkpoint_step(resume)


def _horizon(train: dict, run: _Run) -> tuple[int, str]:
    """The step the fork's schedule ran to, and how it follows from REF."""
    extra = train.get("max_additional_steps")
    if extra is not None:
        if run.start_step is None:
            raise ValueError(
                f"train.lr_scheduler {train['lr_scheduler']} with train.max_additional_steps {extra:,}: the fork's schedule ran "
                "to the resumed step + max_additional_steps, and REF's resume does not say the step; set resume to the "
                "step-NNNNNNNN/lit_model.pth it continues from."
            )
        start = f"the resumed step {run.start_step:,}" if run.start_step else "step 0 (REF does not resume)"
        return run.start_step + extra, f"{start} + max_additional_steps {extra:,}"
    if train.get("max_iters") is not None:
        steps, accumulation = run.steps_of_iters(train["max_iters"])
        return steps, f"train.max_iters {train['max_iters']:,} / {accumulation} iterations per step"
    source = "train.max_tokens" if run.max_tokens_given else "litgpt's default max_tokens"
    return (
        run.max_tokens // run.tokens_per_step,
        f"{source} {run.max_tokens:,} / {run.tokens_per_step:,} tokens per step",
    )


def _stop_args(train: dict, run: _Run, notes: list[str]) -> dict:
    """``stop_after_steps`` / ``stop_at_step`` for the data init args."""
    extra, iters = train.get("max_additional_steps"), train.get("max_iters")
    if extra is not None:
        _whole(extra, "train.max_additional_steps")
        notes.append(
            f"train.max_additional_steps: {extra!r} -> data.init_args.stop_after_steps: {extra!r} (the run trains {extra:,} "
            "optimizer steps past the step it first resumes at, step 0 for a fresh run; no config edit between relaunches)."
        )
        if iters is not None:
            notes.append(
                f"train.max_iters: {iters!r} -> removed (the fork replaced it by the resumed step + max_additional_steps)."
            )
        return {"stop_after_steps": extra}
    if iters is not None:
        step, accumulation = run.steps_of_iters(_whole(iters, "train.max_iters"))
        notes.append(
            f"train.max_iters: {iters!r} -> data.init_args.stop_at_step: {step!r} (the fork's max_iters counted micro-batch "
            f"iterations per GPU: {iters:,} / {accumulation} iterations per optimizer step)."
        )
        return {"stop_at_step": step}
    return {}


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
    known = _upstream().data_args
    given = dict(data.get("init_args") or {})
    for key in data:
        if key not in ("class_path", "init_args"):
            given[key] = data[key]
            notes.append(f"data.{key}: {data[key]!r} -> data.init_args.{key}: {data[key]!r}.")
    init_args = {}
    for key, value in given.items():
        if key in REFERENCE_ONLY_DATA_ARGS:
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
    return {"class_path": DATA_CLASS, "init_args": {**init_args, **stop}}


def _convert_train(train: dict, run: _Run, stop: dict, schedule_moved: bool, notes: list[str]) -> dict:
    known = _upstream().train_fields
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
                    f"train.{key}: {value!r} -> kept, harmless: the optimizer's schedule sets the LR of every step, not litgpt."
                )
    if not schedule_moved and converted.get("lr_warmup_fraction") and "lr_warmup_steps" not in converted:
        converted["lr_warmup_steps"] = None
        notes.append(
            "train.lr_warmup_steps: unset -> None (else litgpt pretrain's default 2000 clashes with lr_warmup_fraction)."
        )
    if "stop_at_step" in stop:
        needed = stop["stop_at_step"] * run.tokens_per_step
        if run.max_tokens < needed:
            converted["max_tokens"] = needed
            old = run.max_tokens if run.max_tokens_given else f"unset (litgpt's default {run.max_tokens:,})"
            notes.append(
                f"train.max_tokens: {old} -> {needed!r} (the fork stopped at max_iters whatever max_tokens said; upstream "
                f"litgpt ends the run at max_tokens, which must reach step {stop['stop_at_step']:,})."
            )
    return converted


def _known_only(args: dict, known, where: str, why: str, notes: list[str]) -> dict:
    """``args`` without the keys not in ``known``, each removal noted as ``<where>.<key>: <value> -> removed (<why>).``"""
    for key, value in args.items():
        if key not in known:
            notes.append(f"{where}.{key}: {value!r} -> removed ({why}).")
    return {key: value for key, value in args.items() if key in known}


def _convert_eval(eval_args: dict, notes: list[str]) -> dict:
    return _known_only(eval_args, _upstream().eval_fields, "eval", "litgpt's EvalArgs has no such field", notes)


def _optimizer_parts(optimizer) -> tuple[str, dict]:
    if optimizer is None:
        return "AdamW", {}  # the fork's and litgpt's default
    if isinstance(optimizer, str):
        return optimizer, {}
    if isinstance(optimizer, dict) and isinstance(optimizer.get("class_path"), str):
        return optimizer["class_path"], dict(optimizer.get("init_args") or {})
    raise ValueError(
        f"optimizer is {optimizer!r}; give a name such as AdamW or {{class_path: torch.optim.AdamW, init_args: {{...}}}}."
    )


def _warmup(train: dict, total_steps: int | None, notes: list[str]) -> tuple[dict, list[str]]:
    """The optimizer's warmup arg from the fork's ``lr_warmup_steps`` / ``lr_warmup_fraction``, and where it came from."""
    fraction, steps = train.get("lr_warmup_fraction"), train.get("lr_warmup_steps")
    if fraction:
        notes.append(
            f"train.lr_warmup_fraction: {fraction!r} -> optimizer.init_args.warmup_fraction: {fraction!r} (of total_steps "
            f"{total_steps:,}: {int(fraction * total_steps):,} warmup steps; the fork's was a fraction of one epoch of the "
            "training loader), removed from train (there it clashes with litgpt pretrain's default lr_warmup_steps)."
        )
        return {"warmup_fraction": fraction}, [f"warmup_fraction {fraction!r} = train.lr_warmup_fraction"]
    if steps:
        return {"warmup_steps": steps}, [f"warmup_steps {steps:,} = train.lr_warmup_steps"]
    return {}, ["no warmup (REF sets neither train.lr_warmup_steps nor lr_warmup_fraction)"]


def _decay_length(train: dict, run: _Run) -> tuple[int, str]:
    """The fork's decay: from the resumed step for max_additional_steps, else to the run's end."""
    extra = train.get("max_additional_steps")
    if extra is not None:
        return extra, "train.max_additional_steps"
    end, how = _horizon(train, run)
    if run.start_step is None or end <= run.start_step:
        raise ValueError(
            "train.lr_scheduler is 'decay' but its length is unknown: set train.max_additional_steps (the decay's steps), "
            "or resume from a step-NNNNNNNN/lit_model.pth before the run's end."
        )
    return end - run.start_step, f"the run's end ({how}) - the resumed step {run.start_step:,}"


def _schedule_args(kind: str, train: dict, run: _Run, notes: list[str]) -> tuple[dict, list[str]]:
    """``ScheduledAdamW``'s schedule args for the fork's ``lr_scheduler``, and where each came from."""
    if kind == "decay":
        steps, how = _decay_length(train, run)
        parts = [
            f"decay_steps {steps:,} = {how}",
            "decay_shape exponential, final_lr_ratio 0.1: from the resumed checkpoint's LR to 10% of it (the paper's anneal)",
        ]
        if train.get("lr_warmup_steps") or train.get("lr_warmup_fraction"):
            parts.append("no warmup, as the fork's decay")
        if train.get("lr_warmup_fraction"):
            notes.append(
                f"train.lr_warmup_fraction: {train['lr_warmup_fraction']!r} -> removed (the decay has no warmup, as the fork's)."
            )
        return {"schedule": "decay", "decay_steps": steps, **ANNEAL}, parts
    args, parts = {"schedule": kind}, []
    total = None
    if kind != "constant" or train.get("lr_warmup_fraction"):
        total, how = _horizon(train, run)
        args["total_steps"] = total
        parts.append(f"total_steps {total:,} = {how}")
    warmup, warmup_parts = _warmup(train, total, notes)
    args.update(warmup)
    parts += warmup_parts
    if kind == "wsd":
        stable = _whole(train.get("stable_steps"), "train.stable_steps (wsd's steps at the peak LR)")
        warmup_steps = warmup.get("warmup_steps") or int(warmup.get("warmup_fraction", 0) * total)
        start = warmup_steps + stable
        if start >= total:
            raise ValueError(
                f"train.stable_steps is {stable:,}: warmup {warmup_steps:,} + stable {stable:,} = step {start:,} leaves no step to "
                f"decay before the run's end at step {total:,} ({how}); lower stable_steps."
            )
        args.update(decay_start_step=start, decay_shape="linear")
        notes.append(
            f"train.stable_steps: {stable!r} -> optimizer.init_args.decay_start_step: {start!r} (warmup {warmup_steps:,} + stable "
            f"{stable:,}), with decay_shape linear to min_lr at step {total:,}: an assumption, the fork's wsd decay shape was not found."
        )
        parts.append(f"decay_start_step {start:,}, decay_shape linear (see train.stable_steps)")
    if kind != "constant":
        given = train.get("min_lr")
        args["min_lr"] = _upstream().train_defaults.min_lr if given is None else given
        parts.append(
            f"min_lr {args['min_lr']!r} = " + ("litgpt pretrain's default" if given is None else "train.min_lr")
        )
    return args, parts


def _scheduled_optimizer(optimizer, train: dict, run: _Run, notes: list[str]) -> dict:
    kind = train["lr_scheduler"]
    if kind not in LR_SCHEDULERS:
        raise ValueError(f"train.lr_scheduler is {kind!r}; the fork had {', '.join(LR_SCHEDULERS)}.")
    class_path, init_args = _optimizer_parts(optimizer)
    if class_path not in ADAMW_CLASSES:
        raise ValueError(
            f"optimizer is {class_path!r} and train.lr_scheduler is {kind!r}: the schedule moves to {OPTIMIZER_CLASS}, which is "
            "AdamW only; use AdamW in REF, or drop train.lr_scheduler to keep litgpt's own schedule."
        )
    kept = _known_only(
        init_args, _upstream().optimizer_args, "optimizer.init_args", f"{OPTIMIZER_CLASS} does not take it", notes
    )
    if train.get("max_lr") is not None:
        notes.append(
            f"train.max_lr: {train['max_lr']!r} -> optimizer.init_args.lr: {train['max_lr']!r} (the peak LR; it was {kept.get('lr', 'unset')!r})."
        )
        kept = {"lr": train["max_lr"], **kept} if "lr" not in kept else {**kept, "lr": train["max_lr"]}
    schedule, parts = _schedule_args(kind, train, run, notes)
    notes.append(f"train.lr_scheduler: {kind!r} -> optimizer.init_args.schedule: {kind!r}; " + "; ".join(parts) + ".")
    notes.append(
        f"optimizer: {class_path!r} -> {OPTIMIZER_CLASS!r} (AdamW that applies the schedule; init_args {', '.join(kept) or 'none'} kept)."
    )
    return {"class_path": OPTIMIZER_CLASS, "init_args": {**kept, **schedule}}


def _peak_lr_only(optimizer, max_lr, notes: list[str]):
    """Without ``lr_scheduler`` litgpt's own schedule peaks at the optimizer's ``lr``: ``max_lr`` goes there."""
    class_path, init_args = _optimizer_parts(optimizer)
    if "." not in class_path:
        class_path = f"torch.optim.{class_path}"
    notes.append(
        f"train.max_lr: {max_lr!r} -> optimizer.init_args.lr: {max_lr!r} (the peak of litgpt's own schedule; it was {init_args.get('lr', 'unset')!r})."
    )
    return {"class_path": class_path, "init_args": {**init_args, "lr": max_lr}}


def convert_reference_config(config: dict, devices: int | None = None) -> tuple[dict, list[str]]:
    """REF (a reference-fork ``litgpt pretrain`` config) for upstream LitGPT, and one sentence per change.

    ``devices``: GPUs per node of the reference run, when REF leaves them to the launcher (``train.max_iters``
    counts micro-batches per GPU).
    """
    if not isinstance(config, dict):
        raise ValueError(f"REF is {type(config).__name__}, not a mapping; give a litgpt pretrain YAML config.")
    if "data" not in config:
        raise ValueError(
            "REF has no data: section; convert-config converts configs of the reference fork's litgpt.data.ShardedMixedDataset."
        )
    parameters = _upstream().pretrain_args
    notes: list[str] = []
    train = dict(config.get("train") or {})
    for key in ("max_seq_length", "max_seq_len", "global_batch_size", "micro_batch_size", "max_tokens"):
        if train.get(key) is not None:
            _whole(train[key], f"train.{key}")
    run = _run_of(config, train, devices)
    schedule_moved = train.get("lr_scheduler") is not None
    stop_notes: list[str] = []
    stop = _stop_args(train, run, stop_notes)
    sections = {"data": _convert_data(config["data"], stop, notes)}
    notes += stop_notes
    sections["train"] = _convert_train(train, run, stop, schedule_moved, notes)
    if "eval" in config:
        sections["eval"] = _convert_eval(dict(config["eval"] or {}), notes)
    if schedule_moved:
        sections["optimizer"] = _scheduled_optimizer(config.get("optimizer"), train, run, notes)
    elif train.get("max_lr") is not None:
        sections["optimizer"] = _peak_lr_only(config.get("optimizer"), train["max_lr"], notes)
    if train.get("stable_steps") is not None and train.get("lr_scheduler") != "wsd":
        notes.append(f"train.stable_steps: {train['stable_steps']!r} -> removed (only lr_scheduler wsd used it).")
    converted = {}
    for key, value in config.items():
        if key not in parameters:
            notes.append(f"{key}: {value!r} -> removed (litgpt pretrain takes no {key}).")
        else:
            converted[key] = sections.pop(key, value)
    converted.update(sections)  # e.g. an optimizer REF left to the default
    return converted, notes


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


def convert_config_file(ref: str | Path, devices: int | None = None) -> tuple[str, list[str]]:
    """The converted YAML of the config file ``ref`` (a comment line first), and the change notes."""
    try:
        config = yaml.load(Path(ref).read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the config {str(ref)!r}: {err}") from err
    converted, notes = convert_reference_config(config, devices)
    header = f"# Converted from {ref} by sharded-mix convert-config.\n"
    return header + yaml.dump(converted, Dumper=_Dumper, sort_keys=False), notes


def write_converted_config(
    ref: str | Path, out: str | Path, force: bool = False, devices: int | None = None
) -> list[str]:
    """Write REF converted to ``out`` (never over REF; over an existing file only with ``force``); the change notes."""
    ref, out = Path(ref), Path(out)
    if out.resolve() == ref.resolve():
        raise FileExistsError(f"-o {out} is REF itself; write the converted config to a new file.")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it.")
    text, notes = convert_config_file(ref, devices)
    out.write_text(text, encoding="utf-8")
    return notes
