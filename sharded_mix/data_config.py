"""The data module's fields, validated once into plain records (``DataConfig``): every check of a value the user
wrote that needs no shards and no run, with one ``ValueError`` naming the field, the value and the fix."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sharded_mix.config import expand_path, load_mix_file, parse_size
from sharded_mix.mixing.orders import DEFAULT_SHUFFLE_WINDOW
from sharded_mix.mixing.run_plan import MixConfig
from sharded_mix.mixing.stages import TopLevel, build_stages
from sharded_mix.mixing.state import DATA_CHANGE_POLICIES
from sharded_mix.mixing.stop import StopRule
from sharded_mix.mixing.weights import check_type_names, check_weight_values, mix_spec_from_fields, normalisation_note
from sharded_mix.shards import resolve_shard_types
from sharded_mix.streaming.checksums import VERIFY_MODES

logger = logging.getLogger(__name__)

ATTENTION_KINDS = ("causal", "document")

REFERENCE_ONLY_ARGS = (
    "val_split_fraction",
    "fast_dev_run",
    "data_split",
    "dataset_name",
    "num_samples",
    "num_val_samples",
)
"""Init args of the reference implementation's data module that only its download helper read."""


@dataclass(frozen=True)
class DataConfig:
    """What the fields say, checked and parsed: the mixture (``MixConfig``) and the resolved read settings."""

    mix: MixConfig
    shard_types: dict[str, str]
    max_cache_size: int | None
    warnings: tuple[str, ...] = ()
    """WARNING lines the fields deserve (rank zero logs them once)."""


def _whole(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def check_read_fields(fields: Any) -> None:
    """The fields of how data is read: workers, windows, read-ahead, nodes, the data-change policy, exclusions."""
    if fields.data_path is None or not str(fields.data_path).strip():
        raise ValueError("data_path is empty; set it to the directory holding your shards, e.g. data_path: data/mix.")
    if not _whole(fields.num_workers, 0):
        raise ValueError(f"num_workers is {fields.num_workers!r}; use 0 (load in the main process) or more.")
    if not _whole(fields.shuffle_window, 1):
        raise ValueError(
            f"shuffle_window is {fields.shuffle_window!r}; use a whole number of chunks, 1 or more "
            f"(1: one chunk at a time; default {DEFAULT_SHUFFLE_WINDOW})."
        )
    if not _whole(fields.prefetch_chunks, 0):
        raise ValueError(
            f"prefetch_chunks is {fields.prefetch_chunks!r}; use a whole number of chunks >= 0 (0: no read-ahead)."
        )
    if fields.nodes is not None and not _whole(fields.nodes, 1):
        raise ValueError(
            f"nodes is {fields.nodes!r}; use the number of nodes the run spans (1 or more), or leave it unset."
        )
    if fields.on_data_change not in DATA_CHANGE_POLICIES:
        raise ValueError(
            f"on_data_change is {fields.on_data_change!r}; use one of {', '.join(DATA_CHANGE_POLICIES)} "
            "(default error)."
        )
    excluded = fields.exclude_shards
    if excluded is not None and (isinstance(excluded, str) or not all(isinstance(n, str) and n for n in excluded)):
        raise ValueError(
            f"exclude_shards is {excluded!r}; give a list of shard ids, e.g. exclude_shards: [c2, main/3]."
        )
    if fields.verify_chunks not in VERIFY_MODES:
        raise ValueError(
            f"verify_chunks is {fields.verify_chunks!r}; use one of {', '.join(VERIFY_MODES)} (default first_read)."
        )
    if not isinstance(fields.log_data_metrics, bool):
        raise ValueError(f"log_data_metrics is {fields.log_data_metrics!r}; use true or false.")
    if fields.attention not in ATTENTION_KINDS:
        raise ValueError(f"attention is {fields.attention!r}; use causal (LitGPT's) or document.")
    if fields.eos_id is not None and not _whole(fields.eos_id, 0):
        raise ValueError(
            f"eos_id is {fields.eos_id!r}; give the id of the token that ends a document, or leave it unset."
        )
    if not isinstance(fields.cross_document_loss, bool):
        raise ValueError(f"cross_document_loss is {fields.cross_document_loss!r}; use true or false.")
    if fields.global_batch_size is not None and not _whole(fields.global_batch_size, 1):
        raise ValueError(f"global_batch_size is {fields.global_batch_size!r}; set it to train.global_batch_size.")


def validate_fields(fields: Any) -> DataConfig:
    """``fields`` (a ``ShardedMixedDataset``) checked and parsed; the first bad value raises."""
    check_read_fields(fields)
    shard_types = resolve_shard_types(fields.shard_types)
    known = tuple(shard_types)
    mix_config = None
    if fields.mix_config_path is not None:
        mix_config = load_mix_file(expand_path(fields.mix_config_path, "mix_config_path"))
    top_spec = mix_spec_from_fields(
        literal_weights_str=fields.literal_weights_str,
        mix_weights_str=fields.mix_weights_str,
        proportional_sampling=fields.proportional_sampling,
        mix_config=mix_config,
        mix_temperature=fields.mix_temperature,
        mix_config_origin=f"mix_config_path {str(fields.mix_config_path)!r}",
    )
    check_type_names(top_spec, list(known))
    top = TopLevel(
        fields.mix_weights_str,
        fields.literal_weights_str,
        fields.proportional_sampling,
        None if fields.mix_config_path is None else str(fields.mix_config_path),
        fields.mix_temperature,
        fields.seed,
    )
    schedule = build_stages(
        top,
        fields.stages,
        fields.anneal_start_step,
        fields.anneal_start_tokens,
        fields.anneal_weights,
        read_mix_file=lambda path: load_mix_file(expand_path(path, "mix_config_path")),
    )
    for stage in schedule:
        try:
            check_type_names(stage.spec, list(known))
        except ValueError as err:
            raise ValueError(f"stage {stage.name!r}: {err}") from None
    stop = StopRule(fields.stop_at_step, fields.stop_after_steps)
    max_cache_size = None if fields.max_cache_size is None else parse_size(fields.max_cache_size, "max_cache_size")
    specs = []
    for spec in [top_spec, *(stage.spec for stage in schedule)]:
        if spec not in specs:
            specs.append(spec)
    warnings = [note for note in map(normalisation_note, specs) if note is not None]
    ignored = [name for name in REFERENCE_ONLY_ARGS if getattr(fields, name) is not None]
    if ignored:
        warnings.append(
            f"data init_args {', '.join(ignored)} are accepted for reference configs but have no effect here (the "
            "reference's download helper read them); drop them, or run `sharded-mix convert-config` on the config."
        )
    mix = MixConfig(tuple(schedule), top_spec, known, fields.shuffle_window, stop)
    return DataConfig(mix, shard_types, max_cache_size, tuple(warnings))


# SFTMixture's fields


def prompt_style_named(name: str) -> Any:
    """LitGPT's prompt style ``name``; an unknown name is a ValueError listing the known ones."""
    from litgpt.prompts import PromptStyle, prompt_styles

    if name not in prompt_styles:
        raise ValueError(
            f"prompt_style {name!r} is not a LitGPT prompt style; use one of {', '.join(sorted(prompt_styles))}."
        )
    return PromptStyle.from_name(name)


def parse_weights(value: dict | str | None) -> dict[str, float] | None:
    """``{gsm8k: 0.7, lima: 0.3}`` or ``gsm8k:0.7,lima:0.3``."""
    if value is None:
        return None
    if isinstance(value, dict):
        weights = {str(name): _number(weight) for name, weight in value.items()}
        check_weight_values(weights, "weights")  # not a number, negative, NaN or infinite: one error naming the task
        return weights
    weights = {}
    for item in filter(None, (part.strip() for part in str(value).split(","))):
        name, sep, weight = item.rpartition(":")
        try:
            weights[name] = float(weight)
        except ValueError:
            name = ""
        if not sep or not name:
            raise ValueError(
                f"weights {value!r}: {item!r} is not NAME:WEIGHT; write e.g. gsm8k:0.7,lima:0.3."
            ) from None
    check_weight_values(weights, "weights")
    return weights


def _number(weight: object) -> object:
    """A weight (a number, or text such as ``"0.5"``) as a float; anything else as it is, for ``check_weight_values``
    to name."""
    try:
        return float(weight) if isinstance(weight, (str, int, float)) and not isinstance(weight, bool) else weight
    except ValueError:
        return weight
