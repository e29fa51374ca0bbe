"""What a reference-fork run was, for ``sharded-mix convert-config``: its sizes, the step it starts from, and the
step its ``max_additional_steps`` / ``max_iters`` ended it at.

Read from the fork's ``pretrain.py``: ``max_iters`` was compared with ``iter_num``, which counts micro-batches per
GPU, so it is ``max_iters / gradient-accumulation iterations`` optimizer steps; ``max_additional_steps`` was
compared with ``step_count`` (optimizer steps) counted from the resumed checkpoint's and, when ``max_iters`` was set
too (it always was: the fork derived it from ``max_tokens`` otherwise), replaced ``max_iters`` by the resumed
iteration + ``max_additional_steps`` accumulations, the horizon its cosine decayed to.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from functools import lru_cache

RESUME_FROM_HINT = (
    "pass --resume-from STEP (the step of the newest checkpoint in out_dir when the run starts: "
    "out_dir/step-<8 digits>/lit_model.pth), --resume-from PATH (a .../step-NNNNNNNN/lit_model.pth), "
    "or --resume-from auto for a from-scratch run"
)
"""How to say the step a ``resume: true`` config continues from."""


@dataclass(frozen=True)
class Upstream:
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
def upstream() -> Upstream:
    from litgpt.args import EvalArgs, TrainArgs

    from sharded_mix.datamodule import ShardedMixedDataset
    from sharded_mix.litgpt_bridge import pretrain_parameters
    from sharded_mix.training import ScheduledAdamW
    from sharded_mix.training.schedules import SCHEDULE_ARGS

    def init_fields(cls) -> frozenset:
        return frozenset(field.name for field in dataclasses.fields(cls) if field.init)

    parameters = pretrain_parameters()
    return Upstream(
        pretrain_args=frozenset(parameters),
        train_defaults=parameters["train"].default,
        train_fields=init_fields(TrainArgs),
        eval_fields=init_fields(EvalArgs),
        data_args=init_fields(ShardedMixedDataset),
        optimizer_args=frozenset(inspect.signature(ScheduledAdamW.__init__).parameters)
        - {"self", "params", *SCHEDULE_ARGS},
    )


@dataclass(frozen=True)
class ReferenceRun:
    """The sizes of the reference run that turn its iterations and tokens into optimizer steps."""

    global_batch_size: int
    micro_batch_size: int
    seq_length: int
    max_tokens: int
    max_tokens_given: bool
    gpus: int | None
    """devices × num_nodes, or None when REF leaves the devices to the launcher."""
    start_step: int | None
    """The step the run starts from: 0 fresh, N when resuming a step-N checkpoint, None when nothing says."""

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    def steps_of_iters(self, iters: int) -> tuple[int, int]:
        """Optimizer steps of ``iters`` fork iterations (micro-batches per GPU), and the accumulation used."""
        if self.gpus is None and self.global_batch_size != self.micro_batch_size:
            raise ValueError(
                f"train.max_iters is {iters:,} micro-batch iterations per GPU (the fork's iter_num); turning it into "
                f"optimizer steps needs the GPUs of the run (global_batch_size {self.global_batch_size} / (GPUs × "
                f"micro_batch_size {self.micro_batch_size})), and REF leaves them to the launcher: set devices: N "
                "(and num_nodes) in REF, or pass --devices N."
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


def whole(value, name: str) -> int:
    """``value`` if it is a whole number of steps >= 1, else the ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} is {value!r}; use a whole number of steps >= 1.")
    return value


def known_only(args: dict, known, where: str, why: str, notes: list[str]) -> dict:
    """``args`` without the keys not in ``known``; each removal noted: ``<where>.<key>: <value> -> removed (<why>).``"""
    for key, value in args.items():
        if key not in known:
            notes.append(f"{where}.{key}: {value!r} -> removed ({why}).")
    return {key: value for key, value in args.items() if key in known}


def run_of(config: dict, train: dict, devices: int | None, start_step: int | None) -> ReferenceRun:
    """The reference run of ``config``; ``devices`` overrides REF's, ``start_step`` is the step it starts from."""
    train_defaults = upstream().train_defaults
    seq_length = train.get("max_seq_length") or train.get("max_seq_len") or _block_size(config)
    devices = config.get("devices") if devices is None else devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    gpus = (
        devices * int(config.get("num_nodes") or 1)
        if isinstance(devices, int) and not isinstance(devices, bool)
        else None
    )
    return ReferenceRun(
        global_batch_size=train.get("global_batch_size", train_defaults.global_batch_size),
        micro_batch_size=train.get("micro_batch_size", train_defaults.micro_batch_size),
        seq_length=seq_length,
        max_tokens=train.get("max_tokens") or train_defaults.max_tokens,
        max_tokens_given=train.get("max_tokens") is not None,
        gpus=gpus,
        start_step=start_step,
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


def horizon(train: dict, run: ReferenceRun) -> tuple[int, str]:
    """The step the fork's schedule ran to, and how it follows from REF."""
    extra = train.get("max_additional_steps")
    if extra is not None:
        if run.start_step is None:
            raise ValueError(
                f"train.lr_scheduler is {train['lr_scheduler']!r} with train.max_additional_steps {extra:,}: the "
                "fork's schedule ran to the resumed step + max_additional_steps, and REF's resume does not say the "
                f"step; {RESUME_FROM_HINT}."
            )
        start = f"the resumed step {run.start_step:,}" if run.start_step else "step 0 (the run starts fresh)"
        return run.start_step + extra, f"{start} + max_additional_steps {extra:,}"
    if train.get("max_iters") is not None:
        steps, accumulation = run.steps_of_iters(train["max_iters"])
        return steps, f"train.max_iters {train['max_iters']:,} / {accumulation} iterations per step"
    source = "train.max_tokens" if run.max_tokens_given else "litgpt's default max_tokens"
    return (
        run.max_tokens // run.tokens_per_step,
        f"{source} {run.max_tokens:,} / {run.tokens_per_step:,} tokens per step",
    )


def stop_args(train: dict, run: ReferenceRun, notes: list[str]) -> dict:
    """``stop_after_steps`` / ``stop_at_step`` for the data init args."""
    extra, iters = train.get("max_additional_steps"), train.get("max_iters")
    if extra is not None:
        whole(extra, "train.max_additional_steps")
        notes.append(
            f"train.max_additional_steps: {extra!r} -> data.init_args.stop_after_steps: {extra!r} (the run trains "
            f"{extra:,} optimizer steps past the step it first resumes at, step 0 for a fresh run; no config edit "
            "between relaunches)."
        )
        if iters is not None:
            notes.append(
                f"train.max_iters: {iters!r} -> removed (the fork replaced it by the resumed step + "
                "max_additional_steps)."
            )
        return {"stop_after_steps": extra}
    if iters is not None:
        step, accumulation = run.steps_of_iters(whole(iters, "train.max_iters"))
        notes.append(
            f"train.max_iters: {iters!r} -> data.init_args.stop_at_step: {step!r} (the fork's max_iters counted "
            f"micro-batch iterations per GPU: {iters:,} / {accumulation} iterations per optimizer step)."
        )
        return {"stop_at_step": step}
    return {}
