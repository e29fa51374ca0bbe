"""SFTMixture's ``weights``: every train_data task weighted, no negative or non-finite weight, at construction."""

from __future__ import annotations

import pytest

from sharded_mix import SFTMixture
from sharded_mix.data_config import parse_weights

TASKS = {"a": "a.json", "b": "b.json"}


@pytest.mark.parametrize(
    "weights, message",
    [
        ("a:-1,b:2", r"^weights: weight of 'a' is -1.0; weights must be >= 0 \(0 excludes a source\)\.$"),
        ({"a": -0.5, "b": 1}, r"^weights: weight of 'a' is -0.5; weights must be >= 0"),
        ("a:nan,b:1", r"^weights: weight of 'a' is nan; weights must be finite numbers >= 0\.$"),
        ({"a": float("inf"), "b": 1}, r"^weights: weight of 'a' is inf; weights must be finite numbers >= 0\.$"),
        ({"a": "lots", "b": 1}, r"^weights: weight of 'a' is 'lots', not a number; use e\.g\. a: 0\.2\.$"),
        ("b:1", r"^weights 'b:1' give no weight to task\(s\) 'a' of train_data; give each task a weight \(0 to leave"),
        ({"a": 0.5, "b": 0.5, "c": 1}, r"^weights name 'c', which is not in train_data \(a, b\)"),
    ],
)
def test_bad_task_weights_are_one_value_error_naming_the_task(weights, message):
    with pytest.raises(ValueError, match=message):
        SFTMixture(train_data=TASKS, val_data="v.json", weights=weights)


def test_weight_zero_leaves_a_task_out_on_purpose_and_text_numbers_are_numbers():
    data = SFTMixture(train_data=TASKS, val_data="v.json", weights={"a": 0, "b": "0.5"})
    assert data.task_weights == {"a": 0.0, "b": 0.5}
    assert parse_weights("a:0, b:1") == {"a": 0.0, "b": 1.0}
