"""Read the files users write: mix files, and a run's config without training (a LitGPT config's ``data``
section and train sizes, or our own data YAML)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

DATA_CLASS = "sharded_mix.ShardedMixedDataset"
LITGPT_MICRO_BATCH_SIZE = 4  # litgpt.args.TrainArgs defaults
LITGPT_MAX_SEQ_LENGTH = 2048

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?)b?\s*$", re.IGNORECASE)
_SIZE_RATIO = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def parse_size(value: int | str, field_name: str) -> int:
    """Bytes from an int or a size like '64MB', '512KB', '1MiB' (KB/MB = 1000-based, as litdata)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{field_name} {value!r} is not a size; pass e.g. 64MB, 512KB or 1000000")
        size = int(float(match.group(1)) * _SIZE_RATIO[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"{field_name} {value!r} must be positive; pass e.g. 64MB")
    return size


def expand_path(value: str | Path, field_name: str) -> str:
    """``~`` and ``$VARS`` expanded, so configs can say ``$DATA_ROOT/mix`` instead of a personal path (URLs:
    ``$VARS`` only)."""
    text = str(value)
    expanded = os.path.expandvars(text if "://" in text else os.path.expanduser(text))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ValueError(
            f"{field_name} {text!r}: environment variable {unset[0]} is not set; export it or write the path out."
        )
    return expanded


def load_mix_file(path: str | Path) -> dict:
    """Read a mix file (``.json``, ``.yaml`` or ``.yml``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mix_config_path {str(path)!r} does not exist; point it at a .json or .yaml mix file.")
    text = path.read_text(encoding="utf-8")
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"mix_config_path {str(path)!r} is not valid {path.suffix[1:] or 'YAML'}: {err}") from err
    if not content:
        raise ValueError(
            f"mix_config_path {str(path)!r} holds no blend (it is empty or all comments); write one, e.g. "
            "weights: {main: 0.88, math: 0.12}, or drop mix_config_path."
        )
    return content


@dataclass(frozen=True)
class RunSizes:
    """What LitGPT would pass to ``connect`` and what bounds the run."""

    micro_batch_size: int
    max_seq_length: int
    max_tokens: int | None
    global_batch_size: int | None
    resume_step: int = 0
    """The step of the checkpoint the config's ``resume`` names (``.../step-00040000/lit_model.pth``), else 0."""


STEP_DIR = re.compile(r"step-(\d+)")
"""LitGPT's checkpoint directories: ``step-00040000``."""


def checkpoint_step(path: object) -> int | None:
    """The step of the ``step-N`` directory a checkpoint path or name is in (``out/run/step-00040000/lit_model.pth``,
    ``step-00040000``); None for ``final``, ``auto``, true, false and any other name."""
    if not isinstance(path, (str, Path)):
        return None
    for part in reversed(Path(path).parts):
        if match := STEP_DIR.fullmatch(part):
            return int(match.group(1))
    return None


def load_run_config(path: str | Path) -> tuple[dict, RunSizes]:
    """``ShardedMixedDataset`` init args and the run's sizes from a LitGPT config (``litgpt pretrain --config``)
    or from a YAML of the init args alone (with optional ``max_seq_length``, ``micro_batch_size``, ``max_tokens``)."""
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the config {str(path)!r}: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"{str(path)!r} is not a YAML mapping; give a LitGPT config or a YAML of ShardedMixedDataset init args."
        )
    if "data" not in config:
        init_args = dict(config)
        sizes = {key: init_args.pop(key, None) for key in ("micro_batch_size", "max_seq_length", "max_tokens")}
        return init_args, RunSizes(
            sizes["micro_batch_size"] or LITGPT_MICRO_BATCH_SIZE,
            sizes["max_seq_length"] or LITGPT_MAX_SEQ_LENGTH,
            sizes["max_tokens"],
            init_args.get("global_batch_size"),
        )
    data = config["data"]
    if not isinstance(data, dict) or data.get("class_path") not in (DATA_CLASS, "ShardedMixedDataset"):
        raise ValueError(f"{str(path)!r}: its data section is not class_path: {DATA_CLASS}.")
    init_args = dict(data.get("init_args") or {})
    train = config.get("train") or {}
    max_seq_length = train.get("max_seq_length")
    if max_seq_length is None and config.get("model_name"):
        from litgpt.config import Config

        max_seq_length = Config.from_name(config["model_name"]).block_size  # what litgpt pretrain uses then
    train_global = train.get("global_batch_size")
    data_global = init_args.get("global_batch_size")
    if data_global is not None and train_global is not None and data_global != train_global:
        raise ValueError(
            f"{str(path)!r}: data global_batch_size {data_global} differs from train.global_batch_size {train_global}; "
            "stage boundaries in steps would land on the wrong steps. Make them equal."
        )
    return init_args, RunSizes(
        train.get("micro_batch_size") or LITGPT_MICRO_BATCH_SIZE,
        max_seq_length or LITGPT_MAX_SEQ_LENGTH,
        train.get("max_tokens"),
        data_global if data_global is not None else train_global,
        checkpoint_step(config.get("resume")) or 0,
    )
