"""Weight arithmetic: pure functions, no shards on disk."""

import json
import math

import pytest

from sharded_mix.config import load_mix_file
from sharded_mix.mixing.weights import (
    check_weight_values,
    mix_spec_from_fields,
    mix_spec_from_mapping,
    parse_weight_string,
    resolve_weights,
)
from sharded_mix.shards import DEFAULT_SHARD_TYPES, Shard

TYPES = list(DEFAULT_SHARD_TYPES)


def shard(shard_id: str, type_name: str, tokens: int) -> Shard:
    return Shard(shard_id, type_name, f"/x/{shard_id}", tokens, 1, (tokens,), "int32")


SHARDS = [
    shard("main/1", "main", 6000),
    shard("main/2", "main", 2000),
    shard("c1", "code", 1000),
    shard("m1", "math", 500),
    shard("q1", "qa", 300),
    shard("q2", "qa", 200),
]


def resolve(**fields) -> dict[str, float]:
    return resolve_weights(mix_spec_from_fields(**fields), SHARDS, TYPES)


def test_parse_weight_string_strips_spaces():
    assert parse_weight_string(" main : 0.8 , math:0.2", "mix_weights_str") == {"main": 0.8, "math": 0.2}


def test_literal_weights_are_per_shard_and_normalised():
    weights = resolve(literal_weights_str="main/1:0.8,q1:0.1,q2:0.1")
    assert weights == pytest.approx({"main/1": 0.8, "q1": 0.1, "q2": 0.1})
    assert resolve(literal_weights_str="main/1:8,q1:1,q2:1") == pytest.approx(weights)


def test_weighted_splits_a_type_equally_across_its_shards():
    weights = resolve(mix_weights_str="main:0.8,qa:0.2")
    assert weights == pytest.approx({"main/1": 0.4, "main/2": 0.4, "q1": 0.1, "q2": 0.1})


def test_reference_blend_normalises_and_excludes_unlisted_types():
    weights = resolve(mix_weights_str="main:0.8,code:0.15,math:0.05")
    assert set(weights) == {"main/1", "main/2", "c1", "m1"}
    assert math.fsum(weights.values()) == pytest.approx(1.0)
    assert weights["c1"] == pytest.approx(0.15)


def test_proportional_is_by_tokens():
    weights = resolve(proportional_sampling=True)
    total = sum(s.tokens for s in SHARDS)
    assert weights == pytest.approx({s.id: s.tokens / total for s in SHARDS})


def test_proportional_with_type_multipliers_and_zero_exclusion():
    weights = resolve(proportional_sampling=True, mix_weights_str="code:3,qa:0")
    raw = {"main/1": 6000, "main/2": 2000, "c1": 3000, "m1": 500}
    assert weights == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})


def test_temperature_flattens_type_weights_before_the_split():
    weights = resolve(mix_weights_str="main:0.64,math:0.16,code:0.0", mix_temperature=2.0)
    # sqrt(0.64)=0.8, sqrt(0.16)=0.4 -> main 2/3 (split over 2 shards), math 1/3
    assert weights == pytest.approx({"main/1": 1 / 3, "main/2": 1 / 3, "m1": 1 / 3})


def test_temperature_on_literal_weights():
    weights = resolve(literal_weights_str="main/1:0.9,c1:0.1", mix_temperature=0.5)
    assert weights == pytest.approx({"main/1": 0.81 / 0.82, "c1": 0.01 / 0.82})


def test_zero_weight_excludes_a_source():
    assert "c1" not in resolve(literal_weights_str="main/1:1,c1:0")


def test_default_blend_is_main():
    assert resolve() == pytest.approx({"main/1": 0.5, "main/2": 0.5})


def test_mix_file_json_with_zero_weight(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(
        json.dumps(
            {"weights": {"main": 0.88, "math": 0.12, "code": 0}, "proportional_sampling": False, "literal_weights": {}}
        )
    )
    spec = mix_spec_from_fields(mix_config=load_mix_file(path))
    weights = resolve_weights(spec, SHARDS, TYPES)
    assert weights == pytest.approx({"main/1": 0.44, "main/2": 0.44, "m1": 0.12})


def test_mix_file_yaml_literal(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("literal_weights:\n  main/2: 3\n  q2: 1\ntemperature: 1\n")
    spec = mix_spec_from_fields(mix_config=load_mix_file(path))
    assert spec.mode == "literal"
    assert resolve_weights(spec, SHARDS, TYPES) == pytest.approx({"main/2": 0.75, "q2": 0.25})


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("main0.8", "malformed pair 'main0.8'"),
        ("main:0.8,,math:0.2", "malformed pair ''"),
        ("main:", "malformed pair"),
        (":0.3", "malformed pair"),
        ("main:abc", "'abc' of 'main' is not a number"),
        ("main:0.5,main:0.5", "'main' is given twice"),
        ("   ", "is empty"),
    ],
)
def test_malformed_weight_strings(text, fragment):
    with pytest.raises(ValueError, match="mix_weights_str") as err:
        mix_spec_from_fields(mix_weights_str=text)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("main:-0.1", "must be >= 0"),
        ("main:nan", "finite"),
        ("main:inf", "finite"),
        ("main:0,math:0", "all weights are zero"),
    ],
)
def test_bad_weight_values(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        mix_spec_from_fields(mix_weights_str=text)


def test_non_numeric_file_weight():
    with pytest.raises(ValueError, match="not a number"):
        check_weight_values({"main": "lots"}, "mix_config_path")


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), float("inf")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="mix_temperature"):
        mix_spec_from_fields(mix_weights_str="main:1", mix_temperature=temperature)


def test_more_than_one_mode():
    with pytest.raises(ValueError, match="literal_weights_str and mix_weights_str"):
        mix_spec_from_fields(literal_weights_str="main/1:1", mix_weights_str="main:1")
    with pytest.raises(ValueError, match="mix_weights_str and mix_config_path"):
        mix_spec_from_fields(mix_weights_str="main:1", mix_config={"weights": {"main": 1}})
    with pytest.raises(ValueError, match="proportional_sampling"):
        mix_spec_from_fields(literal_weights_str="main/1:1", proportional_sampling=True)
    with pytest.raises(ValueError, match="not both"):
        mix_spec_from_mapping({"weights": {"main": 1}, "literal_weights": {"c1": 1}}, "mix.json")


def test_unknown_type_lists_known_types():
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['maths'\].*known types are main, code, math"):
        resolve(mix_weights_str="main:0.9,maths:0.1")


def test_literal_id_not_found_lists_available_ids():
    with pytest.raises(ValueError, match=r"\['main/3'\] not found; available ids: main/1, main/2, c1, m1, q1, q2"):
        resolve(literal_weights_str="main/3:1")


def test_type_with_weight_but_no_shards():
    with pytest.raises(ValueError, match=r"\['books'\] have a weight but no shards"):
        resolve(mix_weights_str="main:0.9,books:0.1")


def test_unknown_mix_file_key():
    with pytest.raises(ValueError, match="unknown keys \\['weight'\\]"):
        mix_spec_from_mapping({"weight": {"main": 1}}, "mix.yaml")


def test_missing_mix_file(tmp_path):
    with pytest.raises(ValueError, match="mix_config_path .* does not exist"):
        load_mix_file(tmp_path / "nope.yaml")
