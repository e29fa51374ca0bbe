"""The reference fork's ``train.lr_scheduler`` (and ``max_lr``) rewritten as ``ScheduledAdamW``'s schedule, for
``sharded-mix convert-config``.

The fork's ``lr_warmup_fraction`` was LitGPT's fraction of the training loader's length (one epoch), not of the
run; its ``decay`` ran from the LR of the step it started at.
"""

from __future__ import annotations

from sharded_mix.tools.convert_run import ReferenceRun, horizon, known_only, upstream, whole

OPTIMIZER_CLASS = "sharded_mix.training.ScheduledAdamW"
ADAMW_CLASSES = (
    "AdamW",
    "torch.optim.AdamW",
    "torch.optim.adamw.AdamW",
    OPTIMIZER_CLASS,
    "sharded_mix.training.optimizer.ScheduledAdamW",
)
LR_SCHEDULERS = ("cosine", "wsd", "decay", "constant")
FORK_MAX_LR = 3e-4
"""The fork's default ``train.max_lr``: the peak of its cosine and wsd, whatever the optimizer's ``lr``."""
ANNEAL = {"decay_shape": "exponential", "final_lr_ratio": 0.1}
"""The paper's decay stage: exponential, to 10% of the LR it starts from."""


def optimizer_parts(optimizer) -> tuple[str, dict]:
    """REF's optimizer as (class path, init args)."""
    if optimizer is None:
        return "AdamW", {}  # the fork's and litgpt's default
    if isinstance(optimizer, str):
        return optimizer, {}
    if isinstance(optimizer, dict) and isinstance(optimizer.get("class_path"), str):
        return optimizer["class_path"], dict(optimizer.get("init_args") or {})
    raise ValueError(
        f"optimizer is {optimizer!r}; give a name such as AdamW or "
        "{class_path: torch.optim.AdamW, init_args: {...}}."
    )


def _warmup(train: dict, total_steps: int | None, notes: list[str]) -> tuple[dict, list[str]]:
    """The optimizer's warmup arg from the fork's ``lr_warmup_steps`` / ``lr_warmup_fraction``, and its origin."""
    fraction, steps = train.get("lr_warmup_fraction"), train.get("lr_warmup_steps")
    if fraction:
        notes.append(
            f"train.lr_warmup_fraction: {fraction!r} -> optimizer.init_args.warmup_fraction: {fraction!r} (of "
            f"total_steps {total_steps:,}: {int(fraction * total_steps):,} warmup steps; the fork's was a fraction of "
            "one epoch of the training loader), removed from train (there it clashes with litgpt pretrain's default "
            "lr_warmup_steps)."
        )
        return {"warmup_fraction": fraction}, [f"warmup_fraction {fraction!r} = train.lr_warmup_fraction"]
    if steps:
        return {"warmup_steps": steps}, [f"warmup_steps {steps:,} = train.lr_warmup_steps"]
    return {}, ["no warmup (REF sets neither train.lr_warmup_steps nor lr_warmup_fraction)"]


def _decay_length(train: dict, run: ReferenceRun) -> tuple[int, str]:
    """The fork's decay: from the step it starts at for max_additional_steps, else to the run's end."""
    extra = train.get("max_additional_steps")
    if extra is not None:
        return extra, "train.max_additional_steps"
    end, how = horizon(train, run)
    if run.start_step is None or end <= run.start_step:
        raise ValueError(
            "train.lr_scheduler is 'decay' but its length is unknown: set train.max_additional_steps (the decay's "
            "steps), or resume from a step-NNNNNNNN/lit_model.pth before the run's end (--resume-from)."
        )
    start = f"the resumed step {run.start_step:,}" if run.start_step else "step 0"
    return end - run.start_step, f"the run's end ({how}) - {start}"


def _decay_origin(run: ReferenceRun, optimizer_lr) -> str:
    """Where a decay starts: the resumed checkpoint's LR, or the configured LR on a fresh run."""
    if run.start_step == 0:
        return f"from the configured LR (the optimizer's lr, {optimizer_lr!r}; a fresh run) to 10% of it"
    if run.start_step is None:
        return "from the LR of the checkpoint resume finds (the configured LR if out_dir has none) to 10% of it"
    return f"from the LR of the resumed checkpoint (step {run.start_step:,}) to 10% of it"


def _schedule_args(kind: str, train: dict, run: ReferenceRun, lr, notes: list[str]) -> tuple[dict, list[str]]:
    """``ScheduledAdamW``'s schedule args for the fork's ``lr_scheduler``, and where each came from."""
    if kind == "decay":
        steps, how = _decay_length(train, run)
        parts = [
            f"decay_steps {steps:,} = {how}",
            f"decay_shape exponential, final_lr_ratio 0.1: {_decay_origin(run, lr)} (the paper's anneal)",
        ]
        if train.get("lr_warmup_steps") or train.get("lr_warmup_fraction"):
            parts.append("no warmup, as the fork's decay")
        if train.get("lr_warmup_fraction"):
            notes.append(
                f"train.lr_warmup_fraction: {train['lr_warmup_fraction']!r} -> removed (the decay has no warmup, "
                "as the fork's)."
            )
        return {"schedule": "decay", "decay_steps": steps, **ANNEAL}, parts
    args, parts = {"schedule": kind}, []
    total = None
    if kind != "constant" or train.get("lr_warmup_fraction"):
        total, how = horizon(train, run)
        args["total_steps"] = total
        parts.append(f"total_steps {total:,} = {how}")
    warmup, warmup_parts = _warmup(train, total, notes)
    args.update(warmup)
    parts += warmup_parts
    if kind == "wsd":
        stable = whole(train.get("stable_steps"), "train.stable_steps (wsd's steps at the peak LR)")
        warmup_steps = warmup.get("warmup_steps") or int(warmup.get("warmup_fraction", 0) * total)
        start = warmup_steps + stable
        if start >= total:
            raise ValueError(
                f"train.stable_steps is {stable:,}: warmup {warmup_steps:,} + stable {stable:,} = step {start:,} "
                f"leaves no step to decay before the run's end at step {total:,} ({how}); lower stable_steps."
            )
        args.update(decay_start_step=start, decay_shape="linear")
        notes.append(
            f"train.stable_steps: {stable!r} -> optimizer.init_args.decay_start_step: {start!r} (warmup "
            f"{warmup_steps:,} + stable {stable:,}), with decay_shape linear to min_lr at step {total:,}: an "
            "assumption, the fork's wsd decay shape was not found."
        )
        parts.append(f"decay_start_step {start:,}, decay_shape linear (see train.stable_steps)")
    if kind != "constant":
        given = train.get("min_lr")
        args["min_lr"] = upstream().train_defaults.min_lr if given is None else given
        parts.append(
            f"min_lr {args['min_lr']!r} = " + ("litgpt pretrain's default" if given is None else "train.min_lr")
        )
    return args, parts


def scheduled_optimizer(optimizer, train: dict, run: ReferenceRun, notes: list[str]) -> dict:
    """REF's AdamW as ``ScheduledAdamW`` with the schedule of ``train.lr_scheduler``."""
    kind = train["lr_scheduler"]
    if kind not in LR_SCHEDULERS:
        raise ValueError(f"train.lr_scheduler is {kind!r}; the fork had {', '.join(LR_SCHEDULERS)}.")
    class_path, init_args = optimizer_parts(optimizer)
    if class_path not in ADAMW_CLASSES:
        raise ValueError(
            f"optimizer is {class_path!r} and train.lr_scheduler is {kind!r}: the schedule moves to {OPTIMIZER_CLASS}, "
            "which is AdamW only; use AdamW in REF, or drop train.lr_scheduler to keep litgpt's own schedule."
        )
    kept = known_only(
        init_args, upstream().optimizer_args, "optimizer.init_args", f"{OPTIMIZER_CLASS} does not take it", notes
    )
    max_lr = train.get("max_lr")
    if max_lr is not None:
        notes.append(
            f"train.max_lr: {max_lr!r} -> optimizer.init_args.lr: {max_lr!r} (the peak LR; it was "
            f"{kept.get('lr', 'unset')!r})."
        )
    elif kind in ("cosine", "wsd"):
        max_lr = FORK_MAX_LR
        notes.append(
            f"train.max_lr: unset -> optimizer.init_args.lr: {max_lr!r} (the fork's {kind} peaked at train.max_lr, "
            f"default {max_lr!r}, whatever the optimizer's lr; it was {kept.get('lr', 'unset')!r})."
        )
    if max_lr is not None:
        kept = {"lr": max_lr, **kept} if "lr" not in kept else {**kept, "lr": max_lr}
    lr = kept.get("lr", _default_lr())
    schedule, parts = _schedule_args(kind, train, run, lr, notes)
    notes.append(f"train.lr_scheduler: {kind!r} -> optimizer.init_args.schedule: {kind!r}; " + "; ".join(parts) + ".")
    notes.append(
        f"optimizer: {class_path!r} -> {OPTIMIZER_CLASS!r} (AdamW that applies the schedule; init_args "
        f"{', '.join(kept) or 'none'} kept)."
    )
    return {"class_path": OPTIMIZER_CLASS, "init_args": {**kept, **schedule}}


def _default_lr() -> float:
    import inspect

    from sharded_mix.training import ScheduledAdamW

    return inspect.signature(ScheduledAdamW.__init__).parameters["lr"].default


def peak_lr_only(optimizer, max_lr, notes: list[str]) -> dict:
    """Without ``lr_scheduler`` litgpt's own schedule peaks at the optimizer's ``lr``: ``max_lr`` goes there."""
    class_path, init_args = optimizer_parts(optimizer)
    if "." not in class_path:
        class_path = f"torch.optim.{class_path}"
    notes.append(
        f"train.max_lr: {max_lr!r} -> optimizer.init_args.lr: {max_lr!r} (the peak of litgpt's own schedule; it was "
        f"{init_args.get('lr', 'unset')!r})."
    )
    return {"class_path": class_path, "init_args": {**init_args, "lr": max_lr}}
