"""Mixing weights: parse the user's blend, then turn it into one weight per shard.

Pure: mix files are read by ``config.load_mix_file``. The rules (also in the README):

- exactly one of ``literal_weights_str``, ``mix_weights_str``, ``mix_config_path`` gives the
  weights; ``proportional_sampling: true`` turns type weights into multipliers of shard size;
- literal: ``{shard id: w}``; shards not named get weight 0;
- weighted: ``{type: w}``; a type's weight is split equally across its shards; types not
  named get weight 0;
- proportional: a shard's weight is its token count times its type's multiplier (default 1);
- temperature T applies where the user gave the weights (per shard for literal and
  proportional, per type for weighted, before the split): p ∝ w^(1/T);
- a zero weight excludes a source; the result is normalised to sum to 1 (a weighted or literal blend
  whose weights do not sum to 1 gets one WARNING with the blend as given and as used);
- with nothing given, the blend is ``main: 1`` (the reference implementation's default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sharded_mix.shards import MAIN_TYPE, Shard

MixMode = Literal["literal", "weighted", "proportional"]

_FILE_KEYS = {"weights", "literal_weights", "proportional_sampling", "temperature", "mix_temperature"}


@dataclass(frozen=True)
class MixSpec:
    """A blend as the user wrote it, before it meets the shards."""

    mode: MixMode
    weights: dict[str, float] = field(default_factory=dict)
    """literal: shard id -> weight; weighted: type -> weight; proportional: type -> multiplier."""
    temperature: float = 1.0
    origin: str = "default"
    """The config field the weights came from, for error messages."""


def parse_weight_string(text: str, field_name: str) -> dict[str, float]:
    """Parse ``"main:0.8,math:0.2"`` into ``{"main": 0.8, "math": 0.2}``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{field_name} is empty; give name:weight pairs, e.g. {field_name}: 'main:0.8,math:0.2'.")
    weights: dict[str, float] = {}
    for piece in text.split(","):
        name, sep, value = piece.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(
                f"{field_name} {text!r}: malformed pair {piece.strip()!r}; expected name:weight pairs separated by "
                "commas, e.g. 'main:0.8,math:0.2'."
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"{field_name} {text!r}: weight {value!r} of {name!r} is not a number; use e.g. {name}:0.2."
            ) from None
        if name in weights:
            raise ValueError(f"{field_name} {text!r}: {name!r} is given twice; give each name once.")
        weights[name] = number
    return weights


def check_weight_values(weights: Mapping[str, float], field_name: str) -> None:
    """Reject negative, NaN, infinite and all-zero weights."""
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{field_name}: weight of {name!r} is {value!r}, not a number; use e.g. {name}: 0.2.")
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{field_name}: weight of {name!r} is {value}; weights must be finite numbers >= 0.")
        if value < 0:
            raise ValueError(
                f"{field_name}: weight of {name!r} is {value}; weights must be >= 0 (0 excludes a source)."
            )
    if weights and not any(value > 0 for value in weights.values()):
        raise ValueError(
            f"{field_name}: all weights are zero ({dict(weights)}); give at least one source a positive weight."
        )


def check_temperature(temperature: float, field_name: str = "mix_temperature") -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"{field_name} is {temperature!r}; use a finite number > 0 (1 keeps the weights as given).")


def mix_spec_from_mapping(
    data: Mapping, origin: str, proportional_sampling: bool = False, temperature: float = 1.0
) -> MixSpec:
    """Build a ``MixSpec`` from a mix file's content (the reference's JSON format, or YAML)."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{origin}: expected a mapping like {{'weights': {{'main': 0.9, 'math': 0.1}}}}, got {type(data).__name__}."
        )
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ValueError(f"{origin}: unknown keys {sorted(unknown)}; allowed keys are {sorted(_FILE_KEYS)}.")
    type_weights = data.get("weights") or {}
    literal_weights = data.get("literal_weights") or {}
    for key, value in (("weights", type_weights), ("literal_weights", literal_weights)):
        if not isinstance(value, Mapping):
            raise ValueError(f"{origin}: '{key}' must map names to numbers, got {value!r}.")
    proportional = bool(data.get("proportional_sampling", False)) or proportional_sampling
    if "temperature" in data and "mix_temperature" in data:
        raise ValueError(f"{origin}: give 'temperature' or 'mix_temperature', not both.")
    temperature = data.get("temperature", data.get("mix_temperature", temperature))
    if type_weights and literal_weights:
        raise ValueError(f"{origin}: give either 'weights' (per type) or 'literal_weights' (per shard), not both.")
    if literal_weights:
        if proportional:
            raise ValueError(f"{origin}: 'literal_weights' cannot be combined with proportional_sampling; drop one.")
        return make_mix_spec("literal", literal_weights, temperature, f"{origin}:literal_weights")
    mode: MixMode = "proportional" if proportional else "weighted"
    if not type_weights and mode == "weighted":
        raise ValueError(f"{origin}: no weights given; add 'weights' (per type) or 'literal_weights' (per shard).")
    return make_mix_spec(mode, type_weights, temperature, f"{origin}:weights")


def make_mix_spec(mode: MixMode, weights: Mapping[str, float], temperature: float, origin: str) -> MixSpec:
    weights = {str(name): value for name, value in weights.items()}
    check_weight_values(weights, origin)
    check_temperature(temperature)
    return MixSpec(
        mode=mode,
        weights={name: float(value) for name, value in weights.items()},
        temperature=float(temperature),
        origin=origin,
    )


def mix_spec_from_fields(
    literal_weights_str: str | None = None,
    mix_weights_str: str | None = None,
    proportional_sampling: bool = False,
    mix_config: Mapping | None = None,
    mix_temperature: float = 1.0,
    mix_config_origin: str = "mix_config_path",
) -> MixSpec:
    """Turn the data module's mix fields into one ``MixSpec``; ``mix_config`` is a loaded mix file."""
    given = [
        name
        for name, value in (
            ("literal_weights_str", literal_weights_str),
            ("mix_weights_str", mix_weights_str),
            ("mix_config_path", mix_config),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(
            f"{' and '.join(given)} are both set; give the weights in exactly one of literal_weights_str, "
            "mix_weights_str or mix_config_path."
        )
    if literal_weights_str is not None:
        if proportional_sampling:
            raise ValueError(
                "literal_weights_str cannot be combined with proportional_sampling: true; drop one "
                "(with proportional_sampling, per-type multipliers go in mix_weights_str)."
            )
        weights = parse_weight_string(literal_weights_str, "literal_weights_str")
        return make_mix_spec("literal", weights, mix_temperature, "literal_weights_str")
    if mix_weights_str is not None:
        weights = parse_weight_string(mix_weights_str, "mix_weights_str")
        return make_mix_spec(
            "proportional" if proportional_sampling else "weighted", weights, mix_temperature, "mix_weights_str"
        )
    if mix_config is not None:
        return mix_spec_from_mapping(mix_config, mix_config_origin, proportional_sampling, mix_temperature)
    if proportional_sampling:
        return make_mix_spec("proportional", {}, mix_temperature, "proportional_sampling")
    return make_mix_spec("weighted", {MAIN_TYPE: 1.0}, mix_temperature, "default blend 'main:1'")


def _apply_temperature(weights: Mapping[str, float], temperature: float) -> dict[str, float]:
    if temperature == 1.0:
        return dict(weights)
    return {name: (value ** (1.0 / temperature) if value > 0 else 0.0) for name, value in weights.items()}


def _normalise(weights: Mapping[str, float], origin: str) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(
            f"{origin}: every source ends up with weight 0; give at least one existing source a positive weight."
        )
    return {name: value / total for name, value in weights.items() if value > 0}


def normalisation_note(spec: MixSpec) -> str | None:
    """The WARNING for a weighted or literal blend whose weights do not sum to 1 (they are normalised), else None."""
    if spec.mode == "proportional" or not spec.weights:
        return None
    total = sum(spec.weights.values())
    if math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-6):
        return None
    given = ",".join(f"{name}:{value:g}" for name, value in spec.weights.items())
    used = ",".join(f"{name}:{value / total:.4g}" for name, value in spec.weights.items())
    return (
        f"{spec.origin}: the weights sum to {total:g}, not 1; they are normalised. As given: {given}; as used: {used}. "
        "Write weights that sum to 1 to silence this (a typo such as 0.5 for 0.2 shows here)."
    )


def check_type_names(spec: MixSpec, known_types: Sequence[str]) -> None:
    """A per-type blend may only name ``main`` and the known shard types (literal blends name shard ids)."""
    if spec.mode == "literal":
        return
    valid_types = [MAIN_TYPE, *known_types]
    unknown = [name for name in spec.weights if name not in valid_types]
    if unknown:
        raise ValueError(
            f"{spec.origin}: unknown type(s) {unknown}; known types are {', '.join(valid_types)}. "
            "Add new types with shard_types, e.g. shard_types: {legal: l}."
        )


def resolve_weights(spec: MixSpec, shards: Sequence[Shard], known_types: Sequence[str]) -> dict[str, float]:
    """Weight per shard id (only positive weights, in ``shards`` order), summing to 1."""
    by_type: dict[str, list[Shard]] = {}
    for shard in shards:
        by_type.setdefault(shard.type, []).append(shard)

    if spec.mode == "literal":
        ids = [shard.id for shard in shards]
        missing = [name for name in spec.weights if name not in ids]
        if missing:
            raise ValueError(
                f"{spec.origin}: shard id(s) {missing} not found; available ids: {', '.join(ids)}. "
                "Main shards are named main/<n>."
            )
        raw = _apply_temperature({shard.id: spec.weights.get(shard.id, 0.0) for shard in shards}, spec.temperature)
        return _normalise(raw, spec.origin)

    check_type_names(spec, known_types)
    if spec.mode == "proportional":
        raw = {shard.id: shard.tokens * spec.weights.get(shard.type, 1.0) for shard in shards}
        return _normalise(_apply_temperature(raw, spec.temperature), spec.origin)

    empty = [name for name, value in spec.weights.items() if value > 0 and name not in by_type]
    if empty:
        present = ", ".join(f"{name} ({len(items)})" for name, items in by_type.items())
        raise ValueError(
            f"{spec.origin}: type(s) {empty} have a weight but no shards; found shards of: {present}. "
            "Set their weight to 0, or add their shards."
        )
    type_weights = _apply_temperature({name: spec.weights.get(name, 0.0) for name in by_type}, spec.temperature)
    raw = {shard.id: type_weights[shard.type] / len(by_type[shard.type]) for shard in shards}
    return _normalise(raw, spec.origin)
