"""The ``sharded-mix sweep`` spec: its keys (``SPEC_FORMAT``, shown by ``sharded-mix sweep --help``), its checks
and its placeholders."""

from __future__ import annotations

import re
import string

PHASES = ("pretrain", "midtrain", "decay")
SPEC_KEYS = ("config_dir", "defaults", "models", "experiments")
EXPERIMENT_KEYS = (
    "name",
    "phase",
    "about",
    "parent",
    "start_steps",
    "blends",
    "decay_steps",
    "data",
    "optimizer",
    "config",
)
PLACEHOLDERS = ("model", "name", "blend", "start", "start_k", "decay_steps", "parent")
RESERVED_KEYS = ("model_name", "resume")  # set by the sweep: the model's key, and the parent's checkpoint
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

SPEC_FORMAT = """\
spec format (YAML; example: midtrain_configs/paper/sweep.yaml):
  config_dir    the folder of the generated configs as seen from where jobs are submitted, e.g.
                midtrain_configs/paper; the config lists and headers name the configs under it
                (with --out DIR elsewhere, they name DIR instead)
  defaults      the `litgpt pretrain` config every run starts from
  models        model name -> its overrides of defaults, e.g. {pythia-70m: {train: {micro_batch_size: 16}}}
  experiments   a list; each experiment gives a run per model and per combination of its lists:
    name          the run name, a template, e.g. '{blend}-from-{start_k}k' (letters, digits, '.', '_', '-')
    phase         pretrain, midtrain or decay: the config list the runs go in (pretrain.txt, ...)
    about         a line added to the header of each of its configs
    parent        midtrain and decay: the run of an earlier experiment they resume
    start_steps   midtrain and decay: the parent's steps to resume at, e.g. [20000, 40000]; each a
                  multiple of the parent's train.save_interval (resume: <parent out_dir>/step-N/lit_model.pth)
    blends        label -> a mix_weights_str ('main:0.8,code:0.2') or a mapping of data init args
    decay_steps   decay only: the decay lengths, in steps, e.g. [200, 4500]
    data          data init args it overrides
    optimizer     optimizer init args it overrides
    config        any other config keys it overrides (not model_name or resume: the sweep sets those)
  Overrides merge into what they override, and a null removes a key. Every run ends at an exact step:
  its data.init_args (after the overrides) has exactly one of stop_at_step and stop_after_steps.
  Placeholders in string values: {model}, {name}, {blend} (a blends label), {start}, {start_k} (the start
  step in thousands), {decay_steps}, {parent}; a string that is one placeholder alone takes the value's
  type (stop_after_steps: "{decay_steps}" is a number).
"""


def render(value, values: dict, where: str):
    """``value`` with placeholders filled in, at any depth; a string that is one placeholder alone takes the value
    itself."""
    if isinstance(value, dict):
        return {key: render(item, values, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, values, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
    except ValueError as err:
        raise ValueError(
            f"{where}: {value!r} is not a valid template ({err}); write a literal brace as {{{{ or }}}}."
        ) from None
    for field in fields:
        key = re.split(r"[.\[!:]", field, maxsplit=1)[0]
        if key not in PLACEHOLDERS:
            raise ValueError(
                f"{where}: {value!r} uses {{{field}}}; the placeholders are "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
            )
        if values.get(key) is None:
            raise ValueError(
                f"{where}: {value!r} uses {{{key}}}, which this run has no value for; give the experiment its list, or "
                "drop it."
            )
    alone = re.fullmatch(r"\{(\w+)\}", value)
    return values[alone[1]] if alone else value.format(**values)


def check_spec(spec: dict) -> None:
    """Shape and types of the spec: unknown keys, empty lists, phases and what each needs."""
    _check_keys(spec, SPEC_KEYS, "sweep spec")
    for key in SPEC_KEYS:
        if key not in spec:
            raise ValueError(f"sweep spec: {key} is missing; give {', '.join(SPEC_KEYS)}.")
    if not isinstance(spec["config_dir"], str) or not spec["config_dir"].strip():
        raise ValueError(
            f"config_dir is {spec['config_dir']!r}; give the configs' folder as seen from where jobs are submitted, "
            "e.g. midtrain_configs/paper."
        )
    if not isinstance(spec["defaults"], dict):
        raise ValueError(f"defaults is {spec['defaults']!r}; give a LitGPT pretrain config (a mapping).")
    models = spec["models"]
    if not isinstance(models, dict) or not models:
        raise ValueError(
            f"models is {models!r}; give at least one model name with its overrides, e.g. models: {{pythia-70m: "
            f"{{train: {{micro_batch_size: 16}}}}}}."
        )
    for model, overrides in models.items():
        if not isinstance(model, str) or not SAFE_NAME.fullmatch(model):
            raise ValueError(
                f"models: {model!r} is not a model name litgpt knows or a usable folder name, e.g. pythia-70m."
            )
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError(
                f"models.{model} is {overrides!r}; give its overrides as a mapping, e.g. {{train: {{micro_batch_size: "
                f"16}}}}, or nothing."
            )
    for where, fragment in [("defaults", spec["defaults"]), *((f"models.{m}", o or {}) for m, o in models.items())]:
        _check_reserved(fragment, where)
    experiments = spec["experiments"]
    if not isinstance(experiments, list) or not experiments:
        raise ValueError(f"experiments is {experiments!r}; give a list of experiments, each with a name and a phase.")
    for index, experiment in enumerate(experiments):
        _check_experiment(experiment, f"experiments[{index}]")


def _check_experiment(experiment, where: str) -> None:
    if not isinstance(experiment, dict):
        raise ValueError(f"{where} is {experiment!r}; give a mapping with at least name and phase.")
    _check_keys(experiment, EXPERIMENT_KEYS, where)
    if not isinstance(experiment.get("name"), str) or not experiment["name"]:
        raise ValueError(
            f"{where}.name is {experiment.get('name')!r}; give a name template, e.g. '{{blend}}-from-{{start_k}}k'."
        )
    phase = experiment.get("phase")
    if phase not in PHASES:
        raise ValueError(f"{where}.phase is {phase!r}; use one of {', '.join(PHASES)}.")
    resumes = phase != "pretrain"
    for key in ("parent", "start_steps"):
        if resumes and key not in experiment:
            raise ValueError(
                f"{where}: a {phase} run resumes a checkpoint; give {key} (parent: a run name, start_steps: its steps)."
            )
        if not resumes and key in experiment:
            raise ValueError(
                f"{where}: {key} is given, but a pretrain run starts from scratch; drop it, or use phase midtrain."
            )
    if (phase == "decay") != ("decay_steps" in experiment):
        raise ValueError(
            f"{where}: decay_steps is missing; a decay run needs its lengths."
            if phase == "decay"
            else f"{where}: decay_steps is given, but only a decay run has it."
        )
    for key in ("start_steps", "decay_steps"):
        if key in experiment:
            steps = experiment[key]
            if not isinstance(steps, list) or not steps:
                raise ValueError(f"{where}.{key} is {steps!r}; give a non-empty list of steps, e.g. [40000].")
            bad = [step for step in steps if isinstance(step, bool) or not isinstance(step, int) or step < 1]
            if bad or len(set(steps)) != len(steps):
                raise ValueError(f"{where}.{key} is {steps!r}; give distinct whole numbers of steps, 1 or more.")
    if "blends" in experiment:
        blends = experiment["blends"]
        if not isinstance(blends, dict) or not blends:
            raise ValueError(
                f"{where}.blends is {blends!r}; give label → blend, e.g. {{code-20: 'main:0.8,code:0.2'}}."
            )
        for label, blend in blends.items():
            if not isinstance(label, str) or not SAFE_NAME.fullmatch(label):
                raise ValueError(
                    f"{where}.blends: label {label!r} must be usable in a file name: letters, digits, '.', '_', '-'."
                )
            if not isinstance(blend, (str, dict)) or not blend:
                raise ValueError(
                    f"{where}.blends.{label} is {blend!r}; give a mix_weights_str like 'main:0.8,code:0.2' or data "
                    f"init args like {{literal_weights_str: ...}}."
                )
    if "parent" in experiment and not isinstance(experiment["parent"], str):
        raise ValueError(
            f"{where}.parent is {experiment['parent']!r}; give the name of a run of an earlier experiment, e.g. "
            "pretrain."
        )
    for key in ("data", "optimizer", "config"):
        if experiment.get(key) is not None and not isinstance(experiment[key], dict):
            raise ValueError(f"{where}.{key} is {experiment[key]!r}; give a mapping of the keys it overrides.")
    _check_reserved(experiment.get("config") or {}, f"{where}.config")


def _check_keys(mapping: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in mapping if key not in known]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(known)}.")


def _check_reserved(fragment: dict, where: str) -> None:
    for key in RESERVED_KEYS:
        if key in fragment:
            raise ValueError(
                f"{where}.{key} is set; drop it: the sweep sets model_name from models and resume from parent and "
                "start_steps."
            )
