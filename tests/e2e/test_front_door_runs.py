"""Bad input under the real `litgpt pretrain`: our one-line message is the last line of stderr, before training."""

import subprocess

import pytest
from litgpt_runs import LITGPT, pretrain_config, write_shards


@pytest.mark.parametrize(
    "init_args, message",
    [
        (
            {"mix_weights_str": "main:0.9,maths:0.1"},
            "ValueError: mix_weights_str: unknown type(s) ['maths']; known types are main, code, math, instruct, qa, "
            "books, news, papers, web. Add new types with shard_types, e.g. shard_types: {legal: l}.",
        ),
        ({"shuffle_window": 0}, "ValueError: shuffle_window is 0; use a whole number of chunks, 1 or more"),
    ],
)
def test_a_bad_value_ends_stderr_with_our_message_and_no_parser_noise(tmp_path, init_args, message):
    write_shards(tmp_path / "data")
    config = pretrain_config(tmp_path, {"data_path": str(tmp_path / "data"), **init_args})
    result = subprocess.run(
        [LITGPT, "pretrain", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Union" not in result.stderr and "Does not validate" not in result.stderr
    assert not (tmp_path / "out" / "step-00000003").exists()


def test_a_mistyped_data_path_names_data_path(tmp_path):
    write_shards(tmp_path / "data")
    config = pretrain_config(tmp_path, {"data_path": str(tmp_path / "dta")})
    result = subprocess.run(
        [LITGPT, "pretrain", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last.startswith(
        f"ValueError: data_path '{tmp_path / 'dta'}' does not exist (did you mean '{tmp_path / 'data'}'?)"
    )
